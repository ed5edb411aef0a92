"""Rate limits per API key, shared by every API process (flask-limiter, with the ``limits``
library's Redis storage and its moving window).

A key may make ``burst`` requests in any window of ``ceil(burst / rate)`` seconds: bursts of up to
``burst`` go through at once, and the sustained rate is at most ``rate`` a second (defaults 20 in
2 s, so 10/s; ``MISSIONS_RATE_LIMIT``, ``MISSIONS_RATE_LIMIT_BURST``, or the project's own
``missions project limits``). Every authenticated response carries ``X-RateLimit-Limit`` (the
requests of one window), ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (the Unix time at
which the window has room again); a limited request is a 429 ``rate_limited`` with ``Retry-After``
(seconds) and does nothing.

The check runs in the /v1 blueprints right after the key is authenticated (``check``, registered by
``api.http.routes.protect``): flask-limiter's own check runs before any blueprint's hooks, when the
key is not known yet. Its route limit used as a context manager is the library's documented way to
limit one block of code.

Redis down: the limiter falls back to counting in the process's memory (flask-limiter's in-memory
fallback, which tries Redis again now and then), so a Redis blip neither stops the API (reads
included) nor lifts every limit; each API process then limits on its own. A check waits at most
``workers.wiring.LIMITS_REDIS_TIMEOUT`` for Redis. It never answers 500 or 503.
"""

from __future__ import annotations

import math
import time
from typing import Any

from flask import Flask, Response, current_app, g
from flask_limiter import HeaderNames, Limiter
from flask_limiter.errors import RateLimitExceeded

from api.http.errors import error_response
from config import Settings
from workers.wiring import Services

EXTENSION = "missions_limiter"
SCOPE = "api"  # one count per key, whatever the route
# flask-limiter writes its Retry-After on every response (a 200 too); it goes under this name and
# becomes Retry-After only on the 429 it is for (``_retry_after_when_limited``).
_LIMITER_RETRY_AFTER = "X-Missions-Limiter-Retry-After"


def window(settings: Settings, rate: int | None, burst: int | None) -> tuple[int, int, int]:
    """``(rate, burst, window_seconds)`` for a project's own values (None: the server's)."""
    per_second = rate or settings.rate_limit
    at_once = max(burst or settings.rate_limit_burst, per_second)
    return per_second, at_once, math.ceil(at_once / per_second)


def _current(settings: Settings) -> tuple[int, int, int]:
    identity = g.get("identity")  # (flask-limiter's own before-request hook asks before anyone is known)
    if identity is None:
        return window(settings, None, None)
    return window(settings, identity.rate_limit, identity.rate_limit_burst)


def install(app: Flask, services: Services) -> None:
    """Give ``app`` its limiter (Redis storage when the server has Redis, else the process's memory)."""
    settings = services.settings
    if settings.redis_url:
        storage: dict[str, Any] = {
            "storage_uri": "redis://",  # (the pool below says where; the URL may be a unix socket)
            "storage_options": {"connection_pool": services.limits_redis.connection_pool},
        }
    else:
        storage = {"storage_uri": "memory://"}
    # (Registered before the limiter's own hook, so it runs after it: Flask runs them in reverse.)
    app.after_request(lambda response: _retry_after_when_limited(limiter, response))
    limiter: Limiter = Limiter(
        key_func=lambda: str(g.identity.key_id),
        app=app,
        strategy="moving-window",
        headers_enabled=True,
        retry_after="delta-seconds",
        header_name_mapping={HeaderNames.RETRY_AFTER: _LIMITER_RETRY_AFTER},
        key_prefix="missions:ratelimit",
        swallow_errors=True,
        in_memory_fallback_enabled=True,
        **storage,
    )

    def limit_value() -> str:
        _, burst, seconds = _current(settings)
        return f"{burst} per {seconds} second"

    def message() -> str:
        rate, burst, seconds = _current(settings)
        return (
            f"rate limit exceeded: this API key may make {burst} requests in {seconds} s "
            f"({rate}/s on average); send the request again after Retry-After seconds"
        )

    app.extensions[EXTENSION] = limiter.shared_limit(limit_value, scope=SCOPE, error_message=message)

    @app.errorhandler(RateLimitExceeded)
    def _limited(exc: RateLimitExceeded) -> Response:
        rate, burst, seconds = _current(settings)
        return error_response(
            429,
            str(exc.description),
            {"limit": burst, "windowSeconds": seconds, "ratePerSecond": rate},
        )


def _retry_after_when_limited(limiter: Limiter, response: Response) -> Response:
    """A 429's ``Retry-After``: the whole seconds until the window has room, rounded up from the
    window's own reset time (flask-limiter's header truncates, so a client that waited it could be
    limited again for up to a second)."""
    seconds = response.headers.pop(_LIMITER_RETRY_AFTER, None)
    if response.status_code == 429 and seconds is not None and "Retry-After" not in response.headers:
        current = limiter.current_limit
        if current is not None:
            seconds = str(math.ceil(current.window.reset_time - time.time()))
        response.headers["Retry-After"] = str(max(1, int(seconds)))
    return response


def check() -> None:
    """Count this request against its key (after ``authenticate``); 429 past the limit."""
    with current_app.extensions[EXTENSION]:
        pass
