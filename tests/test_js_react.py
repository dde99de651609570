"""The npm package's React entry (clients/js/src/react.ts) against the real server: its Node tests
(clients/js/test/react.test.mjs) render the hooks with react-test-renderer while they post deliveries,
drop sockets and read /api/status through the test control plane (tests/client_harness.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import asyncpg
import pytest

from .client_harness import start_harness
from .conftest import Serve

PACKAGE = Path(__file__).parent.parent / "clients" / "js"
NODE = shutil.which("node")
NPM = shutil.which("npm")
READY = NODE is not None and NPM is not None and (PACKAGE / "node_modules" / "react-test-renderer").is_dir()
if not READY and os.environ.get("CI"):
    raise RuntimeError("CI must run the React entry's tests: install Node.js and run `npm ci` in clients/js")
pytestmark = pytest.mark.skipif(not READY, reason="needs node and `npm ci` in clients/js (make test does both)")


async def run(*command: str, seconds: float, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Runs a command in the package's directory, killed after `seconds`; answers its status and its output
    (stdout and stderr)."""
    process = await asyncio.create_subprocess_exec(*command, cwd=PACKAGE, env=env, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(seconds):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


# "strict": every tree in <StrictMode> and every effect set up, cleaned up and set up again, as StrictMode
# does on mount with react-dom (react-test-renderer 18 never runs an effect twice): test/strict-effects.mjs.
MODES = {"plain": (), "strict": ("--import", "./test/strict-effects.mjs")}
# The StrictMode test needs the double effects: skipped in plain mode, and only there.
SKIPPED = {"plain": 1, "strict": 0}


async def test_event_list_alone() -> None:
    """The pure part of useRealtimeEvents, on orders a live server gives only by chance."""
    assert NODE is not None
    await build_if_missing()
    status, output = await run(NODE, "--test", "--test-reporter=tap", "test/event-list.test.mjs", seconds=60)
    assert status == 0 and "\n# fail 0\n" in output, output


async def build_if_missing() -> None:
    """make test builds dist/ before pytest; a lone run of this file builds it here."""
    assert NPM is not None
    if not (PACKAGE / "dist" / "react.js").is_file():
        status, output = await run(NPM, "run", "build", seconds=120)
        assert status == 0, output


@pytest.mark.parametrize("mode", MODES)
async def test_react_hooks_against_the_real_server(mode: str, serve: Serve, db: asyncpg.Connection) -> None:
    assert NODE is not None
    await build_if_missing()
    async with start_harness(serve) as harness:
        status, output = await run(NODE, *MODES[mode], "--test", "--test-reporter=tap", "test/react.test.mjs",
                                   env={**os.environ, **harness.env()}, seconds=240)
    assert status == 0, output
    assert "\n# fail 0\n" in output and f"\n# skipped {SKIPPED[mode]}\n" in output, output
