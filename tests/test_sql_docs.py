"""Every SQL example in docs/sql.md runs, against the fixtures, and returns rows."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from .conftest import load_fixture, post_webhook, url_of

DOC = Path(__file__).resolve().parents[1] / "docs" / "sql.md"
QUERIES = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.DOTALL)
FIXTURES = ["v1-stacks-print-event-arkadiko-mainnet-2023.json", "v1-stacks-contract-call-bns-testnet-2023.json",
            "v1-stacks-nakamoto-testnet-nft-mint-print-event.json",
            "v1-stacks-nakamoto-testnet-stx-transfer-block-height-scope.json", "v1-stacks-regtest-stx-lock-event.json"]


@pytest.fixture
async def history(server: TestServer, http: aiohttp.ClientSession, db: asyncpg.Connection) -> asyncpg.Connection:
    for name in FIXTURES:
        await post_webhook(http, url_of(server), load_fixture(name))
    reorg = copy.deepcopy(load_fixture(FIXTURES[2]))
    reorg["rollback"], reorg["apply"] = reorg["apply"], []
    await post_webhook(http, url_of(server), reorg)
    return db


def test_the_document_has_queries() -> None:
    assert len(QUERIES) >= 8


@pytest.mark.parametrize("query", QUERIES, ids=[f"query-{n}" for n in range(len(QUERIES))])
async def test_documented_query_runs_and_finds_rows(query: str, history: asyncpg.Connection) -> None:
    rows = await history.fetch(query)
    assert rows, query


async def test_views_agree_with_the_table(history: asyncpg.Connection) -> None:
    assert await history.fetchval("SELECT count(*) FROM canonical_events") == \
        await history.fetchval("SELECT count(*) FROM chainhook_events WHERE canonical")
    received = await history.fetch("SELECT recipient, sum(amount) AS total FROM transfers WHERE asset = 'STX' "
                                   "GROUP BY recipient ORDER BY recipient")
    assert {r["recipient"]: r["total"] for r in received} == {
        "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.arkadiko-stx-reserve-v1-1": 300000000,
        "ST2TFVBMRPS5SSNP98DQKQ5JNB2B6NZM91C4K3P7B": 1000,
        "ST38RMDQFVC462DSJ1CPEW5EYXEZKASQVC8XDGARN": 500000000,
    }
    names = {r["event_name"] for r in await history.fetch("SELECT DISTINCT event_name FROM print_events")}
    assert {"created", "minted"} <= names
