"""The agent runtime of real models: one conversation, tool calls in a loop bounded by ``maxTurns``.

Turn 1 sends the system prompt (role + ``systemPrompt``) and the attempt's prompt; while the model
answers with tool calls (and the agent has tools), the calls run and their results go back in the
next turn. The final answer is the text of the first turn without tool calls. Text streams to
``emit`` as it arrives (the executor batches it into ``task:output`` events). Tokens of every turn
add up, and the cost is priced for the attempt's model. Every failure is data in the
``AgentResult``; a cancel returns ``cancelled`` within a poll, wherever it lands.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from workers.execution.agents import AgentCall, AgentResult, Emit
from workers.execution.providers import Providers, endpoint_config, split_model
from workers.execution.providers.base import (
    AssistantMessage,
    Cancelled,
    Message,
    ProviderError,
    ToolResults,
    TurnRequest,
    Usage,
    UserMessage,
    call_model,
)
from workers.execution.providers.tools import ToolBox, requested_tools

log = logging.getLogger(__name__)

DEFAULT_MAX_TURNS = 10  # with tools; without tools one turn is the whole conversation


class ModelAgent:
    """``AgentRuntime`` for ``anthropic/...`` and ``openai/...`` models."""

    # Model output arrives as many small deltas: the executor coalesces them into events.
    batch_output = True

    def __init__(self, providers: Providers) -> None:
        self.providers = providers

    def toolbox(self, call: AgentCall) -> ToolBox | None:
        config = call.agent.config
        names = requested_tools(config)
        if not names:
            return None
        settings = self.providers.settings
        workspace = call.workspace or (settings.data_dir / "workspaces" / call.run_id)
        Path(workspace).mkdir(parents=True, exist_ok=True)
        hosts = tuple(str(h) for h in config.get("allowedHosts") or ())
        return ToolBox(
            names,
            Path(workspace),
            hosts,
            settings.allow_commands,
            settings.command_timeout_seconds,
            egress_allow=settings.egress_allow,
        )

    def run(self, call: AgentCall, cancel: threading.Event, emit: Emit) -> AgentResult:
        config = call.agent.config
        usage = Usage()
        toolbox: ToolBox | None = None

        def result(**fields: Any) -> AgentResult:
            return AgentResult(
                tokens_in=usage.tokens_in,
                tokens_out=usage.tokens_out,
                cost_usd=self.providers.cost(call.model, usage),
                outcomes=toolbox.outcomes() if toolbox is not None else (),
                **fields,
            )

        try:
            client = self.providers.client(call.model, endpoint_config(call.model, call.agent.model, config))
        except ProviderError as exc:
            return result(error=exc.message, error_code=exc.code)
        try:
            toolbox = self.toolbox(call)
            max_turns = max(1, int(config.get("maxTurns") or (DEFAULT_MAX_TURNS if toolbox else 1)))
            temperature = config.get("temperature")
            max_tokens = config.get("maxTokens")
            messages: list[Message] = [UserMessage(call.prompt)]
            texts: list[str] = []
            for _ in range(max_turns if toolbox else 1):
                request = TurnRequest(
                    model=split_model(call.model)[1],
                    system=call.system,
                    messages=tuple(messages),
                    tools=toolbox.specs() if toolbox else (),
                    max_tokens=int(max_tokens) if max_tokens else None,
                    temperature=float(temperature) if temperature is not None else None,
                )
                turn = call_model(client, request, cancel, emit, self.providers.retry_policy)
                usage += turn.usage
                if turn.text:
                    texts.append(turn.text)
                if not turn.tool_calls or toolbox is None:
                    return result(output=turn.text or "\n\n".join(texts))
                if turn.text and not turn.text.endswith("\n"):
                    emit("\n")
                messages.append(AssistantMessage(turn.text, turn.tool_calls))
                messages.append(ToolResults(tuple(toolbox.run(c, cancel) for c in turn.tool_calls)))
            return result(
                error=f"{call.model} still asked for tools after {max_turns} turns (the agent's "
                "maxTurns); no final answer"
            )
        except Cancelled:
            return result(cancelled=True)
        except ProviderError as exc:
            return result(error=f"{call.model}: {exc.message}", error_code=exc.code)
        except Exception as exc:  # an SDK surprise fails the attempt, never the worker
            log.exception("model call of %s/%s crashed", call.run_id, call.task_id)
            return result(error=f"{call.model}: unexpected error: {exc.__class__.__name__}: {exc}")
        finally:
            try:
                client.close()
            except Exception:
                log.debug("closing the model client failed", exc_info=True)
