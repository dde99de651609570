"""The root suite's fixtures (tests/conftest.py), for the client's tests: a real PostgreSQL, the real
server on a real port. Imported, not inherited, since tests/ is not a parent directory of these; a run
of both directories therefore starts a second session database for these tests."""

from tests.conftest import database_url, db, http, serve, server

__all__ = ["database_url", "db", "http", "serve", "server"]
