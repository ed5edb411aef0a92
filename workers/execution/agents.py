"""Agent runtimes behind one small interface.

The engine never knows the provider: a worker builds an ``AgentCall`` (who, which model, the
prompt, the run's workspace folder) and asks ``workers.execution.runtimes.runtime_for(model,
providers)`` to run it, with a
cancel event it must honour promptly and an ``emit`` callback for incremental output. Each
runtime answers with an ``AgentResult``; a failure is data (``error``), never an exception,
unless the code itself is broken.

Runtimes: ``scripted/...`` (``ScriptedAgent``, offline, DESIGN §5) and ``anthropic/...`` /
``openai/...`` (``workers.execution.providers.agent.ModelAgent``, the official SDKs). A runtime whose
``batch_output`` is true streams many small deltas, which the executor coalesces into at most
~10 ``task:output`` events a second; the scripted agent's chunks are sent one by one, as written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.failures import ErrorCode
from orchestrator.spec import AgentSpec


@dataclass(frozen=True)
class AgentCall:
    run_id: str
    task_id: str
    title: str
    attempt: int
    agent: AgentSpec
    model: str
    system: str
    prompt: str
    workspace: Path | None = None  # the run's shared folder for file tools


@dataclass(frozen=True)
class AgentResult:
    output: str | None = None
    error: str | None = None
    # Why it failed (``orchestrator.failures.ErrorCode``); decides whether a retry is spent on it.
    error_code: ErrorCode = ErrorCode.AGENT_ERROR
    cancelled: bool = False
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    outcomes: Sequence[Mapping[str, Any]] = field(default_factory=tuple)


Emit = Callable[[str], None]


class AgentRuntime(Protocol):
    def run(self, call: AgentCall, cancel: threading.Event, emit: Emit) -> AgentResult: ...


class ScriptedAgent:
    """The built-in offline agent (DESIGN §5): attempt n plays step n of the agent's ``script``,
    the last step repeating. A step may give ``output``, ``outputChunks`` (sent one by one),
    ``delay`` (interrupted at once by cancel) and ``fail`` (the attempt fails with that message).
    Without ``output`` the result is the chunks joined, else the task title."""

    batch_output = False  # each outputChunk is one task:output event (tests and examples rely on it)

    def run(self, call: AgentCall, cancel: threading.Event, emit: Emit) -> AgentResult:
        script = call.agent.config.get("script") or []
        step: Mapping[str, Any] = script[min(call.attempt, len(script)) - 1] if script else {}
        chunks = [str(c) for c in step.get("outputChunks") or ()]
        for chunk in chunks:
            if cancel.is_set():
                return AgentResult(cancelled=True)
            emit(chunk)
        delay = float(step.get("delay") or 0)
        if delay > 0 and cancel.wait(delay):
            return AgentResult(cancelled=True)
        if cancel.is_set():
            return AgentResult(cancelled=True)
        if step.get("fail"):
            return AgentResult(error=str(step["fail"]))
        output = step.get("output")
        if output is None:
            output = "".join(chunks) if chunks else call.title
        return AgentResult(output=str(output), tokens_in=len(call.prompt) // 4, tokens_out=len(str(output)) // 4)


class UnavailableProvider:
    """A provider this build cannot drive; the attempt fails with a message that says so."""

    def __init__(self, provider: str) -> None:
        self.provider = provider

    def run(self, call: AgentCall, cancel: threading.Event, emit: Emit) -> AgentResult:
        return AgentResult(
            error=f'provider "{self.provider}" is not available on this server (model {call.model}); '
            "use anthropic/..., openai/... or scripted/... models",
            error_code=ErrorCode.CONFIGURATION_ERROR,
        )
