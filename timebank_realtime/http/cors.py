"""CORS on the paths a page on another origin uses: the history API (``/api/*``, the webhook under
``/api/webhooks/`` excepted) and the browser client (``/client/*``). Nothing else gets CORS headers:
not the webhook, ``/metrics``, the health checks, nor the dashboard's own pages (``/``, ``/static/*``).
Socket.IO (``/socket.io/``) answers CORS itself, from the same setting.

``CORS_ALLOWED_ORIGINS`` means here what it means to Socket.IO (realtime/wire/server.py, python-engineio):

- empty (the default): same origin only. No CORS header is ever sent; a browser needs none for a page
  the service serves itself, and refuses everything to a page from anywhere else.
- a list of origins (``https://app.example,https://admin.example``, each exactly as a browser sends it
  in ``Origin``: scheme, host, port if not the default, no path): those origins, compared as strings.
  The answer then depends on ``Origin``, so every answer on these paths carries ``Vary: Origin``.
- ``*``, or a list holding ``*``: any origin. The answer is ``Access-Control-Allow-Origin: *``, the same
  for everyone, so it is cacheable with no ``Vary: Origin``.

Credentials (cookies, HTTP authentication) are never allowed: these paths take none, so there is no
``Access-Control-Allow-Credentials`` and ``*`` stays a plain ``*``.

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) from an allowed origin,
for a method the resource takes among GET and HEAD, is answered here: 204 with the methods, the
request headers it asked for, and a max-age. Any other preflight (an origin not allowed, another
method, a path with no route) goes on to the application as a plain OPTIONS, which answers 405 (or
404) with no CORS header, so the browser does not send the request. Every other answer on these paths,
the JSON errors of errors.py included, carries the CORS headers for an allowed origin, so a page can
read an error's code; the middleware sits outside ``json_errors`` for that.

aiohttp-cors was not used: it sends no ``Vary: Origin``, echoes the origin instead of ``*``, has no
same-origin mode, adds an OPTIONS route to every resource (which changes the route table the OpenAPI
test checks and the ``Allow`` of every 405), and decorates only the routes registered with it, so a
404 for a path with no route would carry no CORS header.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

SERVED_PREFIXES = ("/api/", "/client/")
EXCLUDED_PREFIXES = ("/api/webhooks/",)
# Only reads cross origins: the one write, the webhook, is excluded above.
METHODS = ("GET", "HEAD")
# What a cross-origin page may read beyond the CORS-safelisted response headers (Content-Type,
# Content-Length, Cache-Control, Expires, Last-Modified, Pragma, Content-Language). The history API
# pages in its body (`next`), with no paging header; Server-Timing is on every answer (ops.py).
EXPOSED_HEADERS = ("Server-Timing",)
# How long a browser may reuse a granted preflight (Chromium caps it at 2 hours).
MAX_AGE_SECONDS = 600

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """Which origins CORS_ALLOWED_ORIGINS allows, read as python-engineio reads it."""

    any_origin: bool
    origins: frozenset[str]

    @classmethod
    def from_setting(cls, origins: Sequence[str]) -> OriginPolicy:
        return cls(any_origin="*" in origins, origins=frozenset(o for o in origins if o != "*"))

    @property
    def enabled(self) -> bool:
        return self.any_origin or bool(self.origins)

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self.any_origin or origin in self.origins)


def is_served(path: str) -> bool:
    return path.startswith(SERVED_PREFIXES) and not path.startswith(EXCLUDED_PREFIXES)


def add_vary(response: web.StreamResponse | web.HTTPException, *names: str) -> None:
    """Add ``names`` to the answer's Vary, keeping what is there."""
    current = response.headers.get(hdrs.VARY, "")
    present = {item.strip().lower() for item in current.split(",") if item.strip()}
    if "*" in present:
        return
    missing = [name for name in names if name.lower() not in present]
    if missing:
        response.headers[hdrs.VARY] = ", ".join([current, *missing] if current else missing)


def _route_methods(request: web.Request) -> set[str]:
    """The methods the requested resource takes; empty when no route matches the path."""
    match = request.match_info
    error = match.http_exception
    if isinstance(error, web.HTTPMethodNotAllowed):
        return set(error.allowed_methods)
    resource = match.route.resource
    return set() if error is not None or resource is None else {route.method for route in resource}


def _requested_headers(request: web.Request) -> list[str] | None:
    """The header names a preflight asks for; None when one is not a header name."""
    names = [name.strip() for name in request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS, "").split(",")]
    names = [name for name in names if name]
    return names if all(_TOKEN.fullmatch(name) for name in names) else None


class _Cors:
    def __init__(self, policy: OriginPolicy) -> None:
        self.policy = policy

    def allow_origin(self, response: web.StreamResponse | web.HTTPException, origin: str | None) -> None:
        if not self.policy.any_origin:
            add_vary(response, hdrs.ORIGIN)
        if self.policy.allows(origin) or self.policy.any_origin:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = "*" if self.policy.any_origin else str(origin)

    def decorate(self, response: web.StreamResponse | web.HTTPException, origin: str | None) -> None:
        self.allow_origin(response, origin)
        if hdrs.ACCESS_CONTROL_ALLOW_ORIGIN in response.headers:
            response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = ", ".join(EXPOSED_HEADERS)

    def preflight(self, request: web.Request, origin: str) -> web.Response | None:
        """The answer to a preflight it grants; None for one it does not."""
        method = request.headers[hdrs.ACCESS_CONTROL_REQUEST_METHOD]
        granted = sorted(set(METHODS) & _route_methods(request))
        headers = _requested_headers(request)
        if not self.policy.allows(origin) or method not in granted or headers is None:
            return None
        response = web.Response(status=204)
        self.allow_origin(response, origin)
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = ", ".join(granted)
        if headers:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ", ".join(headers)
        response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = str(MAX_AGE_SECONDS)
        add_vary(response, hdrs.ACCESS_CONTROL_REQUEST_METHOD, hdrs.ACCESS_CONTROL_REQUEST_HEADERS)
        return response

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.policy.enabled or not is_served(request.path):
            return await handler(request)
        origin = request.headers.get(hdrs.ORIGIN)
        if (request.method == hdrs.METH_OPTIONS and origin is not None
                and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers):
            granted = self.preflight(request, origin)
            if granted is not None:
                return granted
            # Not granted: the application's own answer to OPTIONS, with no CORS header.
            response = await handler(request)
            if not response.prepared and not self.policy.any_origin:
                add_vary(response, hdrs.ORIGIN)
            return response
        try:
            response = await handler(request)
        except web.HTTPException as error:  # what json_errors lets through: redirects
            self.decorate(error, origin)
            raise
        if not response.prepared:
            self.decorate(response, origin)
        return response


def cors_middleware(allowed_origins: Sequence[str]) -> Middleware:
    """The middleware for CORS_ALLOWED_ORIGINS (the module doc says what it does)."""
    return _Cors(OriginPolicy.from_setting(allowed_origins)).middleware
