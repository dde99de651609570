"""The OpenAPI document matches the handlers: valid, complete, and fuzzed against the live server."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer
from openapi_spec_validator import validate

from timebank_realtime.http.openapi import openapi_document

from .conftest import load_fixture, post_webhook, url_of
from .processes import ServiceProcess


def test_document_is_valid_openapi() -> None:
    validate(openapi_document())  # type: ignore[arg-type]


async def test_every_http_route_is_documented(server: TestServer, http: aiohttp.ClientSession) -> None:
    documented = {(path, method.upper()) for path, item in openapi_document()["paths"].items() for method in item}
    served = {(route.resource.canonical, route.method) for route in server.app.router.routes()
              if route.method not in ("HEAD", "*") and route.resource is not None
              and not route.resource.canonical.startswith(("/socket.io", "/client", "/static"))
              and route.resource.canonical not in ("/", "/favicon.ico")}
    served.discard(("/api/openapi.json", "GET"))
    assert served == documented
    async with http.get(url_of(server) + "/api/openapi.json") as response:
        assert await response.json() == openapi_document()


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
        tmp_path: Path, server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection,
        database_url: str) -> None:
    for name in ("v1-stacks-print-event-arkadiko-mainnet-2023.json", "v1-stacks-regtest-stx-lock-event.json"):
        await post_webhook(http, url_of(server), load_fixture(name))
    # A separate process: schemathesis makes blocking requests, which this test's event loop must not serve.
    service = ServiceProcess(tmp_path / "service.log", DATABASE_URL=database_url)
    try:
        await service.wait_ready()
        command = [shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis"), "run",
                   f"{service.url}/api/openapi.json", "--checks",
                   "not_a_server_error,status_code_conformance,content_type_conformance,"
                   "response_schema_conformance,response_headers_conformance",
                   "--max-examples", "40", "--seed", "1", "--workers", "1", "--request-timeout", "10",
                   "--phases", "examples,coverage,fuzzing"]
        result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=400,
                                         env={**os.environ, "NO_COLOR": "1"})
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    finally:
        service.stop()
