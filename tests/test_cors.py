"""CORS on /api/* and /client/* (timebank_realtime/http/cors.py): over HTTP against the real server, then
in a real browser (Debian's Chromium driven by Playwright) on a page served from another origin."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from timebank_realtime.app import create_app
from timebank_realtime.http.cors import add_vary

from .conftest import WEBHOOK, Serve, load_fixture, make_settings, post_webhook, url_of

APP = "https://app.timebank.example"
OTHER = "https://evil.example"
TRANSFERS = "v1-stacks-nakamoto-testnet-stx-transfer-block-height-scope.json"
NFT = "v1-stacks-nakamoto-testnet-nft-mint-print-event.json"
CORS_PATHS = ["/api/events", "/api/status", "/api/openapi.json", "/client/timebank-realtime.js"]
# Error answers on /api/*: a bad parameter, an unknown event, a path with no route, a method not taken.
ERRORS = [("GET", "/api/events?limit=0", 400, "invalid_parameter"), ("GET", "/api/events/999", 404, "not_found"),
          ("GET", "/api/nothing-here", 404, "not_found"), ("POST", "/api/events", 405, "method_not_allowed"),
          ("GET", "/client/nothing.js", 404, "not_found")]
NOT_CORS_PATHS = ["/metrics", "/healthz", "/readyz", "/", "/static/dashboard.js"]
CORS_HEADERS = ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
                "Access-Control-Expose-Headers", "Access-Control-Allow-Credentials", "Access-Control-Max-Age")


def vary(response: aiohttp.ClientResponse) -> set[str]:
    return {item.strip().lower() for item in response.headers.get("Vary", "").split(",") if item.strip()}


def cors_headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    return {name: response.headers[name] for name in CORS_HEADERS if name in response.headers}


async def preflight(http: aiohttp.ClientSession, url: str, origin: str, method: str = "GET",
                    headers: str | None = None) -> aiohttp.ClientResponse:
    request_headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        request_headers["Access-Control-Request-Headers"] = headers
    async with http.options(url, headers=request_headers) as response:
        await response.read()
        return response


# --- over HTTP ------------------------------------------------------------------------------------

async def test_an_allowed_origin_may_read_the_api_the_client_and_the_errors(
        serve: Serve, http: aiohttp.ClientSession) -> None:
    server = await serve(cors_allowed_origins=[APP, "https://admin.timebank.example"])
    for path in CORS_PATHS:
        for method in ("GET", "HEAD"):
            async with http.request(method, url_of(server) + path, headers={"Origin": APP}) as response:
                assert response.status == 200, path
                assert response.headers["Access-Control-Allow-Origin"] == APP, (method, path)
                assert "origin" in vary(response), path
                assert response.headers["Access-Control-Expose-Headers"] == "Server-Timing"
                # Credentials are never allowed, so an allowed origin is named, never "*" with cookies.
                assert "Access-Control-Allow-Credentials" not in response.headers
    for method, path, status, code in ERRORS:
        async with http.request(method, url_of(server) + path, headers={"Origin": APP}) as response:
            assert response.status == status, path
            assert (await response.json())["error"]["code"] == code
            assert response.headers["Access-Control-Allow-Origin"] == APP, path
            assert "origin" in vary(response), path
    # The answer depends on Origin even when there is none: a cache must not serve it to a page.
    async with http.get(url_of(server) + "/api/events") as response:
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "origin" in vary(response)


async def test_a_preflight_from_an_allowed_origin_is_granted_for_reads_only(
        serve: Serve, http: aiohttp.ClientSession) -> None:
    server = await serve(cors_allowed_origins=[APP])
    for path in [*CORS_PATHS, "/api/events/7", "/api/transactions/0xab"]:
        response = await preflight(http, url_of(server) + path, APP, headers="x-request-id, accept-language")
        assert response.status == 204, path
        assert response.headers["Access-Control-Allow-Origin"] == APP
        assert response.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
        assert response.headers["Access-Control-Allow-Headers"] == "x-request-id, accept-language"
        assert int(response.headers["Access-Control-Max-Age"]) > 0
        assert {"origin", "access-control-request-method", "access-control-request-headers"} <= vary(response)
    response = await preflight(http, url_of(server) + "/api/status", APP, method="HEAD")
    assert response.status == 204 and "Access-Control-Allow-Headers" not in response.headers
    # Not granted: a method these paths do not take, a path with no route, a header name that is none.
    for path, method, headers in [("/api/events", "POST", None), ("/api/events", "DELETE", None),
                                  ("/api/nothing-here", "GET", None), ("/api/events", "GET", "x-a, bad header")]:
        response = await preflight(http, url_of(server) + path, APP, method=method, headers=headers)
        assert response.status in (404, 405), (path, method)
        assert cors_headers(response) == {}, (path, method)


async def test_an_origin_not_allowed_gets_no_cors_and_no_preflight(serve: Serve, http: aiohttp.ClientSession) -> None:
    server = await serve(cors_allowed_origins=[APP])
    # Near misses of the allowed origin are other origins.
    for origin in (OTHER, APP + "/", "http://app.timebank.example", APP + ":8443", "null"):
        for path in CORS_PATHS:
            async with http.get(url_of(server) + path, headers={"Origin": origin}) as response:
                assert response.status == 200
                assert cors_headers(response) == {}, (origin, path)
                assert "origin" in vary(response)
        async with http.get(url_of(server) + "/api/events?limit=0", headers={"Origin": origin}) as response:
            assert response.status == 400 and cors_headers(response) == {}
        response = await preflight(http, url_of(server) + "/api/events", origin, headers="x-request-id")
        assert response.status == 405  # OPTIONS as the application answers it without CORS
        assert cors_headers(response) == {}


async def test_no_cors_on_the_webhook_metrics_health_and_the_dashboard(
        serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    server = await serve(cors_allowed_origins=[APP, "*"])
    status, _ = await post_webhook(http, url_of(server), load_fixture(TRANSFERS), headers={"Origin": APP})
    assert status == 200
    async with http.post(url_of(server) + WEBHOOK, data=b"{", headers={"Origin": APP}) as response:
        assert response.status == 400 and cors_headers(response) == {} and "origin" not in vary(response)
    async with http.post(url_of(server) + WEBHOOK, json=load_fixture(NFT), headers={"Origin": APP}) as response:
        assert response.status == 200 and cors_headers(response) == {}
    response = await preflight(http, url_of(server) + WEBHOOK, APP, method="POST", headers="content-type")
    assert response.status == 405 and cors_headers(response) == {}
    for path in NOT_CORS_PATHS:
        async with http.get(url_of(server) + path, headers={"Origin": APP}) as response:
            assert response.status == 200, path
            assert cors_headers(response) == {} and "origin" not in vary(response), path
        response = await preflight(http, url_of(server) + path, APP)
        assert response.status == 405 and cors_headers(response) == {}, path


@pytest.mark.parametrize(("setting", "allowed"), [
    ([], set()),
    ([APP], {APP}),
    (["*"], {APP, OTHER}),
    ([APP, "*"], {APP, OTHER}),  # python-engineio reads a list holding "*" as any origin too
])
async def test_http_and_socketio_read_the_setting_alike(
        serve: Serve, http: aiohttp.ClientSession, setting: list[str], allowed: set[str]) -> None:
    server = await serve(cors_allowed_origins=setting)
    for origin in (APP, OTHER):
        # Socket.IO's own check: Engine.IO's handshake refuses a foreign origin with a 400.
        async with http.get(url_of(server) + "/socket.io/?EIO=4&transport=polling",
                            headers={"Origin": origin}) as response:
            assert (response.status == 200) == (origin in allowed), (setting, origin)
        async with http.get(url_of(server) + "/api/events", headers={"Origin": origin}) as response:
            assert ("Access-Control-Allow-Origin" in response.headers) == (origin in allowed), (setting, origin)
        granted = await preflight(http, url_of(server) + "/api/events", origin, headers="x-request-id")
        assert (granted.status == 204) == (origin in allowed), (setting, origin)
    async with http.get(url_of(server) + "/api/events") as response:
        if not setting:  # same origin only: no CORS header, no Vary, ever
            assert cors_headers(response) == {} and "origin" not in vary(response)
        elif "*" in setting:  # one answer for every origin, none named: cacheable without Vary
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            assert "origin" not in vary(response)
            assert "Access-Control-Allow-Credentials" not in response.headers
            assert (await preflight(http, url_of(server) + "/client/timebank-realtime.js", OTHER)
                    ).headers["Access-Control-Allow-Origin"] == "*"


async def test_a_not_modified_client_file_keeps_its_cors_headers(serve: Serve, http: aiohttp.ClientSession) -> None:
    server = await serve(cors_allowed_origins=[APP])
    url = url_of(server) + "/client/timebank-realtime.js"
    async with http.get(url, headers={"Origin": APP}) as response:
        assert response.status == 200
        etag = response.headers["ETag"]
    async with http.get(url, headers={"Origin": APP, "If-None-Match": etag}) as response:
        assert response.status == 304
        assert response.headers["Access-Control-Allow-Origin"] == APP and "origin" in vary(response)


def test_vary_keeps_what_is_there() -> None:
    response = web.Response(headers={"Vary": "Accept-Encoding"})
    add_vary(response, "Origin")
    add_vary(response, "origin", "Access-Control-Request-Method")
    assert response.headers["Vary"] == "Accept-Encoding, Origin, Access-Control-Request-Method"
    anything = web.Response(headers={"Vary": "*"})
    add_vary(anything, "Origin")
    assert anything.headers["Vary"] == "*"


# --- in a real browser ----------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI must run the browser test: install Debian's chromium (.ci/run does)")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium on PATH")
# The page's own copy of socket.io-client, for when the service's browser client cannot be loaded: the
# suite's pinned one (tests/js, which make test installs).
SOCKET_IO_BUNDLE = Path(__file__).resolve().parent / "js" / "node_modules" / "socket.io-client" / "dist" / \
    "socket.io.esm.min.js"
if not SOCKET_IO_BUNDLE.is_file() and os.environ.get("CI"):
    raise RuntimeError("CI must run the browser test: run `npm ci` in tests/js (make test does)")
needs_socket_io = pytest.mark.skipif(not SOCKET_IO_BUNDLE.is_file(), reason="needs `npm ci` in tests/js")

# A page of another site that uses the service as docs/js-client.md shows: the service's browser client
# (the npm package's bundle), history and live events. Each step records what it got, or the error
# the browser gave it, in window.result.
PAGE = """<!doctype html>
<meta charset="utf-8">
<title>another origin</title>
<script type="module">
const service = new URLSearchParams(location.search).get("service");
const helper = `${service}/client/timebank-realtime.js`;
const result = window.result = { received: [] };
const attempt = async (name, work) => {
  try { result[name] = await work(); } catch (error) { result[name + "Error"] = `${error.name}: ${error.message}`; }
};
const json = async (response) => ({ status: response.status, body: await response.json(),
                                    timing: response.headers.get("Server-Timing") });
// (a) the browser client, as a module script element (always fetched in CORS mode) and as a dynamic import
await attempt("script", () => new Promise((resolve, reject) => {
  const script = Object.assign(document.createElement("script"),
    { type: "module", crossOrigin: "anonymous", src: helper });
  script.onload = () => resolve("loaded");
  script.onerror = () => reject(new Error("the script did not load"));
  document.head.append(script);
}));
await attempt("helper", async () => typeof (await import(helper)).createClient);
// (b) the history API: a simple request, one with a header that needs a preflight, an error
await attempt("events", async () => json(await fetch(`${service}/api/events?limit=10`)));
await attempt("preflighted", async () =>
  json(await fetch(`${service}/api/status`, { headers: { "X-Request-Id": "page-1" } })));
await attempt("error", async () => json(await fetch(`${service}/api/events?limit=0`)));
// (c) live events through the browser client (or, when it cannot be loaded, socket.io-client alone)
if (result.helper) {
  await attempt("subscribed", async () => {
    const { createClient } = await import(helper);
    const onError = (error) => { result.clientError = String(error); };
    const client = createClient({ url: service, onError });
    await client.subscribe({}, (kind, change) => result.received.push({ kind, cursor: change.cursor,
                                                                      event_type: change.event_type }));
    return true;
  });
} else {
  const { io } = await import("./socket.io.esm.min.js");
  await attempt("socket", () => new Promise((resolve, reject) => {
    const socket = io(service, { transports: ["websocket"], reconnection: false });
    socket.on("connect", () => resolve("connected"));
    socket.on("connect_error", (error) => { socket.close(); reject(error); });
  }));
}
result.done = true;
</script>
"""


def page_app() -> web.Application:
    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def bundle(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(SOCKET_IO_BUNDLE)

    app = web.Application()
    app.router.add_get("/page.html", page)
    app.router.add_get("/socket.io.esm.min.js", bundle)
    return app


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        await browser.close()


async def open_page(browser: Any, page_server: TestServer, service: TestServer) -> Any:
    """The page in a fresh browser context (no cache shared with another origin's page), once it ran."""
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{url_of(page_server)}/page.html?service={url_of(service)}")
    await page.wait_for_function("window.result && window.result.done === true", timeout=15_000)
    assert errors == []
    return page


@needs_chromium
@needs_socket_io
async def test_a_page_on_another_origin_loads_the_helper_reads_history_and_gets_live_events(
        aiohttp_server: Any, database_url: str, db: asyncpg.Connection, http: aiohttp.ClientSession,
        browser: Any) -> None:
    # browser last: it closes first, with its sockets, before the servers stop.
    allowed_page: TestServer = await aiohttp_server(page_app())
    foreign_page: TestServer = await aiohttp_server(page_app())  # another port: another origin
    allowed, foreign = url_of(allowed_page), url_of(foreign_page)
    assert allowed != foreign

    app = create_app(make_settings(database_url, cors_allowed_origins=[allowed]))
    seen: list[tuple[str, str, str | None, str | None]] = []  # what the service answered, to whom

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        seen.append((request.method, request.path_qs, request.headers.get("Origin"),
                     response.headers.get("Access-Control-Allow-Origin")))

    app.on_response_prepare.append(record)
    service: TestServer = await aiohttp_server(app)
    assert (await post_webhook(http, url_of(service), load_fixture(TRANSFERS)))[0] == 200
    async with http.get(url_of(service) + "/api/events?limit=10") as response:
        stored = await response.json()
    assert stored["events"]

    # From the allowed origin: everything works.
    page = await open_page(browser, allowed_page, service)
    result = await page.evaluate("window.result")
    assert result["script"] == "loaded" and result["helper"] == "function"
    assert result["events"]["status"] == 200 and result["events"]["body"] == stored
    assert result["events"]["timing"].startswith("app;dur=")  # exposed to the page
    assert result["preflighted"]["status"] == 200 and result["preflighted"]["body"]["events_stored"] == 2
    assert result["error"]["status"] == 400 and result["error"]["body"]["error"]["param"] == "limit"
    assert result["subscribed"] is True and "clientError" not in result
    assert ("OPTIONS", "/api/status", allowed, allowed) in seen  # the browser's preflight, granted

    assert (await post_webhook(http, url_of(service), load_fixture(NFT)))[0] == 200
    live = await db.fetch("SELECT c.cursor, e.event_type FROM chainhook_changes c JOIN chainhook_events e "
                          "ON e.id = c.event_id WHERE c.cursor > $1 ORDER BY c.cursor",
                          max(event["cursor"] for event in stored["events"]))
    assert live
    await page.wait_for_function(f"window.result.received.length >= {len(live)}", timeout=10_000)
    received = await page.evaluate("window.result.received")
    assert received == [{"kind": "event", "cursor": row["cursor"], "event_type": row["event_type"]} for row in live]

    # The same page from an origin not in the list: the browser blocks every read.
    seen.clear()
    page = await open_page(browser, foreign_page, service)
    result = await page.evaluate("window.result")
    assert result["scriptError"] == "Error: the script did not load"
    assert result["helperError"].startswith("TypeError: Failed to fetch dynamically imported module")
    for name in ("events", "preflighted", "error"):
        assert result[f"{name}Error"] == "TypeError: Failed to fetch", name
        assert name not in result
    assert "socketError" in result and "socket" not in result
    # The service saw the requests and answered them, with no Access-Control-Allow-Origin.
    asked = {(method, path) for method, path, origin, _ in seen if origin == foreign}
    assert {("GET", "/client/timebank-realtime.js"), ("GET", "/api/events?limit=10"),
            ("GET", "/api/events?limit=0"), ("OPTIONS", "/api/status")} <= asked
    assert ("GET", "/api/status") not in asked  # its preflight was not granted: never sent
    assert all(acao is None for _, path, origin, acao in seen
               if origin == foreign and not path.startswith("/socket.io"))
