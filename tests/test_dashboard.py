"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against the real server."""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from .conftest import load_fixture, post_webhook, url_of
from .expected import MONSTERS
from .payloads import synthetic_payload

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
NFT = "v1-stacks-nakamoto-testnet-nft-mint-print-event.json"
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI must run the browser test: install Debian's chromium (.ci/run does)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium on PATH")


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page
        await browser.close()
        assert errors == []


async def test_live_view_subscribe_rollback_history_and_offline_assets(
        page: Any, server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    requested: list[str] = []
    failed: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    await page.goto(url_of(server) + "/")
    await page.wait_for_selector('#state[data-state="connected"]')
    await page.wait_for_function("document.querySelector('#subscription').textContent === 'Subscribed to every event.'")

    # The firehose shows everything.
    transfers = load_fixture("v1-stacks-nakamoto-testnet-stx-transfer-block-height-scope.json")
    await post_webhook(http, url_of(server), transfers)
    await page.wait_for_function("document.querySelectorAll('#events tbody tr').length === 2")

    # Narrow it through the form, with the keyboard only.
    await page.get_by_label("Contract").first.focus()
    await page.keyboard.type(MONSTERS)
    await page.get_by_label("Event type").first.select_option("nft_mint_event")
    await page.get_by_role("button", name="Subscribe").press("Enter")
    await page.wait_for_function("document.querySelector('#subscription').textContent.includes('nft_mint_event')")
    payload = load_fixture(NFT)
    await post_webhook(http, url_of(server), payload)
    await page.wait_for_selector('#events tbody tr[data-event-type="nft_mint_event"]')
    assert await page.locator("#events tbody tr").count() == 1
    await page.locator("#events tbody tr summary").click()
    assert '"33"' in await page.locator("#events tbody tr pre").inner_text()
    assert await page.locator('#counters tr[data-event-type="nft_mint_event"] td').nth(1).inner_text() == "1"
    assert await page.locator("#chart rect").count() >= 1

    # A rollback strikes the row through.
    reorg = copy.deepcopy(payload)
    reorg["rollback"], reorg["apply"] = reorg["apply"], []
    await post_webhook(http, url_of(server), reorg)
    await page.wait_for_selector("#events tbody tr.rolled-back")
    # The cursor shown is that of the last change this view received: the mint's rollback.
    rollback_cursor = await db.fetchval(
        "SELECT last_cursor FROM chainhook_events WHERE event_type = 'nft_mint_event'")
    assert await page.locator("#cursor").inner_text() == str(rollback_cursor)

    # History pages /api/events with the same filters.
    history = page.locator("#history-form")
    await history.get_by_label("Event type").select_option("stx_transfer_event")
    await history.get_by_role("button", name="Load").click()
    await page.wait_for_function("document.querySelectorAll('#history tbody tr').length === 2")
    assert "no more" in await page.locator("#history-status").inner_text()
    # Past one page (50 rows), "Next page" follows the cursor.
    await post_webhook(http, url_of(server), synthetic_payload(5000, 70))
    await history.get_by_label("Event type").select_option("print_event")
    await history.get_by_role("button", name="Load").click()
    await page.wait_for_function("document.querySelectorAll('#history tbody tr').length === 50")
    await history.get_by_role("button", name="Next page").click()
    await page.wait_for_function("document.querySelectorAll('#history tbody tr').length === 70")
    cursors = [int(c) for c in await page.locator("#history tbody tr td:first-child").all_inner_texts()]
    assert cursors == sorted(cursors, reverse=True) and len(set(cursors)) == 70
    assert await history.get_by_role("button", name="Next page").is_disabled()

    # Readable at phone width.
    await page.set_viewport_size({"width": 375, "height": 800})
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375 + 1
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # Everything the page loaded came from the service itself: it works offline; and all of it was there.
    assert requested and all(url.startswith(url_of(server)) or url.startswith("ws://127.0.0.1")
                             for url in requested)
    assert failed == []


async def test_token_form_reaches_a_protected_server(page: Any, serve: Any, db: asyncpg.Connection) -> None:
    import time

    import jwt

    secret = "dashboard-socket-secret-0123456789-abcdefgh"
    server = await serve(socket_auth_secret=secret)
    await page.goto(url_of(server) + "/")
    await page.wait_for_selector('#state[data-state="error"]')
    token = jwt.encode({"exp": int(time.time()) + 300}, secret, algorithm="HS256")
    await page.get_by_label("Token").fill(token)
    await page.get_by_role("button", name="Subscribe").click()
    await page.wait_for_selector('#state[data-state="connected"]')
    await page.wait_for_function("document.querySelector('#subscription').textContent.startsWith('Subscribed')")


async def test_favicon(server: TestServer, http: aiohttp.ClientSession) -> None:
    async with http.get(url_of(server) + "/") as response:
        assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in await response.text()
    for path in ("/static/favicon.svg", "/favicon.ico"):
        async with http.get(url_of(server) + path) as response:
            assert response.status == 200
            assert response.content_type == "image/svg+xml"
            assert (await response.text()).startswith("<svg")
