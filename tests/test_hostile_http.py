"""Hostile HTTP (issue 11): every input found by fuzzing gets a precise JSON 4xx, changes nothing, and
logs no secret; nothing gets aiohttp's own text/plain answers or a 5xx."""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import re
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from timebank_realtime.store.deliveries import DeliveryWriter

from .conftest import WEBHOOK, Serve, eventually, load_fixture, url_of
from .processes import ServiceProcess
from .test_client_auth import SECRET as SOCKET_SECRET
from .test_client_auth import mint, refused

FIXTURE = "v1-stacks-regtest-stx-lock-event.json"
WEBHOOK_SECRET = "webhook-secret-that-must-never-reach-a-log-0123456789"


class Raw:
    """A response read off a raw socket: status, headers (lower-cased names) and body bytes."""

    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = {name.strip().lower(): value.strip()
                        for name, _, value in (line.partition(":") for line in lines[1:])}
        if self.headers.get("transfer-encoding") == "chunked":
            self.body = _unchunk(self.body)
        self.raw = data

    def json(self) -> Any:
        return json.loads(self.body)


def _unchunk(data: bytes) -> bytes:
    out = b""
    for _ in range(10_000):
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2:]
    raise AssertionError("too many chunks")


async def raw_exchange(port: int, request: bytes, *, within: float = 10) -> Raw:
    """Send ``request`` over a fresh connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(within):
            data = await reader.read(-1)
    finally:
        writer.close()
    return Raw(data)


def post_request(body: bytes, *headers: bytes, path: bytes = WEBHOOK.encode()) -> bytes:
    head = [b"POST " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Content-Type: application/json",
            b"Content-Length: " + str(len(body)).encode(), b"Connection: close", *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def port_of(server: TestServer) -> int:
    assert server.port is not None
    return server.port


async def stored_rows(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval("SELECT (SELECT count(*) FROM chainhook_events) + "
                                   "(SELECT count(*) FROM chainhook_deliveries)")
    return count


def assert_json_error(response: Raw, status: int, code: str) -> None:
    assert response.status == status, response.raw[:500]
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert response.json()["error"]["code"] == code, response.body


# --- authorization ---------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [b"Authorization: Bearer \xff", b"Authorization: \xfe\xff",
                                    b"X-Chainhook-Consumer-Secret: s\xe9cret\xff"])
async def test_a_secret_header_that_is_not_utf8_is_unauthorized(header: bytes, serve: Serve,
                                                               db: asyncpg.Connection) -> None:
    server = await serve(chainhook_webhook_secret=WEBHOOK_SECRET)
    body = json.dumps(load_fixture(FIXTURE)).encode()
    response = await raw_exchange(port_of(server), post_request(body, header))
    assert_json_error(response, 401, "unauthorized")
    assert await stored_rows(db) == 0


# --- Content-Encoding on the webhook -------------------------------------------------------------

async def post(http: aiohttp.ClientSession, server: TestServer, body: bytes,
               headers: dict[str, str]) -> tuple[aiohttp.ClientResponse, Any]:
    async with http.post(url_of(server) + WEBHOOK, data=body, headers=headers) as response:
        return response, await response.json(content_type=None)


@pytest.mark.parametrize(("coding", "status", "code"), [
    ("gzip", 400, "invalid_content_encoding"),  # declared, but the body is plain JSON
    ("deflate", 400, "invalid_content_encoding"),
    ("br", 415, "unsupported_content_encoding"),
    ("zstd", 415, "unsupported_content_encoding"),
    ("rot13", 415, "unsupported_content_encoding"),
    ("gzip, gzip", 415, "unsupported_content_encoding"),
])
async def test_a_content_encoding_we_cannot_decode_is_refused(coding: str, status: int, code: str, serve: Serve,
                                                              http: aiohttp.ClientSession,
                                                              db: asyncpg.Connection) -> None:
    server = await serve()
    body = json.dumps(load_fixture(FIXTURE)).encode()
    response, answer = await post(http, server, body, {"Content-Encoding": coding})
    assert (response.status, answer["error"]["code"]) == (status, code), answer
    assert response.content_type == "application/json"
    if status == 415:
        assert response.headers["Accept-Encoding"] == "gzip, deflate"
    assert await stored_rows(db) == 0


@pytest.mark.parametrize(("coding", "compress"), [
    ("gzip", gzip.compress),
    ("x-gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some clients send it
    ("identity", lambda data: data),
])
async def test_compressed_deliveries_are_stored(coding: str, compress: Any, serve: Serve,
                                                http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    server = await serve()
    response, answer = await post(http, server, compress(json.dumps(load_fixture(FIXTURE)).encode()),
                                  {"Content-Encoding": coding})
    assert response.status == 200, answer
    assert answer["applied"] > 0


async def test_a_truncated_gzip_body_is_refused(serve: Serve, http: aiohttp.ClientSession,
                                                db: asyncpg.Connection) -> None:
    server = await serve()
    zipped = gzip.compress(json.dumps(load_fixture(FIXTURE)).encode())
    response, answer = await post(http, server, zipped[: len(zipped) // 2], {"Content-Encoding": "gzip"})
    assert (response.status, answer["error"]["code"]) == (400, "invalid_content_encoding")
    assert await stored_rows(db) == 0


async def test_a_gzip_bomb_is_payload_too_large(serve: Serve, http: aiohttp.ClientSession,
                                                db: asyncpg.Connection) -> None:
    server = await serve(max_payload_bytes=100_000)
    bomb = gzip.compress(b" " * 20_000_000, compresslevel=9)
    assert len(bomb) < 100_000
    response, answer = await post(http, server, bomb, {"Content-Encoding": "gzip"})
    assert (response.status, answer["error"]["code"]) == (413, "payload_too_large")
    assert await stored_rows(db) == 0


# --- history API ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "param"), [
    ("limit=%C2%B2", "limit"),  # superscript two: str.isdigit() says yes, int() says no
    ("limit=%E2%91%A0", "limit"),  # circled one
    ("after=%D9%A1%D9%A2", "after"),  # Arabic-Indic twelve: int() accepts it, the API must not
    ("before=%C2%B2", "before"),
    ("from_height=%D9%A1", "from_height"),
    ("to_height=%E2%91%A0", "to_height"),
    ("after=9223372036854775808", "after"),  # beyond bigint
    ("before=99999999999999999999999999", "before"),
    ("after=-1", "after"),
    ("limit=0", "limit"),
    ("limit=", "limit"),
    ("after=", "after"),
    ("tx_hash=", "tx_hash"),
    ("contract=", "contract"),
    ("address=", "address"),
    ("event_type=", "event_type"),
    ("order=", "order"),
    ("success=", "success"),
    ("include_rolled_back=", "include_rolled_back"),
    ("limit=1&limit=2", "limit"),
    ("tx_hash=0x" + "a" * 64 + "&tx_hash=0x" + "b" * 64, "tx_hash"),
    ("=1", ""),
])
async def test_bad_history_parameters_are_400(query: str, param: str, server: TestServer,
                                              http: aiohttp.ClientSession) -> None:
    async with http.get(URL(url_of(server) + "/api/events?" + query, encoded=True)) as response:
        answer = await response.json()
        assert response.status == 400, answer
    assert answer["error"]["code"] == "invalid_parameter"
    assert answer["error"]["param"] == param


@pytest.mark.parametrize("raw_id", ["%C2%B2", "%D9%A1%D9%A2", "%E2%91%A0", "9223372036854775808", "-1", "1.0"])
async def test_bad_event_ids_are_400(raw_id: str, server: TestServer, http: aiohttp.ClientSession) -> None:
    async with http.get(URL(url_of(server) + "/api/events/" + raw_id, encoded=True)) as response:
        answer = await response.json()
        assert response.status == 400, answer
    assert answer["error"] == {"code": "invalid_parameter", "message": answer["error"]["message"], "param": "id"}


# --- socket tokens -------------------------------------------------------------------------------

@pytest.mark.parametrize(("claims", "code"), [
    ({"exp": 10**400}, "token_invalid"), ({"exp": 1e300}, "token_invalid"), ({"exp": math.inf}, "token_invalid"),
    ({"exp": 10**400, "iat": -(10**400)}, "token_invalid"), ({"iat": 10**400}, "token_invalid"),
    ({"nbf": 10**400}, "token_invalid"), ({"exp": -(10**400)}, "token_expired"),
])
async def test_absurd_numeric_claims_are_refused_with_a_token_code(claims: dict[str, Any], code: str,
                                                                   serve: Serve) -> None:
    server = await serve(socket_auth_secret=SOCKET_SECRET)
    error = await refused(url_of(server), {"token": mint(claims)})
    assert error["data"]["code"] == code


# --- error shape of everything -------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", WEBHOOK, {"POST"}),
    ("PUT", WEBHOOK, {"POST"}),
    ("DELETE", "/api/events", {"GET", "HEAD"}),
    ("POST", "/api/status", {"GET", "HEAD"}),
])
async def test_405_names_the_allowed_methods(method: str, path: str, allow: set[str], server: TestServer,
                                             http: aiohttp.ClientSession) -> None:
    async with http.request(method, url_of(server) + path) as response:
        assert response.status == 405
        assert response.content_type == "application/json"
        assert {m.strip() for m in response.headers["Allow"].split(",")} == allow
        assert (await response.json())["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/vendor/nope.js", "/static/../app.py",
                                  "/client/nope.js"])
async def test_missing_static_files_are_json_not_found(path: str, server: TestServer,
                                                       http: aiohttp.ClientSession) -> None:
    async with http.get(URL(url_of(server) + path, encoded=True)) as response:
        assert response.status == 404
        assert response.content_type == "application/json"
        assert (await response.json())["error"]["code"] == "not_found"


async def test_static_files_are_still_served(server: TestServer, http: aiohttp.ClientSession) -> None:
    async with http.get(url_of(server) + "/static/dashboard.js") as response:
        assert response.status == 200
        assert "javascript" in response.content_type
    async with http.head(url_of(server) + "/static/dashboard.css") as response:
        assert response.status == 200


async def test_an_unexpected_webhook_failure_is_a_counted_json_500(serve: Serve, http: aiohttp.ClientSession,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug nobody expected")

    monkeypatch.setattr(DeliveryWriter, "apply_delivery", broken)
    server = await serve()
    response, answer = await post(http, server, json.dumps(load_fixture(FIXTURE)).encode(), {})
    assert response.status == 500
    assert answer["error"]["code"] == "internal_error"
    tracebacks = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert [str(error) for error in tracebacks] == ["a bug nobody expected"]
    async with http.get(url_of(server) + "/metrics") as metrics:
        text = await metrics.text()
    assert re.search(r'timebank_webhook_deliveries_total\{format="unknown",status="500"\} 1\.0', text), text


# --- aiohttp's own parser errors, against the real process --------------------------------------

@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[ServiceProcess]:
    process = ServiceProcess(tmp_path_factory.mktemp("hostile") / "service.log", DATABASE_URL=database_url,
                             CHAINHOOK_WEBHOOK_SECRET=WEBHOOK_SECRET)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(process.url + "/healthz", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                assert process.process.poll() is None and time.monotonic() < deadline, process.log()
                time.sleep(0.1)
        yield process
    finally:
        process.stop()


SECRET_BYTES = WEBHOOK_SECRET.encode()
_AUTH = b"Authorization: Bearer " + SECRET_BYTES
_GOOD = [b"Host: 127.0.0.1", b"Content-Type: application/json"]

MALFORMED = {
    "header_too_long": b"\r\n".join([b"POST " + WEBHOOK.encode() + b" HTTP/1.1", *_GOOD,
                                     _AUTH + b"x" * 9000, b"Content-Length: 2"]) + b"\r\n\r\n{}",
    "bad_content_length": b"\r\n".join([b"POST " + WEBHOOK.encode() + b" HTTP/1.1", *_GOOD, _AUTH,
                                        b"Content-Length: 2" + SECRET_BYTES]) + b"\r\n\r\n{}",
    "nul_in_header": b"\r\n".join([b"POST " + WEBHOOK.encode() + b" HTTP/1.1", *_GOOD,
                                   b"X-Chainhook-Consumer-Secret: " + SECRET_BYTES + b"\x00",
                                   b"Content-Length: 2"]) + b"\r\n\r\n{}",
    "invalid_method": b"P\x01ST /" + SECRET_BYTES + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "invalid_url": b"GET /" + SECRET_BYTES + b"\x7f\x01 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "bad_version": b"GET /" + SECRET_BYTES + b" HTTP/9" + SECRET_BYTES + b"\r\nHost: 127.0.0.1\r\n\r\n",
    "header_without_colon": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + SECRET_BYTES + b"\r\n\r\n",
    "bad_chunk": b"\r\n".join([b"POST " + WEBHOOK.encode() + b" HTTP/1.1", *_GOOD, _AUTH,
                               b"Transfer-Encoding: chunked"]) + b"\r\n\r\nzz" + SECRET_BYTES + b"\r\n{}\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_requests_the_http_parser_refuses_get_json_and_no_echo(name: str, service: ServiceProcess) -> None:
    before = len(service.log())
    response = await raw_exchange(service.port, MALFORMED[name])
    assert_json_error(response, 400, "bad_request")
    assert WEBHOOK_SECRET.encode() not in response.raw
    await asyncio.sleep(0.2)
    log = service.log()[before:]
    assert WEBHOOK_SECRET not in log
    assert "Traceback" not in log and " ERROR " not in log, log
    assert len([line for line in log.splitlines() if "bad HTTP request" in line]) == 1, log


async def test_a_client_that_aborts_mid_upload_is_one_quiet_line(service: ServiceProcess,
                                                                 db: asyncpg.Connection) -> None:
    before = len(service.log())
    _reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    head = post_request(b"", _AUTH).replace(b"Content-Length: 0", b"Content-Length: 100000")
    writer.write(head + b'{"apply": [' + b" " * 5000)
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()
    await eventually(lambda: "aborted" in service.log()[before:], within=5)
    await asyncio.sleep(0.3)
    log = service.log()[before:]
    assert "Traceback" not in log and " ERROR " not in log, log
    assert len(log.strip().splitlines()) == 1, log
    assert " INFO " in log
    assert await stored_rows(db) == 0


@pytest.mark.parametrize(("headers", "coding"), [
    ([], "identity"), (["identity"], "identity"), (["GZIP"], "gzip"), ([" gzip "], "gzip"),
    (["identity, gzip"], "gzip"), (["x-gzip"], "x-gzip"), (["Deflate"], "deflate"), ([""], "identity"),
    (["gzip", "gzip"], None), (["gzip, deflate"], None), (["br"], None), (["compress"], None),
])
def test_content_coding_header_parsing(headers: list[str], coding: str | None) -> None:
    from timebank_realtime.http.bodies import content_coding

    assert content_coding(headers) == coding
