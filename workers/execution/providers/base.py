"""Provider-neutral pieces of a model call.

A conversation is a tuple of neutral messages (``UserMessage``, ``AssistantMessage``,
``ToolResults``); each provider module turns it into its wire format, makes one call through its
official SDK and answers with a ``Turn`` (text, tool calls, usage). What this module guarantees:

- ``call_model`` runs one turn so that a cancel (abort, timeout, budget) returns control within
  ``CANCEL_POLL`` seconds even while the SDK is blocked on the network: the call runs in a daemon
  thread that is abandoned (and its client closed) when the cancel event fires.
- Transient failures (429, 408, 409, 5xx, timeouts, connection errors) are retried inside the
  call with exponential backoff (a ``retry-after`` header wins, capped at 60 s); the wait is
  interrupted by a cancel. Anything else (auth, invalid request, unknown model) fails at once
  with a message that says what to fix.
- Every ``ProviderError`` carries its ``code`` (``orchestrator.failures.ErrorCode``): the core
  spends no retry of the task on the codes no retry can fix (a missing key, 401/403, an unknown
  model, 400/422).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, TypeVar

from orchestrator.failures import ErrorCode
from workers.support import tracing

log = logging.getLogger(__name__)

CANCEL_POLL = 0.05
RETRY_AFTER_CAP = 60.0


@dataclass(frozen=True)
class Usage:
    tokens_in: int = 0
    tokens_out: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.tokens_in + other.tokens_in, self.tokens_out + other.tokens_out)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: Mapping[str, Any]  # JSON schema of the arguments object


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: Mapping[str, Any] | None  # None when the model sent something that is not a JSON object
    raw: str  # the arguments as the model sent them

    @classmethod
    def from_raw(cls, id: str, name: str, raw: str | None) -> ToolCall:
        text = raw or ""
        try:
            value = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            value = None
        return cls(id, name, value if isinstance(value, Mapping) else None, text)


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    name: str
    content: str
    is_error: bool = False


@dataclass(frozen=True)
class UserMessage:
    text: str


@dataclass(frozen=True)
class AssistantMessage:
    text: str
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class ToolResults:
    results: tuple[ToolResult, ...]


Message: TypeAlias = UserMessage | AssistantMessage | ToolResults


@dataclass(frozen=True)
class TurnRequest:
    model: str  # the provider's own model name (without "provider/")
    system: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    force_tool: str | None = None  # the model must call this tool
    max_tokens: int | None = None
    temperature: float | None = None
    stream: bool = True


@dataclass(frozen=True)
class Turn:
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    stop_reason: str | None = None


class ProviderError(Exception):
    """A model call failed; ``transient`` ones are worth retrying inside the call, and ``code``
    says why (transient ones are ``provider_unavailable``)."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool = False,
        retry_after: float | None = None,
        code: ErrorCode = ErrorCode.PROVIDER_ERROR,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.retry_after = retry_after
        self.code = ErrorCode.PROVIDER_UNAVAILABLE if transient else code


class Cancelled(Exception):
    """The attempt was cancelled (abort, timeout, budget) while a model call or tool ran."""


OnText = Callable[[str], None]


class ModelClient(Protocol):
    """One provider endpoint with its key; made per attempt and closed after it."""

    provider: str
    base_url: str

    def turn(self, request: TurnRequest, on_text: OnText | None, cancel: threading.Event) -> Turn: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 4
    backoff: float = 1.0  # first wait in seconds; doubles after each failure

    def wait(self, failures: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), RETRY_AFTER_CAP)
        return min(self.backoff * float(2 ** (failures - 1)), RETRY_AFTER_CAP)


_T = TypeVar("_T")


def abandonable(
    fn: Callable[[], _T], cancel: threading.Event, on_cancel: Callable[[], None] | None = None, name: str = "model-call"
) -> _T:
    """Run ``fn`` in a daemon thread; raise ``Cancelled`` as soon as ``cancel`` is set.

    The thread is left to finish on its own (its result is dropped): a blocked socket read cannot
    be interrupted portably, but the attempt must not wait for it.
    """
    if cancel.is_set():
        raise Cancelled()
    box: dict[str, Any] = {}
    done = threading.Event()
    trace = tracing.capture()  # the attempt's: the provider's HTTP calls belong to its trace

    def target() -> None:
        try:
            with tracing.restored(trace):
                box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=name, daemon=True).start()
    while not done.wait(CANCEL_POLL):
        if cancel.is_set():
            if on_cancel is not None:
                try:
                    on_cancel()
                except Exception:
                    log.debug("closing after cancel failed", exc_info=True)
            raise Cancelled()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def call_model(
    client: ModelClient, request: TurnRequest, cancel: threading.Event, on_text: OnText | None, policy: RetryPolicy
) -> Turn:
    """One turn, retried on transient errors, abandoned on cancel (see the module docstring)."""

    def guarded(text: str) -> None:
        # The abandoned thread of a cancelled call may still be streaming: drop what it says.
        if on_text is not None and not cancel.is_set():
            on_text(text)

    failures = 0
    while True:
        try:
            return abandonable(lambda: client.turn(request, guarded if on_text else None, cancel), cancel, client.close)
        except ProviderError as exc:
            if not exc.transient:
                raise
            failures += 1
            if failures > policy.retries:
                tries = "once" if failures == 1 else f"{failures} times"
                raise ProviderError(f"{exc.message} (tried {tries}; giving up)", transient=True) from None
            wait = policy.wait(failures, exc.retry_after)
            log.info(
                "%s at %s: %s; retry %d/%d in %.2f s",
                client.provider,
                client.base_url,
                exc.message,
                failures,
                policy.retries,
                wait,
            )
            if cancel.wait(wait):
                raise Cancelled() from None


def status_error(
    provider: str,
    base_url: str,
    model: str,
    key_env: str | None,
    status: int,
    message: str,
    headers: Mapping[str, str] | None,
    error_type: str | None = None,
) -> ProviderError:
    """The ``ProviderError`` for an HTTP error status of a provider, transient or not, with its code:
    401/403 ``auth_failed``; 404, or any status whose error type is ``model_not_found``,
    ``model_not_found``; 400/422 ``invalid_request``; another 4xx ``provider_error``."""
    where = f"{provider} at {base_url}"
    if status in (408, 409, 429) or status >= 500:
        return ProviderError(
            f"{where} answered HTTP {status}: {message}", transient=True, retry_after=_retry_after(headers or {})
        )
    if status in (401, 403):
        fix = f"check {key_env}" if key_env else "check the API key"
        return ProviderError(
            f"{where} rejected the credentials (HTTP {status}: {message}); {fix}", code=ErrorCode.AUTH_FAILED
        )
    if status == 404 or error_type in MODEL_NOT_FOUND_TYPES:
        return ProviderError(
            f"{where} answered HTTP {status} for model {model!r} ({message}); check the model name and the base URL",
            code=ErrorCode.MODEL_NOT_FOUND,
        )
    code = ErrorCode.INVALID_REQUEST if status in (400, 422) else ErrorCode.PROVIDER_ERROR
    return ProviderError(f"{where} refused the request for model {model!r} (HTTP {status}): {message}", code=code)


# The error ``code``/``type`` a provider's body gives for an unknown model (OpenAI's, and
# OpenAI-compatible servers', whatever status they send it with).
MODEL_NOT_FOUND_TYPES = frozenset({"model_not_found", "not_found_error"})


def error_type(body: object) -> str | None:
    """The machine-readable ``code`` (else ``type``) inside a provider's JSON error body."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            for key in ("code", "type"):
                if isinstance(inner.get(key), str):
                    return str(inner[key])
    return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    for key, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = lowered.get(key)
        if raw is None:
            continue
        try:
            return float(raw) * scale
        except ValueError:
            continue  # an HTTP date: use our own backoff
    return None


def error_message(body: object, fallback: str) -> str:
    """The human message inside a provider's JSON error body."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
        if isinstance(body.get("message"), str):
            return str(body["message"])
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return fallback
