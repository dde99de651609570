"""``timebank-realtime serve | migrate | import | tail``: the process edge, where settings are read and
logging set up. Exit codes: 0 done, 1 failed (a port in use, an aborted import, a refused
subscription), 2 bad usage or configuration, 3 a database migrated by a newer version, 4 an
import that skipped malformed lines."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from concurrent.futures.process import BrokenProcessPool
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from timebank_realtime_client import Change, MemoryCursorStore, SubscriptionRefused, TimebankClient

from .app import create_app
from .errors import MigrationError
from .events import FILTER_FIELDS
from .http.serving import CannotListen, serve_until_signalled
from .importer import ImportAborted, ImportProgress, default_parse_workers, import_files
from .logs import configure_logging
from .realtime.subscriptions import FilterError, parse_filter
from .settings import (
    AddressSettings,
    DatabaseSettings,
    ImportSettings,
    Settings,
    describe_settings_error,
    environment_variables,
)
from .store.db import create_pool
from .store.deliveries import DeliveryWriter
from .store.embedded import EmbeddedPostgresMissing, require_database, resolve_dsn
from .store.migrate import migrate
from .workers import WorkersUnsupported, check_workers, default_workers, supervise

# `import` finished, but skipped malformed lines (they are listed on stderr).
IMPORT_SKIPPED_LINES = 4

# What each command reads from the environment: it reads exactly these classes, and its --help
# lists their fields. (`tail` reads AddressSettings only when no --url is given.)
SETTINGS_READ: dict[str, type[DatabaseSettings]] = {"serve": Settings, "migrate": DatabaseSettings,
                                                   "import": ImportSettings}

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


async def _serve_app(settings: Settings, parent_pid: int | None) -> int:
    await serve_until_signalled(create_app(settings), settings, parent_pid=parent_pid)
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    # One worker is the server itself, in this process; a worker of a parent is one of its N.
    workers: int = args.workers or settings.workers or default_workers()
    try:
        check_workers(settings, workers)
    except WorkersUnsupported as error:
        print(f"invalid configuration: {error}", file=sys.stderr)
        return 2
    try:
        if workers == 1:
            return asyncio.run(_serve_app(settings, args.worker_of))
        return asyncio.run(supervise(settings, workers))
    except CannotListen as error:
        logging.getLogger("timebank_realtime").error("%s", error)
        return 1


def _migrate(settings: DatabaseSettings) -> int:
    async def run() -> list[int]:
        return await migrate(await resolve_dsn(settings), settings)

    applied = asyncio.run(run())
    print(f"applied {len(applied)} migration(s)" if applied else "database is up to date")
    return 0


class _ImportBar:
    """The import's progress on stderr, drawn by tqdm on a terminal: one line, redrawn, left at its
    last state; skipped lines (and log records) are written above it, each on a line of its own.
    Elsewhere (a file, a pipe, CI) tqdm draws nothing, so a log gets no carriage returns: only the
    skipped lines as they are met, and the summary on stdout."""

    def __init__(self, total_bytes: int) -> None:
        # Progress is measured in input bytes (compressed, for .gz), which the ETA needs; the
        # counts that matter to a reader follow it.
        self._bar = tqdm(total=total_bytes, desc="import", unit="B", unit_scale=True, unit_divisor=1024,
                         file=sys.stderr, disable=None, dynamic_ncols=True,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}B/{total_fmt}B "
                                    "[{elapsed}<{remaining}{postfix}]")

    def progress(self, progress: ImportProgress) -> None:
        self._bar.set_postfix_str(f"{progress.payloads} payloads, {progress.events} events ({progress.applied} new, "
                                  f"{progress.duplicates} already stored), {progress.rate():,.0f} events/s",
                                  refresh=False)
        self._bar.update(progress.bytes_read - self._bar.n)

    @staticmethod
    def skipped(message: str) -> None:
        tqdm.write(f"skipped malformed line {message}", file=sys.stderr)

    def close(self) -> None:
        self._bar.close()


def _run_import(settings: ImportSettings, args: argparse.Namespace, paths: list[Path]) -> ImportProgress:
    bar = _ImportBar(sum(path.stat().st_size for path in paths))

    async def run() -> ImportProgress:
        dsn = await resolve_dsn(settings)
        await migrate(dsn, settings)
        pool = await create_pool(dsn, min_size=1, max_size=1, connect_timeout=settings.db_connect_timeout_seconds,
                                 retry_seconds=settings.db_startup_retry_seconds)
        try:
            return await import_files(DeliveryWriter(pool), paths, batch_events=args.batch_events,
                                      abort_on_error=args.abort_on_error, report=bar.progress, skipped=bar.skipped,
                                      networks=settings.chainhook_networks, parse_workers=args.parse_workers)
        finally:
            await pool.close()

    # Log records (a migration applied, a database retried) are written above the bar, not into it.
    try:
        with logging_redirect_tqdm():
            return asyncio.run(run())
    finally:
        bar.close()


def _import(settings: ImportSettings, args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"no such file: {', '.join(missing)}", file=sys.stderr)
        return 2

    try:
        progress = _run_import(settings, args, paths)
    except ImportAborted as error:
        print(f"import aborted at a malformed line (nothing of it was stored): {error}", file=sys.stderr)
        return 1
    except BrokenProcessPool:
        print("import stopped: a process parsing lines died (out of memory?). What was stored before stays "
              "stored; running the import again skips it.", file=sys.stderr)
        return 1
    print(f"imported {progress.payloads} payloads: {progress.applied} new rows, "
          f"{progress.duplicates} already stored, {progress.rolled_back} rolled back, {progress.restored} restored, "
          f"{len(progress.skipped_lines)} malformed lines skipped")
    # Some of the input was not imported: a script must not take that for success.
    return IMPORT_SKIPPED_LINES if progress.skipped_lines else 0


def _tail_filter(args: argparse.Namespace) -> dict[str, Any]:
    """The subscription the filter options ask for: a field given once is one value, else a list."""
    return {name: values if len(values) > 1 else values[0]
            for name in FILTER_FIELDS if (values := getattr(args, name))}


def _tail(args: argparse.Namespace) -> int:
    url: str | None = args.url
    if url is None:
        address = _read_settings(AddressSettings)
        if address is None:
            return 2
        url = _local_url(address)
    subscription = _tail_filter(args)
    try:
        parse_filter(subscription)
    except FilterError as error:
        print(f"timebank-realtime tail: invalid filter: {error.message}", file=sys.stderr)
        return 2
    since: int | str = args.since
    # What the client says of its connection (connected, failed and retrying) goes to stderr.
    client_log = logging.getLogger("timebank_realtime_client")
    client_log.setLevel(logging.INFO)
    print(f"following {url}", file=sys.stderr, flush=True)

    def show(change: Change) -> None:
        if args.json:
            print(change.model_dump_json(), flush=True)
        else:
            fields = change.model_dump()
            addresses = ",".join(fields.get("affected_addresses", []))
            print(f"{change.cursor:>9} {change.kind:<8} {fields.get('event_type', ''):<22} h={change.block_height} "
                  f"{fields.get('contract_id') or '-'} {fields.get('tx_hash', '')} {addresses}", flush=True)

    async def follow() -> None:
        # --since says where to start each time: no cursor is kept between runs.
        async with TimebankClient(url, token=args.token, store=MemoryCursorStore()) as client:
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


def _local_url(address: AddressSettings) -> str:
    host = address.host
    if host in ("0.0.0.0", "::"):  # listening everywhere: reach it on loopback
        host = "127.0.0.1"
    return f"http://{host}:{address.port}"


def _read_settings(model: type[SettingsT]) -> SettingsT | None:
    """The settings, or None once each bad one is said on a line of its own."""
    try:
        return model()
    except ValidationError as error:
        for line in describe_settings_error(error):
            print(f"invalid configuration: {line}", file=sys.stderr)
        return None


def _settings_epilog(model: type[BaseSettings], when: str = "") -> str:
    return (f"settings read{when} from the environment or ./.env (see .env.example): "
            + ", ".join(environment_variables(model)))


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return number


def _since(value: str) -> int | str:
    if value == "now":
        return value
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a cursor (a whole number) or now")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="timebank-realtime",
                                     description="Chainhook webhook -> PostgreSQL -> Socket.IO")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('timebank-realtime')}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the webhook target and Socket.IO server",
                                epilog=_settings_epilog(SETTINGS_READ["serve"]))
    serve.add_argument("--workers", type=_positive,
                       help="server processes sharing the port (default: WORKERS, else one per core); 1: this "
                            "process alone. Clients on HTTP long-polling need 1, or a balancer sticky to a process")
    # Internal: how the parent of --workers N starts each of them.
    serve.add_argument("--worker-of", type=int, help=argparse.SUPPRESS)
    commands.add_parser("migrate", help="apply database migrations and exit",
                        epilog=_settings_epilog(SETTINGS_READ["migrate"]))
    importer = commands.add_parser("import", help="backfill from Chainhook file_append output (NDJSON, .gz too)",
                                   epilog=_settings_epilog(SETTINGS_READ["import"]))
    importer.add_argument("files", nargs="+")
    importer.add_argument("--batch-events", type=int, default=5000, help="events per transaction (default 5000)")
    importer.add_argument("--parse-workers", type=_positive, default=default_parse_workers(),
                          help="processes parsing lines while this one stores (default: the cores but one, "
                               "at least 1, at most 4)")
    importer.add_argument("--abort-on-error", action="store_true",
                          help="stop at the first malformed line instead of reporting and skipping it")
    tail = commands.add_parser("tail", help="print live events from a running service",
                               epilog=_settings_epilog(AddressSettings, " (without --url)"))
    tail.add_argument("--url", help="the service (default: http://HOST:PORT, the address serve listens on)")
    for name in FILTER_FIELDS:
        tail.add_argument(f"--{name.replace('_', '-')}", dest=name, action="append", default=[],
                          help=f"only events of this {name.replace('_', ' ')} (repeat for any of several)")
    tail.add_argument("--since", default="now", type=_since, help="cursor to replay from, or now (default)")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument("--token", help="JWT, when the server sets SOCKET_AUTH_SECRET")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "tail":
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        return _tail(args)
    settings = _read_settings(SETTINGS_READ[args.command])
    if settings is None:
        return 2
    try:
        require_database(settings)
        configure_logging(settings.log_level, settings.log_format)
        if isinstance(settings, Settings):  # serve's
            return _serve(settings, args)
        if isinstance(settings, ImportSettings):
            return _import(settings, args)
        return _migrate(settings)
    except EmbeddedPostgresMissing as error:
        print(f"invalid configuration: {error}", file=sys.stderr)
        return 2
    except MigrationError as error:
        logging.getLogger("timebank_realtime").error("%s", error)
        return 3


if __name__ == "__main__":
    sys.exit(main())
