"""A process's CPU time and memory from /proc (Linux): what the benches and the soak measure."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path


def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _stat_fields(path: str) -> list[str]:
    """Fields after the command name (which may hold spaces and parentheses)."""
    with open(path) as fh:
        return fh.read().rsplit(")", 1)[1].split()


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process, all its threads, in seconds."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    return int(fields[11]) / _ticks(), int(fields[12]) / _ticks()


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    return sum(cpu_split(pid))


def thread_cpu_s(pid: int) -> dict[int, float]:
    """utime + stime per thread (kernel time included), by native thread id."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            fields = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / _ticks()
    return out


@dataclass(frozen=True)
class Status:
    rss_kb: int  # VmRSS
    threads: int

    @property
    def rss_mb(self) -> float:
        return self.rss_kb / 1024.0


def status(pid: int) -> Status:
    """VmRSS and thread count from /proc/<pid>/status."""
    rss, threads = 0, 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return Status(rss, threads)


def rss_mb(pid: int) -> float:
    return status(pid).rss_mb


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"
