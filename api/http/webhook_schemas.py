"""Request bodies and queries of the /v1/webhooks routes (marshmallow; the OpenAPI uses them too)."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

from api.http.schemas import CURSOR_TEXT, NAME_MAX, Strict, StrictBoolean, after_field, text
from orchestrator.webhooks import EVENT_NAMES, parse_secret

URL_MAX = 2_000
MISSION_FILTER_MAX = 100
DESCRIPTION_MAX = 1_000
PAGE_MAX = 100


def _unique(values: list[Any]) -> None:
    if len(set(values)) != len(values):
        raise ValidationError("Must not name the same value twice.")


def _secret(value: str) -> None:
    try:
        parse_secret(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class WebhookSchema(Strict):
    url = fields.String(
        required=True,
        validate=[
            validate.Length(max=URL_MAX),
            validate.URL(schemes={"http", "https"}, require_tld=False, error="Not an http or https URL."),
        ],
        metadata={"description": "Where deliveries are POSTed; its host may not be loopback, private or link-local."},
    )
    events = fields.List(
        fields.String(validate=validate.OneOf(EVENT_NAMES)),
        required=True,
        validate=[validate.Length(min=1, max=len(EVENT_NAMES)), _unique],
        metadata={"description": "The event names to send (the SSE names)."},
    )
    missionIds = fields.List(
        fields.String(validate=validate.Length(min=1, max=NAME_MAX)),
        allow_none=True,
        validate=[validate.Length(min=1, max=MISSION_FILTER_MAX), _unique],
        metadata={"description": "Only these missions' events (`null` or absent: every mission of the project)."},
    )
    secret = fields.String(
        validate=[validate.Length(max=200), _secret],
        metadata={"description": "The signing secret, `whsec_` and base64 of 24-64 bytes; absent: one is generated."},
    )
    enabled = StrictBoolean(metadata={"description": "`false` stops deliveries (default `true`)."})
    description = text(DESCRIPTION_MAX)


class WebhookCreateSchema(WebhookSchema):
    @post_load
    def _defaults(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data.setdefault("enabled", True)
        return data


class WebhookPatchSchema(WebhookSchema):
    """Any field of a webhook; ``secret`` sets a new signing secret, ``rotateSecret`` generates one."""

    rotateSecret = StrictBoolean(metadata={"description": "`true`: a new secret is generated and answered once."})


class DeliveriesQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=PAGE_MAX))
    after = after_field(CURSOR_TEXT)


WEBHOOK = WebhookCreateSchema()
WEBHOOK_PATCH = WebhookPatchSchema(partial=True)
DELIVERIES_QUERY = DeliveriesQuerySchema()
