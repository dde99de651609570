"""Readiness and Prometheus metrics (logs: test_logs.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer

from .conftest import Listener, StartService, eventually, load_fixture, post_webhook, url_of

OpenListener = Callable[..., Awaitable[Listener]]
NFT = "v1-stacks-nakamoto-testnet-nft-mint-print-event.json"


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if labels else ''} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name} {labels} not in metrics"
    return float(match.group(1))


async def readyz(http: aiohttp.ClientSession, server: TestServer) -> tuple[int, dict[str, Any]]:
    async with http.get(url_of(server) + "/readyz") as response:
        return response.status, await response.json()


async def test_readyz_reports_ready_once_the_tailer_listens(server: TestServer, http: aiohttp.ClientSession,
                                                            db: asyncpg.Connection) -> None:
    # Right after start the tailer may still be connecting: unready, and saying so.
    status, body = await readyz(http, server)
    assert status == 200 or body["reasons"] == ["the tailer is not connected to the database"]
    for _ in range(100):
        status, body = await readyz(http, server)
        if status == 200:
            break
        await asyncio.sleep(0.05)
    assert (status, body["status"]) == (200, "ready")


async def test_readyz_fails_when_a_migration_is_missing(server: TestServer, http: aiohttp.ClientSession,
                                                        db: asyncpg.Connection) -> None:
    removed = await db.fetchrow("DELETE FROM schema_migrations WHERE version = "
                                "(SELECT max(version) FROM schema_migrations) RETURNING *")
    try:
        status, body = await readyz(http, server)
        assert status == 503
        assert body["status"] == "unready" and "migrations applied up to" in body["reasons"][0]
    finally:
        await db.execute("INSERT INTO schema_migrations VALUES ($1, $2, $3, $4)", *removed.values())


async def test_metrics_count_deliveries_changes_sockets_and_messages(
        server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection, listener: OpenListener) -> None:
    client = await listener(url_of(server))
    await client.subscribe({"event_type": "print_event"})
    await client.subscribe({})
    payload = load_fixture(NFT)
    await post_webhook(http, url_of(server), payload)
    await post_webhook(http, url_of(server), payload)
    await post_webhook(http, url_of(server), b"not json")
    await eventually(lambda: len(client.received) == 5)
    async with http.get(url_of(server) + "/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    assert metric(text, "timebank_webhook_deliveries_total", format="v1", status="200") == 2
    assert metric(text, "timebank_webhook_deliveries_total", format="unknown", status="400") == 1
    assert metric(text, "timebank_changes_total", change="apply") == 5
    assert metric(text, "timebank_duplicate_rows_total") == 5
    assert metric(text, "timebank_sockets_connected") == 1
    assert metric(text, "timebank_subscriptions", kind="event_type") == 1
    assert metric(text, "timebank_subscriptions", kind="firehose") == 1
    assert metric(text, "timebank_messages_emitted_total", event="chainhook:event") == 5
    written = [metric(text, "timebank_socket_writes_total", path=path) for path in ("direct", "queued")]
    assert written[0] > 0 and sum(written) >= 5 + 2  # the changes, the two eose (and any heartbeat)
    assert metric(text, "timebank_push_latency_seconds_count") == 6  # the five events' changes and their block's
    assert metric(text, "timebank_tailer_lag_cursors") == 0
    assert metric(text, "timebank_webhook_delivery_seconds_count") == 3


async def test_a_served_process_freezes_what_it_started_with(start_service: StartService, database_url: str,
                                                             http: aiohttp.ClientSession) -> None:
    service = await start_service(DATABASE_URL=database_url)
    async with http.get(service.url + "/metrics") as response:
        text = await response.text()
    # Modules, classes and the app's own objects: tens of thousands, out of every full collection.
    assert metric(text, "timebank_gc_frozen_objects") > 10_000
