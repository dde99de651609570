"""SIGTERM drains the node as a load balancer expects, on a real process.

/readyz fails at once; deliveries arriving while it drains get 503 ``shutting_down`` with
``Connection: close``, on new connections and on keep-alive ones opened before the signal; a
delivery in flight finishes, gets its 200 and is stored; sockets are sent off; the process exits 0
within SHUTDOWN_GRACE_SECONDS.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import asyncpg

from .conftest import WEBHOOK, Listener, StartService, load_fixture, post_webhook
from .payloads import nft_block
from .processes import ServiceProcess

OpenListener = Callable[..., Awaitable[Listener]]
NFT = "v1-stacks-nakamoto-testnet-nft-mint-print-event.json"


async def _fresh_get(url: str) -> tuple[int, Any]:
    async with (aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
                http.get(url) as response):
        return response.status, await response.json()


async def _readyz_fails(node: ServiceProcess) -> Any:
    """/readyz once the signal is handled; every answer before that must be a 200, never a refusal."""
    for _ in range(100):
        status, body = await _fresh_get(node.url + "/readyz")
        if status == 503:
            return body
        assert status == 200
        await asyncio.sleep(0.05)
    raise AssertionError("/readyz never failed after SIGTERM")


async def _waiting_on_lock(dsn: str, delivery: asyncio.Task[Any]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(600):
            # Asked outside the blocking transaction, whose view of pg_stat_activity is a snapshot.
            if await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"):
                return
            if delivery.done():
                raise AssertionError(f"the delivery was answered while it should wait: {delivery.result()}")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise AssertionError("the delivery never reached the database")


def _counting_reuse() -> tuple[aiohttp.TraceConfig, SimpleNamespace]:
    seen = SimpleNamespace(created=0, reused=0)
    trace = aiohttp.TraceConfig()

    async def created(*_: Any) -> None:
        seen.created += 1

    async def reused(*_: Any) -> None:
        seen.reused += 1

    trace.on_connection_create_end.append(created)
    trace.on_connection_reuseconn.append(reused)
    return trace, seen


async def test_sigterm_drains_refuses_new_deliveries_and_finishes_the_one_in_flight(
        start_service: StartService, database_url: str, db: asyncpg.Connection,
        listener: OpenListener) -> None:
    grace = 20.0
    # No minimum drain: the delivery in flight alone keeps the node listening.
    node = await start_service(DATABASE_URL=database_url, SHUTDOWN_GRACE_SECONDS=str(grace), SHUTDOWN_DRAIN_SECONDS="0")
    watcher = await listener(node.url)
    await watcher.subscribe({})
    trace, seen = _counting_reuse()
    keep_alive = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), trace_configs=[trace])
    in_flight_http = aiohttp.ClientSession()
    try:
        async with keep_alive.get(node.url + "/healthz") as response:  # opens the connection it keeps
            assert response.status == 200
        # The delivery in flight waits for the cursor row, which the test's own transaction holds.
        await db.execute("BEGIN; SELECT * FROM chainhook_cursor FOR UPDATE")
        in_flight = asyncio.create_task(post_webhook(in_flight_http, node.url, load_fixture(NFT)))
        await _waiting_on_lock(database_url, in_flight)

        node.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert await _readyz_fails(node) == {"status": "unready", "reasons": ["shutting_down"]}

        # On the keep-alive connection opened before the signal, and on a new one: 503 and close.
        async with keep_alive.post(node.url + WEBHOOK, json=nft_block(1)) as response:
            assert (response.status, (await response.json())["error"]["code"]) == (503, "shutting_down")
            assert response.headers["Connection"] == "close"
        assert (seen.created, seen.reused) == (1, 1)
        async with aiohttp.ClientSession() as fresh, fresh.post(node.url + WEBHOOK, json=nft_block(2)) as response:
            assert (response.status, (await response.json())["error"]["code"]) == (503, "shutting_down")
            assert response.headers["Connection"] == "close"

        await db.execute("ROLLBACK")  # the delivery in flight goes on, commits and is answered
        async with asyncio.timeout(grace):
            status, body = await in_flight
        assert (status, body["applied"]) == (200, 5)
        assert await asyncio.to_thread(node.process.wait, grace) == 0
        assert time.monotonic() - signalled < grace
    finally:
        await keep_alive.close()
        await in_flight_http.close()
    assert await db.fetchval("SELECT count(*) FROM chainhook_events") == 5  # only the one in flight
    assert not watcher.client.connected  # sent off, to reconnect elsewhere
    log = node.log()
    assert "shutting down" in log and "stopped" in log
    assert " ERROR " not in log and "Traceback" not in log


async def test_the_node_keeps_answering_for_the_minimum_drain_and_a_second_signal_ends_it(
        start_service: StartService, database_url: str, db: asyncpg.Connection) -> None:
    node = await start_service(DATABASE_URL=database_url, SHUTDOWN_DRAIN_SECONDS="1.5", SHUTDOWN_GRACE_SECONDS="60")
    node.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    await _readyz_fails(node)
    assert node.process.poll() is None
    assert await asyncio.to_thread(node.process.wait, 30) == 0
    assert time.monotonic() - signalled >= 1.5  # still reachable (503) for the whole minimum drain

    slow = await start_service(DATABASE_URL=database_url, SHUTDOWN_DRAIN_SECONDS="50", SHUTDOWN_GRACE_SECONDS="60")
    slow.process.send_signal(signal.SIGTERM)
    await _readyz_fails(slow)
    slow.process.send_signal(signal.SIGTERM)  # an operator who does not want to wait
    assert await asyncio.to_thread(slow.process.wait, 10) == 0
