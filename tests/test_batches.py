"""Batched delivery: a socket that connects with ``auth: {"batch": true}`` gets ``chainhook:batch`` frames."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from timebank_realtime.keys import HUB

from .conftest import Listener, Serve, eventually, load_fixture, post_webhook, settle, url_of
from .expected import FREDDIE, MONSTERS
from .payloads import synthetic_payload

OpenListener = Callable[..., Awaitable[Listener]]
ARKADIKO = "v1-stacks-print-event-arkadiko-mainnet-2023.json"
NFT = "v1-stacks-nakamoto-testnet-nft-mint-print-event.json"
BATCH = {"batch": True}


async def test_a_delivery_arrives_as_one_frame_with_the_same_messages(
        server: TestServer, http: aiohttp.ClientSession, listener: OpenListener) -> None:
    batched = await listener(url_of(server), auth=BATCH)
    single = await listener(url_of(server))
    await batched.subscribe({})
    await single.subscribe({})
    await post_webhook(http, url_of(server), load_fixture(NFT))
    await eventually(lambda: len(single.received) == 5 and len(batched.received) == 5)
    await settle()
    assert len(batched.frames) == 1
    assert set(batched.frames[0]) == {"changes"}  # live frames carry no subscription tag
    assert batched.received == single.received
    assert batched.cursors == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_each_socket_gets_only_its_changes_and_equal_audiences_share_a_frame(
        transport: str, server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection,
        listener: OpenListener) -> None:
    monsters = [await listener(url_of(server), transport, BATCH) for _ in range(2)]
    freddie = await listener(url_of(server), transport, BATCH)
    for client in monsters:
        await client.subscribe({"contract": MONSTERS})
    await freddie.subscribe({"contract": FREDDIE})
    await post_webhook(http, url_of(server), load_fixture(NFT))      # cursors 1-5, 4 of MONSTERS
    await post_webhook(http, url_of(server), load_fixture(ARKADIKO))  # cursors 6-11, 3 of FREDDIE
    await eventually(lambda: len(monsters[1].received) == 4 and len(freddie.received) == 3)
    await settle()
    rows = await db.fetch('SELECT c."cursor", e.contract_id FROM chainhook_changes c '
                          'JOIN chainhook_events e ON e.id = c.event_id ORDER BY 1')
    assert monsters[0].cursors == [r["cursor"] for r in rows if r["contract_id"] == MONSTERS]
    assert freddie.cursors == [r["cursor"] for r in rows if r["contract_id"] == FREDDIE]
    assert monsters[0].frames == monsters[1].frames and len(monsters[0].frames) == 1
    assert len(freddie.frames) == 1


async def test_rollbacks_travel_in_frames_as_non_canonical_changes(
        server: TestServer, http: aiohttp.ClientSession, listener: OpenListener) -> None:
    client = await listener(url_of(server), auth=BATCH)
    await client.subscribe({"contract": FREDDIE})
    payload = load_fixture(ARKADIKO)
    reorg = copy.deepcopy(payload)
    reorg["rollback"], reorg["apply"] = reorg["apply"], []
    for body in (payload, reorg, payload):
        await post_webhook(http, url_of(server), body)
    await eventually(lambda: len(client.received) == 9)
    await settle()
    canonical = [change["canonical"] for frame in client.frames for change in frame["changes"]]
    assert canonical == [True] * 3 + [False] * 3 + [True] * 3
    assert [kind for kind, _ in client.received] == ["event"] * 3 + ["rollback"] * 3 + ["event"] * 3
    assert client.cursors == sorted(client.cursors)


async def test_replay_comes_in_tagged_frames_of_at_most_the_replay_batch_size(
        serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection, listener: OpenListener) -> None:
    server = await serve(replay_batch_size=100)
    status, _ = await post_webhook(http, url_of(server), synthetic_payload(1000, 349))  # 350 changes
    assert status == 200
    await eventually(lambda: server.app[HUB].cursor == 351)  # and the block's, which a firehose of events skips
    client = await listener(url_of(server), auth=BATCH)
    ack = await client.subscribe({"since": 0})
    await eventually(lambda: bool(client.markers("eose")))
    assert [len(frame["changes"]) for frame in client.frames] == [100, 100, 100, 50]
    assert all(frame["subscription"] == ack["id"] for frame in client.frames)
    assert client.cursors == list(range(1, 351))
    assert client.markers("eose") == [{"id": ack["id"], "cursor": 351}]
    assert [kind for kind, _ in client.timeline if kind != "heartbeat"][-1] == "eose"


async def test_a_batch_request_must_be_exactly_true(server: TestServer, http: aiohttp.ClientSession,
                                                    listener: OpenListener) -> None:
    client = await listener(url_of(server), auth={"batch": "yes"})
    await client.subscribe({})
    await post_webhook(http, url_of(server), load_fixture(NFT))
    await eventually(lambda: len(client.received) == 5)
    assert client.frames == []


async def test_websocket_compression_is_declined(server: TestServer, http: aiohttp.ClientSession,
                                                 listener: OpenListener) -> None:
    url = f"{url_of(server)}/socket.io/?EIO=4&transport=websocket"
    async with http.ws_connect(url, compress=15) as ws:
        assert ws.compress == 0
        opened = await ws.receive_str()
        assert opened.startswith("0{")
        await ws.send_str("40")
        assert (await ws.receive_str()).startswith("40{")


@pytest.mark.parametrize(("transport", "direct"), [("websocket", True), ("polling+websocket", True),
                                                   ("polling", False)])
async def test_websocket_messages_are_written_straight_to_the_connection(
        transport: str, direct: bool, server: TestServer, http: aiohttp.ClientSession,
        listener: OpenListener) -> None:
    client = await listener(url_of(server), transport)
    if transport == "polling+websocket":
        await eventually(lambda: client.client.transport() == "websocket")
    await client.subscribe({})
    for height in range(3):
        await post_webhook(http, url_of(server), synthetic_payload(5000 + height, 9))
        await eventually(lambda height=height: len(client.received) == 10 * (height + 1))  # type: ignore[misc]
    await settle()
    assert client.cursors == [c for block in range(3) for c in range(1 + 11 * block, 11 * (block + 1))]
    writes = server.app[HUB].wire.writes
    assert (writes["direct"] > 0) is direct
    assert writes["direct"] + writes["queued"] >= 30
