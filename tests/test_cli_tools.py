"""timebank-realtime import and tail, run as commands."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg

from .conftest import load_fixture, post_webhook
from .expected import EXPECTED_ROWS
from .processes import ServiceProcess, service_env

FIXTURES = ["v1-stacks-print-event-arkadiko-mainnet-2023.json", "v1-stacks-contract-call-bns-testnet-2023.json",
            "v1-stacks-nakamoto-testnet-nft-mint-print-event.json", "v1-stacks-regtest-stx-lock-event.json"]
TOTAL = sum(len(EXPECTED_ROWS[name]) for name in FIXTURES)


def ndjson(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def run_import(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "timebank_realtime", "import", *args],
                          env=service_env(DATABASE_URL=database_url), capture_output=True, text=True, timeout=120)


async def test_import_backfills_idempotently_and_reports_bad_lines(tmp_path: Path, database_url: str,
                                                                   db: asyncpg.Connection) -> None:
    lines = [json.dumps(load_fixture(name)) for name in FIXTURES]
    plain = tmp_path / "a.ndjson"
    plain.write_bytes(ndjson([lines[0], "{not json", lines[1]]))
    zipped = tmp_path / "b.ndjson.gz"
    zipped.write_bytes(gzip.compress(ndjson([lines[2], json.dumps({"apply": [{}]}), lines[3]])))

    result = await asyncio.to_thread(run_import, database_url, str(plain), str(zipped), "--batch-events", "7")
    assert result.returncode == 0, result.stderr
    assert f"{plain}:2:" in result.stderr and f"{zipped}:2: $.apply[0]" in result.stderr
    assert f"{TOTAL} new rows" in result.stdout and "2 malformed lines skipped" in result.stdout
    assert "events/s" in result.stderr  # progress lines (not a terminal: plain lines)
    assert await db.fetchval("SELECT count(*) FROM chainhook_events") == TOTAL
    cursors = [r["cursor"] for r in await db.fetch('SELECT "cursor" FROM chainhook_changes ORDER BY 1')]
    assert cursors == list(range(1, TOTAL + 1))

    again = await asyncio.to_thread(run_import, database_url, str(plain), str(zipped))
    assert f"0 new rows, {TOTAL} already stored" in again.stdout
    assert await db.fetchval("SELECT count(*) FROM chainhook_events") == TOTAL


async def test_import_can_abort_at_a_bad_line(tmp_path: Path, database_url: str, db: asyncpg.Connection) -> None:
    good, bad = json.dumps(load_fixture(FIXTURES[0])), json.dumps({"event": {"chain": "stacks"}})
    path = tmp_path / "c.ndjson"
    path.write_bytes(ndjson([good, bad, json.dumps(load_fixture(FIXTURES[1]))]))
    result = await asyncio.to_thread(run_import, database_url, str(path), "--abort-on-error")
    assert result.returncode == 1
    assert f"{path}:2:" in result.stderr and "aborted" in result.stderr
    # The line before the bad one is stored whole (its batch was flushed); nothing after it.
    assert await db.fetchval("SELECT count(*) FROM chainhook_events") in (0, len(EXPECTED_ROWS[FIXTURES[0]]))
    assert await db.fetchval("SELECT count(*) FROM chainhook_events WHERE contract_id LIKE '%.bns'") == 0


def test_import_names_missing_files(database_url: str) -> None:
    result = run_import(database_url, "/nonexistent.ndjson")
    assert result.returncode == 2 and "no such file: /nonexistent.ndjson" in result.stderr


async def test_tail_prints_matching_events(tmp_path: Path, database_url: str, db: asyncpg.Connection,
                                           http: aiohttp.ClientSession) -> None:
    service = ServiceProcess(tmp_path / "service.log", DATABASE_URL=database_url)
    try:
        await service.wait_ready()
        await post_webhook(http, service.url, load_fixture("v1-stacks-regtest-stx-lock-event.json"))
        tail = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "timebank_realtime", "tail", "--url", service.url, "--event-type", "stx_lock_event",
            "--since", "0", "--json", stdout=asyncio.subprocess.PIPE, env=service_env())
        assert tail.stdout is not None
        lines = [json.loads(await asyncio.wait_for(tail.stdout.readline(), 20)) for _ in range(3)]
        tail.terminate()
        await tail.wait()
        assert [line["event_type"] for line in lines] == ["stx_lock_event"] * 3
        assert [line["kind"] for line in lines] == ["event"] * 3
        assert lines[0]["cursor"] < lines[1]["cursor"] < lines[2]["cursor"]
    finally:
        service.stop()


def test_import_on_a_terminal_redraws_one_progress_line(tmp_path: Path, database_url: str) -> None:
    path = tmp_path / "d.ndjson"
    path.write_bytes(ndjson([json.dumps(load_fixture(name)) for name in FIXTURES]))
    leader, follower = os.openpty()
    try:
        process = subprocess.Popen([sys.executable, "-m", "timebank_realtime", "import", str(path),
                                    "--batch-events", "5"], env=service_env(DATABASE_URL=database_url),
                                   stdout=subprocess.PIPE, stderr=follower, text=True)
        out, _ = process.communicate(timeout=120)
        os.close(follower)
        shown = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(leader, 65536):
                shown += chunk
    finally:
        os.close(leader)
    assert process.returncode == 0
    assert shown.count(b"\r\x1b[2K") >= 2  # the same line, redrawn
    assert b"events/s" in shown and b"ETA" in shown
    assert "imported 4 payloads" in out
