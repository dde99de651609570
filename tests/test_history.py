"""The history API over the real server and database: pagination, filters, errors, and the handoff to
a socket subscription."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from timebank_realtime.keys import HUB

from .conftest import Listener, event_cursors, eventually, load_fixture, post_webhook, url_of
from .expected import ARKADIKO_USER, BNS, MONSTERS
from .v2_payloads import DIKO_TRANSFER

OpenListener = Callable[..., Awaitable[Listener]]
FIXTURES = ["v1-stacks-print-event-arkadiko-mainnet-2023.json", "v1-stacks-contract-call-bns-testnet-2023.json",
            "v1-stacks-nakamoto-testnet-nft-mint-print-event.json",
            "v1-stacks-nakamoto-testnet-stx-transfer-block-height-scope.json", "v1-stacks-regtest-stx-lock-event.json"]
NFT_TX = "0x8a99f0e1b16e61e94363bffad5069775f1d2b9b62afe485a253eb6ead378839d"


async def get(http: aiohttp.ClientSession, server: TestServer, path: str, **params: Any) -> tuple[int, Any]:
    async with http.get(url_of(server) + path, params=params) as response:
        assert response.headers["Server-Timing"].startswith("app;dur=")
        return response.status, await response.json()


@pytest.fixture
async def loaded(server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection) -> TestServer:
    for name in FIXTURES:
        assert (await post_webhook(http, url_of(server), load_fixture(name)))[0] == 200
    return server


async def page_all(http: aiohttp.ClientSession, server: TestServer, **params: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    key = "before" if params.get("order") == "desc" else "after"
    cursor = None
    for _ in range(100):
        status, body = await get(http, server, "/api/events", **params, **({key: cursor} if cursor else {}))
        assert status == 200, body
        events += body["events"]
        cursor = body["next"]
        if cursor is None:
            return events
        assert len(body["events"]) == int(params.get("limit", 100))
    raise AssertionError("did not reach the end")


async def sql_ids(db: asyncpg.Connection, where: str, *args: Any, order: str = "ASC") -> list[int]:
    rows = await db.fetch(f"SELECT id FROM chainhook_events WHERE {where} ORDER BY last_cursor {order}", *args)
    return [r["id"] for r in rows]


async def test_pages_cover_everything_once_in_cursor_order(loaded: TestServer, http: aiohttp.ClientSession,
                                                           db: asyncpg.Connection) -> None:
    asc = await page_all(http, loaded, limit="4")
    assert [e["id"] for e in asc] == await sql_ids(db, "canonical")
    assert [e["cursor"] for e in asc] == sorted(e["cursor"] for e in asc)
    desc = await page_all(http, loaded, limit="7", order="desc")
    assert [e["id"] for e in desc] == list(reversed([e["id"] for e in asc]))


@pytest.mark.parametrize(
    ("params", "where", "args"),
    [
        ({"contract": MONSTERS}, "contract_id = $1", [MONSTERS]),
        ({"address": ARKADIKO_USER}, "$1 = ANY(affected_addresses)", [ARKADIKO_USER]),
        ({"event_type": ["print_event", "stx_lock_event"]}, "event_type = ANY($1::text[])",
         [["print_event", "stx_lock_event"]]),
        ({"tx_hash": NFT_TX}, "tx_hash = $1", [NFT_TX]),
        ({"tx_hash": NFT_TX.upper().replace("0X", "0x")}, "tx_hash = $1", [NFT_TX]),
        ({"from_height": "6743", "to_height": "112193"}, "block_height BETWEEN 6743 AND 112193", []),
        ({"success": "false"}, "NOT success", []),
        ({"contract": BNS, "success": "true", "event_type": "print_event"},
         "contract_id = $1 AND success AND event_type = 'print_event'", [BNS]),
    ],
)
async def test_each_filter_returns_exactly_its_rows(params: dict[str, Any], where: str, args: list[Any],
                                                    loaded: TestServer, http: aiohttp.ClientSession,
                                                    db: asyncpg.Connection) -> None:
    query: list[tuple[str, str]] = []
    for name, value in params.items():
        query += [(name, v) for v in (value if isinstance(value, list) else [value])]
    async with http.get(url_of(loaded) + "/api/events", params=query) as response:
        body = await response.json()
    assert response.status == 200, body
    expected = await sql_ids(db, f"canonical AND {where}", *args)
    assert expected
    assert [e["id"] for e in body["events"]] == expected


@pytest.mark.parametrize("order", ["ASC", "DESC"])
@pytest.mark.parametrize(("params", "where"), [
    ({"from_height": "6743", "to_height": "112193"}, "block_height BETWEEN 6743 AND 112193"),
    ({"from_height": "6743"}, "block_height >= 6743"),
    ({"to_height": "112193", "success": "true"}, "block_height <= 112193 AND success"),
])
async def test_a_height_range_pages_in_cursor_order_both_ways(params: dict[str, str], where: str, order: str,
                                                             loaded: TestServer, http: aiohttp.ClientSession,
                                                             db: asyncpg.Connection) -> None:
    # With a height filter the query orders by distance from the log's start or end (store/reads.py): it
    # must be the cursor order still, page after page, in both directions.
    events = await page_all(http, loaded, limit="3", order=order.lower(), **params)
    expected = await sql_ids(db, f"canonical AND {where}", order=order)
    assert len(expected) > 3
    assert [e["id"] for e in events] == expected


async def test_rolled_back_events_only_on_request(loaded: TestServer, http: aiohttp.ClientSession,
                                                  db: asyncpg.Connection) -> None:
    reorg = load_fixture("v1-stacks-nakamoto-testnet-nft-mint-print-event.json")
    reorg["rollback"], reorg["apply"] = reorg["apply"], []
    await post_webhook(http, url_of(loaded), reorg)
    _, visible = await get(http, loaded, "/api/events", contract=MONSTERS)
    _, everything = await get(http, loaded, "/api/events", contract=MONSTERS, include_rolled_back="true")
    assert visible["events"] == []
    assert [e["canonical"] for e in everything["events"]] == [False] * 4
    # A rolled-back event's cursor is that of its rollback: it moved to the end of the log.
    assert min(e["cursor"] for e in everything["events"]) > 30


async def test_page_history_then_subscribe_since_the_last_cursor_misses_nothing(
        loaded: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection, listener: OpenListener) -> None:
    history = await page_all(http, loaded, limit="10")
    last = max(e["cursor"] for e in history)
    # Something happens between the last page and the subscription...
    payload = load_fixture("v1-stacks-nakamoto-testnet-nft-mint-print-event.json")
    reorg = copy.deepcopy(payload)
    reorg["rollback"], reorg["apply"] = reorg["apply"], []
    await post_webhook(http, url_of(loaded), reorg)
    client = await listener(url_of(loaded))
    await client.subscribe({"since": last})
    # ...and after it.
    await post_webhook(http, url_of(loaded), copy.deepcopy(DIKO_TRANSFER))
    events = await event_cursors(db, last)  # (each delivery's block takes a cursor too: another topic)
    await eventually(lambda: bool(client.cursors) and client.cursors[-1] == events[-1])
    assert client.cursors == events


async def test_event_and_transaction_lookups(loaded: TestServer, http: aiohttp.ClientSession,
                                             db: asyncpg.Connection) -> None:
    event_id = await db.fetchval("SELECT id FROM chainhook_events WHERE event_type = 'nft_mint_event'")
    status, event = await get(http, loaded, f"/api/events/{event_id}")
    assert (status, event["id"], event["event_data"]["value"]) == (200, event_id, "33")
    fork = load_fixture("v1-stacks-nakamoto-testnet-nft-mint-print-event.json")
    fork["rollback"] = copy.deepcopy(fork["apply"])
    fork["apply"][0]["block_identifier"]["hash"] = "0x" + "cd" * 32
    await post_webhook(http, url_of(loaded), fork)
    status, tx = await get(http, loaded, f"/api/transactions/{NFT_TX}")
    assert status == 200
    assert [(e["canonical"], e["block_hash"][:4]) for e in tx["events"]] == [(True, "0xcd")] * 4 + [(False, "0x4d")] * 4


@pytest.mark.parametrize(
    ("path", "params", "status", "param"),
    [
        ("/api/events", {"limit": "0"}, 400, "limit"),
        ("/api/events", {"limit": "1001"}, 400, "limit"),
        ("/api/events", {"limit": "ten"}, 400, "limit"),
        ("/api/events", {"order": "up"}, 400, "order"),
        ("/api/events", {"after": "-1"}, 400, "after"),
        ("/api/events", {"from_height": "10", "to_height": "5"}, 400, "from_height"),
        ("/api/events", {"event_type": "print"}, 400, "event_type"),
        ("/api/events", {"contract": "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR"}, 400, "contract"),
        ("/api/events", {"address": "ST16GEW6P7GBGZG0PXRXFJEMR3TJHJEY2HHFN76M3"}, 400, "address"),
        ("/api/events", {"success": "yes"}, 400, "success"),
        ("/api/events", {"include_rolled_back": "1"}, 400, "include_rolled_back"),
        ("/api/events", {"page": "2"}, 400, "page"),
        ("/api/events/abc", {}, 400, "id"),
        ("/api/transactions/0x12", {}, 400, "tx_hash"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(path: str, params: dict[str, str], status: int,
                                                           param: str, server: TestServer,
                                                           http: aiohttp.ClientSession) -> None:
    got, body = await get(http, server, path, **params)
    assert (got, body["error"]["code"], body["error"]["param"]) == (status, "invalid_parameter", param)
    assert body["error"]["message"]


async def test_repeated_single_parameter_is_refused(server: TestServer, http: aiohttp.ClientSession) -> None:
    async with http.get(url_of(server) + "/api/events", params=[("limit", "5"), ("limit", "6")]) as response:
        body = await response.json()
    assert (response.status, body["error"]["param"]) == (400, "limit")


async def test_unknown_ids_are_404(server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    assert (await get(http, server, "/api/events/999999"))[0] == 404
    assert (await get(http, server, "/api/transactions/0x" + "ab" * 32))[0] == 404


async def test_status_reports_what_was_seen(loaded: TestServer, http: aiohttp.ClientSession,
                                            db: asyncpg.Connection, listener: OpenListener) -> None:
    client = await listener(url_of(loaded))
    await client.subscribe({"event_type": "print_event"})
    await client.subscribe({})
    await post_webhook(http, url_of(loaded), copy.deepcopy(DIKO_TRANSFER))
    head = await db.fetchval("SELECT last_cursor FROM chainhook_cursor")
    await eventually(lambda: loaded.app[HUB].cursor == head)
    status, body = await get(http, loaded, "/api/status")
    assert status == 200
    assert body["events_stored"] == await db.fetchval("SELECT count(*) FROM chainhook_events")
    assert body["cursor"] == await db.fetchval("SELECT last_cursor FROM chainhook_cursor")
    assert body["last_delivery"]["format"] == "v2"
    assert {c["chainhook_uuid"]: c["last_block_height"] for c in body["chainhooks"]} == {
        "6ad27176-2b83-4381-b51c-50baede11e3f": 34307, "0dcfe481-ef9e-40f7-ad7b-1a9a39895516": 6743,
        "6d9a57f8-9657-4714-9fde-26310046a968": 112195, "77127a28-d749-4725-9aed-0c0e27364b6c": 6,
        "be4ab3ed-b606-4fe0-97c4-6c0b1ac9b185": 3549902}
    assert (body["sockets"], body["subscriptions"]) == (1, 2)
    assert body["chain_tip"]["block_height"] == 3549902
