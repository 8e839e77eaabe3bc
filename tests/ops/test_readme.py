"""README and .env.example say exactly what the settings class does: names and defaults, no drift."""

from __future__ import annotations

import re
from typing import Any

from devkit import REPO
from sidecar.config import Settings

ROW = re.compile(r"^\| `(SIDECAR_[A-Z0-9_]+)` \| ([^|]+) \| (.+) \|$")
ENV_LINE = re.compile(r"^# (SIDECAR_[A-Z0-9_]+)=(.*)$")


def documented_default(value: Any) -> str:
    """How a default is written in the README table: `5.0`, `true`, `pm:`; "none" for no value."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    return f"`{value}`"


def env_default(value: Any) -> str:
    """How a default is written in .env.example: the value a line would set (empty for none)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def settings_defaults() -> dict[str, Any]:
    return {f"SIDECAR_{name.upper()}": field.default for name, field in Settings.model_fields.items()}


def readme_table() -> dict[str, str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        match = ROW.match(line.strip())
        if match:
            name, default = match.group(1), match.group(2).strip()
            assert name not in rows, f"{name} listed twice in the README table"
            rows[name] = default
    return rows


def test_readme_table_lists_every_setting_with_its_default() -> None:
    table = readme_table()
    expected = {name: documented_default(value) for name, value in settings_defaults().items()}
    assert sorted(table) == sorted(expected), (
        "README configuration table and Settings name different variables"
    )
    assert table == expected


def test_env_example_lists_every_setting_with_its_default() -> None:
    found: dict[str, str] = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        match = ENV_LINE.match(line)
        if match and match.group(1) != "SIDECAR_TEST_REQUIRE_REDIS":
            found.setdefault(match.group(1), match.group(2))
    expected = {name: env_default(value) for name, value in settings_defaults().items()}
    assert found == expected


def test_the_parser_sees_drift() -> None:
    """The checks above compare something: a changed default or a missing row is a difference."""
    table = readme_table()
    assert table["SIDECAR_MAX_TOKENS_PER_CONN"] == "`200`"
    assert table["SIDECAR_REDIS_PASSWORD"] == "none"
    assert table["SIDECAR_REST_ENABLED"] == "`true`"
    assert len(table) == len(Settings.model_fields) >= 30
