"""Large deliveries, streamed: rows come out of the body one transaction at a time.

A delivery of tens of MB parsed whole becomes several times its size in Python objects, then models,
then rows. Here an incremental parser (ijson) builds everything but the applied blocks'
transactions; each transaction is validated and normalized as soon as it is complete and then
dropped, so the caller can write rows while the body is still being read. The results are the rows
``normalize(parse_payload(json))`` gives, in the same order.

Only the common shape streams: blocks to apply, each block's header before its transactions, no
rollback. Anything else raises ``NeedsWholeParse`` (before or after rows were produced: the caller
discards what it wrote) and the delivery takes the whole-body path, which decides every answer.
Pure: bytes in, rows out.
"""

from __future__ import annotations

import codecs
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import ijson
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from .. import jsoncodec
from ..errors import PayloadError
from ..events import DeliveryHeader, EventRow, Format
from . import v1, v2
from .models import (
    BlockIdentifier,
    Payload,
    Timestamp,
    V1Block,
    V1Transaction,
    V2Block,
    V2Payload,
    V2Transaction,
    parse_payload,
    payload_error,
)
from .networks import NO_OVERRIDES, network_of_principal, resolve_network
from .rows import TRANSACTION_ROW_INDEX, block_summaries, tip_height

_READ_SIZE = 64 * 1024
# With the depth limit, at most a few MB of prefixes per read (see _Reader.read).
_MAX_OPENS_PER_READ = 1024
_MIN_READ = 512
_BLOCKS = {"v1": "apply.item", "v2": "event.apply.item"}
_ROLLBACKS = ("rollback.item", "event.rollback.item")
_V1_TRANSACTION = TypeAdapter(V1Transaction)
_V2_TRANSACTION = TypeAdapter(V2Transaction)


class NeedsWholeParse(Exception):
    """This delivery cannot be streamed; parse it whole."""


class _BlockHeader(BaseModel):
    model_config = ConfigDict(extra="ignore")
    block_identifier: BlockIdentifier
    timestamp: Timestamp


class _Reader:
    """A file over a buffer, read in slices, so the parser does not copy the whole body."""

    def __init__(self, body: bytes | bytearray) -> None:
        self._view = memoryview(body)
        self._position = 0
        # The C parser passes invalid UTF-8 through; the whole-body parser (rightly) refuses it.
        self._utf8 = codecs.getincrementaldecoder("utf-8")()

    def read(self, size: int = _READ_SIZE) -> bytes:
        chunk = bytes(self._view[self._position:self._position + size])
        # ijson's C backend builds the events (and their prefixes, as long as the depth) of a whole
        # read before yielding one, so a read that opens thousands of containers costs memory
        # quadratic in that number (20,000 levels: ~1 GB) before the depth check sees an event.
        while len(chunk) > _MIN_READ and chunk.count(b"[") + chunk.count(b"{") > _MAX_OPENS_PER_READ:
            chunk = chunk[:len(chunk) // 8]
        self._position += len(chunk)
        try:
            self._utf8.decode(chunk, final=not chunk)
        except UnicodeDecodeError:
            raise NeedsWholeParse("the body is not UTF-8") from None
        return chunk


def stream_rows(body: bytes | bytearray, delivery: DeliveryHeader,
                networks: Mapping[str, str] = NO_OVERRIDES) -> Iterator[EventRow]:
    """The delivery's rows, each natural key once, filling in ``delivery`` as the body is read (it is
    complete once the last row has been taken). ``networks`` as for ``parse_delivery``."""
    seen: set[tuple[str, str, int]] = set()
    tally = _Tally()
    for row in _rows(body, delivery, _SourceGuess(body, networks), tally):
        if row.natural_key in seen:
            delivery.repeats += 1
            continue
        seen.add(row.natural_key)
        delivery.rows += 1
        if row.event_index != TRANSACTION_ROW_INDEX:
            tally.events[row.block_hash] += 1
        yield row


_OPEN = {"start_map": 1, "start_array": 1, "end_map": -1, "end_array": -1}


@dataclass(slots=True)
class _Tally:
    """What the blocks topic counts, as the streamed blocks lose their transactions: transactions per
    block (by position in the payload), distinct event rows per block hash."""

    transactions: Counter[int] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)


def _rows(body: bytes | bytearray, delivery: DeliveryHeader, source: _SourceGuess, tally: _Tally) -> Iterator[EventRow]:
    events = ijson.parse(_Reader(body), use_float=True)
    try:
        yield from _rows_of(events, delivery, source, tally)
    except PayloadError:
        # A body that is not JSON is a 400 whatever it held before the syntax error: read on.
        _drain(events)
        raise
    except (ijson.JSONError, UnicodeDecodeError) as error:
        # UnicodeDecodeError: the C parser turns an escaped lone surrogate ("\\udfff") into bytes
        # that are not UTF-8, then fails to decode them; it is valid JSON, so the whole parse decides.
        raise NeedsWholeParse(f"the incremental parser stopped: {error}") from None


def _drain(events: Iterator[tuple[str, str, Any]]) -> None:
    level = 0
    try:
        for _prefix, event, _value in events:
            level += _OPEN.get(event, 0)
            if level > jsoncodec.MAX_DEPTH:
                raise NeedsWholeParse("past the parse limits (nesting depth)")
    except (ijson.JSONError, UnicodeDecodeError) as error:
        raise NeedsWholeParse(f"the incremental parser stopped: {error}") from None


def _rows_of(events: Iterator[tuple[str, str, Any]], delivery: DeliveryHeader,
             source: _SourceGuess, tally: _Tally) -> Iterator[EventRow]:
    skeleton = ijson.ObjectBuilder()
    transaction: ijson.ObjectBuilder | None = None
    level = tx_level = 0
    block_number, tx_number = -1, 0
    block: V1Block | V2Block | None = None
    keys = _KeyGuard()
    for prefix, event, value in events:
        level += _OPEN.get(event, 0)
        if level > jsoncodec.MAX_DEPTH or (isinstance(value, str) and len(value) > jsoncodec.MAX_STRING_CHARS):
            # The whole-body path refuses it too, and names the offending value.
            raise NeedsWholeParse("past the parse limits (nesting depth, string length)")
        if transaction is not None:
            transaction.event(event, value)
            if level < tx_level:
                assert block is not None and delivery.format is not None
                rows, sender = _transaction_rows(delivery, block, block_number, tx_number, transaction.value)
                source.note_transaction(delivery, sender, skeleton.value)
                tally.transactions[block_number] += 1
                yield from rows
                transaction, tx_number = None, tx_number + 1
            continue
        if event == "map_key" or prefix in _ROLLBACKS:
            keys.note(prefix, event, value, delivery)
        elif delivery.format is not None and prefix == _BLOCKS[delivery.format] + ".transactions.item":
            _expect_object(event, "a transaction")
            if block is None:
                block = _block(delivery.format, skeleton.value, block_number)
            transaction, tx_level = ijson.ObjectBuilder(), level
            transaction.event(event, value)
            continue
        elif delivery.format is not None and prefix == _BLOCKS[delivery.format] and event != "end_map":
            _expect_object(event, "a block")
            block_number, tx_number, block = block_number + 1, 0, None
            keys.new_block()
        skeleton.event(event, value)
    _finish(delivery, skeleton.value, source, tally)


def _expect_object(event: str, what: str) -> None:
    if event != "start_map":
        # Not even the start of an array item that is not an object may pass: the item numbering
        # (and so every path) would be off.
        raise NeedsWholeParse(f"{what} that is not an object")


class _KeyGuard:
    """Object keys where a repeat would make the stream differ from the whole parse (whose last
    value wins): the envelope's, the 2.0 event's, and each block's."""

    def __init__(self) -> None:
        self._seen: dict[str, set[str]] = {}

    def new_block(self) -> None:
        self._seen.pop("block", None)

    def note(self, prefix: str, event: str, key: Any, delivery: DeliveryHeader) -> None:
        if event != "map_key":
            if event == "start_map":  # of a block in rollback
                raise NeedsWholeParse("rollbacks are applied before the rows")
            return
        if prefix == "":
            _note_format(delivery, key)
            scope = "root"
        elif prefix == "event":
            scope = "event"
        elif delivery.format is not None and prefix == _BLOCKS[delivery.format]:
            scope = "block"
        else:
            return
        seen = self._seen.setdefault(scope, set())
        if key in seen:
            raise NeedsWholeParse(f"a repeated key {key!r}")
        seen.add(key)


class _SourceGuess:
    """The delivery's Chainhook uuid and network while streaming. Rows are written as they come, with
    both, so they are settled at the first transaction from what is known by then: the keys read so
    far, the uuid found near either end of the body (where the ``chainhook`` object sits), the sender's
    address. Once the whole body is read, a uuid or network that turns out different sends the
    delivery to the whole-body path, which discards what was written."""

    def __init__(self, body: bytes | bytearray, overrides: Mapping[str, str]) -> None:
        self._uuid_hint = _uuid_near_ends(body)
        self._overrides = overrides
        self._derived: str | None = None

    def note_transaction(self, delivery: DeliveryHeader, sender: str, document: Any) -> None:
        """``sender``: the validated transaction's (as the whole parse reads it: v1 ``sender``, 2.0
        ``sender_address``)."""
        if self._derived is None:
            self._derived = network_of_principal(sender)
        if not delivery.network:
            delivery.chainhook_uuid = _known(document, "chainhook", "uuid") or self._uuid_hint
            delivery.network = resolve_network(
                chainhook_uuid=delivery.chainhook_uuid, named=_known(document, "event", "network"),
                derived=self._derived, overrides=self._overrides)

    def settle(self, delivery: DeliveryHeader, payload: Payload) -> None:
        named = payload.event.network if isinstance(payload, V2Payload) else None
        uuid = payload.chainhook.uuid
        network = resolve_network(chainhook_uuid=uuid, named=named, derived=self._derived, overrides=self._overrides)
        if delivery.network and (delivery.chainhook_uuid, delivery.network) != (uuid, network):
            raise NeedsWholeParse("the delivery's Chainhook or network was known only after its rows")
        delivery.chainhook_uuid, delivery.network = uuid, network


_ENDS = 4096  # bytes searched at each end of the body for the chainhook's uuid
_UUID = re.compile(rb'"uuid"\s*:\s*"([^"\\]{1,128})"')


def _uuid_near_ends(body: bytes | bytearray) -> str:
    """The first plainly written ``"uuid"`` after a ``"chainhook"`` key near the end or the start of
    the body, else ''. Only a hint: the parsed payload decides."""
    for window, key_at in ((bytes(body[-_ENDS:]), bytes.rfind), (bytes(body[:_ENDS]), bytes.find)):
        start = key_at(window, b'"chainhook"')
        found = _UUID.search(window, start) if start >= 0 else None
        if found:
            return found.group(1).decode("utf-8", "replace")
    return ""


def _known(document: Any, *keys: str) -> str:
    """A string already read into the skeleton document, or ''."""
    for key in keys:
        document = document.get(key) if isinstance(document, dict) else None
    return document if isinstance(document, str) else ""


def _note_format(delivery: DeliveryHeader, key: str) -> None:
    if key == "event":
        if delivery.format == "v1":
            raise NeedsWholeParse("both v1 and 2.0 keys")
        delivery.format = "v2"
    elif key in ("apply", "rollback") and delivery.format is None:
        delivery.format = "v1"


def _block(fmt: Format, document: Any, block_number: int) -> V1Block | V2Block:
    """The block whose transactions are arriving, from its header (which must have come first)."""
    try:
        header = (document["apply"] if fmt == "v1" else document["event"]["apply"])[block_number]
    except (LookupError, TypeError):
        raise NeedsWholeParse("the block's place in the document is unclear") from None
    if not isinstance(header, dict) or "block_identifier" not in header or "timestamp" not in header:
        raise NeedsWholeParse("a block's header follows its transactions")
    path = f"$.apply[{block_number}]" if fmt == "v1" else f"$.event.apply[{block_number}]"
    try:
        fields = _BlockHeader.model_validate(header)
    except ValidationError as error:
        raise payload_error(error, path) from None
    model = V1Block if fmt == "v1" else V2Block
    return model.model_construct(block_identifier=fields.block_identifier, timestamp=fields.timestamp,
                                 transactions=[])


def _transaction_rows(delivery: DeliveryHeader, block: V1Block | V2Block, block_number: int, tx_number: int,
                      document: Any) -> tuple[list[EventRow], str]:
    """The transaction's rows, and its sender."""
    if delivery.format == "v1":
        path = f"$.apply[{block_number}].transactions[{tx_number}]"
        assert isinstance(block, V1Block)
        v1_tx: V1Transaction = _validated(_V1_TRANSACTION, document, path)
        rows, skipped = v1.transaction_rows(block, v1_tx, tx_number, path)
        delivery.skipped_events += skipped
        return rows, v1_tx.metadata.sender
    assert isinstance(block, V2Block)
    path = f"$.event.apply[{block_number}].transactions[{tx_number}]"
    v2_tx: V2Transaction = _validated(_V2_TRANSACTION, document, path)
    return v2.transaction_rows(block, v2_tx), v2_tx.metadata.sender_address


def _validated(adapter: TypeAdapter[Any], document: Any, path: str) -> Any:
    try:
        return adapter.validate_python(document)
    except ValidationError as error:
        raise payload_error(error, path) from None


def _finish(delivery: DeliveryHeader, document: Any, source: _SourceGuess, tally: _Tally) -> None:
    """Validate everything but the transactions (already done) and fill in the rest of ``delivery``."""
    payload = parse_payload(document)  # PayloadError names the problem, with its path
    source.settle(delivery, payload)
    blocks = payload.apply if delivery.format == "v1" else payload.event.apply  # type: ignore[union-attr]
    rollbacks = payload.rollback if delivery.format == "v1" else payload.event.rollback  # type: ignore[union-attr]
    if rollbacks:
        raise NeedsWholeParse("rollbacks are applied before the rows")
    delivery.apply_blocks = len(blocks)
    delivery.tip_height = tip_height(b.block_identifier.index for b in blocks)
    delivery.blocks = block_summaries(blocks, tally.events, tally.transactions)
