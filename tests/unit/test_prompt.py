"""DESIGN §4 "Data flow": what an agent sees, built by ``orchestrator.prompt`` (pure)."""

from __future__ import annotations

from typing import Any

from orchestrator.prompt import DEPENDENCY_OUTPUT_LIMIT, build_prompt, describe_outcome, outcome_kind
from orchestrator.spec import MissionSpec

TEAM = {"name": "crew", "agents": [{"name": "dev", "model": "scripted/dev"}]}


def spec(*tasks: dict[str, Any], **fields: Any) -> MissionSpec:
    docs = [{"description": f"do {t['title']}", "assignTo": "dev", **t} for t in tasks]
    return MissionSpec.from_document({"name": "m", "team": TEAM, **fields, "tasks": docs})


def sections(prompt: str) -> list[str]:
    return [part.splitlines()[0] for part in prompt.split("\n\n") if part.startswith("# ")]


def test_the_agent_sees_the_mission_prompt_and_data_its_task_and_its_expectations() -> None:
    s = spec(
        {
            "title": "A",
            "expectations": [{"criterion": "is short"}, {"type": "contains", "name": "has hi", "value": "hi"}],
        },
        prompt="Greet the team.",
        data={"team": ["ana", "bo"]},
    )
    prompt = build_prompt(s, s.tasks[0], {})
    assert sections(prompt) == ["# Mission", "# Mission data", "# Your task: A", "# Expectations"]
    assert "Greet the team." in prompt
    assert '"team": [\n    "ana",' in prompt  # the data as indented JSON
    assert "do A" in prompt
    assert "- is short\n- has hi" in prompt


def test_a_mission_without_prompt_or_data_leaves_those_sections_out() -> None:
    s = spec({"title": "A"})
    assert sections(build_prompt(s, s.tasks[0], {})) == ["# Your task: A"]


def test_dependency_outputs_come_in_dependsOn_order_and_a_missing_one_is_empty() -> None:
    s = spec({"title": "A"}, {"title": "B"}, {"title": "C", "dependsOn": ["B", "A"]})
    prompt = build_prompt(s, s.tasks[2], {"A": "alpha", "B": "beta"})
    assert sections(prompt) == ["# Your task: C", "# Output of 'B'", "# Output of 'A'"]
    assert "# Output of 'B'\nbeta\n\n# Output of 'A'\nalpha" in prompt
    assert "# Output of 'A'\n" in build_prompt(s, s.tasks[2], {"B": "beta"})


def test_a_long_dependency_output_is_cut_and_says_how_much_was_left_out() -> None:
    s = spec({"title": "A"}, {"title": "B", "dependsOn": ["A"]})
    prompt = build_prompt(s, s.tasks[1], {"A": "x" * (DEPENDENCY_OUTPUT_LIMIT + 123)})
    assert "x" * DEPENDENCY_OUTPUT_LIMIT + "\n[... cut: 123 more characters]" in prompt
    assert "x" * (DEPENDENCY_OUTPUT_LIMIT + 1) not in prompt


def test_a_retry_carries_why_the_earlier_attempts_failed_in_order() -> None:
    s = spec({"title": "A"})
    prompt = build_prompt(s, s.tasks[0], {}, ("timed out after 5s", "score 2.0 below 3.0: too long"))
    assert prompt.endswith("# Earlier attempts failed\n- timed out after 5s\n- score 2.0 below 3.0: too long")


def test_expected_outcomes_are_described_with_kind_place_and_whether_required() -> None:
    s = spec(
        {
            "title": "A",
            "expectedOutcomes": [
                {"name": "report", "path": "out/report.md", "required": True, "description": "the summary"},
                {"name": "answer", "type": "json"},
            ],
        }
    )
    prompt = build_prompt(s, s.tasks[0], {})
    assert "# Expected outcomes\n- report (file at out/report.md, required): the summary\n- answer (json)" in prompt


def test_an_outcome_without_a_type_is_a_file_when_it_has_a_path_else_text() -> None:
    assert outcome_kind({"name": "r", "path": "a.txt"}) == "file"
    assert outcome_kind({"name": "r"}) == "text"
    assert outcome_kind({"name": "r", "type": "url", "path": "x"}) == "url"
    assert describe_outcome({"name": "r"}) == "- r (text)"


def test_the_same_inputs_give_the_same_prompt() -> None:
    s = spec({"title": "A"}, {"title": "B", "dependsOn": ["A"]}, prompt="p", data={"k": 1})
    assert build_prompt(s, s.tasks[1], {"A": "out"}, ("f",)) == build_prompt(s, s.tasks[1], {"A": "out"}, ("f",))


def test_a_task_a_reviewer_sent_back_sees_its_previous_output_and_what_the_reviewer_asked() -> None:
    s = spec({"title": "A"})
    prompt = build_prompt(s, s.tasks[0], {}, (), ("The reviewer ana asked for changes: cite sources",), "draft one")
    assert sections(prompt) == ["# Your task: A", "# Your previous output", "# A reviewer asked for changes"]
    assert prompt.endswith(
        "# Your previous output\ndraft one\n\n"
        "# A reviewer asked for changes\n- The reviewer ana asked for changes: cite sources"
    )
    assert "# Your previous output" not in build_prompt(s, s.tasks[0], {}, (), (), "draft one")
