"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against the real server."""

from __future__ import annotations

import copy
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from .conftest import eventually, load_fixture, post_webhook, url_of
from .expected import MONSTERS
from .payloads import synthetic_payload

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
NFT = "v1-stacks-nakamoto-testnet-nft-mint-print-event.json"
ARKADIKO = "v1-stacks-print-event-arkadiko-mainnet-2023.json"
TRANSFERS = "v1-stacks-nakamoto-testnet-stx-transfer-block-height-scope.json"
WRAPPED_BITCOIN = "ST3AXH4EBHD63FCFPTZ8GR29TNTVWDYPGY0KDY5E5.Wrapped-Bitcoin"
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI must run the browser test: install Debian's chromium (.ci/run does)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium on PATH")


NewPage = Callable[..., Awaitable[Any]]


@pytest.fixture
async def new_page() -> AsyncIterator[NewPage]:
    """``await new_page(**context_options)``: a page in a browser context of its own; no page may
    raise an uncaught error."""
    from playwright.async_api import async_playwright

    errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])

        async def open_page(**options: Any) -> Any:
            context = await browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **options})
            page = await context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            return page

        yield open_page
        await browser.close()
    assert errors == []


@pytest.fixture
async def page(new_page: NewPage) -> Any:
    return await new_page()


async def open_dashboard(page: Any, server: TestServer) -> None:
    """Open the dashboard and wait until its opening subscription is made and its page shown."""
    await page.goto(url_of(server) + "/")
    await page.wait_for_selector('#state[data-state="connected"]')
    await page.wait_for_function("document.querySelector('#subscription').textContent === 'Subscribed to every event.'")


def rollback_of(payload: dict[str, Any]) -> dict[str, Any]:
    reorg = copy.deepcopy(payload)
    reorg["rollback"], reorg["apply"] = reorg["apply"], []
    return reorg


async def last_cursor(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT last_cursor FROM chainhook_cursor"))


async def stored_counts(db: asyncpg.Connection) -> dict[str, list[int]]:
    """Per event type: events stored, and how many of them are rolled back now."""
    rows = await db.fetch("SELECT event_type, count(*) AS events, count(*) FILTER (WHERE NOT canonical) AS rolled_back "
                          "FROM chainhook_events GROUP BY event_type")
    return {r["event_type"]: [r["events"], r["rolled_back"]] for r in rows}


async def shown_ids(page: Any, rows: str) -> list[int]:
    return [int(i) for i in await page.locator(rows).evaluate_all("rows => rows.map((r) => r.dataset.id)")]


async def shown_counts(page: Any) -> dict[str, list[int]]:
    return dict(await page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#counters tbody tr')]
        .map((tr) => [tr.dataset.eventType, [Number(tr.cells[1].textContent), Number(tr.cells[2].textContent)]]))"""))


async def chart_total(page: Any) -> int:
    """The events the chart shows, whichever minutes they fell in."""
    titles = await page.locator("#chart rect title").all_text_contents()
    return sum(int(title.rsplit(": ", 1)[1]) for title in titles)


async def caught_up(page: Any, db: asyncpg.Connection, event_type: str | None = None) -> None:
    """Wait until the view has applied the newest stored change (of this type: what it subscribed to);
    the counters are drawn in that same task."""
    cursor = await db.fetchval(
        "SELECT max(last_cursor) FROM chainhook_events WHERE $1::text IS NULL OR event_type = $1", event_type)
    await page.wait_for_function("(cursor) => document.querySelector('#cursor').textContent === cursor",
                                 arg=str(cursor))


async def test_live_view_subscribe_rollback_history_and_offline_assets(
        page: Any, server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    requested: list[str] = []
    failed: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    await open_dashboard(page, server)

    # The firehose shows everything.
    transfers = load_fixture(TRANSFERS)
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
    await post_webhook(http, url_of(server), rollback_of(payload))
    await page.wait_for_selector("#events tbody tr.rolled-back")
    # The cursor shown is that of the last change this view received: the mint's rollback.
    rollback_cursor = await db.fetchval(
        "SELECT last_cursor FROM chainhook_events WHERE event_type = 'nft_mint_event'")
    assert await page.locator("#cursor").inner_text() == str(rollback_cursor)
    # Still one event, now rolled back: a rollback is not a new event.
    assert await shown_counts(page) == {"nft_mint_event": [1, 1]}

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


async def test_opens_on_the_stored_events_then_goes_live_with_nothing_missed_or_doubled(
        page: Any, server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    base = url_of(server)
    transfers, nft = load_fixture(TRANSFERS), load_fixture(NFT)
    for payload in (transfers, nft, rollback_of(nft)):
        await post_webhook(http, base, payload)
    opened_at = await last_cursor(db)

    # The opening page's request is held: changes committed before it is read, and after it is read
    # but before it is shown, reach the page's socket too, and each must still show once, as it is now.
    pushed: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: pushed.append(str(frame))))
    held: list[Any] = []

    async def hold(route: Any) -> None:
        held.append(route)

    await page.route(re.compile(r"/api/events\?"), hold)
    await page.goto(base + "/")
    await page.wait_for_selector('#state[data-state="connected"]')
    await eventually(lambda: bool(held))
    # The subscription is made: the header names where it starts, before any event is shown.
    await page.wait_for_function("(cursor) => document.querySelector('#cursor').textContent === cursor",
                                 arg=str(opened_at))
    await post_webhook(http, base, nft)  # the rolled-back block returns before the page is read
    opening_page = await held[0].fetch()
    await post_webhook(http, base, rollback_of(transfers))  # events of the page change after it was read
    later = synthetic_payload(5000, 3)
    await post_webhook(http, base, later)
    tx_hash = later["apply"][0]["transactions"][0]["transaction_identifier"]["hash"]
    await eventually(lambda: any(tx_hash in frame for frame in pushed))
    await held[0].fulfill(response=opening_page)

    await page.wait_for_function("document.querySelector('#subscription').textContent === 'Subscribed to every event.'")
    await caught_up(page, db)
    stored = await db.fetch("SELECT id, last_cursor, canonical FROM chainhook_events ORDER BY last_cursor DESC")
    assert await shown_ids(page, "#events tbody tr") == [r["id"] for r in stored]  # every event once, newest first
    cursors = await page.locator("#events tbody tr td:first-child").all_inner_texts()
    assert cursors == [str(r["last_cursor"]) for r in stored]
    rolled_back = await shown_ids(page, "#events tbody tr.rolled-back")
    assert rolled_back == [r["id"] for r in stored if not r["canonical"]] and len(rolled_back) == 2
    # A rollback message carries no time or value: the rows keep what the page showed.
    assert await page.locator("#events tbody tr.rolled-back time").count() == 2
    assert await shown_counts(page) == await stored_counts(db)
    # The chart counts what is new since the opening page: the returned block and the new one.
    assert await chart_total(page) == 5 + 4
    assert len(held) == 1


async def test_counters_count_events_and_start_again_with_each_subscription(
        page: Any, server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    base = url_of(server)
    await open_dashboard(page, server)
    payload = load_fixture(NFT)
    await post_webhook(http, base, payload)
    await caught_up(page, db)
    assert await shown_counts(page) == await stored_counts(db) == {
        "contract_call": [1, 0], "nft_mint_event": [1, 0], "print_event": [2, 0], "stx_transfer_event": [1, 0]}

    # A rollback and a restore change the same five events: no new ones.
    await post_webhook(http, base, rollback_of(payload))
    await caught_up(page, db)
    assert await shown_counts(page) == await stored_counts(db) == {
        "contract_call": [1, 1], "nft_mint_event": [1, 1], "print_event": [2, 2], "stx_transfer_event": [1, 1]}
    await post_webhook(http, base, payload)
    await caught_up(page, db)
    assert await shown_counts(page) == await stored_counts(db)
    assert await page.locator("#events tbody tr").count() == 5
    assert await chart_total(page) == 5

    # A new subscription counts afresh: its opening page, nothing of the last one's.
    await page.get_by_label("Event type").first.select_option("nft_mint_event")
    await page.get_by_role("button", name="Subscribe").click()
    await page.wait_for_function("document.querySelector('#subscription').textContent.includes('nft_mint_event')")
    assert await shown_counts(page) == {"nft_mint_event": [1, 0]}
    assert await page.locator("#events tbody tr").count() == 1
    assert await chart_total(page) == 0
    await post_webhook(http, base, rollback_of(payload))
    await caught_up(page, db, "nft_mint_event")
    assert await shown_counts(page) == {"nft_mint_event": [1, 1]}
    assert await chart_total(page) == 0


async def test_long_contract_ids_whole_and_block_times_in_the_readers_locale(
        new_page: NewPage, server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    block = load_fixture("v1-stacks-testnet-block-107605-apply-element.json")
    await post_webhook(http, url_of(server), {"apply": [block], "rollback": [], "chainhook": {"uuid": "dashboard"}})
    await post_webhook(http, url_of(server), load_fixture(NFT))
    page = await new_page(locale="de-DE", timezone_id="Europe/Berlin")
    await open_dashboard(page, server)

    wrapped = page.locator(f'#events td.contract[title="{WRAPPED_BITCOIN}"]')
    assert await wrapped.count() == 4
    for index in range(4):
        contract = wrapped.nth(index)
        assert await contract.inner_text() == WRAPPED_BITCOIN
        assert await contract.evaluate("td => td.scrollWidth <= td.clientWidth")  # not clipped either

    # The block's time, in the reader's locale and time zone, the ISO value on hover.
    times = await db.fetch("SELECT id, timestamp FROM chainhook_events")
    expected = {"2023-06-07T16:26:16+00:00": "7.6.2023, 18:26:16", "2024-11-02T12:36:43+00:00": "2.11.2024, 13:36:43"}
    for row in times:
        time = page.locator(f'#events tr[data-id="{row["id"]}"] time')
        iso = row["timestamp"].isoformat()
        assert await time.get_attribute("datetime") == iso
        assert await time.get_attribute("title") == iso
        assert await time.inner_text() == expected[iso]

    # The history panel shows both the same way.
    await page.locator("#history-form").get_by_role("button", name="Load").click()
    await page.wait_for_function("(n) => document.querySelectorAll('#history tbody tr').length === n", arg=len(times))
    assert await page.locator(f'#history td.contract[title="{WRAPPED_BITCOIN}"]').first.inner_text() == WRAPPED_BITCOIN
    assert set(await page.locator("#history time").all_inner_texts()) == set(expected.values())


async def test_each_networks_tip_and_a_network_selector_for_live_and_history(
        page: Any, server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    await open_dashboard(page, server)
    await post_webhook(http, url_of(server), load_fixture(ARKADIKO))  # mainnet, block 34307
    await post_webhook(http, url_of(server), load_fixture(NFT))       # testnet, block 112195
    await caught_up(page, db)
    await page.reload()  # the tips a page opens on come from /api/status
    await open_dashboard(page, server)
    await page.wait_for_function("document.querySelector('#tip').textContent.includes('testnet 112195')")
    assert re.fullmatch(r"mainnet 34307 \(.+\) · testnet 112195 \(.+\)", await page.locator("#tip").inner_text())

    newest_first = "SELECT id FROM chainhook_events WHERE network = $1 ORDER BY last_cursor DESC"
    by_network = {n: [r[0] for r in await db.fetch(newest_first, n)] for n in ("mainnet", "testnet")}
    await page.locator("#subscribe-form").get_by_label("Network").select_option("mainnet")
    await page.get_by_role("button", name="Subscribe").click()
    await page.wait_for_function("document.querySelector('#subscription').textContent.includes('mainnet')")
    await page.wait_for_function("(n) => document.querySelectorAll('#events tbody tr').length === n",
                                 arg=len(by_network["mainnet"]))
    assert sorted(await shown_ids(page, "#events tbody tr")) == sorted(by_network["mainnet"])

    history = page.locator("#history-form")
    await history.get_by_label("Network").select_option("testnet")
    await history.get_by_role("button", name="Load").click()
    await page.wait_for_function("(n) => document.querySelectorAll('#history tbody tr').length === n",
                                 arg=len(by_network["testnet"]))
    assert await shown_ids(page, "#history tbody tr") == by_network["testnet"]


async def test_favicon(server: TestServer, http: aiohttp.ClientSession) -> None:
    async with http.get(url_of(server) + "/") as response:
        assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in await response.text()
    for path in ("/static/favicon.svg", "/favicon.ico"):
        async with http.get(url_of(server) + path) as response:
            assert response.status == 200
            assert response.content_type == "image/svg+xml"
            assert (await response.text()).startswith("<svg")
