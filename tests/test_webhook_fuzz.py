"""Structure-aware fuzzing of the webhook: no payload gets a 5xx, and a refusal changes nothing.

Examples start from the real fixtures (v1, and the same transactions as 2.0), then mutate shapes,
types, sizes and encodings, and go over real HTTP to the real server, on the whole-body and the
streamed parse paths. Properties, not outputs: never a 5xx; a 4xx has the JSON error shape (a 422
a path) and leaves the database as it was; a 200 leaves the log consistent and is idempotent.

Hypothesis runs in a worker thread and hands each request to the event loop that serves the app,
so the server is started once, not per example. A bounded number of examples runs in the suite;
the long run is ``FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/test_webhook_fuzz.py``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from .conftest import Serve, load_fixture
from .test_hostile_payloads import STREAM_ALWAYS, assert_error_shape, peak_rss_growth, post_raw, snapshot
from .v2_payloads import DIKO_TRANSFER, v2_from_v1

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
LONG_RUN = "FUZZ_EXAMPLES" in os.environ
# A long run may take hours (0: no timeout); the suite's 120 s timeout is for the bounded run.
pytestmark = [pytest.mark.timeout(0 if LONG_RUN else 120),
              # Hypothesis describes each example; ours are payloads of tens of kB, on purpose.
              pytest.mark.filterwarnings("ignore:Generating overly large repr")]

FIXTURES = [
    "v1-stacks-contract-call-bns-testnet-2023.json",
    "v1-stacks-decoded-all-asset-event-types-with-rollback.json",
    "v1-stacks-nakamoto-testnet-nft-mint-print-event.json",
    "v1-stacks-nakamoto-testnet-stx-transfer-block-height-scope.json",
    "v1-stacks-print-event-arkadiko-mainnet-2023.json",
    "v1-stacks-regtest-signer-message-events.json",
    "v1-stacks-regtest-stx-lock-event.json",
]
_V1 = {name: load_fixture(name) for name in FIXTURES}
# The 2.0 builder needs real amounts, which Chainhook's own test vector (all-asset-event-types) lacks.
_AS_V2 = [name for name, payload in _V1.items() if payload.get("apply") and "decoded-all" not in name]
BASES: list[tuple[str, dict[str, Any]]] = [
    *((f"v1:{name}", payload) for name, payload in _V1.items()),
    *((f"2.0:{name}", v2_from_v1(_V1[name])) for name in _AS_V2),
    ("2.0:diko", DIKO_TRANSFER),
]

Path = tuple[str | int, ...]
T = TypeVar("T")


def paths_in(value: Any, prefix: Path = ()) -> list[Path]:
    """Every path to a value inside ``value`` (the root excluded)."""
    found: list[Path] = []
    pending: list[tuple[Any, Path]] = [(value, prefix)]
    while pending:
        item, path = pending.pop()
        children: Any = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        for key, child in children:
            found.append((*path, key))
            pending.append((child, (*path, key)))
    return found


def parent_of(document: Any, path: Path) -> Any:
    for part in path[:-1]:
        document = document[part]
    return document


# Values a field may be swapped for: the types JSON has, at the sizes and ranges that hurt.
ODD_INTEGERS = st.sampled_from([-1, 0, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**20,
                                -(2**63) - 1, 10**39, 10**99, -(10**99)])
ODD_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "0x", "0x" + "0" * 64, "0x" + "f" * 66, "abc", "1.5", "-0", "1e5", " 1", "\x00",
                     "\ud800", "a\udfffb", "S", "SP000000000000000000002Q6VF78.pox", "x::y::z",
                     "ST3FFRX7C911PZP5RHE148YDVDD9JWVS6FZRA60VS.monsters::nft-monsters"]),
    st.integers(min_value=100, max_value=7000).map(lambda n: "".join(f"{(i * 7919) % 97:02x}" for i in range(n))),
)
LEAVES = st.one_of(st.none(), st.booleans(), ODD_INTEGERS, st.integers(),
                   st.floats(allow_nan=False, allow_infinity=False), ODD_TEXT)
VALUES = st.one_of(
    LEAVES,
    st.lists(LEAVES, max_size=3),
    st.dictionaries(st.text(max_size=8), LEAVES, max_size=3),
    # Deep nesting is spliced into the text (``_DEEP``): a deep document would exhaust the recursion
    # of the strategy's own copy and json.dumps.
    st.integers(min_value=100, max_value=3000).map(lambda depth: f"<<deep:{depth}>>"),
)
_DEEP = re.compile(r'"<<deep:(\d+)>>"')


def _deepen(text: str) -> str:
    return _DEEP.sub(lambda m: "[" * int(m.group(1)) + '"\\u0000"' + "]" * int(m.group(1)), text)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A fixture with one to four structural mutations."""
    _, base = draw(st.sampled_from(BASES))
    document: dict[str, Any] = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = paths_in(document)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = parent_of(document, path)
        action = draw(st.sampled_from(["swap", "swap", "drop", "duplicate", "wrap"]))
        if action == "drop":
            del parent[path[-1]]
        elif action == "duplicate" and isinstance(parent, list):
            parent.insert(path[-1], copy.deepcopy(parent[path[-1]]))  # type: ignore[arg-type]
        elif action == "wrap":
            parent[path[-1]] = draw(st.sampled_from([[parent[path[-1]]], {"value": parent[path[-1]]}]))
        else:
            parent[path[-1]] = draw(VALUES)
    return document


def _duplicate_a_key(text: str, data: st.DataObject) -> str:
    """Repeat one of the envelope's or a block's keys with another value (JSON allows it)."""
    keys = [k for k in ('"apply": ', '"rollback": ', '"chainhook": ', '"event": ', '"transactions": ',
                        '"block_identifier": ', '"timestamp": ') if k in text]
    if not keys:
        return text
    key = data.draw(st.sampled_from(keys))
    position = text.index(key)
    replacement = data.draw(st.sampled_from(["[], ", "null, ", "{}, ", "1, ", "[0], "]))
    return text[:position] + key + replacement + text[position:]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Mutated documents, serialized, and sometimes mutated again as bytes."""
    document = draw(documents())
    text = _deepen(json.dumps(document, ensure_ascii=draw(st.booleans())))
    encoding = draw(st.sampled_from(["plain", "plain", "plain", "duplicate-key", "truncate", "bad-utf8",
                                     "utf16", "wrap-deep", "long-number"]))
    data = draw(st.data())
    if encoding == "duplicate-key":
        text = _duplicate_a_key(text, data)
    elif encoding == "wrap-deep":
        depth = draw(st.integers(min_value=100, max_value=3000))
        text = text.replace('"chainhook": ', '"chainhook": ' + "[" * depth, 1)
        text = text.replace("}", "}" + "]" * depth, 1) if depth else text
    elif encoding == "long-number":
        text = text.replace('"timestamp": ', '"timestamp": ' + "9" * draw(st.integers(10, 6000)) + ", \"t\": ", 1)
    raw = text.encode("utf-8", "surrogatepass")
    if encoding == "truncate":
        raw = raw[:draw(st.integers(min_value=0, max_value=max(0, len(raw) - 1)))]
    elif encoding == "bad-utf8":
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])) + raw[at:]
    elif encoding == "utf16":
        raw = text.encode("utf-16", "surrogatepass")
    return raw


async def assert_log_consistent(db: asyncpg.Connection) -> None:
    """The log is gapless from 1, the cursor is its last entry, every row's last_cursor its newest change."""
    count, last = await db.fetchrow('SELECT count(*), coalesce(max("cursor"), 0) FROM chainhook_changes')
    assert count == last == await db.fetchval("SELECT last_cursor FROM chainhook_cursor")
    wrong = await db.fetchval('SELECT count(*) FROM (SELECT e.id FROM chainhook_events e '
                              'JOIN chainhook_changes c ON c.event_id = e.id GROUP BY e.id '
                              'HAVING e.last_cursor <> max(c."cursor")) w')
    assert wrong == 0


async def check_body(http: aiohttp.ClientSession, first: TestServer, second: TestServer,
                     db: asyncpg.Connection, body: bytes) -> int:
    """Deliver to one parse path, then the same body to the other: the second is a repeat."""
    before = await snapshot(db)
    status, answer = await post_raw(http, first, body)
    assert status < 500, (status, answer)
    if status >= 400:
        assert_error_shape(status, answer)
        assert await snapshot(db) == before, answer
        other, other_answer = await post_raw(http, second, body)
        # Both paths decide alike (a 422's path may differ: the streamed path meets transactions first).
        assert other == status, (answer, other_answer)
        assert await snapshot(db) == before, other_answer
        return status
    assert status == 200, answer
    await assert_log_consistent(db)
    # Exactly once, whichever path takes the repeat: no row changes and no cursor is taken.
    stored = await snapshot(db)
    for server in (second, first):
        again_status, again = await post_raw(http, server, body)
        assert again_status == 200, again
        assert again["applied"] == again["rolled_back"] == again["restored"] == 0, again
        assert (await snapshot(db))[:3] == stored[:3]
    await assert_log_consistent(db)
    return status


def run_in(loop: asyncio.AbstractEventLoop, coroutine: Awaitable[T]) -> T:
    """From Hypothesis's thread: run on the loop that serves the app, and wait."""
    async def wrapped() -> T:
        return await coroutine
    return asyncio.run_coroutine_threadsafe(wrapped(), loop).result(timeout=60)


async def run_hypothesis(test: Callable[[], None]) -> None:
    await asyncio.to_thread(test)


FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, print_blob=True,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                HealthCheck.large_base_example])


async def test_no_body_gets_a_5xx_and_a_refusal_changes_nothing(serve: Serve, http: aiohttp.ClientSession,
                                                               db: asyncpg.Connection) -> None:
    servers = {"whole": await serve(), "streamed": await serve(**STREAM_ALWAYS)}
    loop = asyncio.get_running_loop()
    outcomes: Counter[str] = Counter()

    @FUZZ_SETTINGS
    @given(body=bodies(), path=st.sampled_from(sorted(servers)))
    def fuzz(body: bytes, path: str) -> None:
        note(f"{path} path, body {body[:3000]!r}{'...' if len(body) > 3000 else ''}")
        other = servers["whole" if path == "streamed" else "streamed"]
        outcomes[f"{path} {run_in(loop, check_body(http, servers[path], other, db, body))}"] += 1

    await run_hypothesis(fuzz)
    print("path and status of each example:", dict(sorted(outcomes.items())))  # shown with -s


async def test_deep_nesting_is_refused_in_bounded_memory(serve: Serve, http: aiohttp.ClientSession,
                                                         db: asyncpg.Connection) -> None:
    servers = {"whole": await serve(), "streamed": await serve(**STREAM_ALWAYS)}
    loop = asyncio.get_running_loop()

    async def check(server: TestServer, body: bytes) -> int:
        before = await snapshot(db)
        with peak_rss_growth() as growth:
            status, answer = await post_raw(http, server, body)
        assert status == 422, answer
        assert_error_shape(status, answer)
        assert await snapshot(db) == before
        return growth[0]

    @settings(max_examples=max(6, EXAMPLES // 10), deadline=None)
    @given(name=st.sampled_from(sorted(_V1)), depth=st.integers(min_value=129, max_value=40_000),
           where=st.sampled_from(["uuid", "first-key", "last-key"]), path=st.sampled_from(sorted(servers)))
    def fuzz(name: str, depth: int, where: str, path: str) -> None:
        payload = copy.deepcopy(_V1[name])
        deep = "[" * depth + '"\\u0000"' + "]" * depth
        text = json.dumps(payload)
        if where == "uuid":
            text = text.replace('"chainhook": {', '"chainhook": {"nested": ' + deep + ", ", 1)
        elif where == "first-key":
            text = '{"deep": ' + deep + ", " + text[1:]
        else:
            text = text[:-1] + ', "deep": ' + deep + "}"
        growth = run_in(loop, check(servers[path], text.encode()))
        # Unbounded, 20,000 levels cost ~450 MB to 1 GB; the parsers stop at 128.
        assert growth < 64 * 1024 * 1024, growth

    await run_hypothesis(fuzz)
