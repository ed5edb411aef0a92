"""The real agent and judge runtimes, through the official SDKs, against loopback fakes of the
OpenAI Chat Completions and Anthropic Messages APIs (real HTTP, nothing patched)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config import Settings
from config.profiles import ProviderProfile
from orchestrator.failures import ErrorCode
from orchestrator.spec import AgentSpec
from tests.support.fake_llm import FakeLLM, call, fail, hang, say
from workers.execution.agents import AgentCall, AgentResult
from workers.execution.assessment import JudgeRequest, judge
from workers.execution.providers import Providers
from workers.execution.runtimes import runtime_for

PROVIDERS = ["openai", "anthropic"]
KEYS = {"OPENAI_API_KEY": "sk-openai-test", "ANTHROPIC_API_KEY": "sk-ant-test"}


# The operator's provider profiles of these tests: "fake-<provider>" is the loopback fake with the
# provider's default key; "team-<provider>" the same endpoint with the key in TEAM_KEY.
PROFILES: list[ProviderProfile] = []


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        for provider in PROVIDERS:
            url = base_url(fake, provider)
            PROFILES.append(ProviderProfile(f"fake-{provider}", provider, url))
            PROFILES.append(ProviderProfile(f"team-{provider}", provider, url, "TEAM_KEY"))
        yield fake
        PROFILES.clear()


def base_url(llm: FakeLLM, provider: str) -> str:
    return llm.openai_url if provider == "openai" else llm.anthropic_url


def providers(tmp_path: Path, environ: dict[str, str] | None = None, **settings: Any) -> Providers:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "provider_backoff_seconds": 0.01,
        "provider_retries": 2,
        "prices": '{"openai/priced": {"input": 2, "output": 10}, "anthropic/priced": {"input": 2, "output": 10}}',
        "provider_profiles": tuple(PROFILES),
    }
    values.update(settings)
    return Providers(Settings(**values), environ=KEYS if environ is None else environ)


def run_agent(
    llm: FakeLLM,
    tmp_path: Path,
    provider: str,
    model: str,
    *,
    cancel: threading.Event | None = None,
    environ: dict[str, str] | None = None,
    attempt_model: str | None = None,
    **agent: Any,
) -> tuple[AgentResult, list[str]]:
    document = {
        "name": "dev",
        "role": "Writes code",
        "model": f"{provider}/{model}",
        "profile": f"fake-{provider}",
        **agent,
    }
    spec = AgentSpec.from_document({k: v for k, v in document.items() if v is not None})
    used = attempt_model or spec.model
    chunks: list[str] = []
    agent_call = AgentCall("run_1", "task_1", "Write it", 1, spec, used, "Writes code", "Write the thing.", tmp_path)
    # (the fake listens on loopback, which the operator allows tools to reach here)
    allowed = providers(tmp_path, environ, egress_allow=("127.0.0.1",))
    result = runtime_for(used, allowed).run(agent_call, cancel or threading.Event(), chunks.append)
    return result, chunks


def unique(name: str, provider: str) -> str:
    return f"{name}-{provider}-{time.monotonic_ns()}"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_streamed_reply_is_relayed_chunk_by_chunk_and_its_usage_priced(
    llm: FakeLLM, tmp_path: Path, provider: str
) -> None:
    llm.script("priced", say("Hello from the model", usage=(1200, 300)))
    result, chunks = run_agent(
        llm, tmp_path, provider, "priced", systemPrompt="Be brief.", temperature=0.2, maxTokens=500
    )
    assert result.error is None and result.output == "Hello from the model"
    assert chunks == ["Hello ", "from ", "the ", "model"]
    assert (result.tokens_in, result.tokens_out) == (1200, 300)
    assert result.cost_usd == pytest.approx((1200 * 2 + 300 * 10) / 1e6)
    sent = llm.seen("priced")[-1]
    assert sent.body["stream"] is True and sent.body["temperature"] == 0.2 and sent.body["max_tokens"] == 500
    assert "Write the thing." in sent.text and "Writes code" in sent.text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_calls_loop_until_a_final_answer_and_files_written_are_outcomes(
    llm: FakeLLM, tmp_path: Path, provider: str
) -> None:
    model = unique("tools", provider)
    llm.page("/facts", "water boils at 100 C")
    llm.script(
        model,
        call("http_request", {"method": "GET", "url": f"{llm.url}/facts"}, text="Let me look.", usage=(50, 10)),
        call(
            "write_file",
            {"path": "notes/facts.md", "content": "boils at 100"},
            ("read_file", {"path": "notes/facts.md"}),
            usage=(80, 20),
        ),
        say("Water boils at 100 C.", usage=(120, 30)),
    )
    result, chunks = run_agent(
        llm,
        tmp_path,
        provider,
        model,
        tools=["http_request", "read_file", "write_file"],
        allowedHosts=["127.0.0.1"],
        maxTurns=5,
    )
    assert result.error is None and result.output == "Water boils at 100 C."
    assert result.outcomes == ({"type": "file", "path": "notes/facts.md", "characters": 12},)
    assert (tmp_path / "notes" / "facts.md").read_text() == "boils at 100"
    assert (result.tokens_in, result.tokens_out) == (250, 60)
    requests = llm.seen(model)
    assert len(requests) == 3
    assert '"status": 200' in requests[1].text and "water boils at 100 C" in requests[1].text
    assert "wrote 12 characters to notes/facts.md" in requests[2].text
    assert [t["name"] if "name" in t else t["function"]["name"] for t in requests[0].body["tools"]] == [
        "http_request",
        "read_file",
        "write_file",
    ]
    assert "".join(chunks).startswith("Let me look.")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_model_that_keeps_calling_tools_stops_at_max_turns(llm: FakeLLM, tmp_path: Path, provider: str) -> None:
    model = unique("loop", provider)
    llm.script(model, call("read_file", {"path": "nothing.txt"}))
    result, _ = run_agent(llm, tmp_path, provider, model, tools=["read_file"], maxTurns=3)
    assert (
        result.error
        == f"{provider}/{model} still asked for tools after 3 turns (the agent's maxTurns); no final answer"
    )
    assert len(llm.seen(model)) == 3 and result.tokens_in == 30


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_rate_limit_is_retried_inside_the_attempt(llm: FakeLLM, tmp_path: Path, provider: str) -> None:
    model = unique("limited", provider)
    llm.script(model, fail(429, "slow down", retry_after=0.2), fail(503, "overloaded"), say("made it"))
    started = time.monotonic()
    result, _ = run_agent(llm, tmp_path, provider, model)
    assert result.error is None and result.output == "made it"
    assert len(llm.seen(model)) == 3
    assert time.monotonic() - started >= 0.2  # the retry-after header was honoured


@pytest.mark.parametrize("provider", PROVIDERS)
def test_transient_errors_give_up_after_the_configured_retries(llm: FakeLLM, tmp_path: Path, provider: str) -> None:
    model = unique("down", provider)
    llm.script(model, fail(500, "upstream exploded"))
    result, _ = run_agent(llm, tmp_path, provider, model)
    assert (
        result.error is not None and "answered HTTP 500: upstream exploded (tried 3 times; giving up)" in result.error
    )
    assert len(llm.seen(model)) == 3
    assert result.error_code is ErrorCode.PROVIDER_UNAVAILABLE  # a task retry may still help


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_rejected_key_fails_at_once_naming_the_variable(llm: FakeLLM, tmp_path: Path, provider: str) -> None:
    model = unique("denied", provider)
    llm.script(model, fail(401, "invalid x-api-key"))
    result, _ = run_agent(llm, tmp_path, provider, model)
    key = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
    assert result.error == (
        f"{provider}/{model}: {provider} at {base_url(llm, provider)} rejected the credentials "
        f"(HTTP 401: invalid x-api-key); check {key}"
    )
    assert len(llm.seen(model)) == 1
    assert result.error_code is ErrorCode.AUTH_FAILED


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_invalid_request_fails_at_once_with_the_providers_message(
    llm: FakeLLM, tmp_path: Path, provider: str
) -> None:
    model = unique("invalid", provider)
    llm.script(model, fail(400, "max_tokens is too large"))
    result, _ = run_agent(llm, tmp_path, provider, model)
    assert (
        result.error is not None and "refused the request" in result.error and "max_tokens is too large" in result.error
    )
    assert len(llm.seen(model)) == 1
    assert result.error_code is ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_unknown_model_is_classified_so_that_no_task_retry_is_spent_on_it(
    llm: FakeLLM, tmp_path: Path, provider: str
) -> None:
    model = unique("nowhere", provider)
    llm.script(model, fail(404, f"The model {model} does not exist"))
    result, _ = run_agent(llm, tmp_path, provider, model)
    assert result.error_code is ErrorCode.MODEL_NOT_FOUND and "check the model name" in (result.error or "")
    assert len(llm.seen(model)) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_missing_key_fails_the_attempt_before_any_request(llm: FakeLLM, tmp_path: Path, provider: str) -> None:
    key = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
    before = len(llm.requests)
    result, _ = run_agent(llm, tmp_path, provider, "any", environ={}, profile=None)
    assert result.error == (
        f"no API key for {provider}/any: set {key} in the workers' environment (or use a provider "
        "profile of this server whose endpoint needs none)"
    )
    result, _ = run_agent(llm, tmp_path, provider, "any", environ={}, profile=f"team-{provider}")
    assert result.error == (
        f"no API key for {provider}/any: its endpoint's key variable TEAM_KEY is not set in the workers' environment"
    )
    assert len(llm.requests) == before
    assert result.error_code is ErrorCode.MISSING_KEY


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_key_named_by_the_profile_is_sent_and_a_local_server_needs_none(
    llm: FakeLLM, tmp_path: Path, provider: str
) -> None:
    model = unique("keyed", provider)
    llm.script(model, say("ok"))
    result, _ = run_agent(llm, tmp_path, provider, model, environ={"TEAM_KEY": "sk-team"}, profile=f"team-{provider}")
    assert result.error is None
    headers = {k.lower(): v for k, v in llm.seen(model)[-1].headers.items()}
    assert headers.get("authorization") == "Bearer sk-team" or headers.get("x-api-key") == "sk-team"
    result, _ = run_agent(llm, tmp_path, provider, model, environ={})
    assert result.error is None and result.output == "ok"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_abort_cancels_a_call_the_server_sits_on_within_two_seconds(
    llm: FakeLLM, tmp_path: Path, provider: str
) -> None:
    model = unique("slow", provider)
    llm.script(model, hang(20))
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    result, _ = run_agent(llm, tmp_path, provider, model, cancel=cancel)
    assert result.cancelled and time.monotonic() - started < 2.0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_abort_stops_a_stream_and_a_backoff_wait(llm: FakeLLM, tmp_path: Path, provider: str) -> None:
    model = unique("dribble", provider)
    llm.script(model, say(" ".join(["word"] * 200), chunk_delay=0.05))
    cancel = threading.Event()
    streaming = threading.Event()
    cancelled_at: list[float] = []

    def abort_once_streaming() -> None:  # from the first chunk on, not from a guess at the SDK's warm-up
        if streaming.wait(10):
            time.sleep(0.3)
            cancelled_at.append(time.monotonic())
            cancel.set()

    threading.Thread(target=abort_once_streaming, daemon=True).start()
    document = {"name": "dev", "role": "r", "model": f"{provider}/{model}", "profile": f"fake-{provider}"}
    spec = AgentSpec.from_document(document)
    chunks: list[str] = []

    def emit(chunk: str) -> None:
        chunks.append(chunk)
        streaming.set()

    call = AgentCall("run_1", "task_1", "Write it", 1, spec, spec.model, "r", "Write the thing.", tmp_path)
    result = runtime_for(spec.model, providers(tmp_path, None)).run(call, cancel, emit)
    assert result.cancelled and cancelled_at and time.monotonic() - cancelled_at[0] < 1.0
    assert 0 < len(chunks) < 100

    model = unique("backoff", provider)
    llm.script(model, fail(429, "later", retry_after=30), say("never"))
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    result, _ = run_agent(llm, tmp_path, provider, model, cancel=cancel)
    assert result.cancelled and time.monotonic() - started < 1.5


def test_an_escalated_model_keeps_the_agents_endpoint_only_for_the_same_provider(llm: FakeLLM, tmp_path: Path) -> None:
    model = unique("stronger", "openai")
    llm.script(model, say("escalated"))
    result, _ = run_agent(llm, tmp_path, "openai", "weak", attempt_model=f"openai/{model}")
    assert result.output == "escalated" and llm.seen(model)[-1].model == model
    # An escalation to another provider does not send the agent's key or base URL there.
    result, _ = run_agent(llm, tmp_path, "openai", "weak", attempt_model="anthropic/other", environ={})
    assert result.error is not None and "set ANTHROPIC_API_KEY" in result.error


# ------------------------------------------------------------------------------------ judges

CRITERIA = ("All critical issues identified", "Feedback is actionable")


def run_judge(llm: FakeLLM, tmp_path: Path, provider: str, model: str) -> Any:
    request = JudgeRequest(
        model=f"{provider}/{model}",
        config={"profile": f"fake-{provider}"},
        criteria=CRITERIA,
        output="Found a SQL injection in login().",
        number=1,
        task_title="Review",
        description="Review the diff.",
    )
    return judge(request, providers(tmp_path), threading.Event())


def good_scores() -> dict[str, Any]:
    return {
        "scores": [
            {"index": 1, "score": 4, "reason": "found the injection"},
            {"index": 2, "score": 3, "reason": "no fix suggested"},
        ]
    }


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_judge_scores_each_criterion_through_a_tool_call(llm: FakeLLM, tmp_path: Path, provider: str) -> None:
    model = unique("judge", provider)
    llm.script(model, call("submit_scores", good_scores(), usage=(400, 60)))
    verdict = run_judge(llm, tmp_path, provider, model)
    assert verdict.error is None and verdict.score == 3.5
    assert [(c["criterion"], c["score"], c["reason"]) for c in verdict.criteria] == [
        (CRITERIA[0], 4.0, "found the injection"),
        (CRITERIA[1], 3.0, "no fix suggested"),
    ]
    assert (verdict.tokens_in, verdict.tokens_out) == (400, 60)
    sent = llm.seen(model)[-1]
    assert not sent.body.get("stream")
    assert "Found a SQL injection" in sent.text and "1. All critical issues identified" in sent.text
    forced = sent.body["tool_choice"]
    assert forced in (
        {"type": "tool", "name": "submit_scores"},
        {"type": "function", "function": {"name": "submit_scores"}},
    )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_judge_answering_in_prose_gets_one_repair_turn(llm: FakeLLM, tmp_path: Path, provider: str) -> None:
    model = unique("chatty", provider)
    llm.script(model, say("The review is decent, I'd give it a 4."), call("submit_scores", good_scores()))
    verdict = run_judge(llm, tmp_path, provider, model)
    assert verdict.error is None and verdict.score == 3.5
    repair = llm.seen(model)[1]
    assert "Your answer could not be used: the reply called no tool and holds no JSON scores" in repair.text


def test_a_judge_answering_with_json_text_instead_of_a_tool_call_is_accepted(llm: FakeLLM, tmp_path: Path) -> None:
    model = unique("plain", "openai")
    llm.script(
        model,
        say(
            '```json\n{"scores": [{"index": 1, "score": 5, "reason": "a"}, '
            '{"index": 2, "score": 4, "reason": "b"}]}\n```'
        ),
    )
    verdict = run_judge(llm, tmp_path, "openai", model)
    assert verdict.error is None and verdict.score == 4.5 and len(llm.seen(model)) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("first", "second", "problem"),
    [
        (say("no idea"), say("still no idea"), "the reply called no tool and holds no JSON scores: 'still no idea'"),
        (
            call("submit_scores", {"verdict": "great"}),
            call("submit_scores", {"scores": "great"}),
            'expected {"scores": [...]} with one entry per criterion',
        ),
        (
            call("submit_scores", {"scores": [{"index": 1, "score": 9}, {"index": 2, "score": 4}]}),
            call("submit_scores", {"scores": [{"index": 1, "score": 11}, {"index": 2, "score": 4}]}),
            "the score 11 for criterion 1 is outside 1-5",
        ),
    ],
)
def test_a_judge_still_unusable_after_the_repair_fails_the_assessment_clearly(
    llm: FakeLLM, tmp_path: Path, provider: str, first: Any, second: Any, problem: str
) -> None:
    model = unique("broken", provider)
    llm.script(model, first, second, say("never asked"))
    verdict = run_judge(llm, tmp_path, provider, model)
    assert verdict.score is None
    assert verdict.error == (f"judge {provider}/{model} gave no usable scores, even after a repair request: {problem}")
    assert len(llm.seen(model)) == 2 and verdict.tokens_in == 20


def test_a_judge_with_broken_tool_arguments_gets_the_repair_turn(llm: FakeLLM, tmp_path: Path) -> None:
    model = unique("garbled", "openai")
    llm.script(
        model, call("submit_scores", '{"scores": [{"index": 1, "score": 4'), call("submit_scores", good_scores())
    )
    verdict = run_judge(llm, tmp_path, "openai", model)
    assert verdict.error is None and verdict.score == 3.5
    assert "not a JSON object" in llm.seen(model)[1].text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_judge_the_provider_refuses_is_a_clear_assessment_error(llm: FakeLLM, tmp_path: Path, provider: str) -> None:
    model = unique("judge-denied", provider)
    llm.script(model, fail(403, "no access to this model"))
    verdict = run_judge(llm, tmp_path, provider, model)
    assert verdict.score is None and verdict.error is not None
    assert f"judge {provider}/{model}: " in verdict.error and "no access to this model" in verdict.error
    assert verdict.error_code is ErrorCode.AUTH_FAILED


# ------------------------------------------------------------------------------- trust model


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_mission_chosen_endpoint_is_refused_before_any_request_and_no_key_leaves(
    llm: FakeLLM, tmp_path: Path, provider: str
) -> None:
    model = unique("leak", provider)
    llm.script(model, say("got it"))
    environ = {**KEYS, "DATABASE_URL": "postgresql://secret@db/prod"}
    for endpoint in ({"baseUrl": base_url(llm, provider)}, {"apiKeyEnv": "DATABASE_URL"}):
        result, _ = run_agent(llm, tmp_path, provider, model, environ=environ, profile=None, **endpoint)
        assert result.error is not None and "chosen by this server's operator" in result.error
    assert llm.seen(model) == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_where_the_operator_allows_mission_endpoints_the_operators_own_key_is_not_sent_there(
    llm: FakeLLM, tmp_path: Path, provider: str
) -> None:
    model = unique("allowed", provider)
    llm.script(model, say("ok"), say("ok"))
    document = {"name": "dev", "role": "r", "model": f"{provider}/{model}", "baseUrl": base_url(llm, provider)}
    spec = AgentSpec.from_document(document)
    call = AgentCall("run_1", "task_1", "Write it", 1, spec, spec.model, "r", "Write the thing.", tmp_path)
    allowing = providers(tmp_path, None, allow_mission_endpoints=True)
    result = runtime_for(spec.model, allowing).run(call, threading.Event(), lambda _: None)
    assert result.error is None
    headers = {k.lower(): v for k, v in llm.seen(model)[-1].headers.items()}
    sent = headers.get("authorization", "") + headers.get("x-api-key", "")
    assert KEYS["OPENAI_API_KEY"] not in sent and KEYS["ANTHROPIC_API_KEY"] not in sent


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_profile_this_worker_lacks_or_of_another_provider_fails_clearly(
    llm: FakeLLM, tmp_path: Path, provider: str
) -> None:
    other = "anthropic" if provider == "openai" else "openai"
    result, _ = run_agent(llm, tmp_path, provider, "any", profile="nowhere")
    assert result.error == "provider profile 'nowhere' is not defined on this worker (MISSIONS_PROVIDER_PROFILES)"
    result, _ = run_agent(llm, tmp_path, provider, "any", profile=f"fake-{other}")
    assert result.error == f"provider profile 'fake-{other}' is for {other} models, not {provider} ones"
