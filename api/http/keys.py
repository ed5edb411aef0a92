"""/v1/keys: the project's API keys. A new key's secret is in the 201 of ``POST`` and nowhere else
(only its SHA-256 digest is stored; a repeat with the same ``Idempotency-Key`` gets the key with
``key: null``); ``DELETE`` revokes a key at once on every API process (each
request looks its key up in Postgres). Another project's key is a 404."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, g, jsonify

from api.http import idempotency, render, schemas
from api.http.routes import json_body, protect, services
from workers.store import projects

blueprint = Blueprint("keys_v1", __name__)
protect(blueprint)


class KeyCreateSchema(schemas.Strict):
    name = schemas.text(schemas.NAME_MAX)


KEY_CREATE = KeyCreateSchema()


@blueprint.get("/keys")
def list_keys() -> Any:
    with services().transaction() as conn:
        rows = projects.list_keys(conn, g.project_id)
    return jsonify([render.api_key(row) for row in rows])


@blueprint.post("/keys")
def create_key() -> Any:
    body = json_body(KEY_CREATE, optional=True)
    with services().transaction() as conn:
        created = projects.new_key(conn, g.project_id, body.get("name"))
    location = f"/v1/keys/{created.row['id']}"
    # A repeat with the same Idempotency-Key gets the key without its secret (``key: null``): the
    # secret is stored nowhere, not even with the answer kept for the repeat.
    kept = json.dumps({**render.api_key(created.row), "key": None}).encode()
    idempotency.store_instead(201, kept, {"Content-Type": "application/json", "Location": location})
    response = jsonify({**render.api_key(created.row), "key": created.secret})
    response.status_code = 201
    response.headers["Location"] = location
    return response


@blueprint.delete("/keys/<key_id>")
def revoke_key(key_id: str) -> Any:
    with services().transaction() as conn:
        row = projects.revoke_key(conn, g.project_id, key_id)
    return jsonify(render.api_key(row))
