"""Follows the change log and hands each change, in cursor order, to the publisher.

One tailer per server process. It LISTENs for the NOTIFY each delivery sends at commit, and also
re-reads the log every ``poll_seconds``, so a notification lost with a dropped connection delays
a change by at most that long and never loses it. On any database failure it reconnects with
backoff and resumes from the last cursor it published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from .errors import DatabaseUnavailable
from .store.db import listen
from .store.reads import LogReader

logger = logging.getLogger(__name__)

# Synchronous: a run of changes reaches every socket before anything else happens.
Publish = Callable[[list[dict[str, Any]]], None]


@dataclass(slots=True)
class Pushed:
    """How far the log has been handed to the publisher, and the chain tip as of there: the highest
    block of any network, and under ``networks`` the highest of each."""

    cursor: int
    tip: dict[str, Any]

    def advance(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self._note_tip(record)
        self.cursor = records[-1]["cursor"]

    def _note_tip(self, record: Mapping[str, Any]) -> None:
        self.tip["last_delivery_at"] = record.get("committed_at")
        if record["change"] == "rollback":
            return
        for tip in (self.tip, self.tip.setdefault("networks", {}).setdefault(record["network"], {})):
            height = tip.get("block_height")
            if height is None or record["block_height"] >= height:
                tip["block_height"] = record["block_height"]
                tip["block_hash"] = record["block_hash"]


class Tailer:
    def __init__(self, log: LogReader, dsn: str, publish: Publish, pushed: Pushed, *,
                 poll_seconds: float, batch_size: int, connect_timeout: float) -> None:
        self._log = log
        self._dsn = dsn
        self._publish = publish
        self.pushed = pushed
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._connect_timeout = connect_timeout
        self._wake = asyncio.Event()
        self._head = pushed.cursor
        self._progress_at = time.monotonic()
        self._lost_at: float | None = None  # when the current database outage began, if one has
        self.listening = False

    @property
    def cursor(self) -> int:
        """The last cursor handed to the publisher."""
        return self.pushed.cursor

    def lag(self) -> int:
        """Changes known to be committed (by NOTIFY) that have not been published yet."""
        return max(0, self._head - self.pushed.cursor)

    def seconds_since_progress(self) -> float:
        """Since the tailer last published a change, or last found nothing left to publish."""
        return time.monotonic() - self._progress_at

    async def run(self) -> None:
        """Run until cancelled; never returns on database trouble, only logs and reconnects."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=0.2, max=5),
            before_sleep=self._log_failure,
        ):
            with attempt:
                await self._follow()

    async def _follow(self) -> None:
        conn = await listen(self._dsn, self._on_notify, connect_timeout=self._connect_timeout)
        lost = asyncio.Event()

        def on_terminated(_conn: object) -> None:
            lost.set()
            self._wake.set()

        conn.add_termination_listener(on_terminated)
        self.listening = True
        if self._lost_at is None:
            logger.info("tailer listening from cursor %d", self.pushed.cursor)
        try:
            while True:
                # Catch up first: changes committed while we were not listening are in the log.
                await self._catch_up()
                if self._lost_at is not None:  # listening and reading again: the outage is over
                    logger.info("tailer reconnected after %.1fs; listening from cursor %d",
                                time.monotonic() - self._lost_at, self.pushed.cursor)
                    self._lost_at = None
                if lost.is_set() or conn.is_closed():
                    raise DatabaseUnavailable("the LISTEN connection closed")
                # asyncio.timeout, not wait_for: on 3.11, wait_for drops a cancel that lands in the
                # same loop step as the wake-up (gh-86296), and shutdown then waits for us forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_seconds):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            self.listening = False
            try:
                async with asyncio.timeout(1):
                    await conn.close()
            except Exception:
                conn.terminate()

    def _log_failure(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, DatabaseUnavailable):
            # One WARNING per outage, without a traceback: the retries while it lasts are DEBUG.
            if self._lost_at is None:
                self._lost_at = time.monotonic()
                logger.warning("tailer lost the database (%s); reconnecting from cursor %d", error, self.pushed.cursor)
            else:
                logger.debug("tailer still without the database (%s)", error)
        else:
            logger.error("tailer failed at cursor %d; restarting", self.pushed.cursor, exc_info=error)

    def _on_notify(self, payload: str) -> None:
        if payload.isdigit():
            self._head = max(self._head, int(payload))
        self._wake.set()

    async def _catch_up(self) -> None:
        while True:
            records = await self._log.changes_after(self.pushed.cursor, self._batch_size)
            if not records:
                self._progress_at = time.monotonic()
                return
            self._publish(records)
            # Moved after publish: while it runs, the cursor is what the sockets were given before.
            self.pushed.advance(records)
            self._head = max(self._head, self.pushed.cursor)
            self._progress_at = time.monotonic()
            if len(records) < self._batch_size:
                return

