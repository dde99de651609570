"""A control plane for the client packages' tests (clients/conformance.json): the real server on a real
port, plus a second loopback HTTP server through which a test in another process (Node, a fresh
virtualenv) posts deliveries and forces what a client must survive: the server dropping every socket,
and a resync of every socket. It is test code: the application has no such routes.

Control routes (JSON in, JSON out):
- ``POST /deliver``: ``{"kind": "synthetic", "height": h, "events": n, "rollback": false, "success": true,
  "contract": c}`` posts one block of ``n`` print events of ``c`` (default: the monsters contract) in one
  transaction, whose ``tx_hash`` is in the answer (``rollback: true`` posts the same block as a rollback);
  ``{"kind": "nft", "number": k}`` the real NFT-mint fixture moved to block 300000+k;
  ``{"kind": "fixture", "name": "v1-….json"}`` a shared fixture; ``{"kind": "payload", "payload": {...}}``
  any body. Answer: ``{"status", "body", "tx_hash"}``.
- ``POST /disconnect``: the server drops every socket (``{"dropped": n}``).
- ``POST /resync``: every socket is resynced as a slow consumer would be (``{"resynced": n}``).
- ``GET /head``: ``{"cursor": <the newest change the server has pushed>}`` (a commit is pushed a moment
  after the webhook answers: wait for the head to reach it before a subscription with ``since: "now"``
  that must come after it).
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from timebank_realtime.keys import HUB
from timebank_realtime.realtime.hub import RealtimeHub

from .conftest import WEBHOOK, Serve, load_fixture, url_of
from .expected import MONSTERS
from .payloads import nft_block, synthetic_block


@dataclass(frozen=True)
class Harness:
    server: TestServer
    url: str
    control_url: str

    @property
    def hub(self) -> RealtimeHub:
        return self.server.app[HUB]

    def env(self) -> dict[str, str]:
        """What a test in another process needs: the service and the control plane."""
        return {"TIMEBANK_URL": self.url, "TIMEBANK_CONTROL_URL": self.control_url}


def delivery_body(request: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    kind = request.get("kind")
    if kind == "synthetic":
        block = synthetic_block(int(request["height"]), int(request.get("events", 1)),
                                contract=str(request.get("contract", MONSTERS)))
        transaction = block["transactions"][0]
        transaction["metadata"]["success"] = bool(request.get("success", True))
        rolled_back = bool(request.get("rollback", False))
        body = {"apply": [] if rolled_back else [block], "rollback": [block] if rolled_back else [],
                "chainhook": {"uuid": "conformance", "predicate": {"scope": "block_height"},
                              "is_streaming_blocks": True}}
        return body, transaction["transaction_identifier"]["hash"]
    if kind == "nft":
        return nft_block(int(request["number"])), None
    if kind == "fixture":
        return load_fixture(str(request["name"])), None
    if kind == "payload":
        return copy.deepcopy(request["payload"]), None
    raise web.HTTPBadRequest(text=f"unknown delivery kind {kind!r}")


def control_app(server: TestServer, http: aiohttp.ClientSession) -> web.Application:
    hub: RealtimeHub = server.app[HUB]

    async def deliver(request: web.Request) -> web.Response:
        body, tx_hash = delivery_body(await request.json())
        async with http.post(url_of(server) + WEBHOOK, json=body) as response:
            answer = await response.json()
            return web.json_response({"status": response.status, "body": answer, "tx_hash": tx_hash})

    async def disconnect(_request: web.Request) -> web.Response:
        sids = list(hub.sessions)
        for sid in sids:
            await hub.disconnect(sid)
        return web.json_response({"dropped": len(sids)})

    async def resync(_request: web.Request) -> web.Response:
        sessions = list(hub.sessions.values())
        for session in sessions:
            hub.fanout.outbox.resync(session, reason="resync forced by the test")
        return web.json_response({"resynced": len(sessions)})

    async def head(_request: web.Request) -> web.Response:
        return web.json_response({"cursor": hub.cursor})

    app = web.Application()
    app.router.add_post("/deliver", deliver)
    app.router.add_post("/disconnect", disconnect)
    app.router.add_post("/resync", resync)
    app.router.add_get("/head", head)
    return app


@asynccontextmanager
async def start_harness(serve: Serve, **overrides: Any) -> AsyncIterator[Harness]:
    server = await serve(**overrides)
    async with aiohttp.ClientSession() as http:
        control = TestServer(control_app(server, http), host="127.0.0.1")
        await control.start_server()
        try:
            yield Harness(server=server, url=url_of(server), control_url=url_of(control))
        finally:
            await control.close()
