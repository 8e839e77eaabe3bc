"""The house rules that keep the design visible: the core is pure, the consumer side stands alone.

`make lint` enforces the core's purity with ruff's banned-api rule (TID251, configured in
pyproject.toml); these tests prove that rule is switched on for `sidecar/core` and only there, so a
config edit cannot silently turn it off.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


def ruff_on(source: str, filename: str) -> str:
    if RUFF is None:
        pytest.skip("ruff not installed")
    out = subprocess.run(
        [RUFF, "check", "--no-cache", "--select", "TID251", "--stdin-filename", filename, "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    return out.stdout + out.stderr


@pytest.mark.parametrize(
    "line",
    [
        "import time",
        "import threading",
        "import socket",
        "from redis import Redis",
        "import websocket",
        "from sidecar.shell import writer",
        "from sidecar.shell.metrics import Metrics",
        "from datetime import datetime",
    ],
)
def test_the_core_may_not_import_io(line: str) -> None:
    assert "TID251" in ruff_on(line + "\n", "sidecar/core/new_part.py")


def test_the_shell_may() -> None:
    assert "TID251" not in ruff_on("import time\nimport threading\nimport redis\n", "sidecar/shell/new.py")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


CONSUMER_SIDE = [
    *sorted((REPO / "sidecar" / "client").glob("*.py")),
    REPO / "sidecar" / "bridge.py",
    REPO / "sidecar" / "bridge_core.py",
    REPO / "sidecar" / "status.py",
    REPO / "sidecar" / "status_view.py",
]


@pytest.mark.parametrize("path", CONSUMER_SIDE, ids=lambda p: str(p.relative_to(REPO)))
def test_the_consumer_side_depends_on_neither_core_nor_shell(path: Path) -> None:
    bad = sorted(m for m in imported_modules(path) if m.startswith(("sidecar.core", "sidecar.shell")))
    assert bad == []


def test_nothing_shipped_imports_the_dev_kit_or_the_tests() -> None:
    offenders = []
    for path in sorted((REPO / "sidecar").rglob("*.py")):
        if path.parent == REPO / "sidecar" / "sim":  # the checkout-only alias of the simulator package
            continue
        bad = [m for m in imported_modules(path) if m.split(".")[0] in ("devkit", "tests", "pmsim")]
        offenders += [f"{path.relative_to(REPO)}: {m}" for m in bad]
    assert offenders == []


HTTP_CLIENTS = ("urllib.request", "http.client", "urllib3", "httpx", "requests", "aiohttp")


def test_one_http_client_in_the_product() -> None:
    """Every HTTP request the product makes (REST confirmations, market polls, check's probe) goes
    through sidecar/shell/http.py: one place for keep-alive, timeouts, Retry-After and the budget."""
    users = sorted(
        str(path.relative_to(REPO))
        for path in (REPO / "sidecar").rglob("*.py")
        if any(m == c or m.startswith(c + ".") for m in imported_modules(path) for c in HTTP_CLIENTS)
    )
    assert users == ["sidecar/shell/http.py"]
