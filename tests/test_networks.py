"""Networks and assets: which chain each event is from (derived from every shared fixture, named by
2.0 payloads, overridden by CHAINHOOK_NETWORKS), which asset it moves, and both as filters of the
socket subscriptions, the history API and the per-network tips."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import (
    Serve,
    eventually,
    load_fixture,
    post_webhook,
    settle,
    url_of,
)
from tests.expected import FREDDIE, MONSTERS
from tests.v2_payloads import v2_from_v1
from timebank_realtime.chainhook.normalize import parse_delivery
from timebank_realtime.chainhook.streaming import NeedsWholeParse, stream_rows
from timebank_realtime.events import DeliveryHeader
from timebank_realtime.store.migrate import apply_migrations, load_migrations

# What each shared fixture's principals say. The regtest node's addresses are testnet addresses:
# only CHAINHOOK_NETWORKS can call that chain regtest. Signer messages carry no transaction at all.
FIXTURE_NETWORKS = {
    "v1-stacks-contract-call-bns-testnet-2023.json": "testnet",
    "v1-stacks-decoded-all-asset-event-types-with-rollback.json": "testnet",
    "v1-stacks-nakamoto-testnet-nft-mint-print-event.json": "testnet",
    "v1-stacks-nakamoto-testnet-stx-transfer-block-height-scope.json": "testnet",
    "v1-stacks-print-event-arkadiko-mainnet-2023.json": "mainnet",
    "v1-stacks-regtest-signer-message-events.json": "unknown",
    "v1-stacks-regtest-stx-lock-event.json": "testnet",
}
# The 2.0 converter cannot express this fixture's empty amounts.
V2_CONVERTIBLE = sorted(set(FIXTURE_NETWORKS) - {"v1-stacks-decoded-all-asset-event-types-with-rollback.json"})
MONSTERS_NFT = f"{MONSTERS}::nft-monsters"
USDA = "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.usda-token::usda"
NFT_FIXTURE = "v1-stacks-nakamoto-testnet-nft-mint-print-event.json"
MAINNET_FIXTURE = "v1-stacks-print-event-arkadiko-mainnet-2023.json"


def body_of(payload: dict[str, Any], *, chainhook_first: bool = False) -> bytes:
    if chainhook_first:
        payload = {"chainhook": payload["chainhook"], **{k: v for k, v in payload.items() if k != "chainhook"}}
    return json.dumps(payload).encode()


def streamed(body: bytes, networks: dict[str, str]) -> DeliveryHeader | None:
    """The header the streaming parser settles on, or None when it hands the body to the whole parse."""
    header = DeliveryHeader()
    try:
        for _row in stream_rows(body, header, networks):
            assert header.network  # settled before the first row is written
    except NeedsWholeParse:
        return None
    return header


async def status_when(http: aiohttp.ClientSession, server: TestServer,
                      ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """/api/status once ``ready`` holds (the tips follow the tailer, which follows the commit)."""
    status: dict[str, Any] = {}

    async def fetch() -> None:
        nonlocal status
        async with http.get(url_of(server) + "/api/status") as response:
            status = await response.json()

    for _attempt in range(200):
        await fetch()
        if ready(status):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"/api/status never got there: {status}")


@pytest.mark.parametrize("name", sorted(FIXTURE_NETWORKS))
def test_each_shared_fixture_is_from_the_network_its_addresses_name(name: str) -> None:
    payload = load_fixture(name)
    assert parse_delivery(json.dumps(payload).encode()).network == FIXTURE_NETWORKS[name]


def test_a_block_element_fixture_is_from_testnet() -> None:
    block = load_fixture("v1-stacks-testnet-block-107605-apply-element.json")
    body = json.dumps({"apply": [block], "rollback": [], "chainhook": {"uuid": "u"}}).encode()
    assert parse_delivery(body).network == "testnet"


@pytest.mark.parametrize("name", V2_CONVERTIBLE)
def test_a_2_0_payload_names_its_network_and_a_setting_overrides_both(name: str) -> None:
    v2 = v2_from_v1(load_fixture(name), network=" Devnet")
    uuid = v2["chainhook"]["uuid"]
    assert parse_delivery(json.dumps(v2).encode()).network == "devnet"  # as named, in lower case
    assert parse_delivery(json.dumps(v2).encode(), {uuid: "regtest"}).network == "regtest"
    v1 = load_fixture(name)
    assert parse_delivery(json.dumps(v1).encode(), {v1["chainhook"]["uuid"]: "regtest"}).network == "regtest"
    assert parse_delivery(json.dumps(v1).encode(), {"another-uuid": "regtest"}).network == FIXTURE_NETWORKS[name]


@pytest.mark.parametrize("name", V2_CONVERTIBLE)
@pytest.mark.parametrize("chainhook_first", [False, True])
@pytest.mark.parametrize("override", [False, True])
@pytest.mark.parametrize("v2", [False, True])
def test_streaming_settles_the_source_the_whole_parse_gives_or_hands_over(
        name: str, chainhook_first: bool, override: bool, v2: bool) -> None:
    payload = v2_from_v1(load_fixture(name), network="mainnet") if v2 else load_fixture(name)
    networks = {payload["chainhook"]["uuid"]: "regtest"} if override else {}
    body = body_of(payload, chainhook_first=chainhook_first)
    whole = parse_delivery(body, networks)
    header = streamed(body, networks)
    assert header is not None  # the uuid is plain near an end of these bodies: nothing to hand over
    assert (header.chainhook_uuid, header.network) == (whole.chainhook_uuid, whole.network)


def test_a_uuid_the_stream_could_not_see_first_hands_the_delivery_over() -> None:
    payload = load_fixture(NFT_FIXTURE)
    uuid = payload["chainhook"]["uuid"]
    # An escaped character hides the uuid from the look at the body's ends; the parsed value is the same.
    body = body_of(payload).replace(uuid.encode(), b"\\u0036" + uuid[1:].encode())
    assert parse_delivery(body).chainhook_uuid == uuid
    assert streamed(body, {}) is None
    padded = copy.deepcopy(payload)  # and a body with no rows settles at the end, whatever it is
    padded["apply"] = []
    header = streamed(body_of(padded).replace(uuid.encode(), b"\\u0036" + uuid[1:].encode()), {uuid: "regtest"})
    assert header is not None and (header.chainhook_uuid, header.network) == (uuid, "regtest")


async def test_stored_events_keep_their_network_chainhook_and_asset(
        server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    for name in (NFT_FIXTURE, MAINNET_FIXTURE):
        assert (await post_webhook(http, url_of(server), load_fixture(name)))[0] == 200
    rows = await db.fetch("SELECT network, chainhook_uuid, event_type, asset_identifier, contract_id "
                          "FROM chainhook_events ORDER BY id")
    nft = load_fixture(NFT_FIXTURE)["chainhook"]["uuid"]
    mainnet = load_fixture(MAINNET_FIXTURE)["chainhook"]["uuid"]
    assert [(r["network"], r["chainhook_uuid"]) for r in rows] == [("testnet", nft)] * 5 + [("mainnet", mainnet)] * 6
    assets = {(r["event_type"], r["asset_identifier"]) for r in rows if r["asset_identifier"]}
    assert assets == {("nft_mint_event", MONSTERS_NFT), ("ft_mint_event", USDA)}
    assert {r["network"] for r in await db.fetch("SELECT network FROM chainhook_deliveries")} == {"testnet", "mainnet"}


async def test_the_setting_names_a_chainhooks_network(serve: Serve, http: aiohttp.ClientSession,
                                                      db: asyncpg.Connection) -> None:
    payload = load_fixture("v1-stacks-regtest-stx-lock-event.json")
    server = await serve(chainhook_networks={payload["chainhook"]["uuid"]: "regtest"})
    assert (await post_webhook(http, url_of(server), payload))[0] == 200
    assert {r["network"] for r in await db.fetch("SELECT network FROM chainhook_events")} == {"regtest"}
    status = await status_when(http, server, lambda s: bool(s["chain_tips"]))
    assert list(status["chain_tips"]) == ["regtest"]
    assert [c["network"] for c in status["chainhooks"]] == ["regtest"]


async def test_history_filters_by_network_and_asset(server: TestServer, http: aiohttp.ClientSession,
                                                    db: asyncpg.Connection) -> None:
    for name in (NFT_FIXTURE, MAINNET_FIXTURE):
        await post_webhook(http, url_of(server), load_fixture(name))

    async def ids(**params: str) -> list[int]:
        async with http.get(url_of(server) + "/api/events", params=params) as response:
            assert response.status == 200
            return [event["id"] for event in (await response.json())["events"]]

    by_network = {n: [r["id"] for r in await db.fetch(
        "SELECT id FROM chainhook_events WHERE network = $1 ORDER BY last_cursor", n)] for n in ("mainnet", "testnet")}
    assert await ids(network="mainnet") == by_network["mainnet"] and len(by_network["mainnet"]) == 6
    assert await ids(network="TESTNET") == by_network["testnet"] and len(by_network["testnet"]) == 5
    assert await ids(network="regtest") == []
    nft = [r["id"] for r in await db.fetch("SELECT id FROM chainhook_events WHERE event_type = 'nft_mint_event'")]
    assert await ids(asset=MONSTERS_NFT) == nft and len(nft) == 1
    assert await ids(asset=MONSTERS_NFT, network="mainnet") == []
    for params in ({"asset": MONSTERS}, {"asset": f"{MONSTERS}::"}, {"network": "x" * 65}, {"network": ""}):
        async with http.get(url_of(server) + "/api/events", params=params) as response:
            body = await response.json()
            assert (response.status, body["error"]["code"], body["error"]["param"]) == \
                (400, "invalid_parameter", next(iter(params)))


async def test_sockets_get_their_network_and_asset_live_and_replayed(
        server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection, listener: Any) -> None:
    mainnet = await listener(url_of(server))
    asset = await listener(url_of(server))
    assert (await mainnet.subscribe({"network": "mainnet"}))["ok"]
    assert (await asset.subscribe({"asset": MONSTERS_NFT, "network": "testnet"}))["ok"]
    await post_webhook(http, url_of(server), load_fixture(NFT_FIXTURE))
    payload = load_fixture(MAINNET_FIXTURE)
    await post_webhook(http, url_of(server), payload)
    reorg = copy.deepcopy(payload)
    reorg["rollback"], reorg["apply"] = reorg["apply"], []
    await post_webhook(http, url_of(server), reorg)
    await eventually(lambda: len(mainnet.received) == 12 and len(asset.received) == 1)
    await settle()
    assert [kind for kind, _ in mainnet.received] == ["event"] * 6 + ["rollback"] * 6
    assert {message["network"] for _, message in mainnet.received} == {"mainnet"}
    assert mainnet.cursors == sorted(mainnet.cursors)
    assert [(m["event_type"], m["asset_identifier"]) for _, m in asset.received] == [("nft_mint_event", MONSTERS_NFT)]

    replayed = await listener(url_of(server))
    ack = await replayed.subscribe({"network": ["testnet"], "since": 0})
    assert ack["ok"]
    await eventually(lambda: len(replayed.markers("eose")) == 1)
    expected = [r["last_cursor"] for r in await db.fetch(
        "SELECT last_cursor FROM chainhook_events WHERE network = 'testnet' ORDER BY last_cursor")]
    assert replayed.cursors == expected and len(expected) == 5
    assert {message["network"] for message in replayed.events()} == {"testnet"}
    by_asset = await listener(url_of(server))
    assert (await by_asset.subscribe({"asset": [MONSTERS_NFT, USDA], "since": 0}))["ok"]
    await eventually(lambda: len(by_asset.markers("eose")) == 1)
    assets = await db.fetch('SELECT c."cursor", e.asset_identifier FROM chainhook_changes c '
                            "JOIN chainhook_events e ON e.id = c.event_id "
                            "WHERE e.asset_identifier = ANY($1) ORDER BY 1", [MONSTERS_NFT, USDA])
    assert [(c, m["asset_identifier"]) for c, (_, m) in zip(by_asset.cursors, by_asset.received, strict=True)] == \
        [tuple(r) for r in assets]
    assert {r["asset_identifier"] for r in assets} == {MONSTERS_NFT, USDA}  # the USDA mint, its rollback too


@pytest.mark.parametrize("subscription,code", [
    ({"asset": "not-an-asset"}, "invalid_asset"),
    ({"asset": f"{FREDDIE}::"}, "invalid_asset"),
    ({"network": "n" * 65}, "invalid_network"),
    ({"network": 7}, "invalid_filter"),
])
async def test_bad_network_and_asset_filters_are_refused(server: TestServer, listener: Any,
                                                         subscription: dict[str, Any], code: str) -> None:
    client = await listener(url_of(server))
    ack = await client.subscribe(subscription)
    assert (ack["ok"], ack["error"]["code"]) == (False, code)


async def test_heartbeats_status_and_readiness_report_each_networks_tip(
        serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection, listener: Any) -> None:
    server = await serve(heartbeat_seconds=0.2)
    for name in (NFT_FIXTURE, MAINNET_FIXTURE):
        await post_webhook(http, url_of(server), load_fixture(name))
    tips = {r["network"]: {"block_height": r["h"], "block_hash": r["block_hash"]} for r in await db.fetch(
        "SELECT DISTINCT ON (network) network, block_height AS h, block_hash FROM chainhook_events "
        "ORDER BY network, block_height DESC")}
    assert set(tips) == {"mainnet", "testnet"}
    client = await listener(url_of(server))
    await eventually(lambda: any(b["tips"] == tips for b in client.markers("heartbeat")))
    for path in ("/api/status", "/readyz"):
        async with http.get(url_of(server) + path) as response:
            assert (await response.json())["chain_tips"] == tips
    # A server started on the stored events knows them too, without a new delivery.
    restarted = await serve()
    async with http.get(url_of(restarted) + "/api/status") as response:
        assert (await response.json())["chain_tips"] == tips


async def test_the_migration_backfills_networks_and_assets(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS network_backfill CASCADE; CREATE SCHEMA network_backfill;"
                           "SET search_path TO network_backfill")
        migrations = load_migrations()
        await apply_migrations(conn, [m for m in migrations if m.version < 4])
        rows = [  # (contract_id, affected_addresses, event_type, event_data)
            (FREDDIE, [], "print_event", "{}"),
            ("", ["ST16GEW6P7GBGZG0PXRXFJEMR3TJHJEY2HHFN76M2"], "stx_transfer_event", "{}"),
            ("", [], "stx_transfer_event", "{}"),
            (MONSTERS, [], "nft_mint_event", json.dumps({"asset_class_identifier": MONSTERS_NFT,
                                                         "asset_identifier": "u7"})),
            ("SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4.sbtc-token", [], "ft_transfer_event",
             json.dumps({"asset_identifier": "SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4.sbtc-token::sbtc-token"})),
        ]
        for n, (contract, addresses, event_type, data) in enumerate(rows):
            await conn.execute(
                "INSERT INTO chainhook_events (tx_hash, block_height, block_hash, tx_index, event_index, contract_id, "
                "event_type, event_data, affected_addresses, success, timestamp, source_format) "
                "VALUES ($1, 1, '0xb', 0, 0, $2, $3, $4::jsonb, $5, true, now(), 'v1')",
                f"0x{n}", contract, event_type, data, addresses)
        await apply_migrations(conn, migrations)
        got = await conn.fetch("SELECT network, chainhook_uuid, asset_identifier FROM chainhook_events ORDER BY id")
        assert [tuple(r) for r in got] == [
            ("mainnet", "", None), ("testnet", "", None), ("unknown", "", None), ("testnet", "", MONSTERS_NFT),
            ("mainnet", "", "SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4.sbtc-token::sbtc-token")]
        view_columns = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'network_backfill' AND column_name = 'network' ORDER BY table_name")
        assert {r["table_name"] for r in view_columns} >= {
            "canonical_events", "contract_daily_counts", "transfers", "print_events"}
    finally:
        await conn.execute("DROP SCHEMA IF EXISTS network_backfill CASCADE")
        await conn.close()


@pytest.mark.parametrize("option,value", [("--asset", f"{MONSTERS}::"), ("--network", "n" * 65)])
def test_tail_refuses_a_bad_network_or_asset_in_one_line(option: str, value: str) -> None:
    result = subprocess.run([sys.executable, "-m", "timebank_realtime", "tail", option, value],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "PORT": "9"})
    assert result.returncode == 2
    assert result.stderr.startswith("timebank-realtime tail: invalid filter: ")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("v2", [False, True])
def test_the_stream_reads_the_sender_the_whole_parse_reads(v2: bool) -> None:
    """Keys the models ignore (a 2.0 ``sender``, a v1 ``sender_address``) name no network, and of
    any type they cost no 500."""
    payload = v2_from_v1(load_fixture(NFT_FIXTURE), network="") if v2 else load_fixture(NFT_FIXTURE)
    for tx in (payload["event"]["apply"] if v2 else payload["apply"])[0]["transactions"]:
        tx["metadata"]["sender" if v2 else "sender_address"] = "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR"
    for odd in (5, ["x"], "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR"):
        if not v2:
            payload["apply"][0]["transactions"][0]["metadata"]["sender_address"] = odd
        else:
            payload["event"]["apply"][0]["transactions"][0]["metadata"]["sender"] = odd
        body = body_of(payload)
        whole = parse_delivery(body)
        header = streamed(body, {})
        assert header is not None and header.network == whole.network == "testnet"
