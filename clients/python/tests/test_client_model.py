"""A property test of the real ``TimebankClient`` against the real server, with a reference model.

Hypothesis generates a list of steps and runs them against the real server on a real port (through
tests/client_harness.py's control plane, over HTTP) and real PostgreSQL, with one real client (and its
successors: a restart closes it and starts another on the same cursor file):

- ``Deliver``: one to three synthetic blocks of a few print events, of one of three contracts (each
  also stores its transaction's own ``contract_call`` row), at once or from a task of its own while
  the next steps run;
- ``DeliverNft``: the real NFT-mint fixture at a block of its own (an NFT mint, prints, an STX transfer);
- ``Rollback`` of a canonical block, ``Reapply`` of any block (a restore when it was rolled back, a
  repeat that changes nothing when it was not);
- ``Disconnect`` (the server drops the socket), ``Resync`` (the server resyncs it, as a slow
  consumer's), ``Cut`` (the network drops it, through a loopback proxy) and ``Hold`` (the proxy holds
  the server's bytes a moment and lets them through in one read: an ack with the replay after it);
- ``Subscribe``: overlapping filters (``{}``, contracts, event types, addresses, a seed form, the
  blocks topic), ``since`` 0, "now" or a past cursor, a handler that awaits a few ms per change (a
  backlog builds up behind it) or blocks the event loop that long (a bot that computes), every one
  with a key in the cursor file (a "now" waits until nothing is in flight and the link is up, so that
  the model knows where it starts);
- ``Pause``: the client runs on its own a moment, so that the next step lands mid-stream;
- ``Restart``: ``close()`` the client and start a new one with a new ``JsonFileCursorStore`` on the same
  file, ``batch`` and ``max_pending`` drawn again (a small ``max_pending`` makes the client drop the
  link for its own backlog and resume), and every subscription again with the same key, filter and
  ``since``.

The reference model is the database's change log, read at the end of the example: each subscription
must have been handed exactly the changes its filter matches with a cursor after its start (its
``since``, or the ack's cursor for "now"), once each, in cursor order, across every incarnation of the
client. docs/python-client.md ("At least once across a crash") allows one repeat at a restart: a
change whose handler had been called and whose cursor was not saved yet when ``close()`` stopped the
client. Handlers run one at a time, so that is at most one change per restart, the last one handed to
a handler before it: the check allows exactly that one, once, as the next change that subscription's
handler gets.

After every step, the cursor file holds for each key its start or a cursor its handler was given
(a cursor saved is a change handled, never one only queued).

Each example starts from an empty log (a fresh server on the truncated database). Bounded by default
(15 examples of 6 to 12 steps, well under a minute); a long run:

    CLIENT_MODEL_EXAMPLES=100 CLIENT_MODEL_STEPS=15 .venv/bin/pytest clients/python/tests/test_client_model.py
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from tests.client_harness import Harness, start_harness
from tests.conftest import Serve, eventually
from tests.expected import FREDDIE, MONSTERS, NAKAMOTO, SUBNET
from tests.payloads import SENDER, nft_block
from tests.tcp_proxy import TcpProxy
from timebank_realtime_client import Change, JsonFileCursorStore, Subscription, TimebankClient

EXAMPLES = int(os.environ.get("CLIENT_MODEL_EXAMPLES", "15"))
STEPS = int(os.environ.get("CLIENT_MODEL_STEPS", "12"))
CONTRACTS = (MONSTERS, SUBNET, FREDDIE)
# Small replay batches and tailer runs: replays take several reads, live changes come in several frames.
SERVER_SETTINGS: dict[str, Any] = {"replay_batch_size": 3, "tailer_batch_size": 4, "subscribe_rate_per_second": 1000}
WAIT = 30.0  # the bound of every wait for the client to catch up

# Overlapping filters over what the deliveries store. The model matches them on its own (``matches``).
FILTERS: tuple[dict[str, Any], ...] = (
    {},
    {"contract": MONSTERS},
    {"contract": [SUBNET, FREDDIE]},
    {"type": "contract", "contractId": SUBNET},
    {"event_type": "print_event"},
    {"event_type": ["nft_mint_event", "contract_call"]},
    {"address": SENDER},
    {"address": NAKAMOTO[1]},
    {"contract": MONSTERS, "event_type": "print_event"},
    {"topic": "blocks"},
)


# --- steps ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deliver:
    contract: int
    events: int
    blocks: int = 1
    # Delivered by a task of its own, a block every few ms, while the next steps run.
    background: bool = False


@dataclass(frozen=True)
class DeliverNft:
    pass


@dataclass(frozen=True)
class Rollback:
    which: int


@dataclass(frozen=True)
class Reapply:
    which: int


@dataclass(frozen=True)
class Disconnect:
    pass


@dataclass(frozen=True)
class Resync:
    pass


@dataclass(frozen=True)
class Cut:
    """The network drops the link under the client (no close handshake)."""


@dataclass(frozen=True)
class Hold:
    """The network holds the server's bytes for ``ms``, then lets them through at once, while the next
    steps run: what came meanwhile (an ack and the replay after it, live frames) arrives in one read."""

    ms: int


@dataclass(frozen=True)
class Subscribe:
    filter: int
    since: str | int | float  # "now", 0, or that part of the pushed head
    delay_ms: int
    # The handler is a plain function that blocks the event loop for delay_ms (a bot that computes),
    # instead of a coroutine that awaits it: messages pile up unread and come in bursts.
    blocking: bool = False


@dataclass(frozen=True)
class Pause:
    ms: int


@dataclass(frozen=True)
class Restart:
    batch: bool
    max_pending: int


Step = Deliver | DeliverNft | Rollback | Reapply | Disconnect | Resync | Cut | Hold | Subscribe | Pause | Restart

SUBSCRIBE = st.builds(Subscribe, filter=st.integers(0, len(FILTERS) - 1), since=st.sampled_from(["now", 0, 0.4, 0.8]),
                      delay_ms=st.sampled_from([0, 0, 2, 5]), blocking=st.booleans())
RESTART = st.builds(Restart, batch=st.booleans(), max_pending=st.sampled_from([10_000, 10_000, 8]))
DELIVER = st.builds(Deliver, contract=st.integers(0, len(CONTRACTS) - 1), events=st.integers(1, 4),
                    blocks=st.integers(1, 3), background=st.booleans())
# Deliveries weigh most: an example whose subscriptions get nothing proves little.
STEP: st.SearchStrategy[Step] = st.one_of(
    DELIVER, DELIVER, DELIVER, DELIVER,
    st.just(DeliverNft()),
    st.builds(Rollback, which=st.integers(0, 7)),
    st.builds(Reapply, which=st.integers(0, 7)),
    st.just(Disconnect()),
    st.just(Resync()),
    st.just(Cut()),
    st.builds(Hold, ms=st.sampled_from([20, 100, 300])),
    SUBSCRIBE, SUBSCRIBE,
    st.builds(Pause, ms=st.sampled_from([10, 50, 150])),
    RESTART,
)


# --- the reference model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogRow:
    cursor: int
    kind: str  # event, rollback, block, block_rollback
    contract_id: str
    event_type: str
    affected_addresses: tuple[str, ...]


async def read_log(db: asyncpg.Connection) -> list[LogRow]:
    rows = await db.fetch(
        'SELECT c."cursor", c.change, c.block_id IS NOT NULL AS is_block, e.contract_id, e.event_type, '
        "e.affected_addresses FROM chainhook_changes c LEFT JOIN chainhook_events e ON e.id = c.event_id "
        'ORDER BY c."cursor"')
    log = []
    for row in rows:
        kind = "block" if row["is_block"] else "event"
        if row["change"] == "rollback":
            kind = f"{kind}_rollback" if row["is_block"] else "rollback"
        log.append(LogRow(row["cursor"], kind, row["contract_id"] or "", row["event_type"] or "",
                          tuple(row["affected_addresses"] or ())))
    return log


def _values(value: str | list[str]) -> set[str]:
    return set(value) if isinstance(value, list) else {value}


def matches(filter_: dict[str, Any], row: LogRow) -> bool:
    """docs/protocol.md, Filters: the blocks topic gets blocks only; fields AND-ed, values OR-ed."""
    if filter_.get("type") == "contract":
        filter_ = {"contract": filter_["contractId"]}
    if filter_.get("topic") == "blocks":
        return row.kind in ("block", "block_rollback")
    if row.kind not in ("event", "rollback"):
        return False
    if "contract" in filter_ and row.contract_id not in _values(filter_["contract"]):
        return False
    if "event_type" in filter_ and row.event_type not in _values(filter_["event_type"]):
        return False
    return "address" not in filter_ or not _values(filter_["address"]).isdisjoint(row.affected_addresses)


@dataclass
class ModelSub:
    key: str
    filter: dict[str, Any]
    since: int | str
    delay: float
    blocking: bool
    # The cursor after which it wants every change: ``since``, or the ack's cursor for "now".
    start: int
    # Every change handed to its handler: (incarnation of the client, cursor, kind).
    seen: list[tuple[int, int, str]] = field(default_factory=list)
    current: Subscription | None = None


@dataclass
class BlockSpec:
    request: dict[str, Any]  # the control plane's delivery that applies it
    rollback: dict[str, Any]  # and the one that rolls it back
    canonical: bool = True


def check(sub: ModelSub, log: list[LogRow], last_handed: dict[int, tuple[str, int]]) -> list[str]:
    """What is wrong with what ``sub``'s handler got (nothing: an empty list). ``last_handed[n]``: the
    last (key, cursor) handed to any handler of incarnation ``n`` before it was closed."""
    expected = [(row.cursor, row.kind) for row in log if row.cursor > sub.start and matches(sub.filter, row)]
    got: list[tuple[int, str]] = []
    allowed: int | None = None  # the change the next incarnation may hand again
    incarnation: int | None = None
    for number, cursor, kind in sub.seen:
        if number != incarnation:
            # Closed since: the change in flight at the close, if it was this subscription's.
            for closed in range(incarnation if incarnation is not None else number, number):
                if closed in last_handed and last_handed[closed][0] == sub.key:
                    allowed = last_handed[closed][1]
            incarnation = number
            if cursor == allowed and got and got[-1][0] == cursor:
                event("a change handed again after a restart (at least once)")
                allowed = None
                continue
            allowed = None
        got.append((cursor, kind))
    if got == expected:
        return []
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    return [f"{sub.key} {sub.filter} since={sub.since} start={sub.start}: expected {len(expected)} changes, "
            f"got {len(got)}; missing {missing[:10]}, unexpected {extra[:10]}, "
            f"in order: {got == sorted(got)}, repeats: {len(got) - len(set(got))}",
            f"  seen (incarnation, cursor, kind): {sub.seen}"]


# --- running an example -------------------------------------------------------------------------------


class HoldingProxy(TcpProxy):
    """tests/tcp_proxy.py's proxy, whose pause also holds the chunk it is reading when paused (there the
    next chunk still passes): what the server sends from the pause on comes through together."""

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    gate: asyncio.Event | None) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, RuntimeError):
            while chunk := await reader.read(65536):
                if gate is not None:
                    await gate.wait()
                writer.write(chunk)
                await writer.drain()
        writer.close()
        self._transports.discard(writer.transport)



class World:
    """One example: a fresh log, the server, the client and its successors, the model."""

    def __init__(self, harness: Harness, proxy: TcpProxy, http: aiohttp.ClientSession, db: asyncpg.Connection,
                 cursor_file: Path) -> None:
        self.harness, self.proxy, self.http, self.db, self.cursor_file = harness, proxy, http, db, cursor_file
        self.holds: list[asyncio.TimerHandle] = []
        self.client: TimebankClient | None = None
        self.incarnation = 0
        self.max_pending = 0
        self.min_links = 0  # the client's connections count once its link is up again
        self.subs: list[ModelSub] = []
        self.blocks: list[BlockSpec] = []
        self.heights = 0
        self.links = 0  # connections made by every incarnation of the client
        self.feeds: list[asyncio.Task[None]] = []
        # Per incarnation of the client, the last change handed to a handler: (key, cursor).
        self.last_handed: dict[int, tuple[str, int]] = {}

    # --- the control plane ---

    async def control(self, route: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        async with self.http.post(self.harness.control_url + route, json=body) as response:
            answer: dict[str, Any] = await response.json()
            assert response.status == 200, answer
            return answer

    async def deliver(self, request: dict[str, Any]) -> None:
        answer = await self.control("/deliver", request)
        assert answer["status"] == 200, answer

    async def head(self) -> int:
        async with self.http.get(self.harness.control_url + "/head") as response:
            return int((await response.json())["cursor"])

    async def pushed(self) -> int:
        """Wait until the server has pushed every stored change; the head."""
        stored = int(await self.db.fetchval("SELECT last_cursor FROM chainhook_cursor"))
        for _ in range(int(WAIT / 0.02)):
            if await self.head() >= stored:
                return stored
            await asyncio.sleep(0.02)
        raise AssertionError(f"the server has not pushed up to cursor {stored}")

    # --- the client ---

    async def start_client(self, batch: bool, max_pending: int) -> None:
        self.incarnation += 1
        self.max_pending = max_pending
        note(f"client #{self.incarnation}: batch={batch} max_pending={max_pending}")
        self.client = TimebankClient(self.proxy.url, store=JsonFileCursorStore(self.cursor_file), batch=batch,
                                     max_pending=max_pending, backoff_initial=0.02, backoff_max=0.2)
        self.min_links = 0
        await self.client.start()
        for sub in self.subs:
            sub.current = await self.client.subscribe(sub.filter, self.handler(sub), key=sub.key, since=sub.since)

    def handler(self, sub: ModelSub) -> Callable[[Change], Any]:
        incarnation = self.incarnation

        def record(change: Change) -> None:
            sub.seen.append((incarnation, change.cursor, change.kind))
            self.last_handed[incarnation] = (sub.key, change.cursor)

        def compute(change: Change) -> None:
            record(change)
            time.sleep(sub.delay)

        async def handle(change: Change) -> None:
            record(change)
            if sub.delay:
                await asyncio.sleep(sub.delay)

        return compute if sub.blocking else handle

    async def connected(self) -> TimebankClient:
        """The client's link is up, as the server sees it too: after a forced disconnect or resync the
        client may not have noticed yet (its state still says connected)."""
        client = self.client
        assert client is not None
        hub = self.harness.hub

        def up() -> bool:
            sessions = list(hub.sessions.values())
            return (client.state == "connected" and client.connections >= self.min_links and len(sessions) == 1
                    and not sessions[0].resyncing)

        await eventually(up, within=WAIT, interval=0.01)
        return client

    async def caught_up(self, client: TimebankClient) -> None:
        """Every replay over and every change handled: nothing more comes to this client by itself."""
        def idle() -> bool:
            return not client.pending and all(sub.current is None or sub.current.live for sub in self.subs)

        await eventually(idle, within=WAIT, interval=0.01)
        await self.connected()

    # --- the steps ---

    async def run(self, step: Step) -> None:
        match step:
            case Deliver() | DeliverNft() | Rollback() | Reapply():
                await self.chain(step)
            case Disconnect():
                self.dropped((await self.control("/disconnect"))["dropped"])
            case Resync():
                self.dropped((await self.control("/resync"))["resynced"])
            case Cut():
                self.dropped(self.proxy.cut())
            case Hold(ms=ms):
                self.proxy.pause()
                self.holds.append(asyncio.get_running_loop().call_later(ms / 1000, self.proxy.resume))
            case Subscribe():
                await self.subscribe(step)
            case Pause(ms=ms):
                await asyncio.sleep(ms / 1000)
            case Restart(batch=batch, max_pending=max_pending):
                assert self.client is not None
                await self.client.close()
                self.links += self.client.connections
                await self.start_client(batch, max_pending)

    def dropped(self, links: int) -> None:
        """The client's link is gone (if it had one): the next one it makes is the first up again."""
        if links and self.client is not None:
            self.min_links = self.client.connections + 1

    async def chain(self, step: Deliver | DeliverNft | Rollback | Reapply) -> None:
        """What happens on the chain: blocks applied, rolled back, applied again."""
        match step:
            case Deliver(background=True):
                self.feeds.append(asyncio.create_task(self.synthetic(step, pause=0.015)))
            case Deliver():
                await self.synthetic(step)
            case DeliverNft():
                self.heights += 1
                body = nft_block(self.heights)
                rollback = {**body, "apply": [], "rollback": body["apply"]}
                await self.deliver({"kind": "nft", "number": self.heights})
                self.blocks.append(BlockSpec({"kind": "payload", "payload": body},
                                             {"kind": "payload", "payload": rollback}))
            case Rollback(which=which):
                canonical = [block for block in self.blocks if block.canonical]
                if canonical:
                    block = canonical[-1 - which % len(canonical)]
                    block.canonical = False
                    await self.deliver(block.rollback)
            case Reapply(which=which):
                if self.blocks:
                    block = self.blocks[-1 - which % len(self.blocks)]
                    event("reapply: a restore" if not block.canonical else "reapply: a repeat")
                    block.canonical = True
                    await self.deliver(block.request)

    async def synthetic(self, step: Deliver, pause: float = 0.0) -> None:
        for _ in range(step.blocks):
            self.heights += 1
            request = {"kind": "synthetic", "height": self.heights, "events": step.events,
                       "contract": CONTRACTS[step.contract]}
            await self.deliver(request)
            # Known once stored: a rollback step picks among these.
            self.blocks.append(BlockSpec(request, {**request, "rollback": True}))
            await asyncio.sleep(pause)

    async def fed(self) -> None:
        """Every background delivery made."""
        feeds, self.feeds = self.feeds, []
        for feed in feeds:
            await feed

    async def subscribe(self, step: Subscribe) -> None:
        assert self.client is not None
        filter_ = FILTERS[step.filter]
        sub = ModelSub(key=f"s{len(self.subs)}", filter=filter_, since=0, delay=step.delay_ms / 1000,
                       blocking=step.blocking, start=0)
        if step.since == "now":
            # "now" is where the server is when it takes the subscribe: the model knows it when nothing is
            # in flight and the link stays up, so wait for that (the link drops only for the client's own
            # backlog here, with a small max_pending: wait for its handlers to catch up then).
            await self.fed()
            head = await self.pushed()
            client = await self.connected()
            if self.max_pending < 100:
                await self.caught_up(client)
            links = client.connections
            sub.since, sub.start = "now", head
            sub.current = await client.subscribe(filter_, self.handler(sub), key=sub.key, since="now")
            assert (client.connections, sub.current.ack_cursor) == (links, head), "the link dropped meanwhile"
        else:
            since = int(await self.head() * step.since)
            sub.since = sub.start = since
            sub.current = await self.client.subscribe(filter_, self.handler(sub), key=sub.key, since=since)
        self.subs.append(sub)

    def check_store(self) -> None:
        """At any time, the cursor file holds for each key where its subscription starts or a change its
        handler has been given: a cursor saved is a change handled (docs/python-client.md), never one
        only queued."""
        if not self.cursor_file.exists():
            return
        stored = json.loads(self.cursor_file.read_text())
        for sub in self.subs:
            if sub.key in stored and stored[sub.key] != sub.start:
                assert stored[sub.key] in {cursor for _, cursor, _ in sub.seen}, \
                    f"{sub.key}: the file holds {stored[sub.key]}, handed so far {sub.seen}"

    # --- the end ---

    async def failures(self) -> list[str]:
        """Wait (bounded) until every subscription got what the log says, then check once more after a
        moment for anything more."""
        await self.fed()
        await self.pushed()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while True:
            log = await read_log(self.db)
            found = [line for sub in self.subs for line in check(sub, log, self.last_handed)]
            if not found:
                await asyncio.sleep(0.3)
                log = await read_log(self.db)
                return [line for sub in self.subs for line in check(sub, log, self.last_handed)]
            if loop.time() > deadline:
                return found
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for hold in self.holds:
            hold.cancel()
        self.proxy.resume()
        for feed in self.feeds:
            feed.cancel()
        await asyncio.gather(*self.feeds, return_exceptions=True)
        if self.client is not None:
            await self.client.close()
            self.links += self.client.connections


async def reset(db: asyncpg.Connection) -> None:
    await db.execute(
        "TRUNCATE chainhook_changes, chainhook_events, chainhook_blocks, chainhook_deliveries RESTART IDENTITY;"
        "UPDATE chainhook_cursor SET last_cursor = 0")


EXAMPLE_NUMBERS = iter(range(1_000_000))


@pytest.mark.timeout(int(os.environ.get("CLIENT_MODEL_TIMEOUT", str(120 + 10 * EXAMPLES))))
@settings(max_examples=EXAMPLES, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(first=st.lists(SUBSCRIBE, min_size=1, max_size=2), steps=st.lists(STEP, min_size=STEPS // 2, max_size=STEPS),
       config=RESTART)
async def test_client_model(serve: Serve, db: asyncpg.Connection, http: aiohttp.ClientSession, tmp_path: Path,
                            first: list[Subscribe], steps: list[Step], config: Restart) -> None:
    await reset(db)
    cursor_file = tmp_path / f"example-{next(EXAMPLE_NUMBERS)}" / "cursors.json"
    async with start_harness(serve, **SERVER_SETTINGS) as harness:
        proxy = await HoldingProxy(harness.server.port).start()  # type: ignore[arg-type]
        world = World(harness, proxy, http, db, cursor_file)
        try:
            await world.start_client(config.batch, config.max_pending)
            for step in [*first, *steps]:
                await world.run(step)
                world.check_store()
            failures = await world.failures()
        finally:
            await world.close()
            await proxy.close()
            await harness.server.close()
    event(f"subscriptions: {len(world.subs)}, incarnations: {world.incarnation}")
    handed = sum(len(sub.seen) for sub in world.subs)
    event(f"changes handed: {'0' if not handed else '1-19' if handed < 20 else '20-99' if handed < 100 else '100+'}")
    event(f"links made: {world.links}")
    assert not failures, "\n".join(failures)
    if cursor_file.exists():
        # The file holds, per key, the last change handled (or the ack's cursor for one that got none).
        stored = json.loads(cursor_file.read_text())
        for sub in world.subs:
            if sub.seen:
                assert stored[sub.key] == sub.seen[-1][1], (sub.key, stored)
