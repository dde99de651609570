"""A delivery's PostgreSQL backend killed while the delivery is in its transaction: 503
``database_unavailable``, nothing stored, no ERROR-level traceback, and the service carries on.

The delivery is held at a chosen point by a lock the test's own connection holds: the cursor row
(before COPY), an uncommitted row with the same natural key as one it writes (inside COPY), or an
uncommitted row of ``chainhook_deliveries`` for its chainhook (the last statement before commit).
Its backend is then ended with ``pg_terminate_backend`` from another connection, or the whole
server is killed (``pg_ctl stop -m immediate``). Killing the server needs an embedded PostgreSQL of the test's own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from timebank_realtime.app import create_app
from timebank_realtime.chainhook.models import parse_payload
from timebank_realtime.chainhook.normalize import normalize
from timebank_realtime.keys import TAILER

from .conftest import eventually, fetch_int, load_fixture, make_settings, post_webhook, url_of
from .payloads import synthetic_payload
from .test_database_outage import NFT, OpenListener, OwnPostgres, own_postgres

__all__ = ["own_postgres"]  # the fixture, imported to be used here

PAYLOADS = {
    "small": lambda: load_fixture(NFT),
    # Several MB: while COPY waits on the server, the client is still writing (flow control paused).
    "large": lambda: synthetic_payload(7000, 3000, padding=1500),
}

POINTS = {
    # what the blocker does, in its own open transaction; what the waiting delivery is running
    "before_copy": ("SELECT * FROM chainhook_cursor FOR UPDATE", "SELECT last_cursor FROM chainhook_cursor"),
    "during_copy": ("INSERT INTO chainhook_events (block_hash, tx_hash, event_index, block_height, tx_index, "
                    "event_type, event_data, success, \"timestamp\", last_cursor, source_format) "
                    "VALUES ($1, $2, $3, 1, 0, 'print_event', '{}', TRUE, now(), 1000000, 'v1')", "COPY"),
    "before_commit": ("INSERT INTO chainhook_deliveries (chainhook_uuid, source_format, last_block_height, "
                      "last_delivery_at, deliveries) VALUES ($1, 'v1', 0, now(), 1)", "WITH blocks_given"),
}


def _blocker_arguments(point: str, body: dict[str, Any]) -> tuple[Any, ...]:
    if point == "during_copy":
        # The first row: COPY waits there with the rest of a large delivery still to send.
        return normalize(parse_payload(body)).events[0].natural_key
    if point == "before_commit":
        return (body["chainhook"]["uuid"],)
    return ()


async def _hold(dsn: str, point: str, body: dict[str, Any]) -> asyncpg.Connection:
    """A connection whose open transaction holds what the delivery will wait for at ``point``."""
    statement, _ = POINTS[point]
    blocker = await asyncpg.connect(dsn)
    await blocker.execute("BEGIN")
    await blocker.execute(statement, *_blocker_arguments(point, body))
    return blocker


class Postgres:
    """The session's database: its backends can be terminated, the server is shared and stays up."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def count(self, query: str) -> int:
        return await fetch_int(self.dsn, query)


async def _waiting_backend(postgres: Postgres | OwnPostgres, blocker: asyncpg.Connection, point: str) -> int:
    """The delivery's backend, once it waits for the blocker where this test wants it to."""
    _, running = POINTS[point]
    conn = await asyncpg.connect(postgres.dsn)
    try:
        for _ in range(200):
            # Asked outside the blocker's transaction: there pg_stat_activity would be a snapshot.
            pid = await conn.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> $1 "
                "AND ltrim(query, E' \\n') LIKE $2", blocker.get_server_pid(), running + "%")
            if pid is not None:
                return int(pid)
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise AssertionError(f"the delivery never waited at {point}")


async def _terminate(postgres: Postgres | OwnPostgres, pid: int) -> None:
    conn = await asyncpg.connect(postgres.dsn)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def _assert_unchanged(postgres: Postgres | OwnPostgres) -> None:
    for query in ("SELECT count(*) FROM chainhook_events", "SELECT count(*) FROM chainhook_changes",
                  "SELECT count(*) FROM chainhook_blocks",
                  "SELECT last_cursor FROM chainhook_cursor", "SELECT count(*) FROM chainhook_deliveries"):
        assert await postgres.count(query) == 0, query


def _assert_no_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    # (asyncpg's pool logs its own reconnection attempts with a traceback, at WARNING.)
    ours = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.exc_info and r.name.startswith("timebank")]
    assert ours == []


async def _retry_like_chainhook(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    for _ in range(50):
        status, answer = await post_webhook(http, url, body)
        if status != 503:
            break
        await asyncio.sleep(0.1)
    return status, answer


async def _kill_at(point: str, kill: str, size: str, postgres: Postgres | OwnPostgres, server: TestServer,
                   http: aiohttp.ClientSession, listener: OpenListener, caplog: pytest.LogCaptureFixture) -> None:
    body = PAYLOADS[size]()
    rows = len(normalize(parse_payload(body)).events)
    caplog.set_level(logging.INFO)
    watcher = await listener(url_of(server))
    await watcher.subscribe({})
    await eventually(lambda: server.app[TAILER].listening)
    blocker = await _hold(postgres.dsn, point, body)
    delivery = asyncio.create_task(post_webhook(http, url_of(server), body))
    pid = await _waiting_backend(postgres, blocker, point)
    if kill == "backend":
        await _terminate(postgres, pid)
    else:
        assert isinstance(postgres, OwnPostgres)
        await postgres.kill()
    async with asyncio.timeout(30):
        status, answer = await delivery
    assert (status, answer["error"]["code"]) == (503, "database_unavailable")
    if kill == "backend":
        await blocker.execute("ROLLBACK")
        await blocker.close()
    else:
        blocker.terminate()
        assert isinstance(postgres, OwnPostgres)
        await postgres.start()
    await _assert_unchanged(postgres)

    # Chainhook retries: stored once, and the tailer (reconnected if it had to) pushes it.
    status, answer = await _retry_like_chainhook(http, url_of(server), body)
    assert (status, answer["applied"], answer["cursor"]) == (200, rows, rows + 1)  # the rows, then their block
    await eventually(lambda: len(watcher.cursors) >= rows, within=30)
    assert watcher.cursors == list(range(1, rows + 1))
    _assert_no_error_logged(caplog)
    if kill == "server":
        lost = [r for r in caplog.records if r.name == "timebank_realtime.tailer" and r.levelno == logging.WARNING]
        assert len(lost) == 1 and lost[0].exc_info is None  # one line for the outage, however long
        assert any("tailer reconnected" in r.getMessage() for r in caplog.records)


def _settings(dsn: str, mode: str) -> Any:
    # STREAM_DELIVERY_BYTES=0 stores every delivery while it is parsed (append_stream).
    return make_settings(dsn, stream_delivery_bytes=0 if mode == "streamed" else 8 * 1024 * 1024)


@pytest.mark.parametrize("mode", ["whole", "streamed"])
@pytest.mark.parametrize("size", list(PAYLOADS))
@pytest.mark.parametrize("point", list(POINTS))
async def test_backend_terminated_mid_delivery(point: str, size: str, mode: str, database_url: str,
                                               db: asyncpg.Connection, aiohttp_server: Any,
                                               http: aiohttp.ClientSession, listener: OpenListener,
                                               caplog: pytest.LogCaptureFixture) -> None:
    server = await aiohttp_server(create_app(_settings(database_url, mode)))
    await _kill_at(point, "backend", size, Postgres(database_url), server, http, listener, caplog)


@pytest.mark.parametrize(("point", "size", "mode"), [("before_copy", "small", "whole"),
                                                     ("during_copy", "large", "streamed")])
async def test_server_killed_mid_delivery(point: str, size: str, mode: str, own_postgres: OwnPostgres,
                                          aiohttp_server: Any, http: aiohttp.ClientSession,
                                          listener: OpenListener, caplog: pytest.LogCaptureFixture) -> None:
    server = await aiohttp_server(create_app(_settings(own_postgres.dsn, mode)))
    await _kill_at(point, "server", size, own_postgres, server, http, listener, caplog)


CONNECTION_LOSSES = [
    asyncpg.InternalClientError("cannot switch to state 15; another operation (22) is in progress"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.ConnectionFailureError("connection failure"),
    asyncpg.PostgresConnectionError("protocol violation"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),  # pg_terminate_backend
    asyncpg.CrashShutdownError("terminating connection because of crash of another server process"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.IdleInTransactionSessionTimeoutError("terminating connection due to idle-in-transaction timeout"),
    asyncpg.DeadlockDetectedError("deadlock detected"),  # still there after the delivery's retries
    ConnectionResetError(104, "Connection reset by peer"),
    ConnectionRefusedError(111, "Connect call failed"),
    TimeoutError(),
]


@pytest.mark.parametrize("error", CONNECTION_LOSSES, ids=lambda e: type(e).__name__)
async def test_every_connection_loss_is_database_unavailable(error: BaseException) -> None:
    """The one list of connection-loss errors, which wraps every store operation (a delivery, the
    tailer's read); the kills above show the real ones on the real paths."""
    from timebank_realtime.errors import DatabaseUnavailable
    from timebank_realtime.store.db import unavailable_as_domain_error

    with pytest.raises(DatabaseUnavailable):
        async with unavailable_as_domain_error():
            raise error
