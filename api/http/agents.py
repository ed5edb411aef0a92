"""/v1/agents: the project's reusable agents (``workers.store.agents`` has the rules). ``PUT``
validates the agent as a team's agent is validated (models, profiles, tools, endpoints); missions
that name the agent use the new configuration from their next run on (a run keeps the
configuration it started with). ``DELETE`` of an agent missions still need is a 409 naming them."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify

from api.http import render, schemas
from api.http.routes import json_body, limits, protect, services
from orchestrator.spec import AgentSpec
from orchestrator.validation import validate_agent
from workers.store import agents
from workers.store.missions import raise_problems
from workers.support.errors import Invalid

blueprint = Blueprint("agents_v1", __name__)
protect(blueprint)


class AgentPutSchema(schemas.AgentSchema):
    """An agent's configuration; ``name``, when given, must be the one in the path."""

    name = schemas.text(schemas.NAME_MAX)


AGENT_PUT = AgentPutSchema()


@blueprint.get("/agents")
def list_agents() -> Any:
    with services().transaction() as conn:
        rows = agents.list_agents(conn, g.project_id)
    return jsonify([render.agent(row) for row in rows])


@blueprint.get("/agents/<name>")
def get_agent(name: str) -> Any:
    with services().transaction() as conn:
        row = agents.get_agent(conn, g.project_id, name)
    return jsonify(render.agent(row))


@blueprint.put("/agents/<name>")
def put_agent(name: str) -> Any:
    document = json_body(AGENT_PUT)
    if document.get("name", name) != name:
        raise Invalid(
            f"name {document['name']!r} differs from the agent's name in the path ({name!r})",
            {"fields": {"name": ["must be the name in the path (or left out)"]}},
        )
    if not name.strip() or len(name) > schemas.NAME_MAX:
        raise Invalid("an agent's name has 1 to 200 characters", {"fields": {"name": ["1 to 200 characters"]}})
    document = {**document, "name": name}
    server = limits()
    problems = validate_agent(
        AgentSpec.from_document(document),
        allow_commands=server.allow_commands,
        profiles=server.profiles,
        allow_mission_endpoints=server.allow_mission_endpoints,
    )
    raise_problems(problems)
    with services().transaction() as conn:
        row, created = agents.put_agent(conn, g.project_id, name, document)
    response = jsonify(render.agent(row))
    response.status_code = 201 if created else 200
    return response


@blueprint.delete("/agents/<name>")
def delete_agent(name: str) -> Any:
    with services().transaction() as conn:
        agents.delete_agent(conn, g.project_id, name)
    return "", 204
