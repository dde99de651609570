"""Cursor stores: what a restarted bot reads is what the last one saved, and a crash while saving leaves
the previous file whole."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from timebank_realtime_client import JsonFileCursorStore, MemoryCursorStore, default_cursor_file


def files_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


async def test_a_new_store_on_the_same_file_reads_what_was_saved(tmp_path: Path) -> None:
    path = tmp_path / "state" / "cursors.json"  # its directory is made at the first save
    first = JsonFileCursorStore(path)
    assert await first.load("bot") is None
    await first.save("bot", 41)
    await first.save("other", 7)
    await first.save("bot", 42)
    assert json.loads(path.read_text()) == {"bot": 42, "other": 7}
    assert await JsonFileCursorStore(path).load("bot") == 42
    assert files_in(path.parent) == ["cursors.json"]  # no temporary file left


async def test_a_save_that_fails_before_the_rename_leaves_the_old_file(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cursors.json"
    store = JsonFileCursorStore(path)
    await store.save("bot", 1)

    def crash(*_args: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        await store.save("bot", 2)
    assert json.loads(path.read_text()) == {"bot": 1}
    assert files_in(tmp_path) == ["cursors.json"]


async def test_a_file_that_is_not_a_cursor_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cursors.json"
    path.write_text('{"bot": "12"}')
    with pytest.raises(ValueError, match="not a cursor file"):
        await JsonFileCursorStore(path).load("bot")


def test_the_default_file_is_in_the_user_s_state_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_cursor_file() == tmp_path / "timebank-realtime-client" / "cursors.json"
    assert JsonFileCursorStore().path == default_cursor_file()
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_cursor_file() == Path.home() / ".local" / "state" / "timebank-realtime-client" / "cursors.json"


async def test_the_memory_store_keeps_cursors_for_the_process() -> None:
    store = MemoryCursorStore()
    await store.save("bot", 3)
    assert (await store.load("bot"), await store.load("other")) == (3, None)
