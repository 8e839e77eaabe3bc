"""sidecar.systemd.Notifier over a real AF_UNIX datagram socket, the way systemd listens for it.

Both address forms systemd hands out are covered: a filesystem path and an abstract name
(``@...``). Without $NOTIFY_SOCKET every call is a no-op, and a socket that went away costs a
False, never an exception in the loop that feeds the watchdog.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.systemd import Notifier


class Listener:
    """systemd's end: a datagram socket bound to the notify address."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(2.0)

    def received(self) -> str:
        return self.sock.recv(4096).decode()

    def nothing_waiting(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(2.0)
        return False


@pytest.fixture(params=["path", "abstract"])
def listener(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Listener]:
    if request.param == "path":
        address = str(tmp_path / "notify")
    else:
        address = f"@pm-sidecar-test-{os.getpid()}-{id(request)}"
    lst = Listener(address)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    yield lst
    lst.sock.close()


def test_each_notification_is_one_datagram_systemd_understands(listener: Listener) -> None:
    n = Notifier()
    assert n.enabled
    assert n.ready() is True
    assert listener.received() == "READY=1"
    assert n.watchdog() is True
    assert listener.received() == "WATCHDOG=1"
    assert n.status("desired=3 live=2 health=0.667") is True
    assert listener.received() == "STATUS=desired=3 live=2 health=0.667"
    assert n.stopping() is True
    assert listener.received() == "STOPPING=1"
    assert listener.nothing_waiting()


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False


def test_a_vanished_socket_is_a_false_not_an_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    n = Notifier()
    assert n.enabled
    assert n.watchdog() is False


@pytest.mark.parametrize(
    ("usec", "interval"),
    [("20000000", 10.0), ("3000000", 1.5), ("0", None), ("", None), ("abc", None), ("-5", None)],
)
def test_the_watchdog_is_fed_at_half_its_period(
    monkeypatch: pytest.MonkeyPatch, usec: str, interval: float | None
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    assert Notifier().watchdog_interval_s == interval
