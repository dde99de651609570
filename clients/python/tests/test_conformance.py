"""clients/conformance.json, the scenarios both client packages pass: one test per scenario id, each
against the real server on a real port, driven through the test control plane (tests/client_harness.py)
over HTTP, as a client in another process would drive it. What each subscription must have got is read
from the database's change log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.client_harness import Harness, start_harness
from tests.conftest import Serve, eventually, settle
from timebank_realtime.realtime.subscriptions import FilterError, parse_filter
from timebank_realtime_client import (
    Block,
    BlockRollback,
    Change,
    Event,
    JsonFileCursorStore,
    Rollback,
    SubscriptionRefused,
    TimebankClient,
    parse_change,
)

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = json.loads((ROOT / "clients" / "conformance.json").read_text())["scenarios"]
# Contracts of the synthetic deliveries: each test's filters tell its changes apart by contract.
MONSTERS = "ST3FFRX7C911PZP5RHE148YDVDD9JWVS6FZRA60VS.monsters"
SUBNET = "ST13F481SBR0R7Z6NMMH8YV2FJJYXA5JPA0AD3HP9.subnet-v1"
# The sender of every synthetic transaction.
SENDER = "ST16GEW6P7GBGZG0PXRXFJEMR3TJHJEY2HHFN76M2"
# A synthetic block of n print events stores n + 1 rows: its transaction's contract call too.

IMPLEMENTED: dict[str, Callable[..., Awaitable[None]]] = {}
Seen = list[tuple[str, int]]


def scenario(scenario_id: str) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]]:
    def register(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        IMPLEMENTED[scenario_id] = test
        return test
    return register


class Control:
    """The harness's control plane, over HTTP."""

    def __init__(self, http: aiohttp.ClientSession, harness: Harness) -> None:
        self._http, self._url = http, harness.control_url

    async def deliver(self, height: int, events: int = 2, *, contract: str = MONSTERS, rollback: bool = False,
                      success: bool = True) -> str:
        """One block of ``events`` print events of ``contract`` in one transaction; its tx hash."""
        request = {"kind": "synthetic", "height": height, "events": events, "contract": contract,
                   "rollback": rollback, "success": success}
        async with self._http.post(self._url + "/deliver", json=request) as response:
            answer = await response.json()
        assert answer["status"] == 200, answer
        return str(answer["tx_hash"])

    async def head(self) -> int:
        async with self._http.get(self._url + "/head") as response:
            return int((await response.json())["cursor"])

    async def pushed(self, db: asyncpg.Connection) -> int:
        """Wait until the server has pushed every stored change: "now" is after them from then on (the
        tailer pushes a commit a moment after the webhook answers)."""
        stored = int(await db.fetchval("SELECT last_cursor FROM chainhook_cursor"))
        for _ in range(200):  # 10 s
            if await self.head() >= stored:
                return stored
            await asyncio.sleep(0.05)
        raise AssertionError(f"the server has not pushed up to cursor {stored}")

    async def post(self, route: str) -> dict[str, Any]:
        async with self._http.post(self._url + route) as response:
            assert response.status == 200
            answer: dict[str, Any] = await response.json()
            return answer


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Change] = []

    async def __call__(self, change: Change) -> None:
        self.changes.append(change)

    @property
    def seen(self) -> Seen:
        return [(change.kind, change.cursor) for change in self.changes]


async def event_changes(db: asyncpg.Connection, where: str = "TRUE", *args: Any) -> Seen:
    """The log's changes of events matching ``where`` (on ``e``, the event), as a handler gets them."""
    rows = await db.fetch(
        "SELECT c.\"cursor\", CASE WHEN c.change = 'rollback' THEN 'rollback' ELSE 'event' END AS kind "
        f"FROM chainhook_changes c JOIN chainhook_events e ON e.id = c.event_id WHERE {where} ORDER BY 1", *args)
    return [(row["kind"], row["cursor"]) for row in rows]


async def block_changes(db: asyncpg.Connection) -> Seen:
    rows = await db.fetch(
        "SELECT c.\"cursor\", CASE WHEN c.change = 'rollback' THEN 'block_rollback' ELSE 'block' END AS kind "
        "FROM chainhook_changes c WHERE c.block_id IS NOT NULL ORDER BY 1")
    return [(row["kind"], row["cursor"]) for row in rows]


async def got_exactly(recorder: Recorder, expected: Seen, *, within: float = 15) -> None:
    """The recorder gets every expected change, and nothing more comes after."""
    assert expected, "a scenario that expects nothing proves nothing"
    await eventually(lambda: len(recorder.changes) >= len(expected), within=within)
    await settle()
    assert recorder.seen == expected


@pytest.fixture
async def harness(serve: Serve) -> AsyncIterator[Harness]:
    async with start_harness(serve) as started:
        yield started


@pytest.fixture
def control(http: aiohttp.ClientSession, harness: Harness) -> Control:
    return Control(http, harness)


def test_the_scenarios_are_those_of_conformance_json() -> None:
    assert sorted(IMPLEMENTED) == sorted(case["id"] for case in SCENARIOS)
    assert len(IMPLEMENTED) == len(SCENARIOS)


@scenario("live-exactly-once")
async def test_live_exactly_once(harness: Harness, control: Control, db: asyncpg.Connection) -> None:
    await control.deliver(1)  # before the subscription: not for it
    head = await control.pushed(db)
    recorder = Recorder()
    async with TimebankClient(harness.url) as client:
        subscription = await client.subscribe({"contract": MONSTERS}, recorder)
        assert (subscription.subscribed_since, subscription.ack_cursor) == ("now", head)
        await control.deliver(2, 3)
        await control.deliver(3, 2, contract=SUBNET)
        await control.deliver(4, 1)
        expected = await event_changes(db, "e.contract_id = $1 AND c.\"cursor\" > $2", MONSTERS,
                                       subscription.ack_cursor)
        await got_exactly(recorder, expected)
    assert len(expected) == 6 and all(kind == "event" for kind, _ in expected)
    assert [change.block_height for change in recorder.changes] == [2] * 4 + [4] * 2


@scenario("replay-then-live")
async def test_replay_then_live(serve: Serve, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    # Small replay batches: the replay takes several reads while deliveries keep coming.
    async with start_harness(serve, replay_batch_size=3) as harness:
        control = Control(http, harness)
        for height in range(1, 7):
            await control.deliver(height, 2, contract=MONSTERS if height % 3 else SUBNET)
        recorder = Recorder()
        async with TimebankClient(harness.url) as client:
            during = asyncio.create_task(deliver_each(control, range(7, 11)))
            await client.subscribe({"contract": MONSTERS}, recorder, since=0)
            await during
            await control.deliver(11, 2)
            expected = await event_changes(db, "e.contract_id = $1", MONSTERS)
            await got_exactly(recorder, expected)
        async with http.get(harness.url + "/api/events", params={"contract": MONSTERS, "limit": "1000"}) as response:
            history = (await response.json())["events"]
    # The same events, field for field, as the history API's rows.
    assert recorder.changes == [parse_change(row) for row in history]
    assert all(isinstance(change, Event) for change in recorder.changes)


async def deliver_each(control: Control, heights: range, contract: str = MONSTERS) -> None:
    for height in heights:
        await control.deliver(height, 2, contract=contract)
        await asyncio.sleep(0.02)


@scenario("seed-forms")
async def test_seed_forms(harness: Harness, control: Control, db: asyncpg.Connection) -> None:
    await control.deliver(1, 2)
    await control.deliver(2, 2, contract=SUBNET)
    pairs = [({"type": "contract", "contractId": MONSTERS}, {"contract": MONSTERS}),
             ({"type": "user", "address": SENDER}, {"address": SENDER}),
             ({"type": "event-type", "eventType": "print_event"}, {"event_type": "print_event"})]
    recorders = [(Recorder(), Recorder()) for _ in pairs]
    async with TimebankClient(harness.url) as client:
        for (seed, plain), (seed_recorder, plain_recorder) in zip(pairs, recorders, strict=True):
            await client.subscribe(seed, seed_recorder, since=0)
            await client.subscribe(plain, plain_recorder, since=0)
        await control.deliver(3, 2)
        await control.deliver(4, 2, contract=SUBNET)
        expected = [await event_changes(db, "e.contract_id = $1", MONSTERS),
                    await event_changes(db, "$1 = ANY(e.affected_addresses)", SENDER),
                    await event_changes(db, "e.event_type = 'print_event'")]
        for (seed_recorder, plain_recorder), wanted in zip(recorders, expected, strict=True):
            await got_exactly(plain_recorder, wanted)
            assert seed_recorder.seen == plain_recorder.seen
    # The three filters differ: each pair is tested on its own changes.
    assert len({tuple(wanted) for wanted in expected}) == 3


@scenario("overlapping-subscriptions")
async def test_overlapping_subscriptions(harness: Harness, control: Control, db: asyncpg.Connection) -> None:
    for height in range(1, 4):
        await control.deliver(height, 2, contract=MONSTERS if height % 2 else SUBNET)
    head = await control.pushed(db)
    everything, monsters, prints = Recorder(), Recorder(), Recorder()
    async with TimebankClient(harness.url) as client:
        *_, live = await asyncio.gather(client.subscribe({}, everything, since=0),
                                        client.subscribe({"contract": MONSTERS}, monsters, since=2),
                                        client.subscribe({"event_type": "print_event"}, prints))
        assert live.ack_cursor == head
        for height in range(4, 8):
            await control.deliver(height, 2, contract=MONSTERS if height % 2 else SUBNET)
        await got_exactly(everything, await event_changes(db))
        await got_exactly(monsters, await event_changes(db, "e.contract_id = $1 AND c.\"cursor\" > 2", MONSTERS))
        await got_exactly(prints, await event_changes(db, "e.event_type = 'print_event' AND c.\"cursor\" > $1", head))


@scenario("forced-disconnect")
async def test_forced_disconnect(harness: Harness, control: Control, db: asyncpg.Connection) -> None:
    everything, monsters = Recorder(), Recorder()
    client = TimebankClient(harness.url, backoff_initial=0.05, backoff_max=0.3)
    try:
        await client.start()
        await client.subscribe({}, everything, since=0)
        await client.subscribe({"contract": MONSTERS}, monsters, since=0)
        delivering = asyncio.create_task(deliver_alternately(control, range(1, 21)))
        for dropped in range(1, 4):
            await asyncio.sleep(0.2)
            assert (await control.post("/disconnect"))["dropped"] == 1
            await eventually(connected(client, times=dropped + 1), within=10)
        await delivering
        await got_exactly(everything, await event_changes(db), within=30)
        await got_exactly(monsters, await event_changes(db, "e.contract_id = $1", MONSTERS))
        assert client.connections == 4
    finally:
        await client.close()


def connected(client: TimebankClient, *, times: int) -> Callable[[], bool]:
    return lambda: client.connections == times and client.state == "connected"


async def deliver_alternately(control: Control, heights: range) -> None:
    for height in heights:
        await control.deliver(height, 2, contract=MONSTERS if height % 2 else SUBNET)
        await asyncio.sleep(0.03)


@scenario("resync")
async def test_resync(harness: Harness, control: Control, db: asyncpg.Connection) -> None:
    monsters, subnet = Recorder(), Recorder()
    client = TimebankClient(harness.url, backoff_initial=0.05, backoff_max=0.3)
    try:
        await client.start()
        first = await client.subscribe({"contract": MONSTERS}, monsters, since=0)
        second = await client.subscribe({"contract": SUBNET}, subnet, since=0)
        await control.deliver(1, 2)
        await control.deliver(2, 2, contract=SUBNET)
        await eventually(lambda: len(monsters.changes) == 3 and len(subnet.changes) == 3)
        head = (await control.post("/resync"))["resynced"]
        assert head == 1
        # Reconnected and resubscribed from the positions the resync gave: for a live subscription, the
        # last cursor pushed (the second block's own change), beyond the subscriptions' last events.
        await eventually(connected(client, times=2))
        pushed = await control.head()
        assert first.subscribed_since == second.subscribed_since == pushed
        assert monsters.changes[-1].cursor < subnet.changes[-1].cursor < pushed
        delivering = asyncio.create_task(deliver_alternately(control, range(3, 9)))
        await asyncio.sleep(0.1)
        assert (await control.post("/resync"))["resynced"] == 1
        await delivering
        await got_exactly(monsters, await event_changes(db, "e.contract_id = $1", MONSTERS), within=20)
        await got_exactly(subnet, await event_changes(db, "e.contract_id = $1", SUBNET))
        assert client.connections == 3
    finally:
        await client.close()


@scenario("rollback")
async def test_rollback(harness: Harness, control: Control, db: asyncpg.Connection) -> None:
    recorder = Recorder()
    async with TimebankClient(harness.url) as client:
        await client.subscribe({"contract": MONSTERS}, recorder)
        await control.deliver(5, 2)
        await control.deliver(5, 2, rollback=True)
        await control.deliver(5, 2)  # the same block back: a restore
        await got_exactly(recorder, await event_changes(db, "e.contract_id = $1", MONSTERS))
    applied, rolled_back, restored = recorder.changes[:3], recorder.changes[3:6], recorder.changes[6:]
    assert all(isinstance(change, Event) for change in applied + restored)
    assert all(isinstance(change, Rollback) and change.canonical is False for change in rolled_back)
    # Within a delivery, rollbacks come newest first.
    assert [change.id for change in reversed(rolled_back)] == [change.id for change in applied] == \
        [change.id for change in restored]
    cursors = [change.cursor for change in recorder.changes]
    assert cursors == sorted(cursors) and len(set(cursors)) == 9


@scenario("reload-resume")
async def test_reload_resume(harness: Harness, control: Control, db: asyncpg.Connection, tmp_path: Path) -> None:
    cursor_file = tmp_path / "cursors.json"
    first = Recorder()
    async with TimebankClient(harness.url, store=JsonFileCursorStore(cursor_file)) as client:
        await client.subscribe({"contract": MONSTERS}, first, key="bot", since=0)
        await control.deliver(1, 2)
        await control.deliver(2, 2)
        await got_exactly(first, await event_changes(db, "e.contract_id = $1", MONSTERS))
    assert json.loads(cursor_file.read_text()) == {"bot": first.changes[-1].cursor}
    # Away: these are for the next run.
    await control.deliver(3, 2)
    await control.deliver(4, 2, contract=SUBNET)
    second = Recorder()
    async with TimebankClient(harness.url, store=JsonFileCursorStore(cursor_file)) as client:
        subscription = await client.subscribe({"contract": MONSTERS}, second, key="bot", since=0)
        assert subscription.subscribed_since == first.changes[-1].cursor
        await control.deliver(5, 2)
        await got_exactly(second, await event_changes(db, "e.contract_id = $1 AND c.\"cursor\" > $2", MONSTERS,
                                                     first.changes[-1].cursor))
    assert [change.block_height for change in second.changes] == [3] * 3 + [5] * 3
    assert json.loads(cursor_file.read_text()) == {"bot": second.changes[-1].cursor}


@scenario("batch-frames")
async def test_batch_frames(harness: Harness, control: Control, db: asyncpg.Connection) -> None:
    await control.deliver(1, 3)
    batched, single = Recorder(), Recorder()
    async with TimebankClient(harness.url, batch=True) as frames, TimebankClient(harness.url, batch=False) as messages:
        await frames.subscribe({}, batched, since=0)
        await messages.subscribe({}, single, since=0)
        assert sorted(session.batched for session in harness.hub.sessions.values()) == [False, True]
        await control.deliver(2, 3)
        await control.deliver(2, 3, rollback=True)
        await control.deliver(3, 3, contract=SUBNET)
        expected = await event_changes(db)
        await got_exactly(batched, expected)
        await got_exactly(single, expected)
    assert "rollback" in {kind for kind, _ in expected}


@scenario("blocks")
async def test_blocks(harness: Harness, control: Control, db: asyncpg.Connection) -> None:
    await control.deliver(1, 2)
    blocks, events = Recorder(), Recorder()
    async with TimebankClient(harness.url) as client:
        await client.subscribe({"topic": "blocks"}, blocks, since=0)
        await client.subscribe({}, events, since=0)
        await control.deliver(2, 2, contract=SUBNET)
        await control.deliver(2, 2, contract=SUBNET, rollback=True)
        await control.deliver(3, 1)
        await got_exactly(events, await event_changes(db))
        await got_exactly(blocks, await block_changes(db))
    assert all(isinstance(change, Block | BlockRollback) for change in blocks.changes)
    assert [(change.kind, change.block_height) for change in blocks.changes] == \
        [("block", 1), ("block", 2), ("block_rollback", 2), ("block", 3)]
    assert not any(isinstance(change, Block | BlockRollback) for change in events.changes)


@scenario("refused-subscription")
async def test_refused_subscription(harness: Harness, control: Control, db: asyncpg.Connection) -> None:
    bad = {"contract": "SPBAD.x"}
    with pytest.raises(FilterError) as server_says:
        parse_filter(bad)
    recorder = Recorder()
    async with TimebankClient(harness.url) as client:
        await client.subscribe({"contract": MONSTERS}, recorder)
        with pytest.raises(SubscriptionRefused) as refused:
            await client.subscribe(bad, Recorder())
        assert (refused.value.code, refused.value.message) == (server_says.value.code, server_says.value.message)
        assert refused.value.code == "invalid_contract"
        with pytest.raises(SubscriptionRefused) as unknown_form:
            await client.subscribe({"type": "wallet", "id": 1}, Recorder())
        assert unknown_form.value.code == "invalid_filter"
        await control.deliver(1, 2)
        await got_exactly(recorder, await event_changes(db, "e.contract_id = $1", MONSTERS))


@scenario("transaction-watch")
async def test_transaction_watch(harness: Harness, control: Control, db: asyncpg.Connection) -> None:
    failed_tx = await control.deliver(9, 1, success=False)  # stored before its watch begins
    async with TimebankClient(harness.url) as client:
        watch = await client.watch_transaction(f"0x{7:062x}AA")  # any case: hashes compare in lower case
        async with asyncio.timeout(10):
            assert watch.status == "pending"
            await control.deliver(6, 2)  # another transaction: still pending
            await control.deliver(7, 2)
            assert await watch.until("confirmed") == "confirmed"
            await control.deliver(7, 2, rollback=True)
            assert await watch.until("rolled_back") == "rolled_back"
            failed = await client.watch_transaction(failed_tx)
            assert await failed.until("confirmed", "failed") == "failed"
        await settle()
        assert watch.history == ["pending", "confirmed", "rolled_back"]
        assert [change.kind for change in watch.changes] == ["event"] * 3 + ["rollback"] * 3
        assert {change.tx_hash for change in watch.changes} == {f"0x{7:062x}aa"}
        await watch.close()
        await failed.close()
