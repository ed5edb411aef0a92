"""The /v1/webhooks routes: a project's webhooks, their deliveries, and sending one again.

Thin like the mission routes: parse, call the store, render. A webhook's URL passes the egress guard
(``workers.execution.egress``) when it is created or changed, and again before every attempt
(``workers.execution.webhooks``), since what a name resolves to may change.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, g, jsonify, request

from api.http import cursors, render
from api.http.routes import json_body, protect, services
from api.http.webhook_schemas import DELIVERIES_QUERY, WEBHOOK, WEBHOOK_PATCH
from orchestrator.webhooks import SECRET_MIN_BYTES, make_secret
from workers.execution import egress
from workers.store import webhooks as store
from workers.support.clock import utcnow
from workers.support.errors import Conflict, Invalid, NotFound
from workers.support.ids import new_id

blueprint = Blueprint("webhooks_v1", __name__)
protect(blueprint)  # parameters, key, rate limit, Idempotency-Key: as every /v1 blueprint


def _vetted_url(url: str) -> None:
    """400 naming ``url`` when the egress guard refuses it (or its host does not resolve)."""
    try:
        egress.check(url, services().settings.egress_allow)
    except egress.EgressError as exc:
        raise Invalid(f"url: {exc.reason}", {"fields": {"url": [exc.reason]}}) from None


def _own_missions(conn: Any, mission_ids: list[str] | None) -> None:
    """404 for a mission filter that names a mission of another project (or none at all)."""
    if not mission_ids:
        return
    foreign = store.foreign_missions(conn, g.project_id, mission_ids)
    if foreign:
        fields = {f"missionIds[{mission_ids.index(m)}]": ["no such mission in this project"] for m in foreign}
        raise NotFound(f"mission {foreign[0]} not found", {"fields": fields})


def _grace_end(now: datetime) -> datetime | None:
    """Until when a rotated-out secret still signs (None: a grace of 0, the new secret alone)."""
    hours = services().settings.webhook_secret_grace_hours
    return now + timedelta(hours=hours) if hours > 0 else None


def _new_secret() -> str:
    return make_secret(secrets.token_bytes(SECRET_MIN_BYTES + 8))


def _webhook(conn: Any, webhook_id: str, *, for_update: bool = False) -> dict[str, Any]:
    row = store.get(conn, g.project_id, webhook_id, for_update=for_update)
    if row is None:
        raise NotFound(f"webhook {webhook_id} not found")
    return row


@blueprint.post("/webhooks")
def create_webhook() -> Any:
    body = json_body(WEBHOOK)
    _vetted_url(body["url"])
    secret = body.get("secret") or _new_secret()
    with services().transaction() as conn:
        _own_missions(conn, body.get("missionIds"))
        row = store.create(
            conn,
            g.project_id,
            new_id("wh"),
            {
                "url": body["url"],
                "events": body["events"],
                "mission_ids": body.get("missionIds"),
                "secret": secret,
                "enabled": body["enabled"],
                "description": body.get("description"),
            },
            utcnow(),
            services().settings.max_webhooks,
        )
        if row is None:
            most = services().settings.max_webhooks
            raise Conflict(f"the project has {most} webhooks, the most it may have; delete one first", {"max": most})
    response = jsonify(render.webhook(row, secret=secret))
    response.status_code = 201
    response.headers["Location"] = f"/v1/webhooks/{row['id']}"
    return response


@blueprint.get("/webhooks")
def list_webhooks() -> Any:
    with services().transaction() as conn:
        rows = store.list_all(conn, g.project_id)
    return jsonify([render.webhook(row) for row in rows])


@blueprint.get("/webhooks/<webhook_id>")
def get_webhook(webhook_id: str) -> Any:
    with services().transaction() as conn:
        row = _webhook(conn, webhook_id)
    return jsonify(render.webhook(row))


@blueprint.patch("/webhooks/<webhook_id>")
def patch_webhook(webhook_id: str) -> Any:
    changes = json_body(WEBHOOK_PATCH)
    if "secret" in changes and changes.get("rotateSecret"):
        raise Invalid(
            "give a secret or ask for a new one (rotateSecret), not both",
            {"fields": {"secret": ["not with rotateSecret"], "rotateSecret": ["not with secret"]}},
        )
    if "url" in changes:
        _vetted_url(changes["url"])
    secret = changes.get("secret") or (_new_secret() if changes.get("rotateSecret") else None)
    now = utcnow()
    with services().transaction() as conn:
        current = _webhook(conn, webhook_id, for_update=True)
        if "missionIds" in changes:
            _own_missions(conn, changes["missionIds"])
        merged = {
            "url": changes.get("url", current["url"]),
            "events": changes.get("events", current["events"]),
            "mission_ids": changes["missionIds"] if "missionIds" in changes else current["mission_ids"],
            "enabled": changes.get("enabled", current["enabled"]),
            "description": changes["description"] if "description" in changes else current["description"],
            "secret": secret,
            "previous_until": _grace_end(now) if secret is not None else None,
        }
        row = store.update(conn, g.project_id, webhook_id, merged, now)
    assert row is not None  # (locked above)
    return jsonify(render.webhook(row, secret=secret))


@blueprint.delete("/webhooks/<webhook_id>")
def delete_webhook(webhook_id: str) -> Any:
    with services().transaction() as conn:
        if not store.delete(conn, g.project_id, webhook_id):
            raise NotFound(f"webhook {webhook_id} not found")
    return "", 204


@blueprint.get("/webhooks/<webhook_id>/deliveries")
def list_deliveries(webhook_id: str) -> Any:
    query = DELIVERIES_QUERY.load(request.args.to_dict())
    after = cursors.after_from(query, ("id",), instead=None)
    with services().transaction() as conn:
        _webhook(conn, webhook_id)
        rows = store.deliveries(conn, webhook_id, after[0] if after else None, query["limit"])
    return cursors.page([render.delivery(row) for row in rows], rows, query["limit"], ("seq",))


@blueprint.post("/webhooks/<webhook_id>/deliveries/<delivery_id>/resend")
def resend_delivery(webhook_id: str, delivery_id: str) -> Any:
    svc = services()
    with svc.transaction() as conn:
        hook = _webhook(conn, webhook_id)
        if not hook["enabled"]:
            raise Conflict("the webhook is disabled; enable it first (PATCH enabled: true)")
        row = store.resend(conn, webhook_id, delivery_id, utcnow())
        if row is None:
            raise NotFound(f"delivery {delivery_id} not found for webhook {webhook_id}")
    svc.dispatcher.send_deliveries([delivery_id])  # after commit; the tick sends it if this fails
    response = jsonify(render.delivery(row))
    response.status_code = 202
    return response
