"""Backfill from Chainhook ``file_append`` output: newline-delimited payloads, optionally gzipped.

Each line goes through the same parsing, normalization and storage as a webhook delivery, so an
import is idempotent and rows are identical. Consecutive payloads of the same chainhook without
rollbacks are stored together in one transaction (a batch); a payload with rollbacks is stored on its
own, in order. A batch is one chainhook's, so that its delivery record (the chainhook's last height,
in /api/status) is never another chainhook's.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .chainhook.networks import NO_OVERRIDES
from .chainhook.normalize import parse_delivery
from .chainhook.rows import tip_height
from .errors import PayloadError
from .events import BlockSummary, Delivery
from .store.deliveries import DeliveryWriter


class ImportAborted(RuntimeError):
    pass


@dataclass(slots=True)
class ImportProgress:
    bytes_read: int = 0  # of all the files, compressed bytes for .gz
    payloads: int = 0
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    rolled_back: int = 0
    restored: int = 0
    skipped_lines: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        return self.events / max(time.monotonic() - self.started, 1e-9)


def read_deliveries(path: Path, progress: ImportProgress, *, abort_on_error: bool,
                    skipped: Callable[[str], None], networks: Mapping[str, str]) -> Iterator[Delivery]:
    """Normalized deliveries, line by line; a bad line is recorded and told to ``skipped`` (or
    aborts), and never applied."""
    done_before = progress.bytes_read
    with path.open("rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        lines: Iterable[bytes] = gzip.GzipFile(fileobj=raw) if gzipped else raw
        for number, line in enumerate(lines, start=1):
            progress.bytes_read = done_before + raw.tell()  # compressed bytes: what ETA is measured in
            if not line.strip():
                continue
            try:
                delivery = parse_delivery(line, networks)
            except (UnicodeDecodeError, json.JSONDecodeError, PayloadError) as error:
                message = f"{path}:{number}: {error}"
                if abort_on_error:
                    raise ImportAborted(message) from None
                progress.skipped_lines.append(message)
                skipped(message)
                continue
            yield delivery


def _source(delivery: Delivery) -> tuple[str, str, str]:
    """What a batch shares: it is recorded as one delivery of one Chainhook, in one format, for one network."""
    return delivery.chainhook_uuid, delivery.format, delivery.network


def merge(batch: list[Delivery]) -> Delivery:
    """Rollback-free deliveries in order are one delivery with their events concatenated, and their
    blocks (each hash once, the first summary of it: what storing them one by one keeps)."""
    first = batch[0]
    blocks: dict[str, BlockSummary] = {}
    for delivery in batch:
        for block in delivery.blocks:
            blocks.setdefault(block.block_hash, block)
    return Delivery(format=first.format, chainhook_uuid=first.chainhook_uuid, network=first.network,
                    rollback_block_hashes=(), events=tuple(e for d in batch for e in d.events),
                    apply_blocks=sum(d.apply_blocks for d in batch),
                    skipped_events=sum(d.skipped_events for d in batch),
                    tip_height=tip_height(d.tip_height for d in batch), blocks=tuple(blocks.values()))


async def import_files(writer: DeliveryWriter, paths: list[Path], *, batch_events: int, abort_on_error: bool,
                       report: Callable[[ImportProgress], None], skipped: Callable[[str], None],
                       networks: Mapping[str, str] = NO_OVERRIDES) -> ImportProgress:
    progress = ImportProgress()
    batch: list[Delivery] = []

    async def flush() -> None:
        if batch:
            result = await writer.apply_delivery(merge(batch) if len(batch) > 1 else batch[0])
            progress.applied += result.applied
            progress.duplicates += result.duplicates
            progress.rolled_back += result.rolled_back
            progress.restored += result.restored
            batch.clear()
            report(progress)

    for path in paths:
        end_of_file = progress.bytes_read + path.stat().st_size
        for delivery in read_deliveries(path, progress, abort_on_error=abort_on_error, skipped=skipped,
                                        networks=networks):
            progress.payloads += 1
            progress.events += len(delivery.events)
            if batch and _source(batch[-1]) != _source(delivery):
                await flush()
            if delivery.rollback_block_hashes:
                await flush()
                batch.append(delivery)
                await flush()
                continue
            batch.append(delivery)
            if sum(len(d.events) for d in batch) >= batch_events:
                await flush()
        await flush()
        progress.bytes_read = end_of_file
        report(progress)
    return progress
