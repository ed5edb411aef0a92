"""Which agents' ``maxConcurrency`` is shared by every run of the project (the shell leases their
slots) and which holds in its run only: the rule ``MissionSpec.shared_agent_limits`` states."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.spec import MissionSpec


def spec(team: dict[str, Any] | None) -> MissionSpec:
    doc: dict[str, Any] = {"name": "m", "tasks": [{"title": "T", "description": "d", "assignTo": "a"}]}
    if team is not None:
        doc["team"] = team
    return MissionSpec.from_document(doc)


def test_a_non_volatile_teams_limited_agents_are_shared() -> None:
    team = {
        "name": "crew",
        "volatile": False,
        "agents": [{"name": "a", "model": "scripted/a", "maxConcurrency": 2}, {"name": "b", "model": "scripted/b"}],
    }
    assert spec(team).shared_agent_limits == {"a": 2}


def test_a_volatile_teams_own_agents_keep_their_limit_in_the_run_but_project_agents_share_theirs() -> None:
    team = {
        "name": "",
        "volatile": True,
        "agents": [
            {"name": "own", "model": "scripted/a", "maxConcurrency": 1},
            {"name": "kept", "model": "scripted/b", "maxConcurrency": 3},
        ],
        "projectAgents": ["kept"],
    }
    assert spec(team).shared_agent_limits == {"kept": 3}


def test_a_mission_without_a_team_shares_nothing() -> None:
    assert spec(None).shared_agent_limits == {}


def test_the_project_agents_marker_survives_the_run_spec_round_trip() -> None:
    team = {"name": "", "volatile": True, "agents": [{"name": "k", "model": "scripted/k"}], "projectAgents": ["k"]}
    first = spec(team)
    assert MissionSpec.from_document(first.to_document()) == first


agents = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["a", "b", "c", "d"]), "model": st.just("scripted/x")},
        optional={"maxConcurrency": st.integers(-3, 5)},
    ),
    max_size=4,
    unique_by=lambda a: a["name"],
)


@given(volatile=st.booleans(), agents=agents, marked=st.sets(st.sampled_from(["a", "b", "c", "d"])))
def test_only_reusable_agents_with_a_limit_are_shared_and_a_limit_is_at_least_one(
    volatile: bool, agents: list[dict[str, Any]], marked: set[str]
) -> None:
    team = {"name": "t", "volatile": volatile, "agents": agents, "projectAgents": sorted(marked)}
    shared = spec(team).shared_agent_limits
    for agent in agents:
        reusable = not volatile or agent["name"] in marked
        limited = agent.get("maxConcurrency") is not None
        assert (agent["name"] in shared) == (reusable and limited)
        if agent["name"] in shared:
            assert shared[agent["name"]] == max(1, agent["maxConcurrency"])
