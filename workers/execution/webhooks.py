"""Sending webhook deliveries: one attempt per call, signed the Standard Webhooks way.

A delivery (an outbox row, written with the event it reports) is sent by ``Deliverer.deliver``:

1. **Claim** the attempt in Postgres (``workers.store.webhooks.claim``): only a due delivery of an
   enabled webhook is taken, and it is not due again for a lease (the timeout and a margin), so a
   duplicate message finds nothing to do, and a worker that dies mid-attempt leaves it to the tick.
2. **Check** the URL again with the egress guard (``workers.execution.egress``): DNS may have
   changed since the webhook was created. The connection goes to the address that was checked.
3. **Send** ``POST url`` with the JSON body ``{type, timestamp, data}`` and the headers
   ``webhook-id`` (the delivery's id, the same on every attempt: receivers dedupe on it),
   ``webhook-timestamp`` (Unix seconds) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of
   "id.timestamp.body">``, made by the ``standardwebhooks`` package). Redirects are not followed.
   Any 2xx answer delivers it.
4. **Settle**: the attempt is recorded with the response status and the first characters of its body
   (or a short reason: refused address, timeout, connection error), and the delivery becomes
   ``delivered``, ``pending`` again after ``orchestrator.webhooks.retry_delay``, or ``failed`` once
   the retry window is over.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from standardwebhooks.webhooks import Webhook

from config import Settings
from orchestrator import webhooks as rules
from workers.execution import egress
from workers.store import webhooks as store
from workers.store.db import Database
from workers.support.clock import utcnow

log = logging.getLogger(__name__)

RESPONSE_EXCERPT = 500  # characters of a receiver's answer kept per attempt
USER_AGENT = "missions-webhooks/1"


class NoRedirects(egress.EgressRefused):
    """A receiver answered with a redirect: deliveries go to the URL that was registered only."""


def _refuse_redirect(url: str) -> None:
    raise NoRedirects("the receiver redirected; webhooks do not follow redirects")


def sign(secret: str, message_id: str, at: datetime, body: str, previous: str | None = None) -> str:
    """The ``webhook-signature`` header value of one attempt: its signature by ``secret``, then, while
    a rotated-out secret is in its grace period, one by ``previous`` (space-separated, as Standard
    Webhooks lists several; a receiver accepts the delivery when any of them verifies)."""
    signed = Webhook(secret).sign(message_id, at, body)
    return signed if previous is None else f"{signed} {Webhook(previous).sign(message_id, at, body)}"


def encode(event_type: str, data: Any, at: datetime) -> str:
    return json.dumps(rules.payload(event_type, data, at), separators=(",", ":"), ensure_ascii=False)


class Deliverer:
    """Sends one attempt of a delivery and records it (``deliver``). ``resolve`` and ``jitter`` are
    the resolver of the egress guard and the random draw of the backoff (replaceable in tests)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        resolve: egress.Resolver = socket.getaddrinfo,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        self.allowance = egress.Allowance.parse(settings.egress_allow)
        self.resolve = resolve
        self.jitter = jitter
        self.clock = clock

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.webhook_timeout_seconds * 2 + 30)

    def deliver(self, delivery_id: str) -> str:
        """Make one attempt of the delivery if it is due; returns what happened (for the log)."""
        now = self.clock()
        with self.db.autocommit() as conn:
            claimed = store.claim(conn, delivery_id, now, now + self.lease)
        if claimed is None:
            return "not due"
        attempt = int(claimed["attempts"])
        started = self.clock()
        status_code, response, error = self._post(claimed, started)
        finished = self.clock()
        delivered = status_code is not None and 200 <= status_code < 300
        result: dict[str, Any] = {
            "started_at": started,
            "duration_ms": int((finished - started).total_seconds() * 1000),
            "status_code": status_code,
            "response": response,
            "error": error,
            "status": rules.DELIVERED,
            "next_attempt_at": None,
        }
        if not delivered:
            delay = rules.retry_delay(
                attempt, self.settings.webhook_backoff_seconds, self.settings.webhook_backoff_max_seconds, self.jitter()
            )
            due = finished + timedelta(seconds=delay)
            if rules.gives_up(claimed["created_at"], due, self.settings.webhook_retry_hours * 3600):
                result["status"] = rules.FAILED
            else:
                result["status"], result["next_attempt_at"] = rules.PENDING, due
        with self.db.autocommit() as conn:
            store.settle(conn, delivery_id, attempt, result, finished)
        outcome = f"attempt {attempt}: {status_code or error} -> {result['status']}"
        log.info("webhook delivery %s %s", delivery_id, outcome, extra={"run_id": claimed["run_id"]})
        return outcome

    def _post(self, claimed: dict[str, Any], at: datetime) -> tuple[int | None, str | None, str | None]:
        """POST the delivery; (status code, response excerpt, error): an error only when no answer came."""
        body = encode(claimed["type"], claimed["data"], claimed["created_at"])
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": claimed["id"],
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": sign(claimed["secret"], claimed["id"], at, body, claimed.get("previous_secret")),
        }
        # (The egress opener has http and https handlers only: no file: or custom schemes.)
        request = urllib.request.Request(  # noqa: S310
            claimed["url"], data=body.encode("utf-8"), headers=headers, method="POST"
        )
        opener = egress.opener(self.allowance, resolve=self.resolve, check_redirect=_refuse_redirect)
        started = time.monotonic()
        try:
            with opener.open(request, timeout=self.settings.webhook_timeout_seconds) as answer:
                return int(answer.status), _excerpt(answer), None
        except urllib.error.HTTPError as exc:  # the receiver answered, with a status that is not 2xx
            with exc:
                return int(exc.code), _excerpt(exc), None
        except egress.EgressError as exc:
            return None, None, exc.reason
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, egress.EgressError):
                return None, None, reason.reason
            return None, None, _short(reason)
        except TimeoutError:
            waited = time.monotonic() - started
            return None, None, f"no answer within {waited:.1f} s"
        except (OSError, ValueError) as exc:  # connection reset, bad status line, ...
            return None, None, _short(exc)


def _excerpt(answer: Any) -> str:
    raw = answer.read(RESPONSE_EXCERPT * 4)
    return str(raw.decode("utf-8", errors="replace")[:RESPONSE_EXCERPT])


def _short(reason: object) -> str:
    if isinstance(reason, BaseException):
        text = f"{type(reason).__name__}: {reason}"
    else:
        text = str(reason)
    return text[:200]
