"""Watching a transaction you broadcast: its status from the changes of a ``{"tx_hash": …}`` subscription
(docs/protocol.md, ``chainhook:rollback``: "pending until its event arrives, reverted if a rollback
names it"). The status logic is pure (``next_status``); ``TransactionWatch`` lets a program wait on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

from .models import Change, Event, Rollback

TransactionStatus = Literal["pending", "confirmed", "rolled_back", "failed"]


def next_status(current: TransactionStatus, change: Change) -> TransactionStatus:
    """``confirmed`` once an event of it is stored (``failed`` if stored with ``success: false``);
    ``rolled_back`` when a rollback names it; a reorg that brings it back confirms (or fails) it again."""
    if isinstance(change, Event):
        return "confirmed" if change.success else "failed"
    if isinstance(change, Rollback):
        return "rolled_back"
    return current


class TransactionWatch:
    """The status of one transaction, kept up to date by the client (``TimebankClient.watch_transaction``)."""

    def __init__(self, tx_hash: str, on_status: Callable[[TransactionStatus], Awaitable[None] | None] | None = None,
                 ) -> None:
        self.tx_hash = tx_hash.lower()
        self.status: TransactionStatus = "pending"
        # Every status it has had, in order: a waiter misses none, however quickly they follow.
        self.history: list[TransactionStatus] = ["pending"]
        self.changes: list[Event | Rollback] = []
        self._on_status = on_status
        self._changed = asyncio.Condition()
        self.close: Callable[[], Awaitable[None]] = _nothing_to_close

    async def handle(self, change: Change) -> None:
        """A change of the watched transaction, in cursor order (the subscription's handler)."""
        if isinstance(change, Event | Rollback):
            self.changes.append(change)
        status = next_status(self.status, change)
        if status == self.status:
            return
        self.status = status
        self.history.append(status)
        async with self._changed:
            self._changed.notify_all()
        if self._on_status is not None:
            result = self._on_status(status)
            if result is not None:
                await result

    async def until(self, *statuses: TransactionStatus) -> TransactionStatus:
        """Wait until the status is, or becomes, one of ``statuses``; the first of them it reached (bound
        the wait with ``asyncio.timeout``)."""
        start = len(self.history) - 1
        async with self._changed:
            await self._changed.wait_for(lambda: any(s in statuses for s in self.history[start:]))
        return next(s for s in self.history[start:] if s in statuses)


async def _nothing_to_close() -> None:
    return None
