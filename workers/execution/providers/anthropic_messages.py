"""``anthropic/<model>`` through the official ``anthropic`` SDK's Messages API.

Streaming uses the SDK's ``messages.stream`` helper, which accumulates the final message (text
and tool-use blocks with their JSON input) while we relay the text deltas. Cache reads and
writes count as input tokens.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import anthropic

from workers.execution.providers.base import (
    AssistantMessage,
    Cancelled,
    Message,
    OnText,
    ProviderError,
    ToolCall,
    ToolResults,
    Turn,
    TurnRequest,
    Usage,
    UserMessage,
    error_message,
    error_type,
    status_error,
)

OFFICIAL_BASE_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 4096  # the Messages API requires a limit; an agent's maxTokens overrides it


class AnthropicMessages:
    provider = "anthropic"

    def __init__(self, *, api_key: str, base_url: str | None, timeout: float, key_env: str | None) -> None:
        self.base_url = base_url or OFFICIAL_BASE_URL
        self.key_env = key_env
        self._client = anthropic.Anthropic(api_key=api_key, base_url=self.base_url, timeout=timeout, max_retries=0)

    def close(self) -> None:
        self._client.close()

    def turn(self, request: TurnRequest, on_text: OnText | None, cancel: threading.Event) -> Turn:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": wire_messages(request.messages),
        }
        if request.system:
            kwargs["system"] = request.system
        if request.tools:
            kwargs["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
                for t in request.tools
            ]
        if request.force_tool:
            kwargs["tool_choice"] = {"type": "tool", "name": request.force_tool}
        if request.temperature is not None:
            # Not a named argument of this SDK version; the API still takes it.
            kwargs["extra_body"] = {"temperature": request.temperature}
        try:
            if request.stream:
                with self._client.messages.stream(**kwargs) as stream:
                    for event in stream:
                        if cancel.is_set():
                            raise Cancelled()
                        if event.type == "text" and on_text is not None:
                            on_text(event.text)
                    message = stream.get_final_message()
            else:
                message = self._client.messages.create(**kwargs)
        except anthropic.APIStatusError as exc:
            raise status_error(
                self.provider,
                self.base_url,
                request.model,
                self.key_env,
                exc.status_code,
                error_message(exc.body, exc.message),
                exc.response.headers,
                error_type(exc.body),
            ) from None
        except anthropic.APITimeoutError:
            raise ProviderError(f"anthropic at {self.base_url} timed out", transient=True) from None
        except anthropic.APIConnectionError as exc:
            raise ProviderError(
                f"could not reach anthropic at {self.base_url}: {exc.__cause__ or exc}", transient=True
            ) from None
        except anthropic.AnthropicError as exc:
            raise ProviderError(f"unexpected reply from anthropic at {self.base_url}: {exc}") from None
        return _turn(message)


def _turn(message: Any) -> Turn:
    text: list[str] = []
    calls: list[ToolCall] = []
    for block in message.content or ():
        if block.type == "text":
            text.append(block.text)
        elif block.type == "tool_use":
            value = block.input
            raw = json.dumps(value) if not isinstance(value, str) else value
            calls.append(ToolCall(block.id, block.name, value if isinstance(value, dict) else None, raw))
    usage = message.usage
    tokens_in = sum(
        int(getattr(usage, name, 0) or 0)
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return Turn(
        "".join(text), tuple(calls), Usage(tokens_in, int(getattr(usage, "output_tokens", 0) or 0)), message.stop_reason
    )


def wire_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Neutral messages as Messages API turns; consecutive same-role turns are merged (the API
    wants user and assistant to alternate, and tool results travel in a user turn)."""
    out: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for message in messages:
        match message:
            case UserMessage():
                add("user", [{"type": "text", "text": message.text}])
            case AssistantMessage():
                blocks: list[dict[str, Any]] = [{"type": "text", "text": message.text}] if message.text else []
                blocks += [
                    {"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.arguments or {})}
                    for c in message.tool_calls
                ]
                add("assistant", blocks)
            case ToolResults():
                add(
                    "user",
                    [
                        {"type": "tool_result", "tool_use_id": r.call_id, "content": r.content, "is_error": r.is_error}
                        for r in message.results
                    ],
                )
    return out
