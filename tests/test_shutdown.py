"""Shutdown must finish: a background task that is cancelled stops, whatever it was doing.

On Python 3.11, ``asyncio.wait_for`` returns normally when the outer task is cancelled in the same
loop step as the awaited thing completes (CPython gh-86296), and the cancellation is lost. The tailer
then runs on and the app's cleanup waits for it forever. The NOTIFY of the last delivery arriving as
the server shuts down is exactly that step; the test makes it happen on purpose.
"""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestServer

from timebank_realtime.keys import TAILER, TAILER_TASK

from .conftest import eventually


async def test_the_tailer_stops_when_cancelled_as_a_notification_arrives(server: TestServer) -> None:
    tailer, task = server.app[TAILER], server.app[TAILER_TASK]
    await eventually(lambda: tailer.listening)
    await asyncio.sleep(0.1)  # past its catch-up: idle, waiting for a wake-up or the poll interval
    # What asyncpg does when a NOTIFY comes in, then the cleanup's cancel, in the same loop step.
    tailer._on_notify("1")
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert task in done, "the tailer went on running after it was cancelled"
    assert task.cancelled()
