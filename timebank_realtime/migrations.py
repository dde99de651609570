"""The numbered, forward-only SQL migrations this version ships, with their checksums (pure file reading)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str


def migrations_dir() -> Path:
    """``sql/`` inside an installed wheel, or beside the package in a source checkout."""
    packaged = Path(str(resources.files("timebank_realtime"))) / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise ValueError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        raw = path.read_bytes()
        found.append(Migration(int(match[1]), match[2], raw.decode("utf-8"),
                               hashlib.sha256(raw).hexdigest()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migrations in {directory} must be numbered 1..n without gaps, found {versions}")
    return found
