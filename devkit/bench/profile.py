"""Optional py-spy: per-thread names for the CPU split, raw profiles with ``--profile DIR``."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

from devkit.bench.context import Bench, log


def _py_spy() -> str | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return exe if Path(exe).exists() else None


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by native id, from `py-spy dump` when it is installed."""
    exe = _py_spy()
    if exe is None:
        return {}
    try:
        text = subprocess.run(
            [exe, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    names = {}
    for line in text.splitlines():
        if line.startswith("Thread ") and '"' in line:
            with contextlib.suppress(ValueError, IndexError):
                names[int(line.split()[1])] = line.split('"')[1]
    return names


def record(b: Bench, pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """Start `py-spy record` of ``pid`` into ``--profile``/name.txt; SIGINT it to finish."""
    exe = _py_spy()
    if exe is None:
        log("--profile: py-spy not installed (.venv/bin/pip install py-spy); skipping")
        return None
    out = Path(b.args.profile)
    out.mkdir(parents=True, exist_ok=True)
    argv = [exe, "record", "--pid", str(pid), "--rate", "250", "--threads", "--nonblocking", "--gil"]
    argv += ["--format", "raw", "-o", str(out / f"{name}.txt")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    b.stack.callback(lambda: proc.kill() if proc.poll() is None else None)
    time.sleep(0.5)
    return proc
