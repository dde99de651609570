"""The documented configuration matches what the service reads."""

from __future__ import annotations

import re
from pathlib import Path

from timebank_realtime.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def setting_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def test_env_example_lists_exactly_the_settings() -> None:
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert documented == setting_names()


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in sorted(setting_names()) if f"`{name}`" not in readme]
    assert missing == []


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme.split("\n## ", 1)[0]
    assert "make run" in readme.split("\n## ", 1)[0]
    assert ci.strip().endswith("make test")
