"""timebank-realtime import and tail, run as commands."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gzip
import json
import os
import re
import socket
import struct
import subprocess
import sys
import termios
from importlib.metadata import version
from pathlib import Path

import aiohttp
import asyncpg

from timebank_realtime.settings import AddressSettings, DatabaseSettings, ImportSettings, Settings

from .conftest import load_fixture, post_webhook
from .expected import EXPECTED_ROWS
from .processes import ServiceProcess, free_port, service_env

FIXTURES = ["v1-stacks-print-event-arkadiko-mainnet-2023.json", "v1-stacks-contract-call-bns-testnet-2023.json",
            "v1-stacks-nakamoto-testnet-nft-mint-print-event.json", "v1-stacks-regtest-stx-lock-event.json"]
TOTAL = sum(len(EXPECTED_ROWS[name]) for name in FIXTURES)
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ")


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
    assert result.returncode == 4, result.stderr  # imported, but lines were skipped
    # Not a terminal: no progress bar, no carriage return; each skipped line on a line of its own.
    assert "\r" not in result.stderr
    stderr = [line for line in result.stderr.splitlines() if not LOG_LINE.match(line)]
    assert len(stderr) == 2, result.stderr
    assert stderr[0].startswith(f"skipped malformed line {plain}:2: ")
    assert stderr[1].startswith(f"skipped malformed line {zipped}:2: $.apply[0]")
    assert result.stdout == (f"imported 4 payloads: {TOTAL} new rows, 0 already stored, 0 rolled back, 0 restored, "
                             "2 malformed lines skipped\n")
    assert await db.fetchval("SELECT count(*) FROM chainhook_events") == TOTAL
    cursors = [r["cursor"] for r in await db.fetch('SELECT "cursor" FROM chainhook_changes ORDER BY 1')]
    blocks = await db.fetchval("SELECT count(*) FROM chainhook_blocks")
    assert cursors == list(range(1, TOTAL + blocks + 1)) and blocks > 0  # gapless: the events and their blocks

    again = await asyncio.to_thread(run_import, database_url, str(plain), str(zipped))
    assert again.returncode == 4
    assert f"0 new rows, {TOTAL} already stored, 0 rolled back, 0 restored" in again.stdout
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


def on_a_terminal(*command: str, **env: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run ``command`` with its stderr on a pseudo-terminal 160 columns wide; what it wrote there, as sent."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    try:
        process = subprocess.Popen([sys.executable, "-m", "timebank_realtime", *command], env=service_env(**env),
                                   stdout=subprocess.PIPE, stderr=follower, text=True)
        out, _ = process.communicate(timeout=120)
        os.close(follower)
        shown = b""
        with contextlib.suppress(OSError):  # EIO once the terminal is closed and read to its end
            while chunk := os.read(leader, 65536):
                shown += chunk
    finally:
        os.close(leader)
    return subprocess.CompletedProcess(process.args, process.returncode, out, ""), shown.decode()


def screen(shown: str) -> list[str]:
    """The lines a terminal is left showing: a carriage return moves back to the line's start, and
    what is written then overwrites it."""
    lines = []
    for sent in shown.replace("\r\n", "\n").split("\n"):
        cells: list[str] = []
        column = 0
        for char in sent:
            if char == "\r":
                column = 0
                continue
            cells[column:column + 1] = [char]
            column += 1
        lines.append("".join(cells).rstrip())
    return lines


def test_import_on_a_terminal_redraws_one_progress_line(tmp_path: Path, database_url: str,
                                                        db: asyncpg.Connection) -> None:
    path = tmp_path / "d.ndjson"
    lines = [json.dumps(load_fixture(name)) for name in FIXTURES]
    path.write_bytes(ndjson([lines[0], "{not json", *lines[1:]]))
    result, shown = on_a_terminal("import", str(path), "--batch-events", "5", DATABASE_URL=database_url,
                                  LOG_LEVEL="WARNING")
    assert result.returncode == 4, shown
    assert result.stdout.startswith(f"imported 4 payloads: {TOTAL} new rows, ")
    # Left on screen: the skipped line, on its own line, then the finished bar, once.
    assert "\x1b" not in shown
    left = screen(shown)
    assert len(left) == 3 and left[2] == "", left
    assert left[0].startswith(f"skipped malformed line {path}:2: ")
    assert re.fullmatch(r"import: 100%\|.*\| ([\d.]+k?B)/\1 \[.*, 4 payloads, \d+ events "
                        rf"\({TOTAL} new, 0 already stored\), [\d,]+ events/s\]", left[1]), left[1]
    # Said when met: the bar was drawn before it, and again after it, short of the end.
    before, after = shown.split(left[0], 1)
    assert "import:   0%" in before
    assert int(re.findall(r"import: +(\d+)%", after)[0]) < 100


def run_command(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "timebank_realtime", *args], env=service_env(**env),
                          capture_output=True, text=True, timeout=120)


def test_version_names_the_installed_package() -> None:
    result = run_command("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"timebank-realtime {version('timebank-realtime')}"


def test_bad_settings_name_their_variables_and_never_their_values() -> None:
    result = run_command("serve", SOCKET_AUTH_SECRET="short-but-secret", PORT="eighty",
                         DATABASE_URL="mysql://user:hunter2@localhost/db")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines == ["invalid configuration: DATABASE_URL must be a postgresql:// URL",
                     "invalid configuration: PORT: Input should be a valid integer, unable to parse string as "
                     "an integer",
                     "invalid configuration: SOCKET_AUTH_SECRET must be at least 32 bytes"]
    for value in ("short-but-secret", "eighty", "hunter2"):
        assert value not in result.stderr


def test_a_port_in_use_is_one_line_and_exit_1(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_command("serve", DATABASE_URL=database_url, HOST="127.0.0.1", PORT=str(port))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].endswith(f"cannot listen on 127.0.0.1:{port}: Address already in use")


def test_tail_refuses_a_bad_filter_or_cursor_in_one_line() -> None:
    bad_filter = run_command("tail", "--contract", "SPBAD.x")
    assert bad_filter.returncode == 2
    assert bad_filter.stderr.startswith("timebank-realtime tail: invalid filter: ")
    assert len(bad_filter.stderr.splitlines()) == 1
    bad_cursor = run_command("tail", "--since", "yesterday")
    assert bad_cursor.returncode == 2 and "'yesterday' is not a cursor" in bad_cursor.stderr
    assert "Traceback" not in bad_filter.stderr + bad_cursor.stderr


async def test_tail_finds_the_service_by_host_and_port_and_says_how_its_connection_goes(
        tmp_path: Path, database_url: str, http: aiohttp.ClientSession) -> None:
    nothing_here = free_port()
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "timebank_realtime", "tail", "--since", "0", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=service_env(HOST="0.0.0.0", PORT=str(nothing_here)))
    assert tail.stdout is not None and tail.stderr is not None
    try:
        assert (await asyncio.wait_for(tail.stderr.readline(), 20)).decode().strip() == \
            f"following http://127.0.0.1:{nothing_here}"
        assert "connection failed" in (await asyncio.wait_for(tail.stderr.readline(), 20)).decode()
        service = ServiceProcess(tmp_path / "service.log", port=nothing_here, DATABASE_URL=database_url)
        try:
            await service.wait_ready()
            await post_webhook(http, service.url, load_fixture("v1-stacks-regtest-stx-lock-event.json"))
            first = json.loads(await asyncio.wait_for(tail.stdout.readline(), 30))
            assert first["cursor"] == 1
        finally:
            service.stop()
    finally:
        tail.terminate()
        await tail.wait()


async def test_import_counts_rollbacks_and_restores_and_keeps_each_chainhook_s_height(
        tmp_path: Path, database_url: str, db: asyncpg.Connection) -> None:
    mainnet, regtest = load_fixture(FIXTURES[0]), load_fixture(FIXTURES[3])
    mainnet["chainhook"]["uuid"], regtest["chainhook"]["uuid"] = "mainnet-hook", "regtest-hook"
    reorg = {**mainnet, "apply": mainnet["rollback"], "rollback": mainnet["apply"]}
    rows = len(EXPECTED_ROWS[FIXTURES[0]])
    path = tmp_path / "e.ndjson"
    path.write_bytes(ndjson([json.dumps(p) for p in (mainnet, regtest, reorg, mainnet)]))

    result = await asyncio.to_thread(run_import, database_url, str(path))
    assert result.returncode == 0, result.stderr
    assert (f"{rows + len(EXPECTED_ROWS[FIXTURES[3]])} new rows, 0 already stored, {rows} rolled back, "
            f"{rows} restored, 0 malformed lines skipped") in result.stdout
    heights = {r["chainhook_uuid"]: r["last_block_height"]
               for r in await db.fetch("SELECT chainhook_uuid, last_block_height FROM chainhook_deliveries")}
    assert heights == {"mainnet-hook": mainnet["apply"][0]["block_identifier"]["index"],
                       "regtest-hook": regtest["apply"][0]["block_identifier"]["index"]}


# What each command must read: serve every setting; migrate and import the database and logging ones;
# tail the address serve listens on.
SETTINGS_OF = {"serve": Settings, "migrate": DatabaseSettings, "import": ImportSettings, "tail": AddressSettings}
EVERY_SETTING = {name.upper() for name in Settings.model_fields}


def settings_in_help(command: str) -> list[str]:
    result = run_command(command, "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # as argparse wraps it
    assert "--help" in text
    listed = re.search(r"settings read[^:]*: ([A-Z0-9_, ]+)$", text)
    assert listed is not None, text
    return listed.group(1).split(", ")


def test_each_command_s_help_lists_the_settings_it_reads() -> None:
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (Path(__file__).parents[1] / ".env.example").read_text(),
                                re.MULTILINE))
    for command, model in SETTINGS_OF.items():
        listed = settings_in_help(command)
        assert listed == sorted({name.upper() for name in model.model_fields}), command
        assert set(listed) <= EVERY_SETTING and set(listed) <= documented, command
    assert set(settings_in_help("serve")) == EVERY_SETTING
    assert {"DATABASE_URL", "LOG_FORMAT"} <= set(settings_in_help("import"))
    assert settings_in_help("tail") == ["HOST", "PORT"]


async def test_migrate_and_import_read_no_setting_their_help_does_not_name(tmp_path: Path, database_url: str) -> None:
    # Every other setting made invalid: serve refuses them, migrate and import never look.
    unread = {name: "not-a-number" for name in EVERY_SETTING - set(settings_in_help("migrate"))}
    refused = run_command("serve", DATABASE_URL=database_url, **unread)
    assert refused.returncode == 2
    assert {"PORT", "MAX_PAYLOAD_BYTES", "SOCKET_AUTH_SECRET"} <= {
        line.removeprefix("invalid configuration: ").split(":")[0].split()[0] for line in refused.stderr.splitlines()}
    migrated = await asyncio.to_thread(run_command, "migrate", DATABASE_URL=database_url, **unread)
    assert migrated.returncode == 0, migrated.stderr
    # import reads one more: how to name a Chainhook's network.
    assert set(settings_in_help("import")) == set(settings_in_help("migrate")) | {"CHAINHOOK_NETWORKS"}
    unread_by_import = {name: "not-a-number" for name in EVERY_SETTING - set(settings_in_help("import"))}
    path = tmp_path / "f.ndjson"
    path.write_bytes(ndjson([json.dumps(load_fixture(FIXTURES[3]))]))
    imported = await asyncio.to_thread(run_command, "import", str(path), DATABASE_URL=database_url,
                                       **unread_by_import)
    assert imported.returncode == 0, imported.stderr
    assert "imported 1 payloads" in imported.stdout


def test_tail_reads_host_and_port_as_settings() -> None:
    result = run_command("tail", PORT="eighty")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["invalid configuration: PORT: Input should be a valid integer, unable to "
                                          "parse string as an integer"]
