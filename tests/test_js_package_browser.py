"""The npm package's browser bundle in a real browser (Debian's Chromium driven by Playwright) against the
real server: the default storage (localStorage) and indexedDbStorage keep each subscription's cursor,
and a page opened again gets only what the first visit had not delivered."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from .client_harness import Harness, start_harness
from .conftest import Serve, url_of
from .expected import MONSTERS
from .test_js_package import JS_DIR, NPM, READY, run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI must run the browser test: install Debian's chromium (.ci/run does)")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium on PATH"),
              pytest.mark.skipif(not READY, reason="needs node, `npm ci` and `npm run build` in clients/js")]

# A page of "your site": another origin than the service (a loopback server of the test's own), allowed by
# the service's CORS_ALLOWED_ORIGINS. The service's URL is in the query string.
PAGE = """<!doctype html>
<script type="module">
  import { createClient, indexedDbStorage } from "./timebank-realtime.js";
  const query = new URLSearchParams(location.search);
  const [contract, url] = [query.get("contract"), query.get("service")];
  const seen = window.seen = { local: [], idb: [] };
  const errors = window.errors = [];
  const onError = (error) => errors.push(String(error));
  const local = createClient({ url, onError });                // the default storage: localStorage
  const idb = createClient({ url, onError, storage: indexedDbStorage({ name: "test-cursors" }) });
  await local.subscribe({ contract }, (kind, change) => seen.local.push(change.cursor), { key: "local", since: 0 });
  await idb.subscribe({ contract }, (kind, change) => seen.idb.push(change.cursor), { key: "idb", since: 0 });
  window.stored = async () => ({
    local: localStorage.getItem("timebank-realtime:local"),
    idb: await indexedDbStorage({ name: "test-cursors" }).get("timebank-realtime:idb"),
  });
  window.ready = true;
</script>
"""


@pytest.fixture
async def browser_page() -> AsyncIterator[Any]:
    """A page in a fresh context (its own localStorage and IndexedDB); no uncaught page error allowed."""
    from playwright.async_api import async_playwright

    errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        context = await browser.new_context()
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page
        await browser.close()
    assert errors == []


async def deliver(http: aiohttp.ClientSession, harness: Harness, height: int) -> None:
    async with http.post(harness.control_url + "/deliver",
                         json={"kind": "synthetic", "height": height, "events": 2}) as response:
        assert (await response.json())["status"] == 200


async def stored_cursors(http: aiohttp.ClientSession, harness: Harness) -> list[int]:
    async with http.get(harness.url + "/api/events", params={"contract": MONSTERS, "limit": "1000"}) as response:
        return [row["cursor"] for row in (await response.json())["events"]]


@asynccontextmanager
async def site(bundle: str) -> AsyncIterator[str]:
    """The application's own site: the page and the bundle, on a loopback port; answers its origin."""
    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def script(_request: web.Request) -> web.Response:
        return web.Response(text=bundle, content_type="text/javascript")

    app = web.Application()
    app.router.add_get("/index.html", page)
    app.router.add_get("/timebank-realtime.js", script)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield url_of(server)
    finally:
        await server.close()


async def test_browser_bundle_resumes_from_localstorage_and_indexeddb(serve: Serve, browser_page: Any) -> None:
    assert NPM is not None
    await run(NPM, "run", "bundle", cwd=JS_DIR)
    bundle = (JS_DIR / "dist" / "browser" / "timebank-realtime.js").read_text()
    page = browser_page
    async with site(bundle) as origin, start_harness(serve, cors_allowed_origins=origin) as harness, \
            aiohttp.ClientSession() as http:
        page_url = f"{origin}/index.html?" + urlencode({"contract": MONSTERS, "service": harness.url})

        async def seen() -> dict[str, list[int]]:
            value: dict[str, list[int]] = await page.evaluate("window.seen")
            return value

        for height in (1, 2):
            await deliver(http, harness, height)
        await page.goto(page_url)
        await page.wait_for_function("window.ready === true", timeout=20_000)
        await deliver(http, harness, 3)
        first_visit = await stored_cursors(http, harness)
        await page.wait_for_function(f"window.seen.local.length >= {len(first_visit)} "
                                     f"&& window.seen.idb.length >= {len(first_visit)}", timeout=20_000)
        first = await seen()
        assert first == {"local": first_visit, "idb": first_visit}
        # Each storage holds the last delivered cursor (IndexedDB writes land a moment later).
        expected = {"local": str(first_visit[-1]), "idb": str(first_visit[-1])}
        stored: dict[str, Any] = {}

        async def stored_in_page() -> bool:
            stored.update(await page.evaluate("window.stored()"))
            return stored == expected

        for _ in range(100):
            if await stored_in_page():
                break
            await page.wait_for_timeout(50)
        assert stored == expected

        await page.goto("about:blank")  # the page is gone; what comes now it has not delivered
        for height in (4, 5):
            await deliver(http, harness, height)
        await page.goto(page_url)
        await page.wait_for_function("window.ready === true", timeout=20_000)
        await deliver(http, harness, 6)
        everything = await stored_cursors(http, harness)
        missed = [cursor for cursor in everything if cursor > first_visit[-1]]
        await page.wait_for_function(f"window.seen.local.length >= {len(missed)} "
                                     f"&& window.seen.idb.length >= {len(missed)}", timeout=20_000)
        await page.wait_for_timeout(300)
        assert await seen() == {"local": missed, "idb": missed}
        assert len(missed) == 9  # blocks 4, 5 and 6: a contract call and two print events each
        assert await page.evaluate("window.errors") == []
