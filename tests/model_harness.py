"""Harness for the delivery model (tests/test_delivery_model.py): an event loop on a thread, the real
app on a real port, a loopback proxy per client that can pause or cut its connection, Chainhook v1
payloads over a tiny universe, and a reference client that follows the client rules of docs/protocol.md on a
raw ``socketio.AsyncClient`` with NO dedupe, so that a repeat or a gap shows up as a failure."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import asyncpg
import socketio
from aiohttp import web

from timebank_realtime.app import create_app
from timebank_realtime.keys import HUB
from timebank_realtime.realtime.hub import RealtimeHub

from .conftest import WEBHOOK, close_http, make_settings
from .expected import BNS_A, FREDDIE, MONSTERS
from .payloads import RECIPIENT, SENDER
from .tcp_proxy import TcpProxy

T = TypeVar("T")

# The tiny universe: filters over it overlap a lot.
CONTRACTS = (MONSTERS, FREDDIE)
ADDRESSES = (SENDER, RECIPIENT, BNS_A)
EVENT_TYPES = ("print_event", "ft_transfer_event", "contract_call")

# Settings that make replays come in several batches, runs of several changes, and slow readers
# resynced quickly (see Settings in timebank_realtime/settings.py).
MODEL_SETTINGS: dict[str, Any] = {
    "slow_consumer_backlog": 10,
    "replay_batch_size": 4,
    "tailer_batch_size": 5,
    "socket_ping_timeout_seconds": 1.0,
    "socket_ping_interval_seconds": 25,
    "subscribe_rate_per_second": 1000,
    "tailer_poll_seconds": 0.25,
}

WAIT = 10.0  # the bound of every wait for the system to settle


async def until(check: Callable[[], bool], what: str, within: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for: {what}")
        await asyncio.sleep(0.005)


class LoopThread:
    """One event loop on a background thread for the whole test; the synchronous state machine
    hands it coroutines with a bounded wait."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="model-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        async def finish() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(finish(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


# --- the server ------------------------------------------------------------------------------------


class Node:
    """The real application on a real loopback port. Its accepted connections have a small send
    buffer (inherited from the listening socket), so that a reader that stops shows up quickly."""

    def __init__(self, dsn: str, **overrides: Any) -> None:
        self.app = create_app(make_settings(dsn, **{**MODEL_SETTINGS, **overrides}))
        self.runner = web.AppRunner(self.app, shutdown_timeout=2)
        self.port = 0

    async def start(self) -> Node:
        await self.runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self.runner, sock)
        await site.start()
        return self

    @property
    def hub(self) -> RealtimeHub:
        return self.app[HUB]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def reset_database(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "TRUNCATE chainhook_changes, chainhook_events, chainhook_blocks, chainhook_deliveries RESTART IDENTITY;"
            "UPDATE chainhook_cursor SET last_cursor = 0")
    finally:
        await conn.close()


@dataclass(frozen=True)
class LogRow:
    cursor: int
    kind: str  # "event" or "rollback"
    contract_id: str
    event_type: str
    tx_hash: str
    affected_addresses: tuple[str, ...]


async def read_log(dsn: str) -> tuple[int, list[LogRow]]:
    """The whole change log with the filter columns of each change's row, and the head cursor."""
    conn = await asyncpg.connect(dsn)
    try:
        head: int = await conn.fetchval("SELECT last_cursor FROM chainhook_cursor")
        rows = await conn.fetch(
            'SELECT c."cursor", c.change, e.contract_id, e.event_type, e.tx_hash, e.affected_addresses '
            'FROM chainhook_changes c JOIN chainhook_events e ON e.id = c.event_id ORDER BY c."cursor"')
        # The log has no foreign key to the events (ingest speed): no logged change may name a missing one.
        dangling = await conn.fetchval(
            "SELECT count(*) FROM chainhook_changes c WHERE c.event_id IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM chainhook_events e WHERE e.id = c.event_id)")
        assert dangling == 0, f"{dangling} logged changes name an event that does not exist"
    finally:
        await conn.close()
    return head, [LogRow(r["cursor"], "rollback" if r["change"] == "rollback" else "event", r["contract_id"],
                         r["event_type"], r["tx_hash"], tuple(r["affected_addresses"])) for r in rows]


async def head_cursor(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        value: int = await conn.fetchval("SELECT last_cursor FROM chainhook_cursor")
        return value
    finally:
        await conn.close()


async def post(http: aiohttp.ClientSession, node: Node, body: Mapping[str, Any]) -> dict[str, Any]:
    async with asyncio.timeout(30), http.post(node.url + WEBHOOK, data=json.dumps(body).encode()) as response:
        answer: dict[str, Any] = await response.json()
        assert response.status == 200, answer
        return answer


async def pausable_proxy(target_port: int) -> TcpProxy:
    """A proxy for one client, with small buffers so that a paused reader backs the server up quickly."""
    return await TcpProxy(target_port, buffer_bytes=4096).start()


# --- payloads ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventSpec:
    """One receipt event: a print of ``contract``, or an ft transfer of ``contract``'s token from
    ADDRESSES[sender] to ADDRESSES[recipient]."""

    kind: str  # "print" or "ft"
    contract: int
    sender: int = 0
    recipient: int = 1


def _uint(n: int) -> str:
    return "0x01" + n.to_bytes(16, "big").hex()


def block(number: int, caller: int, contract: int, events: Sequence[EventSpec], *, padding: int = 0) -> dict[str, Any]:
    """Block ``number``: one contract call of CONTRACTS[contract] by ADDRESSES[caller] (a
    ``contract_call`` row) with ``events`` (a ``print_event`` or ``ft_transfer_event`` row each)."""
    receipt = []
    for index, spec in enumerate(events):
        data: dict[str, Any]
        if spec.kind == "print":
            data = {"contract_identifier": CONTRACTS[spec.contract], "topic": "print", "raw_value": _uint(index)}
            if padding:
                data["note"] = "x" * padding
            receipt.append({"type": "SmartContractEvent", "position": {"index": index}, "data": data})
        else:
            data = {"asset_identifier": f"{CONTRACTS[spec.contract]}::token", "sender": ADDRESSES[spec.sender],
                    "recipient": ADDRESSES[spec.recipient], "amount": str(index + 1)}
            receipt.append({"type": "FTTransferEvent", "position": {"index": index}, "data": data})
    height = 100_000 + number
    return {
        "block_identifier": {"index": height, "hash": f"0x{number:064x}"},
        "parent_block_identifier": {"index": height - 1, "hash": f"0x{number - 1:064x}"},
        "timestamp": 1_730_000_000 + number,
        "metadata": {},
        "transactions": [{
            "transaction_identifier": {"hash": f"0x{number:062x}aa"},
            "operations": [],
            "metadata": {
                "success": True, "sender": ADDRESSES[caller], "result": "(ok true)", "fee": 1000, "nonce": number,
                "position": {"index": 0}, "raw_tx": "0x",
                "kind": {"type": "ContractCall", "data": {"contract_identifier": CONTRACTS[contract],
                                                           "method": "emit", "args": []}},
                "receipt": {"events": receipt, "mutated_contracts_radius": [], "mutated_assets_radius": []},
            },
        }],
    }


def apply_payload(blk: dict[str, Any]) -> dict[str, Any]:
    return {"apply": [blk], "rollback": [], "chainhook": {"uuid": "model", "predicate": {"scope": "block_height"},
                                                          "is_streaming_blocks": True}}


def rollback_payload(blk: dict[str, Any]) -> dict[str, Any]:
    return {"apply": [], "rollback": [blk], "chainhook": {"uuid": "model", "predicate": {"scope": "block_height"},
                                                          "is_streaming_blocks": True}}


# --- filters (pure) ----------------------------------------------------------------------------------


def _values(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


def matches(filter_: Mapping[str, str | list[str]], row: Mapping[str, Any]) -> bool:
    """The filter semantics of docs/protocol.md: fields AND-ed, the values of a field OR-ed."""
    for name, column in (("contract", "contract_id"), ("event_type", "event_type"), ("tx_hash", "tx_hash")):
        if name in filter_ and row[column] not in _values(filter_[name]):
            return False
    return "address" not in filter_ or not set(_values(filter_["address"])).isdisjoint(row["affected_addresses"])


def expected_changes(log: Sequence[LogRow], filter_: Mapping[str, str | list[str]],
                     since: int) -> list[tuple[int, str]]:
    return [(r.cursor, r.kind) for r in log if r.cursor > since and matches(filter_, r.__dict__)]


# --- the reference client ------------------------------------------------------------------------------


@dataclass
class LogicalSub:
    """One subscription as its application sees it, across connections (each connection gives it a
    new server id)."""

    key: str
    filter: dict[str, str | list[str]]
    start: int | None  # the cursor after which it wants every change; None until a "now" is acked
    delivered: list[tuple[int, str]] = field(default_factory=list)
    active: bool = True
    # On the current connection:
    server_id: str | None = None
    ack_cursor: int | None = None
    live: bool = False
    held: list[tuple[int, str, bool]] = field(default_factory=list)  # (cursor, kind, tagged)
    resync_position: int | None = None

    def own_cursor(self) -> int | None:
        return self.delivered[-1][0] if self.delivered else self.start

    def forget_connection(self) -> None:
        self.server_id, self.ack_cursor, self.live, self.resync_position = None, None, False, None
        self.held.clear()


@dataclass
class Connection:
    number: int
    sio: socketio.AsyncClient
    subs: list[LogicalSub] = field(default_factory=list)  # registered here, acked or not
    by_id: dict[str, LogicalSub] = field(default_factory=dict)
    acks: dict[str, int] = field(default_factory=dict)  # server id -> ack cursor, for the socket check
    unknown: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)  # messages for ids not acked yet
    unsubscribed: set[str] = field(default_factory=set)
    arrivals: list[tuple[int, tuple[str, ...] | None]] = field(default_factory=list)
    resync: dict[str, Any] | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    closing_on_purpose: bool = False


class RefClient:
    """The client rules of docs/protocol.md, and nothing more: no dedupe by cursor."""

    def __init__(self, name: str, url: str, batch: bool) -> None:
        self.name = name
        self.url = url
        self.batch = batch
        self.subs: list[LogicalSub] = []
        self.conn: Connection | None = None
        self.connections: list[Connection] = []
        self.violations: list[str] = []
        self.trace: list[str] = []
        self._sub_numbers = 0

    # --- what the application does ---

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.closed.is_set()

    def active_subs(self) -> list[LogicalSub]:
        return [s for s in self.subs if s.active]

    async def connect(self) -> None:
        sio = socketio.AsyncClient(reconnection=False)
        conn = Connection(number=len(self.connections), sio=sio)
        self._bind(conn)
        async with asyncio.timeout(WAIT):
            await sio.connect(self.url, transports=["websocket"], wait_timeout=5,
                              auth={"batch": True} if self.batch else None)
        self.conn = conn
        self.connections.append(conn)
        self.trace.append(f"connect #{conn.number} batch={self.batch}")

    async def subscribe(self, filter_: dict[str, str | list[str]], since: int | str) -> LogicalSub:
        self._sub_numbers += 1
        lsub = LogicalSub(key=f"{self.name}.s{self._sub_numbers}", filter=filter_,
                          start=since if isinstance(since, int) else None)
        self.subs.append(lsub)
        await self._send_subscribe(lsub, since)
        return lsub

    async def unsubscribe(self, lsub: LogicalSub) -> None:
        conn = self.conn
        assert conn is not None and lsub.server_id is not None
        lsub.active = False
        conn.subs.remove(lsub)
        conn.unsubscribed.add(lsub.server_id)
        del conn.by_id[lsub.server_id]
        self.trace.append(f"unsubscribe {lsub.key}={lsub.server_id}")
        ack = await conn.sio.call("unsubscribe", {"id": lsub.server_id}, timeout=5)
        assert ack.get("ok"), f"{self.name}: unsubscribe refused: {ack}"

    async def drop(self, *, cut: Callable[[], int] | None) -> None:
        """Close the connection (``cut``: abort it under the client, as a network failure would)."""
        conn = self.conn
        if conn is None:
            return
        conn.closing_on_purpose = True
        if cut is not None and not conn.closed.is_set():
            cut()
        else:
            with contextlib.suppress(Exception):
                await conn.sio.disconnect()
        async with asyncio.timeout(WAIT):
            await conn.closed.wait()
        with contextlib.suppress(Exception):
            await conn.sio.disconnect()
        await close_http(conn.sio)

    async def resume(self, *, from_resync: bool) -> None:
        """Reconnect and resubscribe every active subscription: from the resync position when asked
        and one was received, else from the last cursor delivered to it."""
        await self.connect()
        for lsub in self.active_subs():
            since: int | str
            if from_resync and lsub.resync_position is not None:
                since = lsub.resync_position
            else:
                own = lsub.own_cursor()
                since = "now" if own is None else own
            lsub.forget_connection()
            await self._send_subscribe(lsub, since)

    async def barrier(self) -> None:
        """A round trip: everything the server wrote before its answer has been handled here."""
        conn = self.conn
        assert conn is not None
        ack = await conn.sio.call("unsubscribe", {"id": "sub-0"}, timeout=5)
        assert ack.get("ok") is False, ack

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self.drop(cut=None)

    # --- the protocol ---

    async def _send_subscribe(self, lsub: LogicalSub, since: int | str) -> None:
        conn = self.conn
        assert conn is not None
        conn.subs.append(lsub)  # registered before the request goes out
        acked = asyncio.Event()
        self.trace.append(f"subscribe {lsub.key} {lsub.filter} since={since}")

        def on_ack(ack: dict[str, Any]) -> None:  # runs in wire order, with the messages
            acked.set()
            if not ack.get("ok"):
                self.violations.append(f"{lsub.key}: subscribe refused: {ack}")
                return
            sub_id, cursor = ack["id"], ack["cursor"]
            self.trace.append(f"  ack {lsub.key}={sub_id} cursor={cursor}")
            lsub.server_id, lsub.ack_cursor = sub_id, cursor
            if lsub.start is None:
                lsub.start = cursor
            conn.by_id[sub_id] = lsub
            conn.acks[sub_id] = cursor
            for name, payload in conn.unknown.pop(sub_id, []):
                if name == "eose":
                    self._eose(conn, payload)
                else:
                    self._tagged(conn, lsub, payload[0], payload[1])

        await conn.sio.emit("subscribe", {**lsub.filter, "since": since}, callback=on_ack)
        async with asyncio.timeout(WAIT):
            await acked.wait()

    def _bind(self, conn: Connection) -> None:
        sio = conn.sio

        async def on_event(message: dict[str, Any]) -> None:
            self._change(conn, "event", message, _tags(message))

        async def on_rollback(message: dict[str, Any]) -> None:
            self._change(conn, "rollback", message, _tags(message))

        async def on_batch(frame: dict[str, Any]) -> None:
            tags = _tags(frame)
            for change in frame["changes"]:
                self._change(conn, "event" if change["canonical"] else "rollback", change, tags)

        async def on_eose(message: dict[str, Any]) -> None:
            self._eose(conn, message)

        async def on_resync(message: dict[str, Any]) -> None:
            self._resync(conn, message)

        async def on_disconnect(*_reason: Any) -> None:
            self._closed(conn)

        sio.on("chainhook:event", on_event)
        sio.on("chainhook:rollback", on_rollback)
        sio.on("chainhook:batch", on_batch)
        sio.on("chainhook:eose", on_eose)
        sio.on("chainhook:resync", on_resync)
        sio.on("disconnect", on_disconnect)

    def _resync(self, conn: Connection, message: dict[str, Any]) -> None:
        conn.resync = message
        self.trace.append(f"  resync {message}")
        for sub_id, position in message["subscriptions"].items():
            lsub = conn.by_id.get(sub_id)
            if lsub is not None:
                lsub.resync_position = position

    def _closed(self, conn: Connection) -> None:
        self.trace.append(f"disconnected #{conn.number}{'' if conn.closing_on_purpose else ' (by the server)'}")
        for lsub in conn.subs:
            # What was held for it is lost with the connection; a resume asks again.
            position = lsub.resync_position
            lsub.forget_connection()
            lsub.resync_position = position
        conn.closed.set()

    def _change(self, conn: Connection, kind: str, message: dict[str, Any], tags: tuple[str, ...] | None) -> None:
        if conn.closed.is_set():
            return
        cursor = message["cursor"]
        conn.arrivals.append((cursor, tags))
        if tags is not None:
            self.trace.append(f"  {kind} {cursor} tagged {list(tags)}")
            for tag in tags:
                lsub = conn.by_id.get(tag)
                if lsub is not None:
                    self._tagged(conn, lsub, kind, cursor)
                elif tag not in conn.unsubscribed:
                    conn.unknown.setdefault(tag, []).append(("change", (kind, cursor)))
            return
        self.trace.append(f"  {kind} {cursor}")
        for lsub in conn.subs:
            if matches(lsub.filter, message):
                if lsub.live:
                    # Not above the ack cursor: the replay's, not this subscription's live change
                    # (a live change another subscription took, below a since beyond the hub's cursor).
                    if cursor > (lsub.ack_cursor or 0):
                        self._deliver(lsub, cursor, kind)
                else:
                    lsub.held.append((cursor, kind, False))

    def _tagged(self, conn: Connection, lsub: LogicalSub, kind: str, cursor: int) -> None:
        assert lsub.ack_cursor is not None
        if lsub.live:
            self.violations.append(f"{lsub.key}={lsub.server_id}: a change ({cursor}) tagged for it after its eose")
        if cursor <= lsub.ack_cursor:
            self._deliver(lsub, cursor, kind)
        else:
            lsub.held.append((cursor, kind, True))

    def _eose(self, conn: Connection, message: dict[str, Any]) -> None:
        if conn.closed.is_set():
            return
        lsub = conn.by_id.get(message["id"])
        if lsub is None:
            if message["id"] not in conn.unsubscribed:
                conn.unknown.setdefault(message["id"], []).append(("eose", message))
            return
        assert lsub.ack_cursor is not None
        self.trace.append(f"  eose {lsub.key}={message['id']} cursor={message['cursor']}")
        if lsub.live:
            self.violations.append(f"{lsub.key}={lsub.server_id}: a second eose")
        for cursor, kind, tagged in sorted(lsub.held, key=lambda held: held[0]):
            if tagged or cursor > lsub.ack_cursor:
                self._deliver(lsub, cursor, kind)
        lsub.held.clear()
        lsub.live = True

    def _deliver(self, lsub: LogicalSub, cursor: int, kind: str) -> None:
        lsub.delivered.append((cursor, kind))


def _tags(message: Mapping[str, Any]) -> tuple[str, ...] | None:
    if "subscriptions" in message and isinstance(message["subscriptions"], list):
        return tuple(message["subscriptions"])
    if "subscription" in message:
        return (message["subscription"],)
    return None


# --- checks (pure) -------------------------------------------------------------------------------------


def check_client(client: RefClient, log: Sequence[LogRow]) -> list[str]:
    """Every failure of the invariants for one client, as readable lines."""
    failures = list(client.violations)
    for lsub in client.subs:
        if lsub.start is None:
            continue
        expected = expected_changes(log, lsub.filter, lsub.start)
        got = lsub.delivered
        if lsub.active and got != expected:
            failures.append(f"{lsub.key} {lsub.filter} since {lsub.start}: {_diff(got, expected)}")
        elif not lsub.active and got != expected[:len(got)]:
            failures.append(f"{lsub.key} (unsubscribed) {lsub.filter} since {lsub.start}: not a prefix: "
                            f"{_diff(got, expected[:len(got)])}")
    for conn in client.connections:
        for sub_id, pending in conn.unknown.items():
            failures.append(f"{client.name} #{conn.number}: {len(pending)} messages for {sub_id}, never acked")
        seen: set[int] = set()
        for cursor, tags in conn.arrivals:
            # Only a replay (for a subscription whose ack cursor covers the change) may repeat it.
            if cursor in seen and (tags is None or any(conn.acks.get(tag, -1) < cursor for tag in tags)):
                failures.append(f"{client.name} #{conn.number}: change {cursor} arrived again "
                                    f"({'untagged' if tags is None else 'tagged ' + ','.join(tags)})")
            seen.add(cursor)
    return failures


def _diff(got: Sequence[tuple[int, str]], expected: Sequence[tuple[int, str]]) -> str:
    got_cursors = [c for c, _ in got]
    want_cursors = [c for c, _ in expected]
    missing = sorted(set(want_cursors) - set(got_cursors))
    extra = sorted(set(got_cursors) - set(want_cursors))
    repeated = sorted({c for c in got_cursors if got_cursors.count(c) > 1})
    first = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                 min(len(got), len(expected)))
    return (f"missing {missing} extra {extra} repeated {repeated} out-of-order {got_cursors != sorted(got_cursors)}; "
            f"first difference at #{first}; got {got_cursors[-20:]} expected {want_cursors[-20:]}")


Check = Callable[[], Awaitable[None]]
