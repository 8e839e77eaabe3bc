"""The sidecar and the bridge as real subprocesses (exactly what systemd runs), logs kept.

One ``ChildProcess`` holds the plumbing both share: output to a log file read back for failure
messages, a strict ``terminate`` (the exit code is the test's to check), a ``shutdown`` that
escalates to SIGKILL, and ``stop`` that just kills.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from devkit import REPO
from devkit.net import free_port, http_get


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    """Signal a child we started and wait for it; SIGKILL if it does not go in time."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)
    return proc.returncode


class ChildProcess:
    """A subprocess whose stdout and stderr go to ``log_path``."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        cwd: Path = REPO,
        own_session: bool = False,
    ) -> None:
        self.env = env
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in terminate/shutdown/stop
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=own_session,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal and wait; a process that lingers past ``timeout`` raises TimeoutExpired."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def shutdown(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal, and SIGKILL if it lingers: a clean stop that cannot hang the caller."""
        code = stop_process(self.proc, sig, timeout)
        self._log.close()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if not self._log.closed:
            self._log.close()


class SidecarProcess(ChildProcess):
    """``python -m sidecar run``, configured only through ``env`` (see :func:`sidecar_env`)."""

    def __init__(
        self, env: dict[str, str], log_path: Path, cwd: Path = REPO, own_session: bool = False
    ) -> None:
        self.metrics_port = int(env["SIDECAR_METRICS_PORT"])
        super().__init__([sys.executable, "-m", "sidecar", "run"], env, log_path, cwd, own_session)

    def http_get(self, path: str) -> tuple[int, bytes]:
        """(status, body) from the metrics server; status 0 while nothing listens yet."""
        return http_get(f"http://127.0.0.1:{self.metrics_port}{path}")


class BridgeProcess(ChildProcess):
    """``python -m sidecar bridge --ws-cache path``: the legacy ws_cache.json writer."""

    def __init__(
        self,
        env: dict[str, str],
        path: Path,
        log_path: Path,
        args: tuple[str, ...] = (),
        cwd: Path = REPO,
        own_session: bool = False,
    ) -> None:
        self.path = path
        argv = [sys.executable, "-m", "sidecar", "bridge", "--ws-cache", str(path), *args]
        super().__init__(argv, env, log_path, cwd, own_session)

    def read(self) -> dict[str, Any] | None:
        """The file as a worker reads it; ``None`` before the first write. Must always parse."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        doc: dict[str, Any] = json.loads(data)
        return doc

    def entry(self, token: str) -> dict[str, Any] | None:
        doc = self.read()
        return None if doc is None else doc["tokens"].get(token)


def sidecar_env(redis_url: str, ws_url: str, rest_url: str, **overrides: Any) -> dict[str, str]:
    """The environment of a harness sidecar: inherited SIDECAR_* dropped (a developer's own
    configuration must never point it at a real Redis), a free metrics port, fast desired polls,
    and ``overrides`` as SIDECAR_<NAME> settings."""
    env = clean_env()
    env.update(
        SIDECAR_WS_URL=ws_url,
        SIDECAR_REST_URL=rest_url,
        SIDECAR_REDIS_URL=redis_url,
        SIDECAR_METRICS_PORT=str(free_port()),
        SIDECAR_DESIRED_POLL_S="0.2",
        SIDECAR_LOG_LEVEL="INFO",
    )
    env.update({f"SIDECAR_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


def clean_env() -> dict[str, str]:
    """This process's environment without SIDECAR_*, unbuffered, with the checkout importable
    (a child started from another directory still runs this checkout's code)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env
