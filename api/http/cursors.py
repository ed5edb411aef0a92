"""Keyset (cursor) paging for the list routes.

An offset page costs Postgres every row before it: page 1,000 of a mission's runs reads 50,000
index entries to return 50. A cursor names the last row of the previous page instead (a run's
number, a fire's time, a mission's creation time and id), and the next page starts right after it
in the index's own order, so a deep page costs what the first one does.

A full page carries the cursor of its last row in the ``X-Next-Cursor`` header (and a ``Link:
<...>; rel="next"`` with the URL of the next page); a page with fewer rows than ``limit`` is the
last one and has neither. Send it back as ``?after=``. The cursor is opaque to clients: URL-safe
base64 of a small JSON array, checked on the way in (a cursor that does not decode to the shape the
list expects is a 400 naming ``after``). Where a list also takes ``offset``, a request may not give
both.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import Response, jsonify, request

from workers.support.errors import Invalid

NEXT_CURSOR_HEADER = "X-Next-Cursor"
_KINDS = {"int": int, "id": int, "str": str, "time": str}
_RANGES = {"int": 2**31, "id": 2**63}  # a number of rows (Postgres integer); a bigserial id


def encode(values: Sequence[Any]) -> str:
    plain = [value.isoformat() if isinstance(value, datetime) else value for value in values]
    return base64.urlsafe_b64encode(json.dumps(plain, separators=(",", ":")).encode()).decode().rstrip("=")


def decode(text: str, kinds: Sequence[str]) -> tuple[Any, ...]:
    """The values of a cursor made by ``encode``, each of the kind given (``int``: below 2^31,
    ``id``: below 2^63, ``str``, or ``time``: an aware datetime); a 400 naming ``after`` for
    anything else."""
    try:
        values = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(values, list) or len(values) != len(kinds):
            raise ValueError("wrong shape")
        out: list[Any] = []
        raw: Any
        for raw, kind in zip(values, kinds, strict=True):
            if not isinstance(raw, _KINDS[kind]) or isinstance(raw, bool):
                raise ValueError("wrong kind")
            if isinstance(raw, int) and not 0 <= raw < _RANGES[kind]:
                raise ValueError("out of range")
            if kind == "time":
                moment = datetime.fromisoformat(str(raw))
                if moment.tzinfo is None:
                    raise ValueError("naive time")
                out.append(moment)
            else:
                out.append(raw)
        return tuple(out)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        message = "after must be a cursor from the X-Next-Cursor header of the previous page"
        raise Invalid(message, {"fields": {"after": [message]}}) from None


def after_from(
    query: Mapping[str, Any], kinds: Sequence[str], instead: str | None = "offset"
) -> tuple[Any, ...] | None:
    """The decoded ``?after=`` of a loaded query (None without one); a 400 when ``instead`` (the
    other way to say where a page starts; None for a list that has no other) is also given."""
    text = query.get("after")
    if text is None:
        return None
    if instead is None:
        return decode(text, kinds)
    if instead in request.args or (instead == "lastEventId" and request.headers.get("Last-Event-ID", "").strip()):
        message = f"give either {instead} or after, not both"
        raise Invalid(message, {"fields": {instead: [message], "after": [message]}})
    return decode(text, kinds)


def page(items: list[Any], rows: Sequence[Mapping[str, Any]], limit: int, keys: Sequence[str]) -> Response:
    """The JSON array ``items``; when the page is full, the cursor of its last row (``keys`` of
    ``rows[-1]``) in ``X-Next-Cursor`` and the next page's URL in ``Link``."""
    response = jsonify(items)
    if rows and len(rows) >= limit:
        cursor = encode([rows[-1][key] for key in keys])
        args = {k: v for k, v in request.args.items() if k not in ("after", "offset")}
        response.headers[NEXT_CURSOR_HEADER] = cursor
        response.headers["Link"] = f'<{request.path}?{urlencode({**args, "after": cursor})}>; rel="next"'
    return response
