"""Domain exceptions. The data layer and parsers raise these; the HTTP and socket edges translate them."""

from __future__ import annotations


class PayloadError(ValueError):
    """Valid JSON that is not a Chainhook payload we can store; ``path`` is the JSON path of the problem."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(f"{path}: {message}")
        self.message = message
        self.path = path


class CodedError(ValueError):
    """A refusal with a machine-readable code, as the socket protocol returns it in acks."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL could not be reached or dropped the connection; nothing was committed."""


class MigrationError(RuntimeError):
    """The database's migration history does not match the migrations this version ships."""
