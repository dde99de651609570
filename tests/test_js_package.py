"""The npm package clients/js (timebank-realtime-client) against the real server: each scenario of
clients/conformance.json, the storage adapters, the optimistic manager, and the packed tarball as an
application installs it. The JavaScript side is Node's test runner; each run gets a fresh harness."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from .client_harness import Harness, start_harness
from .conftest import Serve

ROOT = Path(__file__).resolve().parents[1]
JS_DIR = ROOT / "clients" / "js"
CONFORMANCE = json.loads((ROOT / "clients" / "conformance.json").read_text())
SCENARIOS = [scenario["id"] for scenario in CONFORMANCE["scenarios"]]
NODE = shutil.which("node")
NPM = shutil.which("npm")
READY = NODE is not None and NPM is not None and (JS_DIR / "node_modules" / "socket.io-client").is_dir() \
    and (JS_DIR / "dist" / "index.js").is_file()
if not READY and os.environ.get("CI"):
    raise RuntimeError("CI must run the npm package tests: install Node.js, then `npm ci` and `npm run build` "
                       "in clients/js")
pytestmark = pytest.mark.skipif(not READY, reason="needs node, `npm ci` and `npm run build` in clients/js "
                                                  "(make test does all three)")
NODE_SECONDS = 50


async def run(*command: str, cwd: Path, env: dict[str, str] | None = None, within: float = NODE_SECONDS) -> str:
    """Runs a command to its end; answers its output (stdout and stderr together), failing on a bad exit."""
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(within):
            out, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = out.decode(errors="replace")
    assert process.returncode == 0, f"{' '.join(command)} exited with {process.returncode}:\n{text}"
    return text


async def node_test(harness: Harness | None, test_file: str, name: str | None = None,
                    env: dict[str, str] | None = None) -> str:
    """Runs one Node test file (or the one test of it named ``name``) against the harness."""
    assert NODE is not None
    pattern = ["--test-name-pattern", f"^{re.escape(name)}$"] if name else []
    # --test-force-exit: over polling, socket.io-client leaves its pending long-poll to the server, which
    # answers it after a ping timeout (20 s); the tests close their clients, Node need not wait for that.
    output = await run(NODE, "--test", "--test-force-exit", "--test-reporter=tap", *pattern, f"test/{test_file}",
                       cwd=JS_DIR, env={**(harness.env() if harness else {}), **(env or {})})
    assert "# fail 0" in output, output
    return output


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_conformance_scenario(scenario: str, transport: str, serve: Serve) -> None:
    async with start_harness(serve) as harness:
        output = await node_test(harness, "conformance.test.mjs", scenario, env={"TIMEBANK_TRANSPORT": transport})
    # A name pattern that matches nothing passes with every test skipped: make sure this one ran.
    assert "# pass 1\n" in output, output


async def test_conformance_file_has_exactly_the_scenario_ids(serve: Serve) -> None:
    async with start_harness(serve) as harness:
        output = await node_test(harness, "conformance.test.mjs",
                                 "the scenario ids are those of clients/conformance.json")
    assert "# pass 1\n" in output, output


async def test_pure_parts() -> None:
    """The router (client rules), filters, backoff and transaction status, from messages alone."""
    output = await node_test(None, "pure.test.mjs")
    assert "# pass 7\n" in output, output


async def test_storage_adapters(serve: Serve) -> None:
    async with start_harness(serve) as harness:
        output = await node_test(harness, "storage.test.mjs")
    assert "# skipped 0" in output and "# pass 0" not in output, output


async def test_client_tokens(serve: Serve) -> None:
    secret = "s" * 40
    async with start_harness(serve, socket_auth_secret=secret) as harness:
        output = await node_test(harness, "auth.test.mjs", env={"TIMEBANK_TEST_SECRET": secret})
    assert "# pass 2\n" in output, output


async def test_optimistic_manager(serve: Serve) -> None:
    async with start_harness(serve) as harness:
        output = await node_test(harness, "optimistic.test.mjs")
    assert "# pass 4\n" in output, output




@pytest.mark.timeout(300)  # npm pack builds, npm install fetches socket.io-client: more than the default
async def test_packed_tarball_and_its_browser_bundle_receive_a_live_event(serve: Serve, tmp_path: Path) -> None:
    """What an application gets from `npm install timebank-realtime-client`: the tarball alone, with its
    one dependency from the registry, imported by name; and the tarball's browser bundle on its own."""
    assert NPM is not None and NODE is not None
    packed = await run(NPM, "pack", "--json", "--pack-destination", str(tmp_path), cwd=JS_DIR, within=120)
    tarball = tmp_path / json.loads(packed[packed.index("["):])[0]["filename"]
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps({"name": "app", "private": True, "type": "module"}))
    await run(NPM, "install", "--no-audit", "--no-fund", "--loglevel=error", str(tarball), cwd=app, within=120)
    installed = json.loads((app / "node_modules" / "timebank-realtime-client" / "package.json").read_text())
    assert installed["exports"]["./react"] == {"types": "./dist/react.d.ts", "import": "./dist/react.js"}
    assert installed["version"] == "0.1.0" and list(installed["dependencies"]) == ["socket.io-client"]
    assert not (app / "node_modules" / "react").exists()  # an optional peer, not installed for the core
    shutil.copy(JS_DIR / "test" / "installed-app.mjs", app / "main.mjs")
    # The browser bundle, alone in a directory: self-contained (socket.io-client inside), run by Node with
    # the WebSocket a browser has.
    browser = tmp_path / "browser"
    browser.mkdir()
    package = app / "node_modules" / "timebank-realtime-client"
    shutil.copy(package / "dist" / "browser" / "timebank-realtime.js", browser)
    shutil.copy(app / "main.mjs", browser)
    contract = "ST3FFRX7C911PZP5RHE148YDVDD9JWVS6FZRA60VS.monsters"
    async with start_harness(serve) as harness:
        runs = [await run(NODE, "main.mjs", contract, "77", cwd=app, env=harness.env()),
                await run(NODE, "--experimental-websocket", "main.mjs", contract, "78", "./timebank-realtime.js",
                          cwd=browser, env=harness.env())]
    for output in runs:
        result = json.loads(output.strip().splitlines()[-1])
        # One contract call and its two print events, all live, after the subscription's start, in order.
        assert [kind for kind, _, _ in result["received"]] == ["event"] * 3
        cursors = [cursor for _, cursor, _ in result["received"]]
        assert cursors == sorted(cursors) and cursors[0] > result["start"]
        assert {tx for _, _, tx in result["received"]} == {result["tx_hash"]}
