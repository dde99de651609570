"""Backfill from Chainhook ``file_append`` output: newline-delimited payloads, optionally gzipped.

Each line goes through the same parsing, normalization and storage as a webhook delivery, so an
import is idempotent and rows are identical. Consecutive payloads of the same chainhook without
rollbacks are stored together in one transaction (a batch); a payload with rollbacks is stored on its
own, in order. A batch is one chainhook's, so that its delivery record (the chainhook's last height,
in /api/status) is never another chainhook's.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import multiprocessing
import os
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from .chainhook.networks import NO_OVERRIDES
from .chainhook.normalize import parse_delivery
from .chainhook.rows import tip_height
from .collector import collector_paused
from .errors import PayloadError
from .events import BlockSummary, Delivery
from .store.deliveries import DeliveryWriter
from .store.values import with_serialized_data


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


# Lines are parsed in other processes, this many bytes of them at a time, while this one stores the
# deliveries parsed before: parsing and the database work at once.
CHUNK_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Chunk:
    path: str
    first_line: int
    lines: list[bytes]
    bytes_read: int  # of the file, once these lines are done (compressed bytes for .gz)


@dataclass(frozen=True, slots=True)
class _Parsed:
    deliveries: list[Delivery]
    # (index in ``deliveries`` before which it occurred, "path:line: error") of each malformed line
    malformed: list[tuple[int, str]]
    bytes_read: int


def _chunks(path: Path, chunk_bytes: int) -> Iterator[_Chunk]:
    with path.open("rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        lines: Iterable[bytes] = gzip.GzipFile(fileobj=raw) if gzipped else raw
        batch: list[bytes] = []
        first, size = 1, 0
        for line in lines:
            batch.append(line)
            size += len(line)
            if size >= chunk_bytes:
                yield _Chunk(str(path), first, batch, raw.tell())
                first, batch, size = first + len(batch), [], 0
        if batch:
            yield _Chunk(str(path), first, batch, raw.tell())


def parse_chunk(chunk: _Chunk, networks: Mapping[str, str]) -> _Parsed:
    """The deliveries of a chunk's lines, and what was wrong with the malformed ones (in a worker process)."""
    # A chunk's deliveries are kept until the chunk is returned: left on, the collector would traverse
    # them again and again.
    with collector_paused():
        return _parse_lines(chunk, networks)


def _parse_lines(chunk: _Chunk, networks: Mapping[str, str]) -> _Parsed:
    deliveries: list[Delivery] = []
    malformed: list[tuple[int, str]] = []
    for number, line in enumerate(chunk.lines, start=chunk.first_line):
        if not line.strip():
            continue
        try:
            deliveries.append(_serialized(parse_delivery(line, networks)))
        except (UnicodeDecodeError, json.JSONDecodeError, PayloadError) as error:
            malformed.append((len(deliveries), f"{chunk.path}:{number}: {error}"))
    return _Parsed(deliveries, malformed, chunk.bytes_read)


async def read_deliveries(path: Path, progress: ImportProgress, *, abort_on_error: bool,
                          skipped: Callable[[str], None], networks: Mapping[str, str],
                          parsers: Executor, ahead: int) -> AsyncGenerator[Delivery, None]:
    """Normalized deliveries, line by line, parsed by ``parsers`` up to ``ahead`` chunks ahead of the
    caller; a bad line is recorded and told to ``skipped`` (or aborts), and never applied."""
    loop = asyncio.get_running_loop()
    done_before = progress.bytes_read
    chunks = _chunks(path, CHUNK_BYTES)
    pending: deque[asyncio.Future[_Parsed]] = deque()
    try:
        while True:
            while len(pending) < ahead and (chunk := next(chunks, None)) is not None:
                pending.append(loop.run_in_executor(parsers, parse_chunk, chunk, networks))
            if not pending:
                return
            parsed = await pending.popleft()
            malformed = deque(parsed.malformed)
            for index, delivery in enumerate([*parsed.deliveries, None]):
                while malformed and malformed[0][0] == index:
                    _, message = malformed.popleft()
                    if abort_on_error:
                        raise ImportAborted(message)
                    progress.skipped_lines.append(message)
                    skipped(message)
                if delivery is not None:
                    yield delivery
            progress.bytes_read = done_before + parsed.bytes_read  # compressed bytes: what ETA is measured in
    finally:
        for future in pending:
            future.cancel()


def _serialized(delivery: Delivery) -> Delivery:
    """The delivery with its rows' data serialized: what the storing process would do, done here."""
    return replace(delivery, events=tuple(with_serialized_data(row) for row in delivery.events))


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


# One process stores: past a few parsers, more only take memory (about 40 MB each).
MAX_DEFAULT_PARSE_WORKERS = 4


def default_parse_workers() -> int:
    """One process per core this one may run on (its affinity, as a container's cpuset sets it) but the
    one that stores, at least one, at most MAX_DEFAULT_PARSE_WORKERS."""
    return max(1, min(MAX_DEFAULT_PARSE_WORKERS, len(os.sched_getaffinity(0)) - 1))


async def import_files(writer: DeliveryWriter, paths: list[Path], *, batch_events: int, abort_on_error: bool,
                       report: Callable[[ImportProgress], None], skipped: Callable[[str], None],
                       networks: Mapping[str, str] = NO_OVERRIDES, parse_workers: int = 1) -> ImportProgress:
    """Store the files' deliveries in order. ``parse_workers`` processes parse lines meanwhile ("spawn":
    this process has threads, which fork would copy in whatever state they were)."""
    with ProcessPoolExecutor(parse_workers, mp_context=multiprocessing.get_context("spawn")) as parsers:
        return await _import(writer, paths, batch_events=batch_events, abort_on_error=abort_on_error,
                             report=report, skipped=skipped, networks=dict(networks), parsers=parsers,
                             ahead=parse_workers + 1)


async def _import(writer: DeliveryWriter, paths: list[Path], *, batch_events: int, abort_on_error: bool,
                  report: Callable[[ImportProgress], None], skipped: Callable[[str], None],
                  networks: Mapping[str, str], parsers: Executor, ahead: int) -> ImportProgress:
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
        # Closed on any way out, so that the chunks still being parsed are cancelled.
        async with contextlib.aclosing(read_deliveries(path, progress, abort_on_error=abort_on_error,
                                                       skipped=skipped, networks=networks, parsers=parsers,
                                                       ahead=ahead)) as deliveries:
            async for delivery in deliveries:
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
