"""Webhook deliveries being handled, so that a drain can wait for them to be answered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from aiohttp import web
from aiohttp.typedefs import Handler


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()

    def counted(self, handler: Handler) -> Handler:
        """``handler``, tracked while it runs."""

        async def counted(request: web.Request) -> web.StreamResponse:
            with self.track():
                return await handler(request)

        return counted
