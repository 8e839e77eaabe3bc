"""Shared test helpers: waiting on conditions (never bare sleeps), free ports, processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]


def wait_for(cond: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll ``cond`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = cond()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what or cond}; last={last!r}")
        time.sleep(interval)


Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape_metrics(port: int) -> Samples:
    """Parse /metrics properly (never grep it): sample name -> {sorted labels: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A real, throwaway redis-server on a free port (never 6379), restartable on the same port."""

    def __init__(self, binary: str, tmp: Path) -> None:
        self.binary = binary
        self.tmp = tmp
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, rdb: Path | None = None) -> None:
        """Start empty, or from ``rdb`` (a snapshot taken earlier with :meth:`save_rdb`)."""
        dump = self.tmp / "dump.rdb"
        if rdb is not None:
            shutil.copyfile(rdb, dump)
        else:
            dump.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        wait_for(lambda: _pings(client), timeout=10, what="redis-server to answer PING")
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)

    def save_rdb(self, name: str) -> Path:
        """SAVE now and keep a copy of the snapshot, to restart from it later."""
        client = redis.Redis(port=self.port)
        client.save()
        client.close()
        out = self.tmp / name
        shutil.copyfile(self.tmp / "dump.rdb", out)
        return out


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class SidecarProcess:
    """``python -m sidecar run`` as a real subprocess, with its log kept for failure messages."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.metrics_port = int(env["SIDECAR_METRICS_PORT"])
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "run"],
            env=env,
            cwd=str(REPO),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if not self._log.closed:
            self._log.close()


def sidecar_env(redis_url: str, ws_url: str, rest_url: str, **overrides: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update(
        SIDECAR_WS_URL=ws_url,
        SIDECAR_REST_URL=rest_url,
        SIDECAR_REDIS_URL=redis_url,
        SIDECAR_METRICS_PORT=str(free_port()),
        SIDECAR_DESIRED_POLL_S="0.2",
        SIDECAR_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update({f"SIDECAR_{k.upper()}": str(v) for k, v in overrides.items()})
    return env
