"""Sending without python-engineio's internals: through its public ``send_packet``, one writer task
per connection, in order. The wire falls back to this when its start-up check finds that the state
direct writes read has moved.

What is lost: direct writes (every message waits for a task), and backpressure. python-engineio's
queue is unbounded and its length is not published, so ``pending`` sees only what waits for our
writer: replays are not paced by the reader, and a reader that stops reading is dropped by
Engine.IO's ping timeout rather than resynced.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass, field

import socketio

from .frames import EncodedPacket, Outgoing

logger = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class Outbox:
    """A connection's messages not yet handed to python-engineio, and the task handing them over."""

    messages: collections.deque[EncodedPacket] = field(default_factory=collections.deque)
    writer: asyncio.Task[None] | None = None
    closed: bool = False


class PublicSender:
    def __init__(self, server: socketio.AsyncServer) -> None:
        self._server = server
        self._writers: set[asyncio.Task[None]] = set()

    def send(self, eio_sid: str, outbox: Outbox, packet: Outgoing) -> bool:
        if outbox.closed:
            return False
        outbox.messages.extend(packet.packets)
        if outbox.writer is None:
            outbox.writer = asyncio.get_running_loop().create_task(self._write(eio_sid, outbox))
            self._writers.add(outbox.writer)
            outbox.writer.add_done_callback(self._writers.discard)
        return True

    @staticmethod
    def pending(outbox: Outbox) -> int:
        return sum(packet.weight for packet in outbox.messages)

    @staticmethod
    async def flush(outbox: Outbox) -> None:
        """Wait until what was sent so far is on Engine.IO's queue, ahead of what comes next."""
        if outbox.writer is not None:
            await asyncio.shield(outbox.writer)

    def close(self) -> None:
        for writer in list(self._writers):
            writer.cancel()

    async def _write(self, eio_sid: str, outbox: Outbox) -> None:
        try:
            while outbox.messages and not outbox.closed:
                await self._server.eio.send_packet(eio_sid, outbox.messages.popleft())
        except Exception as error:  # the connection closed under us: nothing more goes to it
            logger.info("socket eio_sid=%s closed while sending (%s)", eio_sid, type(error).__name__)
            outbox.closed = True
            outbox.messages.clear()
        finally:
            outbox.writer = None
