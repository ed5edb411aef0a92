"""``Idempotency-Key`` on every POST, PATCH and DELETE of /v1 (Stripe's semantics), around the
routes: ``before`` and ``after`` are the blueprints' own hooks (``api.http.routes.protect``), so
no route handles the header itself.

- The first request with a key claims it in Postgres, in a statement that commits before the
  route runs (``workers.store.idempotency``), with a lease of ``MISSIONS_IDEMPOTENCY_LEASE_SECONDS``.
  Its response (status, body, ``Content-Type`` and ``Location``) is stored when it is done, for
  ``MISSIONS_IDEMPOTENCY_TTL_SECONDS`` (24 h).
- A repeat (same key, same method, path, query and body: compared by SHA-256) gets the stored
  response again, marked ``Idempotent-Replayed: true``, and nothing is done again.
- The same key with another request: 409 ``conflict`` (``details.reason`` ``different_request``).
  While the first request is still in progress: 409 (``in_progress``) with ``Retry-After``. When
  its lease ran out without an answer (its process died), the repeat runs.
- A 5xx is not stored: the key is given up, so the same request may be sent again (our routes do
  their work in one transaction, which a 5xx rolled back). 4xx answers are stored, as Stripe does.
- Keys are per project; a request without the header is not affected, nor is any GET.
- A streamed ``POST /execute`` (``Accept: text/event-stream``) stores the run as the JSON 202 it
  would have answered; a repeat streams that same run from its first event (or, asked for JSON,
  gets the 202 again). No second run is started either way.

Postgres down: the claim fails and the request is a 503 like any other. Storing the response
failing is logged; the key then frees itself when its lease ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, Response, current_app, g, request

from api.http.errors import error_response
from workers.store import idempotency
from workers.support.errors import Invalid
from workers.wiring import Services

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
METHODS = frozenset({"POST", "PATCH", "DELETE"})
KEPT_HEADERS = ("Content-Type", "Location")
MAX_KEY_LENGTH = 255
_VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, as header values travel

Replayer = Callable[[idempotency.Stored], Response | None]
_replayers: dict[str, Replayer] = {}


@dataclass(frozen=True)
class Claim:
    project_id: str
    key: str
    request_hash: bytes


def replay_with(endpoint: str, replayer: Replayer) -> None:
    """Let ``endpoint`` answer a repeat itself (None: the stored response as it is)."""
    _replayers[endpoint] = replayer


def store_instead(status: int, body: bytes, headers: dict[str, str]) -> None:
    """Store this answer for the current request's key instead of its response (a stream, or an
    answer holding a secret that must not be stored). Does nothing for a request without a key."""
    g.idempotent_result = (status, headers, body)


def install(blueprint: Blueprint) -> None:
    blueprint.before_request(before)
    blueprint.after_request(after)


def _services() -> Services:
    svc: Services = current_app.extensions["missions"]
    return svc


def request_hash() -> bytes:
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode(), request.query_string, request.get_data(cache=True)):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


def before() -> Response | None:
    if request.method not in METHODS or HEADER not in request.headers:
        return None
    key = request.headers[HEADER]
    if not _VALID_KEY.fullmatch(key):
        raise Invalid(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (a UUID, for instance)",
            {"fields": {HEADER: [f"expected 1 to {MAX_KEY_LENGTH} visible ASCII characters"]}},
        )
    claim = Claim(g.project_id, key, request_hash())
    svc = _services()
    with svc.autocommit() as conn:
        stored = idempotency.claim(
            conn,
            claim.project_id,
            claim.key,
            claim.request_hash,
            lease_seconds=svc.settings.idempotency_lease_seconds,
            ttl_seconds=svc.settings.idempotency_ttl_seconds,
        )
    if stored is None:
        g.idempotency = claim
        return None
    if stored.request_hash != claim.request_hash:
        return error_response(
            409,
            f"{HEADER} {key!r} was already used with another request (method, path or body differ); "
            "use a new key for a new request",
            {"idempotencyKey": key, "reason": "different_request"},
        )
    if stored.status is None:
        response = error_response(
            409,
            f"a request with {HEADER} {key!r} is still being processed; send it again in a moment",
            {"idempotencyKey": key, "reason": "in_progress"},
        )
        response.headers["Retry-After"] = "1"
        return response
    replayer = _replayers.get(request.endpoint or "")
    response = (replayer(stored) if replayer else None) or Response(
        stored.body, status=stored.status, headers=stored.headers
    )
    response.headers[REPLAYED] = "true"
    return response


def after(response: Response) -> Response:
    claim: Claim | None = g.pop("idempotency", None)
    if claim is None:
        return response
    result = g.pop("idempotent_result", None)
    try:
        with _services().autocommit() as conn:
            if response.status_code >= 500:
                idempotency.release(conn, claim.project_id, claim.key, claim.request_hash)
                return response
            if result is not None:
                status, headers, body = result
            elif response.is_streamed:  # (no route streams without store_instead: nothing to keep)
                idempotency.release(conn, claim.project_id, claim.key, claim.request_hash)
                return response
            else:
                status, body = response.status_code, response.get_data()
                headers = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
            if not idempotency.finish(conn, claim.project_id, claim.key, claim.request_hash, status, headers, body):
                log.warning("idempotency key %r: its lease ran out before the response was stored", claim.key)
    except Exception:
        log.exception("could not store the response for idempotency key %r", claim.key)
    return response


def json_body(stored: idempotency.Stored) -> object:
    return json.loads(stored.body or b"null")
