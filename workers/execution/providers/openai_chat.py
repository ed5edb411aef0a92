"""``openai/<model>`` through the official ``openai`` SDK's Chat Completions API.

Chat Completions (not the newer Responses API) because it is what OpenAI-compatible servers
implement: the same code drives OpenAI, Ollama, vLLM and llama.cpp given a base URL. Streaming
asks for ``stream_options.include_usage`` so the last chunk carries the token counts.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import openai

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

OFFICIAL_BASE_URL = "https://api.openai.com/v1"


class OpenAIChat:
    provider = "openai"

    def __init__(self, *, api_key: str, base_url: str | None, timeout: float, key_env: str | None) -> None:
        self.base_url = base_url or OFFICIAL_BASE_URL
        self.key_env = key_env
        # Our own retry loop (cancellable, and it does not burn the SDK's hidden sleeps).
        self._client = openai.OpenAI(api_key=api_key, base_url=self.base_url, timeout=timeout, max_retries=0)

    def close(self) -> None:
        self._client.close()

    def turn(self, request: TurnRequest, on_text: OnText | None, cancel: threading.Event) -> Turn:
        kwargs: dict[str, Any] = {"model": request.model, "messages": wire_messages(request.system, request.messages)}
        if request.tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": dict(t.parameters)},
                }
                for t in request.tools
            ]
        if request.force_tool:
            kwargs["tool_choice"] = {"type": "function", "function": {"name": request.force_tool}}
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.max_tokens is not None:
            # OpenAI's own endpoint wants the newer name; compatible servers know the older one.
            official = self.base_url.rstrip("/") == OFFICIAL_BASE_URL
            kwargs["max_completion_tokens" if official else "max_tokens"] = request.max_tokens
        try:
            if request.stream:
                return self._stream(kwargs, on_text, cancel)
            return self._plain(kwargs)
        except openai.APIStatusError as exc:
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
        except openai.APITimeoutError:
            raise ProviderError(f"openai at {self.base_url} timed out", transient=True) from None
        except openai.APIConnectionError as exc:
            raise ProviderError(
                f"could not reach openai at {self.base_url}: {exc.__cause__ or exc}", transient=True
            ) from None
        except openai.OpenAIError as exc:
            raise ProviderError(f"unexpected reply from openai at {self.base_url}: {exc}") from None

    def _plain(self, kwargs: dict[str, Any]) -> Turn:
        response = self._client.chat.completions.create(**kwargs)
        usage = _usage(response.usage)
        if not response.choices:
            return Turn("", usage=usage)
        choice = response.choices[0]
        message = choice.message
        calls = tuple(
            ToolCall.from_raw(call.id, call.function.name, call.function.arguments)
            for call in message.tool_calls or ()
            if getattr(call, "function", None) is not None
        )
        return Turn(message.content or "", calls, usage, choice.finish_reason)

    def _stream(self, kwargs: dict[str, Any], on_text: OnText | None, cancel: threading.Event) -> Turn:
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage = Usage()
        finish: str | None = None
        stream = self._client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
        with stream:
            for chunk in stream:
                if cancel.is_set():
                    raise Cancelled()
                if chunk.usage is not None:
                    usage = _usage(chunk.usage)
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta.content:
                        text.append(delta.content)
                        if on_text is not None:
                            on_text(delta.content)
                    for part in delta.tool_calls or ():
                        # Some compatible servers send whole calls without an index.
                        index = part.index if part.index is not None else len(calls)
                        slot = calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
                        if part.id:
                            slot["id"] = part.id
                        if part.function is not None:
                            slot["name"] += part.function.name or ""
                            slot["arguments"] += part.function.arguments or ""
                    if choice.finish_reason:
                        finish = choice.finish_reason
        tool_calls = tuple(
            ToolCall.from_raw(slot["id"] or f"call_{i}", slot["name"], slot["arguments"])
            for i, slot in sorted(calls.items())
        )
        return Turn("".join(text), tool_calls, usage, finish)


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    return Usage(int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0))


def wire_messages(system: str, messages: Sequence[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        match message:
            case UserMessage():
                out.append({"role": "user", "content": message.text})
            case AssistantMessage():
                item: dict[str, Any] = {
                    "role": "assistant",
                    "content": message.text or (None if message.tool_calls else ""),
                }
                if message.tool_calls:
                    item["tool_calls"] = [
                        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.raw or "{}"}}
                        for c in message.tool_calls
                    ]
                out.append(item)
            case ToolResults():
                out.extend({"role": "tool", "tool_call_id": r.call_id, "content": r.content} for r in message.results)
    return out
