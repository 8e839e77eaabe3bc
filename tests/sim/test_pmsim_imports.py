"""pmsim stands alone: it imports nothing from the sidecar, and needs only websockets and orjson."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pmsim

PMSIM = Path(pmsim.__file__).resolve().parent
ALLOWED = {"websockets", "orjson"}  # sim/pyproject.toml's dependencies


def absolute_imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in a module, wherever it sits (functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_pmsim_module_imports_only_the_stdlib_websockets_orjson_and_itself() -> None:
    modules = sorted(PMSIM.glob("*.py"))
    assert len(modules) >= 10, modules  # the scan looks where the package really is
    foreign = {
        f"{path.name}: {name}"
        for path in modules
        for name in absolute_imports(path)
        if name not in sys.stdlib_module_names and name not in ALLOWED and name != "pmsim"
    }
    assert foreign == set()


def test_the_scan_sees_a_sidecar_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from sidecar.core import protocol\n")
    assert "sidecar" in absolute_imports(module)


BLOCKER = """
import importlib.abc, sys
ALLOWED = {"websockets", "orjson", "pmsim"}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top in ALLOWED:
            return None
        raise ImportError(f"pmsim imported {name}")

sys.meta_path.insert(0, Block())
import pkgutil, importlib, pmsim
for info in pkgutil.iter_modules(pmsim.__path__):
    importlib.import_module("pmsim." + info.name)
print("ok")
"""


def test_pmsim_and_every_module_import_with_only_websockets_and_orjson() -> None:
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
