"""sidecar.shell.allocator: which glibc settings apply, when an operator's own win, where it is a no-op."""

from __future__ import annotations

import logging
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sidecar.shell import allocator


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[int, ...]]] = []

        def mallopt(param: int, value: int) -> int:
            self.calls.append(("mallopt", (param, value)))
            return 1

        def malloc_trim(pad: int) -> int:
            self.calls.append(("malloc_trim", (pad,)))
            return 1

        def gnu_get_libc_version() -> bytes:
            return b"2.36"

        self.mallopt: Any = mallopt
        self.malloc_trim: Any = malloc_trim
        self.gnu_get_libc_version: Any = gnu_get_libc_version


@pytest.fixture
def fake_glibc(monkeypatch: pytest.MonkeyPatch) -> FakeLibc:
    libc = FakeLibc()
    monkeypatch.setattr(allocator.platform, "system", lambda: "Linux")
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    monkeypatch.setattr(allocator, "_libc", None)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    return libc


def test_tune_caps_arenas_and_fixes_the_mmap_threshold(
    fake_glibc: FakeLibc, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, "sidecar.shell.allocator")
    assert allocator.tune() is True
    assert "glibc 2.36 malloc: 2 arenas, mmap threshold 128 KiB" in caplog.text
    assert fake_glibc.calls == [
        ("mallopt", (allocator.M_ARENA_MAX, 2)),
        ("mallopt", (allocator.M_MMAP_THRESHOLD, 128 * 1024)),
    ]
    clock = iter([10.0, 10.25])  # malloc_trim took 0.25 s
    monkeypatch.setattr(allocator.time, "perf_counter", lambda: next(clock))
    assert allocator.trim() == 0.25
    assert fake_glibc.calls[-1] == ("malloc_trim", (0,))


def test_the_operators_malloc_environment_wins(fake_glibc: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert allocator.tune() is True
    assert fake_glibc.calls == []
    allocator.trim()  # trimming is still ours to do
    assert fake_glibc.calls == [("malloc_trim", (0,))]


def test_other_c_libraries_are_left_alone(fake_glibc: FakeLibc) -> None:
    del fake_glibc.gnu_get_libc_version  # musl: a libc without glibc's version call
    assert allocator.tune() is False
    assert allocator.trim() == 0.0
    assert fake_glibc.calls == []


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_real_glibc_accepts_the_settings() -> None:
    """In a fresh interpreter, as `sidecar run` does it: mallopt must accept both settings."""
    code = (
        "import ctypes; from sidecar.shell import allocator; assert allocator.tune();"
        "libc = ctypes.CDLL('libc.so.6');"
        "assert libc.mallopt(allocator.M_ARENA_MAX, allocator.ARENA_MAX) == 1;"
        "assert libc.mallopt(allocator.M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD) == 1;"
        "assert allocator.trim() > 0.0"
    )
    repo = Path(__file__).parents[2]
    subprocess.run(
        [sys.executable, "-c", code], check=True, env={"PATH": "/usr/bin:/bin"}, cwd=repo, timeout=30
    )
