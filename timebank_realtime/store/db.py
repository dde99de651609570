"""Connections to PostgreSQL: the pool and its jsonb codec, the one list of errors that mean the
server is out of reach (raised as DatabaseUnavailable), and the LISTEN connection of the tailer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from .. import jsoncodec
from ..errors import DatabaseUnavailable
from ..events import RawJson

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "chainhook_changes"

# Every way asyncpg reports that the server went away, could not be reached, or ended the session
# mid-operation. A delivery that meets one of them was rolled back (or never began): it is answered
# 503 ``database_unavailable`` and Chainhook retries it. The one list; nothing else catches these.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable: the socket itself
    TimeoutError,  # connect or pool acquire timed out; also a COPY abandoned on a lost connection
    asyncpg.PostgresConnectionError,  # class 08, and ConnectionDoesNotExistError ("closed in the middle")
    asyncpg.InterfaceError,  # "connection is closed", "another operation is cancelling", ...
    # The protocol state machine after the socket died under it ("cannot switch to state 15", "not
    # connected"); OutdatedSchemaCacheError, a subclass, also clears on a retry.
    asyncpg.InternalClientError,
    # Class 57: pg_terminate_backend and shutdown (57P01 AdminShutdown), a crashed sibling (57P02),
    # "the database system is starting up" (57P03), a dropped database, statement_timeout (57014).
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,  # class 53: too many connections, disk full, out of memory
    asyncpg.PostgresSystemError,  # class 58: I/O errors on the server
    # Class 25P0x: the server ended an idle transaction or one that ran too long.
    asyncpg.IdleInTransactionSessionTimeoutError,
    asyncpg.TransactionTimeoutError,
    # Class 40 (a deadlock, a serialization failure) still there after the delivery's own retries:
    # transient, nothing was stored, and a later retry goes through.
    asyncpg.TransactionRollbackError,
)


@asynccontextmanager
async def unavailable_as_domain_error() -> AsyncIterator[None]:
    try:
        yield
    except _UNAVAILABLE as error:
        raise DatabaseUnavailable(f"{type(error).__name__}: {error}") from error


class Database:
    """The pool as the readers and the writer use it: every operation takes a connection within
    ``acquire_timeout`` and reports the server out of reach as DatabaseUnavailable."""

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        async with unavailable_as_domain_error(), self._pool.acquire(timeout=self._acquire_timeout) as conn:
            yield conn

    async def fetch(self, query: str, *arguments: Any) -> list[dict[str, Any]]:
        async with self.connection() as conn:
            return [dict(r) for r in await conn.fetch(query, *arguments)]


_JSONB_VERSION = b"\x01"  # jsonb's binary wire format: a version byte, then the JSON text


def _encode_jsonb(value: Any) -> bytes:
    if isinstance(value, RawJson):
        return _JSONB_VERSION + value.encode()
    return _JSONB_VERSION + jsoncodec.dumps_bytes(value)


def _decode_jsonb(data: bytes) -> Any:
    return jsoncodec.loads(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary, so that COPY (binary only) can write jsonb columns too.
    await conn.set_type_codec("jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog",
                              format="binary")


async def create_pool(dsn: str, *, min_size: int, max_size: int, connect_timeout: float,
                      retry_seconds: float) -> asyncpg.Pool:
    """Open the pool, retrying while the server is still starting (compose brings both up at once)."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(_UNAVAILABLE),
        stop=stop_after_delay(retry_seconds),
        wait=wait_exponential(multiplier=0.2, max=3),
        reraise=True,
        before_sleep=lambda state: logger.warning("database not reachable yet (%s); retrying",
                                                  state.outcome.exception() if state.outcome else ""),
    ):
        with attempt:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, timeout=connect_timeout, init=_init_connection
            )
    return pool


async def listen(dsn: str, callback: Callable[[str], None], *, connect_timeout: float
                 ) -> asyncpg.Connection:
    """A dedicated connection LISTENing on the change channel; ``callback`` gets each payload."""
    async with unavailable_as_domain_error():
        conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=connect_timeout)

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            callback(payload)

        try:
            await conn.add_listener(NOTIFY_CHANNEL, on_notify)
        except BaseException:
            conn.terminate()  # cancelled or failed half-way: do not leave the connection behind
            raise
        return conn
