"""sidecar.shell.redisconn: Redis clients from settings (password, TLS, unix sockets, no retries).

The writer and the desired reader back off and retry themselves, and the writer's stamp check
relies on seeing every failure: a client that retried silently would hide both. Checked against
a local socket that drops every connection (attempts counted), and a round trip to fakeredis's
TCP server.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fakeredis import TcpFakeServer

from sidecar.config import Settings
from sidecar.shell.redisconn import make_client


def settings(**kw: object) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[arg-type]


def test_defaults_short_timeouts_a_name_and_no_retries() -> None:
    client = make_client(settings(redis_url="redis://10.1.2.3:6390/4"))
    kw = client.connection_pool.connection_kwargs
    assert (kw["host"], kw["port"], kw["db"]) == ("10.1.2.3", 6390, 4)
    assert kw["socket_timeout"] == 5.0
    assert kw["socket_connect_timeout"] == 2.0
    assert kw["client_name"] == "pm-sidecar"
    assert kw["retry_on_timeout"] is False
    assert kw["retry"].get_retries() == 0
    assert kw.get("password") is None


def test_password_and_tls_ca_come_from_the_settings(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until a connection is made")
    url = "rediss://cache.internal:6380/2"
    s = settings(redis_url=url, redis_password="s3cret", redis_tls_ca_file=str(ca))
    client = make_client(s, timeout_s=7.5)
    pool = client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    kw = pool.connection_kwargs
    assert kw["password"] == "s3cret"
    assert kw["ssl_ca_certs"] == str(ca)
    assert kw["socket_timeout"] == 7.5
    assert (kw["host"], kw["port"], kw["db"]) == ("cache.internal", 6380, 2)


def test_a_unix_socket_url() -> None:
    client = make_client(settings(redis_url="unix:///run/redis/redis.sock?db=3"))
    pool = client.connection_pool
    assert pool.connection_class is redis.UnixDomainSocketConnection
    assert pool.connection_kwargs["path"] == "/run/redis/redis.sock"
    assert pool.connection_kwargs["db"] == 3


def test_callers_may_override_any_keyword() -> None:
    """The writer's final transaction asks for a nameless RESP2 connection with its own timeout."""
    client = make_client(settings(), timeout_s=1.0, client_name=None, protocol=2, socket_timeout=0.3)
    kw = client.connection_pool.connection_kwargs
    assert kw["client_name"] is None
    assert kw["protocol"] == 2
    assert kw["socket_timeout"] == 0.3


class Dropper:
    """Accepts connections and closes them at once, counting the attempts."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


@pytest.fixture
def dropper() -> Iterator[Dropper]:
    d = Dropper()
    yield d
    d.listener.close()


def test_a_failing_command_raises_after_one_attempt(dropper: Dropper) -> None:
    client = make_client(settings(redis_url=f"redis://127.0.0.1:{dropper.port}/0"), timeout_s=1.0)
    with pytest.raises(redis.ConnectionError):
        client.ping()
    assert dropper.accepted == 1, f"{dropper.accepted} connection attempts: the client retried"


def test_a_round_trip_through_a_real_socket() -> None:
    server = TcpFakeServer(("127.0.0.1", 0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address[:2]
        client = make_client(settings(redis_url=f"redis://{host}:{port}/0"), timeout_s=2.0)
        assert client.ping() is True
        client.hset("pm:quote:1", mapping={"status": "live"})
        assert client.hgetall("pm:quote:1") == {b"status": b"live"}
        client.close()
    finally:
        server.shutdown()
        server.server_close()
