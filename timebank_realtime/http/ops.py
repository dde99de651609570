"""Operations endpoints (liveness, readiness, Prometheus metrics, the OpenAPI document) and the files
the service serves (the dashboard, the browser client). docs/deployment.md says what each answers."""

from __future__ import annotations

import time
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from ..errors import DatabaseUnavailable
from ..events import network_tips
from ..keys import DRAINING, HISTORY, METRICS, SETTINGS, TAILER, TAILER_TASK
from ..metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..store.migrate import load_migrations
from .errors import error_response
from .openapi import openapi_document

STATIC = (Path(__file__).resolve().parents[1] / "static").resolve()


def _file(path: Path, **headers: str) -> web.StreamResponse:
    """A file of STATIC, or the JSON not_found (FileResponse answers a missing file itself, when it is
    sent: an empty 404 that no middleware sees)."""
    if not path.is_relative_to(STATIC) or not path.is_file():
        return error_response(404, "not_found", "no such file")
    return web.FileResponse(path, headers=headers)


async def static_file(request: web.Request) -> web.StreamResponse:
    return _file((STATIC / request.match_info["path"]).resolve())


async def browser_client(_request: web.Request) -> web.StreamResponse:
    return _file(STATIC / "timebank-realtime.js", **{"Content-Type": "text/javascript; charset=utf-8"})


async def dashboard(_request: web.Request) -> web.StreamResponse:
    return _file(STATIC / "index.html")


async def favicon(_request: web.Request) -> web.StreamResponse:
    # Tools and bookmarks ask for /favicon.ico whatever the page links: the same SVG, rather than a 404
    # (one that cannot show an SVG there shows no icon, as it would for the 404).
    return _file(STATIC / "favicon.svg", **{"Content-Type": "image/svg+xml"})


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers with every shipped migration applied and the tailer keeps up."""
    app = request.app
    if app[DRAINING].is_set():  # first, and without asking the database: the balancer must see it at once
        return web.json_response({"status": "unready", "reasons": ["shutting_down"]}, status=503)
    reasons: list[str] = []
    try:
        version = await app[HISTORY].schema_version()
        shipped = len(load_migrations())
        if version < shipped:
            reasons.append(f"migrations applied up to {version}, this version ships {shipped}")
    except DatabaseUnavailable as error:
        reasons.append(f"database unreachable: {error}")
    tailer, task = app[TAILER], app[TAILER_TASK]
    if task.done():
        reasons.append("the tailer has stopped")
    elif not tailer.listening:
        reasons.append("the tailer is not connected to the database")
    limit = app[SETTINGS].ready_max_lag_seconds
    if tailer.lag() > 0 and tailer.seconds_since_progress() > limit:
        reasons.append(f"the tailer is {tailer.lag()} changes behind and made no progress for {limit:g}s")
    if reasons:
        return web.json_response({"status": "unready", "reasons": reasons}, status=503)
    return web.json_response({"status": "ready", "cursor": tailer.cursor,
                              "chain_tips": network_tips(tailer.pushed.tip)})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


def openapi_handler() -> Handler:
    document = openapi_document()

    async def serve(_request: web.Request) -> web.Response:
        return web.json_response(document)

    return serve


@web.middleware
async def server_timing(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Server-Timing on every response: how long the server spent, for clients and the benchmark."""
    started = time.perf_counter()
    response = await handler(request)
    if not response.prepared:
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    return response
