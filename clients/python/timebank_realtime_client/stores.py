"""Where a subscription's cursor is kept between runs of a process, under the subscription's ``key``.

A store holds, per key, the cursor of the last change whose handler has returned; a client started
again with the same store and key resumes after it. Any object with these two coroutines is a store
(a table of your database, Redis, ...); two come with the client: ``JsonFileCursorStore`` (the default)
and ``MemoryCursorStore``.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Protocol


class CursorStore(Protocol):
    async def load(self, key: str) -> int | None:
        """The cursor saved under ``key``, or None if there is none."""

    async def save(self, key: str, cursor: int) -> None:
        """Keep ``cursor`` under ``key``; it has been handled."""


class MemoryCursorStore:
    """Cursors for the life of the process (a test, or a client that always starts from ``since``)."""

    def __init__(self) -> None:
        self.cursors: dict[str, int] = {}

    async def load(self, key: str) -> int | None:
        return self.cursors.get(key)

    async def save(self, key: str, cursor: int) -> None:
        self.cursors[key] = cursor


def default_cursor_file() -> Path:
    """``$XDG_STATE_HOME/timebank-realtime-client/cursors.json`` (``~/.local/state/…`` when unset):
    per user, beside other programs' state, wherever the bot is started from."""
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "timebank-realtime-client" / "cursors.json"


class JsonFileCursorStore:
    """All keys in one JSON object, ``{"my-bot": 1042, …}``, rewritten whole at each save through a
    temporary file in the same directory and a rename: a crash leaves the old file or the new one,
    never half of one. Saves are made one at a time, off the event loop."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_cursor_file()
        self._cursors: dict[str, int] | None = None
        self._lock = asyncio.Lock()

    async def load(self, key: str) -> int | None:
        async with self._lock:
            cursors = await self._read()
            return cursors.get(key)

    async def save(self, key: str, cursor: int) -> None:
        async with self._lock:
            cursors = await self._read()
            cursors[key] = cursor
            await asyncio.to_thread(_write_atomically, self.path, json.dumps(cursors, sort_keys=True))

    async def _read(self) -> dict[str, int]:
        # Read once: this process is the file's only writer from then on.
        if self._cursors is None:
            self._cursors = await asyncio.to_thread(_read_cursors, self.path)
        return self._cursors


def _read_cursors(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
        raise ValueError(f"{path} is not a cursor file (a JSON object of integer cursors)")
    return {str(key): value for key, value in data.items()}


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
            file.flush()
            # On disk before the rename, so that a power cut cannot leave the new name on empty data.
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
