"""Payloads that used to cost a 5xx (or gigabytes): each is now a precise 4xx that changes nothing.

Chainhook stops a predicate whose deliveries keep failing, so one odd payload answered with a 5xx
halts a user's whole feed. Every case here was found by fuzzing (tests/test_webhook_fuzz.py) or
listed in issue 11, and runs against the real server and database.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from .conftest import WEBHOOK, Serve, load_fixture, url_of
from .v2_payloads import v2_from_v1

ARKADIKO = "v1-stacks-print-event-arkadiko-mainnet-2023.json"
NFT = "v1-stacks-nakamoto-testnet-nft-mint-print-event.json"
STX_LOCK = "v1-stacks-regtest-stx-lock-event.json"
# Small enough that every fixture takes the streamed path when a test asks for it.
STREAM_ALWAYS = {"stream_delivery_bytes": 1024}

Snapshot = tuple[Any, ...]


async def snapshot(db: asyncpg.Connection) -> Snapshot:
    """Everything a delivery can change: rows, their canonical flags, the log, deliveries, the cursor."""
    return (
        await db.fetchval("SELECT count(*) FROM chainhook_events"),
        await db.fetchval("SELECT count(*) FROM chainhook_events WHERE canonical"),
        await db.fetchval("SELECT count(*) FROM chainhook_changes"),
        tuple(await db.fetch("SELECT chainhook_uuid, deliveries FROM chainhook_deliveries ORDER BY 1")),
        await db.fetchval("SELECT last_cursor FROM chainhook_cursor"),
    )


async def post_raw(http: aiohttp.ClientSession, server: TestServer, body: bytes) -> tuple[int, Any]:
    async with http.post(url_of(server) + WEBHOOK, data=body,
                         headers={"Content-Type": "application/json"}) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


def assert_error_shape(status: int, body: Any) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error.get("code"), str) and isinstance(error.get("message"), str), body
    if status == 422:
        assert error["code"] == "invalid_payload"
        assert isinstance(error.get("path"), str) and error["path"].startswith("$"), body


def encode(payload: Any) -> bytes:
    return json.dumps(payload).encode() if not isinstance(payload, bytes) else payload


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[list[int]]:
    """Growth of this process's peak RSS (bytes) over the block: the server runs in this process.
    Writing 5 to clear_refs resets the peak (Linux >= 4.0)."""
    def peak() -> int:
        status = Path("/proc/self/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        assert match is not None
        return int(match.group(1)) * 1024

    def current() -> int:
        match = re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())
        assert match is not None
        return int(match.group(1)) * 1024

    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("cannot reset the peak RSS here")
    before = current()
    result: list[int] = []
    yield result
    result.append(peak() - before)


@pytest.fixture
async def seeded(db: asyncpg.Connection, http: aiohttp.ClientSession) -> Callable[..., Any]:
    """Start a server (``await seeded(**settings)``) that already stored a real delivery, so that
    "unchanged" means something."""

    async def start(serve: Serve, **settings: Any) -> TestServer:
        server = await serve(**settings)
        status, body = await post_raw(http, server, encode(load_fixture(ARKADIKO)))
        assert status == 200, body
        return server

    return start


async def assert_refused(http: aiohttp.ClientSession, server: TestServer, db: asyncpg.Connection,
                         payload: Any, status: int, path: str | None = None) -> dict[str, Any]:
    before = await snapshot(db)
    got, body = await post_raw(http, server, encode(payload))
    assert got == status, body
    assert_error_shape(got, body)
    if path is not None:
        assert body["error"]["path"].startswith(path), body
    assert await snapshot(db) == before
    error: dict[str, Any] = body["error"]
    return error


def fixture(name: str, *, v2: bool = False) -> dict[str, Any]:
    payload = copy.deepcopy(load_fixture(name))
    return v2_from_v1(payload) if v2 else payload


def nested(depth: int, inner: Any = "x") -> Any:
    value = inner
    for _ in range(depth):
        value = [value]
    return value


def deep_text(depth: int, inner: str = '"x"') -> str:
    return "[" * depth + inner + "]" * depth


def v1_with(name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    payload = fixture(name)
    change(payload)
    return payload


def v2_operation(payload: dict[str, Any], tx: int, op_type: str) -> dict[str, Any]:
    operations = payload["event"]["apply"][0]["transactions"][tx]["operations"]
    found: dict[str, Any] = next(op for op in operations if op["type"] == op_type)
    return found


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(payload: dict[str, Any]) -> None:
        target = payload
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
    return change


TX0 = ("apply", 0, "transactions", 0)
NFT_EVENT = (*TX0, "metadata", "receipt", "events", 1, "data")
# ~6 KB that PostgreSQL cannot compress below a btree row's ~2.7 KB (a repeated character would fit).
NOISE = "".join(hashlib.sha256(str(n).encode()).hexdigest() for n in range(94))
HUGE = "S" + NOISE.upper()

# (payload builder, expected JSON path prefix). Each was a 500 before.
MODEL_CASES: dict[str, tuple[Callable[[], dict[str, Any]], str]] = {
    "timestamp-1e20": (lambda: v1_with(NFT, _set(("apply", 0, "timestamp"), 10**20)), "$.apply[0].timestamp"),
    "block-index-2^63": (lambda: v1_with(NFT, _set(("apply", 0, "block_identifier", "index"), 2**63)),
                         "$.apply[0].block_identifier.index"),
    "tx-position-2^31": (lambda: v1_with(NFT, _set((*TX0, "metadata", "position", "index"), 2**31)),
                         "$.apply[0].transactions[0].metadata.position.index"),
    "event-position-2^31": (lambda: v1_with(NFT, _set((*TX0, "metadata", "receipt", "events", 0, "position",
                                                       "index"), 2**31)),
                            "$.apply[0].transactions[0].metadata.receipt.events[0].position.index"),
    "nft-class-null": (lambda: v1_with(NFT, _set((*NFT_EVENT, "asset_class_identifier"), None)),
                       "$.apply[0].transactions[0].metadata.receipt.events[1].data.asset_class_identifier"),
    "nft-class-number": (lambda: v1_with(NFT, _set((*NFT_EVENT, "asset_class_identifier"), 7)),
                         "$.apply[0].transactions[0].metadata.receipt.events[1].data.asset_class_identifier"),
    "tx-hash-6k": (lambda: v1_with(NFT, _set((*TX0, "transaction_identifier", "hash"), "0x" + NOISE)),
                   "$.apply[0].transactions[0].transaction_identifier.hash"),
    "block-hash-6k": (lambda: v1_with(NFT, _set(("apply", 0, "block_identifier", "hash"), "0x" + NOISE)),
                      "$.apply[0].block_identifier.hash"),
    "called-contract-6k": (lambda: v1_with(NFT, _set((*TX0, "metadata", "kind", "data", "contract_identifier"),
                                                     HUGE)),
                           "$.apply[0].transactions[0].metadata.kind.data.contract_identifier"),
    "event-contract-6k": (lambda: v1_with(NFT, _set((*TX0, "metadata", "receipt", "events", 0, "data",
                                                     "contract_identifier"), HUGE)),
                          "$.apply[0].transactions[0].metadata.receipt.events[0].data.contract_identifier"),
    "nft-asset-6k": (lambda: v1_with(NFT, _set((*NFT_EVENT, "asset_identifier"), HUGE + "::x")),
                     "$.apply[0].transactions[0].metadata.receipt.events[1].data.asset_identifier"),
    "sender-6k": (lambda: v1_with(NFT, _set((*TX0, "metadata", "sender"), HUGE)),
                  "$.apply[0].transactions[0].metadata.sender"),
    "print-sender-6k": (lambda: v1_with(NFT, _set((*TX0, "metadata", "receipt", "events", 0, "data", "sender"),
                                                  HUGE)),
                        "$.apply[0].transactions[0].metadata.receipt.events[0].data.sender"),
    "uuid-6k": (lambda: v1_with(NFT, _set(("chainhook", "uuid"), NOISE)), "$.chainhook.uuid"),
    "event-data-600-deep-nul": (lambda: v1_with(NFT, _set((*TX0, "metadata", "receipt", "events", 0, "data",
                                                           "extra"), nested(600, "\x00"))),
                                "$.apply[0].transactions[0].metadata.receipt.events[0].data.extra[0]"),
}


def v2_case(tx: int, op_type: str, key: tuple[str, ...], value: Any) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        payload = fixture(STX_LOCK if op_type == "stx_lock" else NFT, v2=True)
        target = v2_operation(payload, tx, op_type)
        for part in key[:-1]:
            target = target[part]
        target[key[-1]] = value
        return payload
    return build


V2_CASES: dict[str, tuple[Callable[[], dict[str, Any]], str]] = {
    "v2-amount-abc": (v2_case(1, "token_transfer", ("amount", "value"), "abc"), "$.event.apply[0].transactions[1]"),
    "v2-amount-1.5": (v2_case(1, "token_transfer", ("amount", "value"), "1.5"), "$.event.apply[0].transactions[1]"),
    "v2-stx-lock-amount-abc": (v2_case(1, "stx_lock", ("amount", "value"), "abc"),
                               "$.event.apply[0].transactions[1]"),
    "v2-mint-asset-6k": (v2_case(0, "token_mint", ("amount", "currency", "metadata", "asset_identifier"), HUGE),
                         "$.event.apply[0].transactions[0]"),
    "v2-contract-6k": (v2_case(0, "contract_call", ("metadata", "contract_identifier"), HUGE),
                       "$.event.apply[0].transactions[0]"),
    "v2-locked-address-6k": (v2_case(1, "stx_lock", ("metadata", "locked_address"), HUGE),
                             "$.event.apply[0].transactions[1]"),
    "v2-account-6k": (v2_case(1, "token_transfer", ("account", "address"), HUGE),
                      "$.event.apply[0].transactions[1]"),
}

ALL_CASES = {**MODEL_CASES, **V2_CASES}


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("case", sorted(ALL_CASES))
async def test_out_of_range_values_are_422_with_their_path(case: str, streamed: bool, serve: Serve,
                                                           seeded: Any, http: aiohttp.ClientSession,
                                                           db: asyncpg.Connection) -> None:
    build, path = ALL_CASES[case]
    server = await seeded(serve, **(STREAM_ALWAYS if streamed else {}))
    error = await assert_refused(http, server, db, build(), 422, path)
    assert path.endswith("]") or error["path"] == path


async def test_deep_nesting_over_1000_on_the_whole_body_path_is_422(serve: Serve, seeded: Any,
                                                                   http: aiohttp.ClientSession,
                                                                   db: asyncpg.Connection) -> None:
    server = await seeded(serve)
    body = b'{"apply": [], "rollback": [], "chainhook": {"uuid": ' + deep_text(5000).encode() + b"}}"
    error = await assert_refused(http, server, db, body, 422, "$.chainhook.uuid[0]")
    assert "deeper than 128" in error["message"]


async def test_a_5000_digit_number_is_422(serve: Serve, seeded: Any, http: aiohttp.ClientSession,
                                          db: asyncpg.Connection) -> None:
    server = await seeded(serve)
    body = b'{"apply": [], "rollback": [], "chainhook": {"uuid": "u", "n": ' + b"9" * 5000 + b"}}"
    await assert_refused(http, server, db, body, 422, "$.chainhook.n")


@pytest.mark.parametrize("depth", [20_000, 40_000])
async def test_deep_nesting_on_the_streamed_path_is_422_in_bounded_memory(
        depth: int, serve: Serve, seeded: Any, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    server = await seeded(serve, **STREAM_ALWAYS)
    body = (b'{"chainhook": {"uuid": ' + deep_text(depth).encode() + b'}, "apply": '
            + json.dumps(fixture(NFT)["apply"]).encode() + b', "rollback": []}')
    with peak_rss_growth() as growth:
        await assert_refused(http, server, db, body, 422, "$.chainhook.uuid[0][0]")
    # Before the limit the streamed parser grew by ~450 MB at 20,000 levels (1.7 GB at 40,000).
    assert growth[0] < 64 * 1024 * 1024


async def test_a_non_object_block_on_the_streamed_path_is_422(serve: Serve, seeded: Any,
                                                              http: aiohttp.ClientSession,
                                                              db: asyncpg.Connection) -> None:
    server = await seeded(serve, **STREAM_ALWAYS)
    payload = fixture(NFT)
    payload["apply"] = [0, payload["apply"][0]]
    await assert_refused(http, server, db, payload, 422, "$.apply[0]")


async def test_a_repeated_apply_key_on_the_streamed_path_stores_what_the_whole_parse_stores(
        serve: Serve, seeded: Any, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    """Duplicate keys: the last value wins on both paths (the first "apply" is not stored)."""
    server = await seeded(serve, **STREAM_ALWAYS)
    first = json.dumps(fixture(NFT)["apply"])
    second = json.dumps(fixture(STX_LOCK)["apply"])
    body = f'{{"apply": {first}, "rollback": [], "chainhook": {{"uuid": "dup"}}, "apply": {second}}}'.encode()
    before = await db.fetchval("SELECT count(*) FROM chainhook_events")
    status, answer = await post_raw(http, server, body)
    assert status == 200, answer
    heights = await db.fetch("SELECT DISTINCT block_height FROM chainhook_events WHERE id > $1", before)
    assert [r["block_height"] for r in heights] == [fixture(STX_LOCK)["apply"][0]["block_identifier"]["index"]]


@pytest.mark.parametrize("name", [NFT, STX_LOCK, ARKADIKO])
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_real_fixtures_stay_accepted_in_both_formats(name: str, streamed: bool, serve: Serve,
                                                           http: aiohttp.ClientSession) -> None:
    server = await serve(**(STREAM_ALWAYS if streamed else {}))
    for payload in (fixture(name), fixture(name, v2=True)):
        status, body = await post_raw(http, server, encode(payload))
        assert status == 200, body


async def test_a_refused_transaction_in_a_body_that_is_not_json_is_400_on_both_paths(
        serve: Serve, seeded: Any, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    """Found by the fuzz: the streamed path answered 422 for the transaction it met first, the whole
    path 400 for the syntax error after it. Not JSON is a 400, whatever came before."""
    payload = fixture(STX_LOCK)
    payload["apply"][0]["transactions"][0]["metadata"]["receipt"]["events"] = [7]
    body = encode(payload)[:-20]
    for streamed in (True, False):
        server = await seeded(serve, **(STREAM_ALWAYS if streamed else {}))
        error = await assert_refused(http, server, db, body, 400)
        assert error["code"] == "invalid_json"


@pytest.mark.parametrize("bad", [b"\xed\xa0\x80", b"\xff", b"\xc3"])
async def test_invalid_utf8_in_a_key_is_400_on_both_paths(bad: bytes, serve: Serve, seeded: Any,
                                                          http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    """Found by the fuzz: the streamed parser read invalid UTF-8 in a key as "?" and answered 422
    for the key it then missed; the whole-body path answered 400."""
    body = encode(fixture(NFT)).replace(b'"apply"', b'"' + bad + b'apply"', 1)
    for streamed in (True, False):
        server = await seeded(serve, **(STREAM_ALWAYS if streamed else {}))
        error = await assert_refused(http, server, db, body, 400)
        assert error["code"] == "invalid_json"


@pytest.mark.parametrize("escape", ["\\udfff", "\\ud800\\ud800"])
async def test_an_escaped_lone_surrogate_is_answered_alike_on_both_paths(
        escape: str, serve: Serve, seeded: Any, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    """Found by the fuzz: ijson fails to decode an escaped lone low surrogate (valid JSON) and the
    streamed path answered 400, while the whole-body path read it and answered 422."""
    text = json.dumps(fixture(NFT)).replace('"chainhook": {', '"chainhook": "x' + escape + '", "c": {', 1)
    for streamed in (True, False):
        server = await seeded(serve, **(STREAM_ALWAYS if streamed else {}))
        await assert_refused(http, server, db, text.encode(), 422, "$.chainhook")
