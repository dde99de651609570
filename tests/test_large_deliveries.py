"""Streamed deliveries through the real service: the same database, whichever path a body takes."""

from __future__ import annotations

import copy
import logging
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from .conftest import Serve, load_fixture, post_webhook, url_of
from .expected import EXPECTED_ROWS, row_tuple
from .payloads import synthetic_block, synthetic_payload
from .test_webhook import assert_last_cursors_follow_the_log, stored_rows, table_snapshot
from .v2_payloads import v2_from_v1

ARKADIKO = "v1-stacks-print-event-arkadiko-mainnet-2023.json"
ALWAYS = {"stream_delivery_bytes": 0}


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
async def test_each_fixture_streams_into_exactly_its_rows(name: str, serve: Serve, http: aiohttp.ClientSession,
                                                          db: asyncpg.Connection,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="timebank_realtime.http.webhook")
    server = await serve(**ALWAYS)
    status, body = await post_webhook(http, url_of(server), load_fixture(name))
    assert status == 200, body
    rollbacks = bool(load_fixture(name).get("rollback"))
    assert streamed_flags(caplog) == [not rollbacks]  # a reorg is parsed whole
    assert [row_tuple(r) for r in await stored_rows(db)] == EXPECTED_ROWS[name]
    await assert_last_cursors_follow_the_log(db)


def streamed_flags(caplog: pytest.LogCaptureFixture) -> list[bool]:
    return [vars(r)["streamed"] for r in caplog.records if r.getMessage() == "delivery"]


def reorg_sequence() -> list[dict[str, Any]]:
    """New blocks, a repeat, a reorg, a restore, a 2.0 block: every path the store has."""
    first = synthetic_payload(1000, 40)
    second = synthetic_payload(1001, 3)
    second["apply"].append(synthetic_block(1002, 5))
    reorg = {"apply": [synthetic_block(1003, 2)], "rollback": copy.deepcopy(second["apply"]),
             "chainhook": {"uuid": "synthetic"}}
    return [first, second, copy.deepcopy(first), reorg, second, v2_from_v1(synthetic_payload(1004, 4)),
            load_fixture(ARKADIKO)]


async def run_sequence(server: TestServer, http: aiohttp.ClientSession) -> list[Any]:
    answers = []
    for document in reorg_sequence():
        status, body = await post_webhook(http, url_of(server), document)
        assert status == 200, body
        answers.append(body)
    return answers


async def database_state(db: asyncpg.Connection) -> tuple[Any, ...]:
    """Everything but ids (a failed attempt uses up sequence numbers; ids are not the log's order)."""
    log = await db.fetch('SELECT c."cursor", c.change, e.block_hash, e.tx_hash, e.event_index '
                         'FROM chainhook_changes c JOIN chainhook_events e ON e.id = c.event_id ORDER BY 1')
    rows = await db.fetch("SELECT * FROM chainhook_events ORDER BY last_cursor")
    return ([tuple(r) for r in log], [(row_tuple(r), r["canonical"], r["last_cursor"]) for r in rows],
            await db.fetchval("SELECT last_cursor FROM chainhook_cursor"))


async def reset(db: asyncpg.Connection) -> None:
    await db.execute("TRUNCATE chainhook_changes, chainhook_events, chainhook_blocks, chainhook_deliveries "
                     "RESTART IDENTITY")
    await db.execute("UPDATE chainhook_cursor SET last_cursor = 0")


async def test_streamed_and_whole_paths_leave_the_same_database(serve: Serve, http: aiohttp.ClientSession,
                                                                db: asyncpg.Connection,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="timebank_realtime.http.webhook")
    whole_answers = await run_sequence(await serve(), http)
    whole = await database_state(db)
    assert streamed_flags(caplog) == [False] * 7
    await reset(db)
    caplog.clear()
    streamed_answers = await run_sequence(await serve(**ALWAYS), http)
    # New rows stream; the repeat, the reorg and the restore fall back to the whole parse.
    assert streamed_flags(caplog) == [True, True, False, False, False, True, True]
    assert streamed_answers == whole_answers
    assert await database_state(db) == whole
    assert [(a["applied"], a["duplicates"], a["rolled_back"], a["restored"]) for a in whole_answers] == [
        (41, 0, 0, 0), (10, 0, 0, 0), (0, 41, 0, 0), (3, 0, 10, 0), (0, 0, 0, 10), (5, 0, 0, 0), (6, 0, 0, 0)]
    await assert_last_cursors_follow_the_log(db)


# 400: the rows before the invalid transaction fill several COPYs, one still running when it is met.
@pytest.mark.parametrize("events_before", [10, 400])
async def test_an_invalid_transaction_deep_in_a_streamed_body_stores_nothing(
        events_before: int, serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    server = await serve(**ALWAYS)
    await post_webhook(http, url_of(server), load_fixture(ARKADIKO))
    before = await table_snapshot(db)
    payload = synthetic_payload(1000, events_before)
    payload["apply"].append(synthetic_block(1001, 10))
    payload["apply"][1]["transactions"][0]["metadata"]["success"] = "maybe"
    status, body = await post_webhook(http, url_of(server), payload)
    assert (status, body["error"]["code"]) == (422, "invalid_payload")
    assert body["error"]["path"] == "$.apply[1].transactions[0].metadata.success"
    assert await table_snapshot(db) == before
    # The connection the delivery rolled back on stores the next one.
    status, body = await post_webhook(http, url_of(server), synthetic_payload(1000, events_before))
    assert (status, body["applied"]) == (200, events_before + 1)


async def test_a_body_the_stream_cannot_read_gets_the_whole_parse_answer(
        serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    server = await serve(**ALWAYS)
    payload = synthetic_payload(1000, 3)
    payload["apply"][0]["transactions"][0]["metadata"]["fee"] = 2**70  # beyond the streaming parser
    status, body = await post_webhook(http, url_of(server), payload)
    assert (status, body["applied"]) == (200, 4)
    status, body = await post_webhook(http, url_of(server), b'{"apply": [}')
    assert (status, body["error"]["code"]) == (400, "invalid_json")
    assert len(await stored_rows(db)) == 4
