"""Compatibility with the official JavaScript client, socket.io-client 4.x, running in Node."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from timebank_realtime.keys import HUB

from .conftest import event_cursors, eventually, load_fixture, post_webhook, url_of
from .expected import MONSTERS
from .payloads import nft_block

JS_DIR = Path(__file__).parent / "js"
NODE = shutil.which("node")
READY = NODE is not None and (JS_DIR / "node_modules" / "socket.io-client").is_dir()
if not READY and os.environ.get("CI"):
    raise RuntimeError("CI must run the JavaScript client tests: install Node.js and run `npm ci` in tests/js")
# The served browser client is a browser bundle: it opens websockets with the WebSocket global, which
# Node 20 has behind this flag.
BROWSER_GLOBALS = "--experimental-websocket"
pytestmark = pytest.mark.skipif(not READY, reason="needs node and `npm ci` in tests/js (make test does both)")


async def run_js_client(url: str, transport: str, subscription: dict[str, Any], expected: int,
                        deliver: Any) -> list[dict[str, Any]]:
    assert NODE is not None
    process = await asyncio.create_subprocess_exec(
        NODE, str(JS_DIR / "subscribe.mjs"), url, transport, json.dumps(subscription), str(expected),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    lines: list[dict[str, Any]] = []
    first = await asyncio.wait_for(process.stdout.readline(), 20)
    lines.append(json.loads(first))
    if lines[0]["kind"] == "ack" and lines[0]["message"].get("ok"):
        await deliver()
    rest, stderr = await asyncio.wait_for(process.communicate(), 30)
    lines += [json.loads(line) for line in rest.decode().splitlines() if line.strip()]
    assert process.returncode == 0, (lines, stderr.decode())
    return lines


@pytest.mark.parametrize("transport", ["websocket", "polling", "polling,websocket"])
async def test_official_client_subscribes_and_receives(transport: str, server: TestServer,
                                                      http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    payload = load_fixture("v1-stacks-nakamoto-testnet-nft-mint-print-event.json")

    async def deliver() -> None:
        status, _ = await post_webhook(http, url_of(server), payload)
        assert status == 200

    lines = await run_js_client(url_of(server), transport, {"type": "contract", "contractId": MONSTERS}, 4, deliver)
    ack, *pushed = lines
    assert ack["kind"] == "ack" and ack["message"]["ok"] is True
    assert [line["kind"] for line in pushed] == ["chainhook:event"] * 4
    assert [line["message"]["cursor"] for line in pushed] == [1, 2, 3, 4]
    assert [line["message"]["event_type"] for line in pushed] == \
        ["contract_call", "nft_mint_event", "print_event", "print_event"]


async def test_official_client_sees_validation_errors(server: TestServer, db: asyncpg.Connection) -> None:
    async def nothing() -> None:
        return None

    lines = await run_js_client(url_of(server), "websocket", {"event_type": "nope"}, 0, nothing)
    assert lines[0]["message"]["ok"] is False
    assert lines[0]["message"]["error"]["code"] == "invalid_event_type"


async def test_served_browser_client_sees_every_change_once_across_server_disconnects(
        server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection, tmp_path: Path) -> None:
    assert NODE is not None
    async with http.get(url_of(server) + "/client/timebank-realtime.js") as response:
        assert response.status == 200
        assert response.content_type == "text/javascript"
        helper = tmp_path / "timebank-realtime.mjs"
        helper.write_bytes(await response.read())
    await post_webhook(http, url_of(server), nft_block(0))  # history to replay: cursors 1-5
    process = await asyncio.create_subprocess_exec(
        NODE, BROWSER_GLOBALS, str(JS_DIR / "helper-client.mjs"), str(helper), url_of(server), json.dumps({}), "0",
        "100",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=JS_DIR)
    assert process.stdout is not None
    # Keep what comes before "ready" too: the replay can reach the handler before subscribe() returns.
    lines = [json.loads(await asyncio.wait_for(process.stdout.readline(), 20))]
    while lines[-1]["kind"] != "ready":
        lines.append(json.loads(await asyncio.wait_for(process.stdout.readline(), 20)))
    hub = server.app[HUB]
    for number in range(1, 20):
        status, _ = await post_webhook(http, url_of(server), nft_block(number))
        assert status == 200
        if number % 5 == 0:
            # The server drops the socket (as on a resync or an expired token); the client must resume.
            for sid in list(hub.sessions):
                await hub.disconnect(sid)
        await asyncio.sleep(0.03)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    lines += [json.loads(line) for line in out.decode().splitlines()]
    assert process.returncode == 0, (lines[-5:], err.decode())
    changes = [line for line in lines if line["kind"] in ("event", "rollback")]
    events = await event_cursors(db)
    assert [c["cursor"] for c in changes] == events[:100]
    assert lines[-1] == {"kind": "stored", "cursor": str(events[99])}  # storage follows what was delivered
    assert sum(1 for line in lines if line["kind"] == "connected") >= 3  # it came back after disconnects


async def served_browser_client(http: aiohttp.ClientSession, url: str, tmp_path: Path) -> Path:
    """The browser client (the bundle of clients/js) as the server serves it, saved where Node can import it."""
    async with http.get(url + "/client/timebank-realtime.js") as response:
        helper = tmp_path / "timebank-realtime.mjs"
        helper.write_bytes(await response.read())
    return helper


async def monsters_cursors(db: asyncpg.Connection) -> list[int]:
    rows = await db.fetch('SELECT c."cursor" FROM chainhook_changes c JOIN chainhook_events e ON e.id = c.event_id '
                          "WHERE e.contract_id = $1 ORDER BY 1", MONSTERS)
    return [r["cursor"] for r in rows]


async def test_served_browser_client_routes_messages_for_several_subscriptions(
        serve: Any, http: aiohttp.ClientSession, db: asyncpg.Connection, tmp_path: Path) -> None:
    """Two overlapping replays on one socket share their messages (``subscriptions`` names both)."""
    assert NODE is not None
    server = await serve(replay_batch_size=10)
    helper = await served_browser_client(http, url_of(server), tmp_path)
    for number in range(20):
        await post_webhook(http, url_of(server), nft_block(number))
    events = await event_cursors(db)
    monsters = await monsters_cursors(db)
    process = await asyncio.create_subprocess_exec(
        NODE, BROWSER_GLOBALS, str(JS_DIR / "two-subscriptions.mjs"), str(helper), url_of(server),
        json.dumps({}),
        json.dumps({"contract": MONSTERS}), str(len(events)), str(len(monsters)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=JS_DIR)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert process.returncode == 0, (lines[-5:], err.decode())
    assert [line["cursor"] for line in lines if line.get("sub") == "a"] == events
    assert [line["cursor"] for line in lines if line.get("sub") == "b"] == monsters


async def test_served_browser_client_asks_again_when_a_resubscription_is_refused_for_now(
        serve: Any, http: aiohttp.ClientSession, db: asyncpg.Connection, tmp_path: Path) -> None:
    """After a reconnect the client resubscribes everything at once; over the subscribe rate the
    server answers rate_limited, and the client asks again a second later. It once reported the
    refusal and left that subscription silent for the rest of the connection."""
    assert NODE is not None
    server = await serve(subscribe_rate_per_second=1)
    helper = await served_browser_client(http, url_of(server), tmp_path)
    for number in range(2):
        await post_webhook(http, url_of(server), nft_block(number))
    process = await asyncio.create_subprocess_exec(
        NODE, BROWSER_GLOBALS, str(JS_DIR / "resubscribe.mjs"), str(helper), url_of(server), MONSTERS, "15",
        "12",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=JS_DIR)
    assert process.stdout is not None
    lines: list[dict[str, Any]] = []

    async def read_until(key: str) -> None:
        while not lines or key not in lines[-1]:
            line = await asyncio.wait_for(process.stdout.readline(), 20)  # type: ignore[union-attr]
            assert line, (lines[-5:], key)
            lines.append(json.loads(line))

    try:
        await read_until("subscribed")
        hub = server.app[HUB]
        await eventually(lambda: sum(len(s.subscriptions) for s in hub.sessions.values()) == 2)
        for sid in list(hub.sessions):
            await hub.disconnect(sid)
        await read_until("resubscribed")
        await post_webhook(http, url_of(server), nft_block(2))
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    lines += [json.loads(line) for line in out.decode().splitlines()]
    assert process.returncode == 0, (lines[-5:], err.decode())
    assert [line for line in lines if "error" in line] == []
    monsters = await monsters_cursors(db)
    assert [line["cursor"] for line in lines if line.get("sub") == "all"] == await event_cursors(db)
    assert [line["cursor"] for line in lines if line.get("sub") == "contract"] == monsters


async def test_served_browser_client_routes_by_network_and_asset(server: TestServer, http: aiohttp.ClientSession,
                                                          db: asyncpg.Connection, tmp_path: Path) -> None:
    """Live changes come once per socket, untagged, and the client hands each to the subscriptions it
    matches: it must know the network and asset fields, or a network subscription gets everything."""
    assert NODE is not None
    helper = await served_browser_client(http, url_of(server), tmp_path)
    mainnet = {"network": "mainnet"}
    nft = {"network": "TestNet", "asset": f"{MONSTERS}::nft-monsters"}
    process = await asyncio.create_subprocess_exec(
        NODE, BROWSER_GLOBALS, str(JS_DIR / "two-subscriptions.mjs"), str(helper), url_of(server),
        json.dumps(mainnet),
        json.dumps(nft), "6", "1", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=JS_DIR)
    await eventually(lambda: server.app[HUB].registry.subscription_count == 2, within=20)
    await post_webhook(http, url_of(server), load_fixture("v1-stacks-print-event-arkadiko-mainnet-2023.json"))
    await post_webhook(http, url_of(server), load_fixture("v1-stacks-nakamoto-testnet-nft-mint-print-event.json"))
    out, err = await asyncio.wait_for(process.communicate(), 60)
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert process.returncode == 0, (lines[-5:], err.decode())
    by_network = await db.fetch("SELECT last_cursor FROM chainhook_events WHERE network = 'mainnet' ORDER BY 1")
    wanted = await db.fetch("SELECT last_cursor FROM chainhook_events WHERE asset_identifier = $1",
                            f"{MONSTERS}::nft-monsters")
    assert [line["cursor"] for line in lines if line.get("sub") == "a"] == [r[0] for r in by_network]
    assert [line["cursor"] for line in lines if line.get("sub") == "b"] == [r[0] for r in wanted]
