"""Every HTTP route of the service, in one table."""

from __future__ import annotations

from aiohttp import web

from ..keys import IN_FLIGHT
from . import history, ops
from .webhook import receive_delivery


def setup_routes(app: web.Application) -> None:
    # Counted, so that a drain can wait for the deliveries it has taken.
    app.router.add_post("/api/webhooks/chainhook", app[IN_FLIGHT].counted(receive_delivery))
    app.router.add_get("/api/events", history.events)
    app.router.add_get("/api/events/{id}", history.event)
    app.router.add_get("/api/transactions/{tx_hash}", history.transaction)
    app.router.add_get("/api/status", history.status)
    app.router.add_get("/api/openapi.json", ops.openapi_handler())
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
    app.router.add_get("/client/timebank-realtime.js", ops.browser_client)
    app.router.add_get("/", ops.dashboard)
    app.router.add_get("/favicon.ico", ops.favicon)
    app.router.add_get("/static/{path:.+}", ops.static_file)
