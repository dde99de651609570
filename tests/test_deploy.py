"""The deployment files: compose is consistent with the settings, nginx.conf passes nginx -t, and nginx
really balances webhooks and Socket.IO (websocket and polling) over two nodes on one database."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import yaml

from timebank_realtime.settings import Settings

from .conftest import Listener, eventually, load_fixture, post_webhook
from .processes import ServiceProcess, free_port

DOCKER = Path(__file__).resolve().parents[1] / "docker"
DEPLOYMENT_DOC = DOCKER.parent / "docs" / "deployment.md"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
if NGINX is None and os.environ.get("CI"):
    raise RuntimeError("CI must check the nginx configuration: install Debian's nginx (.ci/run does)")
needs_nginx = pytest.mark.skipif(NGINX is None, reason="needs Debian's nginx")
OpenListener = Callable[..., Awaitable[Listener]]
# With DATABASE_URL set, as in compose, the embedded PostgreSQL's data dir is not used.
NOT_NEEDED_IN_COMPOSE = {"TIMEBANK_DATA_DIR"}


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return document


def test_compose_references_only_what_exists() -> None:
    document = compose()
    services = document["services"]
    assert {"postgres", "timebank-realtime-1", "timebank-realtime-2", "nginx"} <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in document.get("volumes", {}), f"{name} uses undeclared volume {source}"
        if "build" in service:
            assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).exists()


# The command compose.yaml gives for psql, as docs/deployment.md must give it too.
PSQL_IN_CONTAINER = re.compile(r"docker compose -f docker/compose\.yaml exec (\S+) psql -U (\S+) -d (\S+)")


def test_compose_and_the_docs_say_how_to_reach_psql() -> None:
    match = PSQL_IN_CONTAINER.search((DOCKER / "compose.yaml").read_text())
    assert match, "docker/compose.yaml does not say how to open psql"
    service, user, database = match.groups()
    postgres = compose()["services"][service]
    assert postgres["image"].startswith("postgres:")
    assert (user, database) == (postgres["environment"]["POSTGRES_USER"], postgres["environment"]["POSTGRES_DB"])
    assert match.group(0) in DEPLOYMENT_DOC.read_text()


def test_the_postgres_port_overlay_publishes_on_loopback_only() -> None:
    overlay: dict[str, Any] = yaml.safe_load((DOCKER / "compose.postgres-port.yaml").read_text())
    [(name, service)] = overlay["services"].items()
    postgres = compose()["services"][name]
    ports = service["ports"]
    assert ports and all(port.startswith("127.0.0.1:") for port in ports)
    # The URL the docs give for host tools: the overlay's default host port, the database's user and name.
    host_port = re.fullmatch(r"127\.0\.0\.1:\$\{POSTGRES_PORT:-(\d+)\}:5432", ports[0])
    assert host_port, ports[0]
    env = postgres["environment"]
    password = re.fullmatch(r"\$\{POSTGRES_PASSWORD:-(\w+)\}", env["POSTGRES_PASSWORD"])
    assert password
    url = (f"postgresql://{env['POSTGRES_USER']}:{password[1]}@127.0.0.1:{host_port[1]}/{env['POSTGRES_DB']}")
    docs = DEPLOYMENT_DOC.read_text()
    assert "-f docker/compose.yaml -f docker/compose.postgres-port.yaml up" in docs and url in docs


def test_every_setting_reaches_both_replicas() -> None:
    settings = {name.upper() for name in Settings.model_fields} - NOT_NEEDED_IN_COMPOSE
    for name in ("timebank-realtime-1", "timebank-realtime-2"):
        assert set(compose()["services"][name]["environment"]) == settings


def nginx_config(tmp_path: Path, listen: int, nodes: list[int]) -> Path:
    """docker/nginx.conf with the compose service names pointed at loopback ports."""
    text = (DOCKER / "nginx.conf").read_text().replace("listen 80;", f"listen 127.0.0.1:{listen};")
    for number, port in enumerate(nodes, start=1):
        text = text.replace(f"timebank-realtime-{number}:3000", f"127.0.0.1:{port}")
    # As root, nginx would run its workers as www-data, who cannot enter pytest's private tmp dirs.
    user = "user root;\n" if os.geteuid() == 0 else ""
    text = text.replace("worker_processes auto;", f"{user}worker_processes 1;\npid {tmp_path}/nginx.pid;\n"
                        f"error_log {tmp_path}/error.log;")
    temp = "".join(f"    {kind}_temp_path {tmp_path}/{kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    text = text.replace("http {\n", "http {\n" + temp, 1)
    config = tmp_path / "nginx.conf"
    config.write_text(text)
    return config


def nginx_command(tmp_path: Path, config: Path, *args: str) -> list[str]:
    assert NGINX is not None
    return [NGINX, "-p", str(tmp_path), "-c", str(config), "-e", str(tmp_path / "error.log"),
            "-g", "daemon off;", *args]


@needs_nginx
def test_nginx_configuration_passes_nginx_t(tmp_path: Path) -> None:
    config = nginx_config(tmp_path, free_port(), [free_port(), free_port()])
    result = subprocess.run(nginx_command(tmp_path, config, "-t"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


@pytest.fixture
async def balanced(tmp_path: Path, database_url: str, db: asyncpg.Connection) -> AsyncIterator[str]:
    nodes = [ServiceProcess(tmp_path / f"node-{n}.log", DATABASE_URL=database_url) for n in (1, 2)]
    listen = free_port()
    config = nginx_config(tmp_path, listen, [node.port for node in nodes])
    proxy = await asyncio.create_subprocess_exec(*nginx_command(tmp_path, config), stderr=asyncio.subprocess.PIPE)
    try:
        await asyncio.gather(*(node.wait_ready() for node in nodes))
        url = f"http://127.0.0.1:{listen}"
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(url + "/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
        yield url
    finally:
        proxy.terminate()
        await asyncio.wait_for(proxy.wait(), 10)
        for node in nodes:
            node.stop()


@needs_nginx
async def test_nginx_balances_webhooks_and_sockets(balanced: str, http: aiohttp.ClientSession,
                                                  db: asyncpg.Connection, listener: OpenListener) -> None:
    over_websocket = await listener(balanced, "websocket")
    over_polling = await listener(balanced, "polling")
    await over_websocket.subscribe({})
    await over_polling.subscribe({})
    status, body = await post_webhook(http, balanced, load_fixture("v1-stacks-regtest-stx-lock-event.json"))
    assert (status, body["applied"]) == (200, 9)
    await eventually(lambda: len(over_websocket.received) == 9 and len(over_polling.received) == 9)
    assert over_websocket.cursors == over_polling.cursors == list(range(1, 10))
