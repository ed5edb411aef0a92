"""The dashboard: a static page for people, served by the API process at ``/ui/``.

The page is a client of the public ``/v1`` API like any other (it holds no business rule and
calls no private endpoint), so all the server does here is hand out files: ``index.html``, the
page's ES modules and stylesheet, and two vendored libraries (``dashboard/vendor/``). The files
ship inside the ``api.http`` package (package data), so ``pip install`` is all a deployment needs.

Served as WSGI middleware in front of the Flask app rather than as Flask routes: these are files,
not operations of the API, so they stay out of the URL map the OpenAPI document is built from.
werkzeug's ``SharedDataMiddleware`` does the file serving (ETag, ``If-None-Match`` → 304,
``Last-Modified``, no path escaping the folder); this module adds what a page for people needs:

- ``/``, ``/ui`` and ``/dashboard`` redirect to ``/ui/``, which is ``index.html``;
- every response carries a strict Content-Security-Policy (scripts, styles and connections from
  this origin only, no inline script or style, no framing), ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: no-referrer`` and ``X-Frame-Options: DENY``;
- the page and its own modules are revalidated on every load (``no-cache`` with an ETag: an
  upgraded server is picked up at once, an unchanged file costs a 304), the vendored files, whose
  names carry their version, are kept for a year (``immutable``);
- anything but GET or HEAD is a 405 in the API's error shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from werkzeug.middleware.shared_data import SharedDataMiddleware
from werkzeug.wsgi import get_path_info

PREFIX = "/ui"
REDIRECTS = frozenset({"/", PREFIX, "/dashboard", "/dashboard/"})
VENDOR_PREFIX = f"{PREFIX}/vendor/"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)
PAGE_CACHE = "no-cache"
VENDOR_CACHE = "public, max-age=31536000, immutable"


def install(wsgi_app: Any) -> Any:
    """``wsgi_app`` with the dashboard in front of it (every other path goes on to ``wsgi_app``)."""
    return Dashboard(wsgi_app)


class Dashboard:
    def __init__(self, app: Any) -> None:
        self.app = app
        self._files = SharedDataMiddleware(_not_found, {PREFIX: ("api.http", "dashboard")}, cache=True, cache_timeout=0)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = get_path_info(environ)
        if path in REDIRECTS:
            return _redirect(environ, start_response)
        if not path.startswith(PREFIX + "/"):
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _method_not_allowed(start_response)
        if path == PREFIX + "/":
            environ = {**environ, "PATH_INFO": f"{PREFIX}/index.html"}
        cache = VENDOR_CACHE if path.startswith(VENDOR_PREFIX) else PAGE_CACHE

        def with_headers(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            kept = [(k, v) for k, v in headers if k.lower() not in ("cache-control", "expires")]
            if status.startswith(("200", "304")):
                kept.append(("Cache-Control", cache))
            return start_response(status, [*kept, *SECURITY_HEADERS], exc_info)

        return self._files(environ, with_headers)


def _redirect(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    # Relative to the host the browser used (a proxy's path prefix is not known here).
    start_response("302 Found", [("Location", f"{PREFIX}/"), ("Content-Length", "0"), *SECURITY_HEADERS])
    return [b""]


def _error(start_response: Any, status: str, message: str, code: str, extra: list[tuple[str, str]]) -> list[bytes]:
    body = json.dumps({"error": message, "code": code, "details": {}}).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *extra]
    start_response(status, [*headers, *SECURITY_HEADERS])
    return [body]


def _method_not_allowed(start_response: Any) -> list[bytes]:
    return _error(
        start_response,
        "405 Method Not Allowed",
        "the dashboard's files are read-only: use GET",
        "bad_request",
        [("Allow", "GET, HEAD")],
    )


def _not_found(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = get_path_info(environ)
    return _error(start_response, "404 Not Found", f"no dashboard file at {path[:200]}", "not_found", [])
