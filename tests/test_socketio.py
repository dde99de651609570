"""Socket.IO end to end: real server on a real port, real python-socketio clients over TCP."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
import socketio
from aiohttp.test_utils import TestServer

from timebank_realtime.keys import HUB

from .conftest import Listener, close_http, eventually, load_fixture, post_webhook, settle, url_of
from .expected import ARKADIKO_USER, BNS, FREDDIE, MINTER, MONSTERS, NAKAMOTO, POX4, STACKERS

OpenListener = Callable[..., Awaitable[Listener]]

FIXTURES = [
    "v1-stacks-print-event-arkadiko-mainnet-2023.json",
    "v1-stacks-contract-call-bns-testnet-2023.json",
    "v1-stacks-nakamoto-testnet-nft-mint-print-event.json",
    "v1-stacks-nakamoto-testnet-stx-transfer-block-height-scope.json",
    "v1-stacks-regtest-stx-lock-event.json",
]

# Each subscription form, with the SQL that independently says which rows it must receive.
SUBSCRIPTIONS: list[tuple[dict[str, Any], str, list[Any]]] = [
    ({"contract": MONSTERS}, "contract_id = $1", [MONSTERS]),
    ({"type": "contract", "contractId": POX4}, "contract_id = $1", [POX4]),
    ({"address": NAKAMOTO[2]}, "$1 = ANY(affected_addresses)", [NAKAMOTO[2]]),
    ({"type": "user", "address": ARKADIKO_USER}, "$1 = ANY(affected_addresses)", [ARKADIKO_USER]),
    ({"event_type": "stx_lock_event"}, "event_type = $1", ["stx_lock_event"]),
    ({"type": "event-type", "eventType": "print_event"}, "event_type = $1", ["print_event"]),
    ({"event_type": ["stx_transfer_event", "nft_mint_event"]}, "event_type = ANY($1::text[])",
     [["stx_transfer_event", "nft_mint_event"]]),
    ({"contract": BNS, "event_type": "contract_call"}, "contract_id = $1 AND event_type = $2",
     [BNS, "contract_call"]),
    ({"address": STACKERS[1], "event_type": "stx_lock_event"}, "$1 = ANY(affected_addresses) AND event_type = $2",
     [STACKERS[1], "stx_lock_event"]),
    ({"tx_hash": "0xca90fda316443d4dd4c936622d508bc4fd4aca5137cf31c5a24d3d17dcd249c2"}, "tx_hash = $1",
     ["0xca90fda316443d4dd4c936622d508bc4fd4aca5137cf31c5a24d3d17dcd249c2"]),
    ({}, "TRUE", []),
]


async def expected_cursors(db: asyncpg.Connection, where: str, args: list[Any]) -> list[int]:
    rows = await db.fetch(
        f'SELECT c."cursor" FROM chainhook_changes c JOIN chainhook_events e ON e.id = c.event_id '
        f'WHERE {where} ORDER BY c."cursor"', *args)
    return [r["cursor"] for r in rows]


async def deliver_all(http: aiohttp.ClientSession, server: TestServer) -> None:
    for name in FIXTURES:
        status, body = await post_webhook(http, url_of(server), load_fixture(name))
        assert status == 200, body


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_each_subscription_form_receives_exactly_its_events_in_order(
        transport: str, server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection,
        listener: OpenListener) -> None:
    clients = []
    for subscription, _where, _args in SUBSCRIPTIONS:
        client = await listener(url_of(server), transport)
        ack = await client.subscribe(subscription)
        assert ack["ok"] is True, ack
        assert ack["cursor"] == 0
        clients.append(client)
    await deliver_all(http, server)
    total = await db.fetchval("SELECT count(*) FROM chainhook_changes WHERE event_id IS NOT NULL")
    await eventually(lambda: len(clients[-1].received) == total)
    await settle()
    for client, (subscription, where, args) in zip(clients, SUBSCRIPTIONS, strict=True):
        want = await expected_cursors(db, where, args)
        assert want, f"{subscription} should match something in the fixtures"
        assert client.cursors == want, subscription


async def test_event_message_carries_the_full_row(server: TestServer, http: aiohttp.ClientSession,
                                                  db: asyncpg.Connection, listener: OpenListener) -> None:
    client = await listener(url_of(server))
    await client.subscribe({"contract": MONSTERS, "event_type": "nft_mint_event"})
    await post_webhook(http, url_of(server), load_fixture("v1-stacks-nakamoto-testnet-nft-mint-print-event.json"))
    await eventually(lambda: len(client.received) == 1)
    kind, message = client.received[0]
    row = await db.fetchrow("SELECT * FROM chainhook_events WHERE event_type = 'nft_mint_event'")
    assert kind == "event"
    assert message == {
        "id": row["id"], "cursor": 2, "tx_hash": row["tx_hash"], "block_height": 112195,
        "block_hash": row["block_hash"], "tx_index": 0, "event_index": 0, "contract_id": MONSTERS,
        "event_type": "nft_mint_event", "event_data": row["event_data"], "affected_addresses": [MINTER],
        "success": True, "timestamp": "2024-11-02T12:36:43+00:00", "network": "testnet",
        "chainhook_uuid": "6d9a57f8-9657-4714-9fde-26310046a968",
        "asset_identifier": "ST3FFRX7C911PZP5RHE148YDVDD9JWVS6FZRA60VS.monsters::nft-monsters", "canonical": True,
    }


async def test_rollbacks_reach_the_same_audience_and_restores_come_back(
        server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection, listener: OpenListener) -> None:
    payload = load_fixture("v1-stacks-print-event-arkadiko-mainnet-2023.json")
    watcher = await listener(url_of(server))
    other = await listener(url_of(server))
    await watcher.subscribe({"contract": FREDDIE})
    await other.subscribe({"contract": MONSTERS})
    await post_webhook(http, url_of(server), payload)
    reorg = copy.deepcopy(payload)
    reorg["rollback"], reorg["apply"] = reorg["apply"], []
    await post_webhook(http, url_of(server), reorg)
    await post_webhook(http, url_of(server), payload)
    await eventually(lambda: len(watcher.received) == 9)
    await settle()
    kinds = [(kind, message["canonical"]) for kind, message in watcher.received]
    assert kinds == [("event", True)] * 3 + [("rollback", False)] * 3 + [("event", True)] * 3
    rollback = watcher.received[3][1]
    assert set(rollback) == {"id", "cursor", "block_hash", "block_height", "tx_hash", "event_index", "contract_id",
                             "event_type", "affected_addresses", "network", "asset_identifier", "canonical"}
    assert (rollback["network"], rollback["asset_identifier"]) == ("mainnet", None)
    assert rollback["contract_id"] == FREDDIE
    assert watcher.cursors == sorted(watcher.cursors)
    assert other.received == []


async def test_overlapping_subscriptions_deliver_one_copy(server: TestServer, http: aiohttp.ClientSession,
                                                          db: asyncpg.Connection, listener: OpenListener) -> None:
    client = await listener(url_of(server))
    for subscription in ({"address": ARKADIKO_USER}, {"contract": FREDDIE}, {"event_type": "print_event"}, {}):
        assert (await client.subscribe(subscription))["ok"]
    await post_webhook(http, url_of(server), load_fixture("v1-stacks-print-event-arkadiko-mainnet-2023.json"))
    await eventually(lambda: len(client.received) == 6)
    await settle()
    assert client.cursors == [1, 2, 3, 4, 5, 6]


async def test_unsubscribe_stops_delivery(server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection,
                                          listener: OpenListener) -> None:
    client = await listener(url_of(server))
    ack = await client.subscribe({"event_type": "stx_transfer_event"})
    await post_webhook(http, url_of(server),
                       load_fixture("v1-stacks-nakamoto-testnet-stx-transfer-block-height-scope.json"))
    await eventually(lambda: len(client.received) == 2)
    assert await client.unsubscribe(ack["id"]) == {"ok": True, "id": ack["id"]}
    assert (await client.unsubscribe(ack["id"]))["error"]["code"] == "unknown_subscription"
    await post_webhook(http, url_of(server), load_fixture("v1-stacks-nakamoto-testnet-nft-mint-print-event.json"))
    await settle()
    assert client.cursors == [1, 2]


async def test_ack_cursor_marks_where_live_delivery_starts(server: TestServer, http: aiohttp.ClientSession,
                                                           db: asyncpg.Connection, listener: OpenListener) -> None:
    early = await listener(url_of(server))
    await early.subscribe({})
    await post_webhook(http, url_of(server), load_fixture("v1-stacks-print-event-arkadiko-mainnet-2023.json"))
    await eventually(lambda: len(early.received) == 6)
    await eventually(lambda: server.app[HUB].cursor == 7)  # and the block's change
    late = await listener(url_of(server))
    ack = await late.subscribe({})
    assert ack["cursor"] == 7
    await post_webhook(http, url_of(server), load_fixture("v1-stacks-regtest-stx-lock-event.json"))
    await eventually(lambda: len(late.received) == 9)
    assert late.cursors == list(range(8, 17))


@pytest.mark.parametrize(
    ("subscription", "code"),
    [
        ({"contract": "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR"}, "invalid_contract"),
        ({"contract": "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZX.freddie"}, "invalid_contract"),
        ({"address": "ST16GEW6P7GBGZG0PXRXFJEMR3TJHJEY2HHFN76M3"}, "invalid_address"),
        ({"address": 42}, "invalid_filter"),
        ({"event_type": "print"}, "invalid_event_type"),
        ({"tx_hash": "0x1234"}, "invalid_tx_hash"),
        ({"contracts": MONSTERS}, "invalid_filter"),
        ({"type": "wallet", "address": MINTER}, "invalid_filter"),
        ({"type": "user"}, "invalid_filter"),
        ({"address": []}, "invalid_filter"),
        ({"event_type": ["print_event"] * 101}, "too_many_values"),
        ({"since": -1}, "invalid_since"),
        ({"since": "yesterday"}, "invalid_since"),
        ({"since": True}, "invalid_since"),
        ("contract", "invalid_filter"),
    ],
)
async def test_invalid_subscriptions_are_refused_with_a_code(subscription: Any, code: str, server: TestServer,
                                                             listener: OpenListener) -> None:
    client = await listener(url_of(server))
    ack = await client.subscribe(subscription)
    assert ack["ok"] is False
    assert ack["error"]["code"] == code
    assert ack["error"]["message"]


async def test_subscriptions_per_connection_are_limited(serve: Any, listener: OpenListener) -> None:
    server = await serve(max_subscriptions_per_connection=5, subscribe_rate_per_second=1000)
    client = await listener(url_of(server))
    for _ in range(5):
        assert (await client.subscribe({"event_type": "print_event"}))["ok"]
    ack = await client.subscribe({"event_type": "print_event"})
    assert ack["error"]["code"] == "too_many_subscriptions"


async def test_subscribe_calls_are_rate_limited_per_connection(serve: Any, listener: OpenListener) -> None:
    server = await serve(subscribe_rate_per_second=3)
    client = await listener(url_of(server))
    other = await listener(url_of(server))
    acks = [await client.subscribe({"event_type": "print_event"}) for _ in range(4)]
    assert [a["ok"] for a in acks] == [True, True, True, False]
    assert acks[3]["error"]["code"] == "rate_limited"
    assert (await other.subscribe({}))["ok"]  # the limit is per connection
    await asyncio.sleep(0.4)
    assert (await client.subscribe({}))["ok"]  # tokens come back at the configured rate


async def test_filter_values_are_limited(serve: Any, listener: OpenListener) -> None:
    server = await serve(max_filter_values=2)
    client = await listener(url_of(server))
    ack = await client.subscribe({"event_type": ["print_event", "contract_call", "stx_lock_event"]})
    assert ack["error"]["code"] == "too_many_values"


async def test_oversized_client_message_closes_the_connection(serve: Any, listener: OpenListener) -> None:
    server = await serve(max_socket_message_bytes=2048)
    client = await listener(url_of(server))
    with contextlib.suppress(socketio.exceptions.TimeoutError):
        await client.client.call("subscribe", {"contract": "x" * 10_000}, timeout=3)
    await eventually(lambda: not client.client.connected)


async def test_unsubscribe_needs_an_id(server: TestServer, listener: OpenListener) -> None:
    client = await listener(url_of(server))
    ack: dict[str, Any] = await client.client.call("unsubscribe", "sub-1", timeout=5)
    assert ack["error"]["code"] == "invalid_request"


async def test_foreign_origins_are_refused_unless_configured(serve: Any) -> None:
    default = await serve()
    client = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(url_of(default), transports=["websocket"], headers={"Origin": "https://evil.example"},
                             wait_timeout=5)
    await close_http(client)
    allowed = await serve(cors_allowed_origins=["https://app.timebank.example"])
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url_of(allowed), transports=["websocket"],
                         headers={"Origin": "https://app.timebank.example"}, wait_timeout=5)
    assert client.connected
    await client.disconnect()
    await close_http(client)
