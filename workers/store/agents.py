"""The project's reusable agents: kept from the non-volatile teams of its missions, or put through
``/v1/agents``; a mission may assign tasks to them by name.

Rules:
- a mission whose non-volatile team defines an agent the project already has with another
  configuration is refused (``Conflict`` naming the agent and the differing fields); the same
  configuration is accepted, and a new agent is kept;
- an agent that missions still need (their tasks name it and their own team does not define it)
  cannot be deleted (``Conflict`` naming the missions);
- a run copies the agents it uses into its own spec when it starts
  (``workers.coordination.runs``), so a change here never reaches a run already going.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from workers.store.queries import query
from workers.support.errors import Conflict, NotFound

LIST_AGENTS = query("list_agents")
SELECT_AGENT = query("select_agent")
AGENTS_NAMED = query("project_agents_named")  # (runs.sql: what a run copies in)
INSERT_AGENT_IF_NEW = query("insert_agent_if_new")
PUT_AGENT = query("put_agent")
DELETE_AGENT = query("delete_agent")
MISSIONS_USING_AGENT = query("missions_using_agent")


def differing_fields(kept: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """The fields two agent configurations do not share (a field one of them lacks counts)."""
    return sorted(key for key in kept.keys() | given.keys() if kept.get(key) != given.get(key))


def list_agents(conn: psycopg.Connection[Any], project_id: str) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(LIST_AGENTS, {"project_id": project_id})]


def get_agent(conn: psycopg.Connection[Any], project_id: str, name: str) -> dict[str, Any]:
    row = conn.execute(SELECT_AGENT, {"project_id": project_id, "name": name}).fetchone()
    if row is None:
        raise NotFound(f"agent {name!r} not found")
    return dict(row)


def put_agent(
    conn: psycopg.Connection[Any], project_id: str, name: str, document: Mapping[str, Any]
) -> tuple[dict[str, Any], bool]:
    """Create or replace the agent (the caller has validated ``document``); the row and whether it is new."""
    row = conn.execute(
        PUT_AGENT, {"project_id": project_id, "name": name, "document": Jsonb({**document, "name": name})}
    ).fetchone()
    assert row is not None
    fields = dict(row)
    return fields, bool(fields.pop("created"))


def delete_agent(conn: psycopg.Connection[Any], project_id: str, name: str) -> None:
    """Delete the agent; ``Conflict`` naming the missions that still need it, ``NotFound`` if none."""
    get_agent(conn, project_id, name)
    users = [dict(row) for row in conn.execute(MISSIONS_USING_AGENT, {"project_id": project_id, "name": name})]
    if users:
        shown = ", ".join(f'"{u["name"]}" ({u["id"]})' for u in users[:10]) + (", ..." if len(users) > 10 else "")
        raise Conflict(
            f"agent {name!r} is used by {len(users)} mission(s): {shown}; "
            "give them their own agent or delete them first",
            {"agent": name, "missions": [{"id": u["id"], "name": u["name"]} for u in users]},
        )
    conn.execute(DELETE_AGENT, {"project_id": project_id, "name": name})


def keep_team_agents(conn: psycopg.Connection[Any], project_id: str, document: Mapping[str, Any]) -> None:
    """Keep the agents of a non-volatile team in the project. ``Conflict`` (nothing written: the
    caller's transaction rolls back) when the project has one of them with another configuration."""
    team = document.get("team")
    if not team or team.get("volatile"):
        return
    given = {agent["name"]: agent for agent in team.get("agents") or ()}
    if not given:
        return
    new = set()
    for name, agent in given.items():
        if conn.execute(
            INSERT_AGENT_IF_NEW, {"project_id": project_id, "name": name, "document": Jsonb(agent)}
        ).fetchone():
            new.add(name)
    kept = {
        row["name"]: row["document"]
        for row in conn.execute(AGENTS_NAMED, {"project_id": project_id, "names": sorted(set(given) - new)})
    }
    differing = {name: differing_fields(kept[name], given[name]) for name in sorted(kept)}
    differing = {name: fields for name, fields in differing.items() if fields}
    if differing:
        first, fields = next(iter(differing.items()))
        more = f" (and {len(differing) - 1} more agents)" if len(differing) > 1 else ""
        raise Conflict(
            f"agent {first!r} already exists in this project with another configuration "
            f"(differs in {', '.join(fields)}){more}; use the same configuration, another name, a volatile "
            "team, or change the project's agent with PUT /v1/agents/{name}",
            {
                "agents": differing,
                "fields": {
                    f"team.agents[{list(given).index(name)}].{field}": ["differs from the project's agent"]
                    for name, fields in differing.items()
                    for field in fields
                },
            },
        )
