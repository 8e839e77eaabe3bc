"""A Redis only the harness uses: a real redis-server on a free port, or embedded fakeredis.

The sidecar is a separate process, so it needs a real TCP endpoint either way. Tests, benches and
the soak want the real server (``RedisServer``, restartable on the same port, from a snapshot);
the demo takes fakeredis when no redis-server is installed (``start_throwaway_redis``).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devkit.net import free_port
from devkit.wait import wait_for


class ThrowawayRedis(Protocol):
    """What the demo needs of either kind of throwaway Redis."""

    @property
    def url(self) -> str: ...

    def describe(self) -> str: ...

    def stop(self) -> None: ...


class RedisServer:
    """A real, throwaway redis-server on a free port (never 6379), restartable on the same port.

    It runs in a session of its own: a Ctrl-C in the terminal must not kill Redis before the
    sidecar's clean stop has written to it.
    """

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
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.tmp)]
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.proc = proc
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            wait_for(
                lambda: proc.poll() is not None or _pings(client), 10, what="redis-server to answer PING"
            )
        finally:
            client.close()
        if proc.poll() is not None:
            self.proc = None
            raise RuntimeError(f"redis-server exited with code {proc.returncode} (port {self.port} taken?)")

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

    def describe(self) -> str:
        with redis.Redis(port=self.port) as probe:
            version = probe.info("server").get("redis_version", "?")
        return f"real redis-server {version} on 127.0.0.1:{self.port} (no persistence)"


class FakeRedisServer:
    """fakeredis behind a TCP server in a thread of this process: the demo's fallback."""

    def __init__(self, why: str) -> None:
        import fakeredis  # a dev dependency: imported only when the fallback is taken

        self._server: Any = fakeredis.TcpFakeServer(("127.0.0.1", 0), server_type="redis")
        self.port = int(self._server.server_address[1])
        self._label = (
            f"embedded fakeredis {fakeredis.__version__} TCP server on 127.0.0.1:{self.port} ({why})"
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="fakeredis", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def describe(self) -> str:
        return self._label

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_throwaway_redis(workdir: Path, attempts: int = 3) -> ThrowawayRedis:
    """A real redis-server when one is installed (a picked port can be taken before Redis binds
    it, hence the attempts), else embedded fakeredis; ``describe()`` says which, and why."""
    binary = shutil.which("redis-server")
    if binary is not None:
        for _ in range(attempts):
            server = RedisServer(binary, workdir)
            try:
                server.start()
                return server
            except RuntimeError:
                server.stop()
    why = "no redis-server on PATH" if binary is None else "redis-server failed to start"
    try:
        return FakeRedisServer(why)
    except ImportError:
        raise RuntimeError(
            f"{why} and fakeredis is not installed: run `make install` (installs fakeredis) "
            "or `apt install redis-server`"
        ) from None


def quiet_client(server: RedisServer, timeout: float = 1.0) -> redis.Redis:
    """A client that fails fast instead of retrying for seconds (redis-py retries by default)."""
    return redis.Redis(
        port=server.port,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=0.3,
        retry=Retry(NoBackoff(), 0),
    )


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
