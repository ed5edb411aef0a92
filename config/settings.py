"""Typed settings parsed from environment variables.

Every setting is declared once in ``SETTINGS_TABLE`` (variable, attribute, parser, default,
meaning); the README's configuration table is written from the same declarations.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from config.errors import ConfigError
from config.prices import validate_inline
from config.profiles import ProviderProfile, parse_host_list, parse_profiles

__all__ = ["SETTINGS_TABLE", "ConfigError", "Setting", "Settings"]

DEFAULT_DATA_DIR = Path("~/.missions").expanduser()


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes:
            raise ValueError(f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}, got {raw!r}")
        return raw

    return parse


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"expected a number from {low} to {high}, got {value}")
        return value

    return parse


def _float_range(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"expected a number from {low} to {high}, got {value}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {raw!r}")
        return value

    return parse


def _path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("expected a folder path, got an empty value")
    return Path(raw).expanduser()


def _text(raw: str) -> str:
    return raw.strip()


def _file(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("expected a file path, got an empty value")
    return Path(raw.strip()).expanduser()


@dataclass(frozen=True)
class Setting:
    variable: str
    attribute: str
    parse: Callable[[str], Any]
    default: Any
    meaning: str


# One declaration a line (variable, attribute, parser, default, meaning): kept as a table by hand.
# fmt: off
SETTINGS_TABLE: tuple[Setting, ...] = (
    Setting("DATABASE_URL", "database_url", _url(("postgresql", "postgres")), None,
            "Postgres connection URL. Unset: `missions up` starts an embedded Postgres under the data dir."),
    Setting("REDIS_URL", "redis_url", _url(("redis", "rediss", "unix")), None,
            "Redis URL (Celery broker and event wake-ups). Unset: `missions up` starts an embedded Redis."),
    Setting("MISSIONS_DATA_DIR", "data_dir", _path, DEFAULT_DATA_DIR,
            "Where the embedded Postgres and Redis keep their data, and run workspaces live."),
    Setting("MISSIONS_HOST", "host", _text, "127.0.0.1", "Interface the API server binds to."),
    Setting("MISSIONS_PORT", "port", _int_range(1, 65535), 8000, "Port the API server listens on."),
    Setting("MISSIONS_API_THREADS", "api_threads", _int_range(1, 10_000), 1000,
            "Concurrent connections per API worker process (gevent); SSE clients each hold one."),
    Setting("MISSIONS_MAX_BODY_BYTES", "max_body_bytes", _int_range(1024, 1 << 30), 1 << 20,
            "Largest accepted request body; larger ones get 413."),
    Setting("MISSIONS_MAX_TASKS", "max_tasks", _int_range(1, 1_000_000), 10_000,
            "Most tasks one mission may hold."),
    Setting("MISSIONS_DB_POOL_SIZE", "db_pool_size", _int_range(1, 1000), 10,
            "Postgres connections per process."),
    Setting("MISSIONS_ALLOW_COMMANDS", "allow_commands", _bool, False,
            "Allow `command` expectations and shell tools to run on workers."),
    Setting("MISSIONS_JUDGE_MODEL", "judge_model", _text, None,
            "Default judge model (`provider/model`) when a mission has no `assessor`."),
    Setting("MISSIONS_OPENAI_BASE_URL", "openai_base_url", _url(("http", "https")), None,
            "Base URL for `openai/...` models (an OpenAI-compatible server: Ollama, vLLM, llama.cpp); "
            "a provider profile's `baseUrl` wins."),
    Setting("MISSIONS_ANTHROPIC_BASE_URL", "anthropic_base_url", _url(("http", "https")), None,
            "Base URL for `anthropic/...` models; a provider profile's `baseUrl` wins."),
    Setting("MISSIONS_PROVIDER_PROFILES", "provider_profiles", parse_profiles, (),
            'Model endpoints and key variables missions may use, by name: `{"local": {"provider": "openai", '
            '"baseUrl": "http://ollama:11434/v1", "apiKeyEnv": "OLLAMA_KEY"}}`; an agent or assessor picks one '
            'with `"profile"` (docs/security.md).'),
    Setting("MISSIONS_ALLOW_MISSION_ENDPOINTS", "allow_mission_endpoints", _bool, False,
            "Let missions set an agent's `baseUrl`/`apiKeyEnv` themselves. Only for a server whose every API key "
            "holder is trusted with the workers' environment (docs/security.md)."),
    Setting("MISSIONS_EGRESS_ALLOW", "egress_allow", parse_host_list, (),
            "Hosts, `host:port` entries or CIDR blocks that tools and webhooks may reach although they are loopback, "
            "private or link-local (comma-separated); metadata addresses stay refused unless listed exactly."),
    Setting("MISSIONS_PATTERN_TIMEOUT_SECONDS", "pattern_timeout_seconds", _float_range(0.01, 60), 1.0,
            "Longest time one `regex` expectation (or JSON-schema `pattern`) may take on an output before it fails."),
    Setting("MISSIONS_PROVIDER_TIMEOUT_SECONDS", "provider_timeout_seconds", _float_range(1, 3600), 300.0,
            "Longest wait for one model call before it counts as a (retried) timeout."),
    Setting("MISSIONS_PROVIDER_RETRIES", "provider_retries", _int_range(0, 20), 4,
            "Retries of a model call after a transient error (429, 5xx, timeout) inside one attempt."),
    Setting("MISSIONS_PROVIDER_BACKOFF_SECONDS", "provider_backoff_seconds", _float_range(0, 60), 1.0,
            "First wait before such a retry; it doubles each time (a `retry-after` header wins, up to 60 s)."),
    Setting("MISSIONS_COMMAND_TIMEOUT_SECONDS", "command_timeout_seconds", _float_range(0.1, 3600), 60.0,
            "Time limit of one `command` expectation or agent `shell` tool call."),
    Setting("MISSIONS_PRICES_FILE", "prices_file", _file, None,
            'JSON file of model prices in USD per million tokens, `{"openai/gpt-4o": {"input": 2.5, "output": 10}}`, '
            "over the built-in table."),
    Setting("MISSIONS_PRICES", "prices", validate_inline, None,
            "The same price JSON inline; wins over `MISSIONS_PRICES_FILE`."),
    Setting("MISSIONS_MAX_WEBHOOKS", "max_webhooks", _int_range(1, 10_000), 50,
            "Most webhooks one project may have (each adds work to every step of its runs)."),
    Setting("MISSIONS_WEBHOOK_TIMEOUT_SECONDS", "webhook_timeout_seconds", _float_range(0.1, 120), 10.0,
            "Longest wait for a webhook receiver to answer one delivery attempt (connect and response)."),
    Setting("MISSIONS_WEBHOOK_BACKOFF_SECONDS", "webhook_backoff_seconds", _float_range(0.01, 3600), 5.0,
            "Wait after a webhook delivery's first failed attempt; it doubles after each one (with jitter: "
            "50-100% of it), up to `MISSIONS_WEBHOOK_BACKOFF_MAX_SECONDS`."),
    Setting("MISSIONS_WEBHOOK_BACKOFF_MAX_SECONDS", "webhook_backoff_max_seconds", _float_range(0.01, 86_400), 3600.0,
            "Longest wait between two attempts of a webhook delivery."),
    Setting("MISSIONS_WEBHOOK_SECRET_GRACE_HOURS", "webhook_secret_grace_hours", _float_range(0, 24 * 30), 24.0,
            "After a webhook's secret is rotated, the old one still signs (a second signature) for this long; 0: "
            "the new one alone at once."),
    Setting("MISSIONS_WEBHOOK_RETRY_HOURS", "webhook_retry_hours", _float_range(0.0001, 24 * 30), 24.0,
            "A webhook delivery is retried for this long after its event; then it is `failed`."),
    Setting("MISSIONS_TICK_SECONDS", "tick_seconds", _float_range(0.05, 60), 1.0,
            "How often beat runs the tick (timers, schedules, repair)."),
    Setting("MISSIONS_HEARTBEAT_SECONDS", "heartbeat_seconds", _float_range(0.1, 600), 2.0,
            "How often a running attempt heart-beats."),
    Setting("MISSIONS_WORKER_LOST_SECONDS", "worker_lost_seconds", _float_range(1, 3600), 20.0,
            "An attempt without a heartbeat for this long counts as lost."),
    Setting("MISSIONS_REQUEUE_SECONDS", "requeue_seconds", _float_range(0.5, 3600), 10.0,
            "A queued attempt unclaimed this long is sent again; while the broker queue is not empty, again only "
            "after waiting as long as it had (at most 32 times this)."),
    Setting("MISSIONS_EAGER_HANDOFF_SECONDS", "eager_handoff_seconds", _float_range(0, 3600), 2.0,
            "Eager hand-off: a worker thread that starts a dependent with the step it ran runs it itself (no broker "
            "round trip) while it has worked on one message for less than this; 0 turns it off."),
    Setting("MISSIONS_BATCH_ATTEMPTS", "batch_attempts", _int_range(1, 1000), 8,
            "Attempts of one run started together go to the broker in messages of up to this many; the worker "
            "thread that receives one runs them one after the other while each is quick; 1: a message each."),
    Setting("MISSIONS_BATCH_RELEASE_SECONDS", "batch_release_seconds", _float_range(0.001, 60), 0.05,
            "A worker thread running a message of several attempts sends the ones it has not started on, a "
            "message each, once it has not started one for this long (its current attempt is slow)."),
    Setting("MISSIONS_SSE_HEARTBEAT_SECONDS", "sse_heartbeat_seconds", _float_range(0.1, 3600), 15.0,
            "Interval of the SSE comment heartbeat."),
    Setting("MISSIONS_METRICS_TOKEN", "metrics_token", _text, None,
            "When set, `GET /metrics` requires `Authorization: Bearer <this token>` (401 otherwise)."),
    Setting("MISSIONS_RETAIN_EVENTS_DAYS", "retain_events_days", _float_range(0.01, 36_500), None,
            "Days a finished run keeps its events (each run keeps its `mission:done`), and a finished webhook "
            "delivery its copy; unset keeps them for ever."),
    Setting("MISSIONS_RETAIN_OUTPUTS_DAYS", "retain_outputs_days", _float_range(0.01, 36_500), None,
            "Days a finished run's attempts keep their prompts and outputs (usage and scores stay); unset: for ever."),
    Setting("MISSIONS_RETAIN_RUNS_DAYS", "retain_runs_days", _float_range(0.01, 36_500), None,
            "Days a finished run is kept at all (then deleted with its attempts and events; a mission keeps its "
            "newest run); unset: for ever."),
    Setting("MISSIONS_RETENTION_BATCH", "retention_batch", _int_range(10, 100_000), 1000,
            "Rows retention deletes or clears per transaction (the beat tick runs the batches)."),
    Setting("MISSIONS_RETENTION_SECONDS", "retention_seconds", _float_range(0.01, 60), 0.1,
            "Time retention may take per tick, between batches."),
    Setting("MISSIONS_RATE_LIMIT", "rate_limit", _int_range(1, 1_000_000), 10,
            "Requests a second one API key may make on average (a project may have its own: "
            "`missions project limits`)."),
    Setting("MISSIONS_RATE_LIMIT_BURST", "rate_limit_burst", _int_range(1, 10_000_000), 20,
            "Requests one API key may make at once: any window of ceil(burst/rate) seconds holds at most this many."),
    Setting("MISSIONS_MAX_STREAMS_PER_KEY", "max_streams_per_key", _int_range(1, 1_000_000), 20,
            "Event streams one API key may hold open at once (across all API processes); one more gets 429."),
    Setting("MISSIONS_IDEMPOTENCY_TTL_SECONDS", "idempotency_ttl_seconds", _float_range(60, 30 * 86_400), 86_400.0,
            "How long the response to a request sent with an `Idempotency-Key` is kept and replayed."),
    Setting("MISSIONS_IDEMPOTENCY_LEASE_SECONDS", "idempotency_lease_seconds", _float_range(1, 3600), 60.0,
            "How long a request in progress holds its `Idempotency-Key`; a repeat after that (the first "
            "request's process died) runs it again."),
    Setting("MISSIONS_LOG_LEVEL", "log_level", _choice("debug", "info", "warning", "error"), "info",
            "Log level of every process."),
    Setting("MISSIONS_LOG_FORMAT", "log_format", _choice("text", "json"), "text",
            "`json` writes one JSON object per log line."),
)
# fmt: on


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    port: int = 8000
    api_threads: int = 1000
    max_body_bytes: int = 1 << 20
    max_tasks: int = 10_000
    db_pool_size: int = 10
    allow_commands: bool = False
    judge_model: str | None = None
    openai_base_url: str | None = None
    anthropic_base_url: str | None = None
    provider_profiles: tuple[ProviderProfile, ...] = ()
    allow_mission_endpoints: bool = False
    egress_allow: tuple[str, ...] = ()
    pattern_timeout_seconds: float = 1.0
    provider_timeout_seconds: float = 300.0
    provider_retries: int = 4
    provider_backoff_seconds: float = 1.0
    command_timeout_seconds: float = 60.0
    prices_file: Path | None = None
    prices: str | None = None
    max_webhooks: int = 50
    webhook_timeout_seconds: float = 10.0
    webhook_backoff_seconds: float = 5.0
    webhook_backoff_max_seconds: float = 3600.0
    webhook_retry_hours: float = 24.0
    webhook_secret_grace_hours: float = 24.0
    tick_seconds: float = 1.0
    heartbeat_seconds: float = 2.0
    worker_lost_seconds: float = 20.0
    requeue_seconds: float = 10.0
    eager_handoff_seconds: float = 2.0
    batch_attempts: int = 8
    batch_release_seconds: float = 0.05
    sse_heartbeat_seconds: float = 15.0
    metrics_token: str | None = field(default=None, repr=False)
    retain_events_days: float | None = None
    retain_outputs_days: float | None = None
    retain_runs_days: float | None = None
    retention_batch: int = 1000
    retention_seconds: float = 0.1
    rate_limit: int = 10
    rate_limit_burst: int = 20
    max_streams_per_key: int = 20
    idempotency_ttl_seconds: float = 86_400.0
    idempotency_lease_seconds: float = 60.0
    log_level: str = "info"
    log_format: str = "text"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse settings from ``environ`` (``os.environ`` when omitted); empty values mean unset."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS_TABLE:
            raw = env.get(setting.variable)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[setting.attribute] = setting.parse(raw)
            except ValueError as exc:
                raise ConfigError(setting.variable, str(exc)) from None
        return cls(**values)

    def profile(self, name: str) -> ProviderProfile | None:
        """The operator's provider profile called ``name``, if any."""
        return next((p for p in self.provider_profiles if p.name == name), None)

    def replace(self, **changes: Any) -> Settings:
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        current.update(changes)
        return Settings(**current)
