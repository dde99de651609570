"""POST /api/webhooks/chainhook against the real server and a real PostgreSQL."""

from __future__ import annotations

import copy
import json
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from timebank_realtime.http.webhook import is_loopback
from timebank_realtime.keys import DRAINING

from .conftest import WEBHOOK, Serve, load_fixture, post_webhook, url_of
from .expected import EXPECTED_ROWS, EXPECTED_VALUES, row_tuple
from .v2_payloads import DIKO_TRANSFER, v2_from_v1

ARKADIKO = "v1-stacks-print-event-arkadiko-mainnet-2023.json"
NFT = "v1-stacks-nakamoto-testnet-nft-mint-print-event.json"


async def stored_rows(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM chainhook_events ORDER BY id")


async def changes(db: asyncpg.Connection) -> list[tuple[int, int, str, str]]:
    """The log: (cursor, event or block id, change, "event" or "block")."""
    rows = await db.fetch('SELECT "cursor", coalesce(event_id, block_id) AS id, change, '
                          "CASE WHEN event_id IS NULL THEN 'block' ELSE 'event' END AS topic "
                          'FROM chainhook_changes ORDER BY "cursor"')
    return [(r["cursor"], r["id"], r["change"], r["topic"]) for r in rows]


async def assert_last_cursors_follow_the_log(db: asyncpg.Connection) -> None:
    """Every event's last_cursor is the cursor of its newest change."""
    wrong = await db.fetch('SELECT e.id, e.last_cursor, max(c."cursor") AS newest FROM chainhook_events e '
                           'JOIN chainhook_changes c ON c.event_id = e.id GROUP BY e.id '
                           'HAVING e.last_cursor <> max(c."cursor")')
    assert wrong == []


async def table_snapshot(db: asyncpg.Connection) -> tuple[Any, ...]:
    events = await db.fetch("SELECT id, canonical FROM chainhook_events ORDER BY id")
    blocks = await db.fetch("SELECT id, canonical, last_cursor FROM chainhook_blocks ORDER BY id")
    return ([tuple(r) for r in events], [tuple(b) for b in blocks], await changes(db),
            await db.fetchval("SELECT last_cursor FROM chainhook_cursor"))


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
async def test_each_fixture_stores_exactly_its_rows(name: str, server: TestServer, http: aiohttp.ClientSession,
                                                    db: asyncpg.Connection) -> None:
    status, body = await post_webhook(http, url_of(server), load_fixture(name))
    assert status == 200, body
    rows = await stored_rows(db)
    assert [row_tuple(r) for r in rows] == EXPECTED_ROWS[name]
    assert body["applied"] == len(rows)
    assert all(r["canonical"] for r in rows)
    blocks = await db.fetchval("SELECT count(*) FROM chainhook_blocks")
    assert blocks == len({r["block_hash"] for r in rows})
    # A block's apply follows the delivery's events.
    assert [c[2:] for c in await changes(db)] == [("apply", "event")] * len(rows) + [("apply", "block")] * blocks
    for (fixture, position), value in EXPECTED_VALUES.items():
        if fixture == name:
            assert rows[position]["event_data"]["value"] == value


async def test_row_columns_hold_the_block_and_event_fields(server: TestServer, http: aiohttp.ClientSession,
                                                           db: asyncpg.Connection) -> None:
    await post_webhook(http, url_of(server), load_fixture(NFT))
    mint = await db.fetchrow("SELECT * FROM chainhook_events WHERE event_type = 'nft_mint_event'")
    assert mint["block_height"] == 112195
    assert mint["block_hash"] == "0x4dc6cdb7defffdecb88322dee98da95038d25fd3c066bb4f78562563ce5418b8"
    assert mint["tx_hash"] == "0x8a99f0e1b16e61e94363bffad5069775f1d2b9b62afe485a253eb6ead378839d"
    assert int(mint["timestamp"].timestamp()) == 1730551003
    assert mint["source_format"] == "v1"
    assert mint["event_data"]["asset_class_identifier"] == \
        "ST3FFRX7C911PZP5RHE148YDVDD9JWVS6FZRA60VS.monsters::nft-monsters"
    assert mint["event_data"]["value"] == "33"


async def test_redelivery_changes_and_publishes_nothing(server: TestServer, http: aiohttp.ClientSession,
                                                        db: asyncpg.Connection) -> None:
    first = await post_webhook(http, url_of(server), load_fixture(ARKADIKO))
    before = await table_snapshot(db)
    second = await post_webhook(http, url_of(server), load_fixture(ARKADIKO))
    assert first == (200, {"applied": 6, "duplicates": 0, "rolled_back": 0, "restored": 0, "cursor": 7})
    assert second == (200, {"applied": 0, "duplicates": 6, "rolled_back": 0, "restored": 0, "cursor": None})
    assert await table_snapshot(db) == before


async def test_rollback_then_reapply_restores_the_same_rows(server: TestServer, http: aiohttp.ClientSession,
                                                            db: asyncpg.Connection) -> None:
    payload = load_fixture(NFT)
    await post_webhook(http, url_of(server), payload)
    ids = [r["id"] for r in await stored_rows(db)]

    reorg = copy.deepcopy(payload)
    reorg["rollback"], reorg["apply"] = reorg["apply"], []
    status, body = await post_webhook(http, url_of(server), reorg)
    assert (status, body["rolled_back"], body["applied"]) == (200, 5, 0)
    assert [r["canonical"] for r in await stored_rows(db)] == [False] * 5
    # The same rollback again finds nothing still canonical.
    assert (await post_webhook(http, url_of(server), reorg))[1]["rolled_back"] == 0

    status, body = await post_webhook(http, url_of(server), payload)
    assert (status, body["applied"], body["restored"], body["duplicates"]) == (200, 0, 5, 0)
    rows = await stored_rows(db)
    assert [r["id"] for r in rows] == ids
    assert all(r["canonical"] for r in rows)
    log = await changes(db)
    assert [c[0] for c in log] == list(range(1, 19))
    assert [c[2:] for c in log] == ([("apply", "event")] * 5 + [("apply", "block")] + [("rollback", "event")] * 5
                                    + [("rollback", "block")] + [("restore", "event")] * 5 + [("restore", "block")])
    # Rollbacks undo the newest event first.
    assert [c[1] for c in log[6:11]] == sorted(ids, reverse=True)
    await assert_last_cursors_follow_the_log(db)
    assert [r["last_cursor"] for r in await stored_rows(db)] == [13, 14, 15, 16, 17]
    assert [tuple(b) for b in await db.fetch("SELECT canonical, last_cursor FROM chainhook_blocks")] == [(True, 18)]


async def test_reorg_moves_a_transaction_to_another_block(server: TestServer, http: aiohttp.ClientSession,
                                                          db: asyncpg.Connection) -> None:
    payload = load_fixture(NFT)
    await post_webhook(http, url_of(server), payload)
    fork = copy.deepcopy(payload)
    fork["rollback"] = copy.deepcopy(payload["apply"])
    fork["apply"][0]["block_identifier"]["hash"] = "0x" + "ab" * 32
    status, body = await post_webhook(http, url_of(server), fork)
    assert (status, body["rolled_back"], body["applied"]) == (200, 5, 5)
    rows = await stored_rows(db)
    assert [(r["block_hash"][:4], r["canonical"]) for r in rows] == [("0x4d", False)] * 5 + [("0xab", True)] * 5
    # One delivery, one transaction: rollbacks take cursors before the applies, blocks after events.
    assert [c[2:] for c in await changes(db)][6:] == ([("rollback", "event")] * 5 + [("rollback", "block")]
                                                      + [("apply", "event")] * 5 + [("apply", "block")])
    await assert_last_cursors_follow_the_log(db)


async def test_v2_delivery_is_stored_with_the_same_vocabulary(server: TestServer, http: aiohttp.ClientSession,
                                                              db: asyncpg.Connection) -> None:
    status, body = await post_webhook(http, url_of(server), v2_from_v1(load_fixture(ARKADIKO)))
    assert (status, body["applied"]) == (200, 6)
    rows = await stored_rows(db)
    assert {r["source_format"] for r in rows} == {"v2"}
    assert sorted(r["event_type"] for r in rows) == sorted(r[0] for r in EXPECTED_ROWS[ARKADIKO])
    status, body = await post_webhook(http, url_of(server), copy.deepcopy(DIKO_TRANSFER))
    assert (status, body["applied"]) == (200, 3)


# --- errors: each leaves the database exactly as it was ------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b'{"apply": [], "rollback": [], "chainhook": {"uuid": NaN}}', 400, "invalid_json"),  # not JSON (RFC 8259)
        (b"[1, 2]", 422, "invalid_payload"),
        (json.dumps({"apply": [{"block_identifier": {"index": 1}}], "rollback": []}).encode(), 422,
         "invalid_payload"),
        (json.dumps({"event": {"chain": "bitcoin", "network": "mainnet", "apply": [], "rollback": []},
                     "chainhook": {"uuid": "x"}}).encode(), 422, "invalid_payload"),
    ],
)
async def test_bad_bodies_are_refused_and_change_nothing(body: bytes, status: int, code: str, server: TestServer,
                                                         http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    await post_webhook(http, url_of(server), load_fixture(ARKADIKO))
    before = await table_snapshot(db)
    got_status, got = await post_webhook(http, url_of(server), body)
    assert (got_status, got["error"]["code"]) == (status, code)
    assert got["error"]["message"]
    assert await table_snapshot(db) == before


async def test_422_names_the_json_path_of_the_first_problem(server: TestServer, http: aiohttp.ClientSession,
                                                            db: asyncpg.Connection) -> None:
    payload = load_fixture(NFT)
    # The second transaction's only event loses its amount; the first is valid and must not be stored.
    del payload["apply"][0]["transactions"][1]["metadata"]["receipt"]["events"][0]["data"]["amount"]
    status, body = await post_webhook(http, url_of(server), payload)
    assert status == 422
    assert body["error"]["path"] == "$.apply[0].transactions[1].metadata.receipt.events[0].data.amount"
    assert await stored_rows(db) == []


async def test_oversized_body_is_413_and_changes_nothing(serve: Serve, http: aiohttp.ClientSession,
                                                         db: asyncpg.Connection) -> None:
    server = await serve(max_payload_bytes=2048)
    status, body = await post_webhook(http, url_of(server), load_fixture(ARKADIKO))
    assert (status, body["error"]["code"]) == (413, "payload_too_large")

    async def chunks() -> Any:  # no Content-Length: the limit must hold while streaming too
        yield json.dumps(load_fixture(ARKADIKO)).encode()

    async with http.post(url_of(server) + WEBHOOK, data=chunks()) as response:
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "payload_too_large"
    assert await stored_rows(db) == []


SECRET = "s3cret-webhook-token"


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {SECRET}"}, {"Authorization": SECRET}, {"x-chainhook-consumer-secret": SECRET},
     {"Authorization": "Bearer wrong", "x-chainhook-consumer-secret": SECRET}],
)
async def test_secret_accepted_in_each_documented_header(headers: dict[str, str], serve: Serve,
                                                         http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    server = await serve(chainhook_webhook_secret=SECRET)
    status, body = await post_webhook(http, url_of(server), load_fixture(ARKADIKO), headers=headers)
    assert (status, body["applied"]) == (200, 6)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": SECRET[:-1]}, {"x-chainhook-consumer-secret": ""},
     {"Authorization": f"Basic {SECRET}"}],
)
async def test_missing_or_wrong_secret_is_401_and_changes_nothing(headers: dict[str, str], serve: Serve,
                                                                  http: aiohttp.ClientSession,
                                                                  db: asyncpg.Connection) -> None:
    server = await serve(chainhook_webhook_secret=SECRET)
    status, body = await post_webhook(http, url_of(server), load_fixture(ARKADIKO), headers=headers)
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert await stored_rows(db) == []


async def test_unknown_routes_and_methods_answer_json(server: TestServer, http: aiohttp.ClientSession) -> None:
    async with http.get(url_of(server) + WEBHOOK) as response:
        assert response.status == 405
        assert (await response.json())["error"]["code"] == "method_not_allowed"
    async with http.get(url_of(server) + "/nope") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("remote", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("10.1.2.3", False), ("192.168.0.5", False),
     ("2001:db8::1", False), ("fe80::1%eth0", False), (None, False), ("not-an-ip", False)],
)
def test_only_loopback_clients_pass_without_a_secret(remote: str | None, loopback: bool) -> None:
    assert is_loopback(remote) is loopback


async def test_a_draining_node_refuses_deliveries_with_503(server: TestServer, http: aiohttp.ClientSession,
                                                         db: asyncpg.Connection) -> None:
    server.app[DRAINING].set()
    status, body = await post_webhook(http, url_of(server), load_fixture(ARKADIKO))
    assert (status, body["error"]["code"]) == (503, "shutting_down")
    assert await stored_rows(db) == []
