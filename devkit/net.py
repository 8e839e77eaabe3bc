"""Loopback networking for the harness: free ports and a forgiving HTTP GET."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

REDIS_DEFAULT_PORT = 6379  # a developer's own Redis: never handed out


def free_port() -> int:
    """A free loopback TCP port from the OS's ephemeral range, never Redis's 6379."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != REDIS_DEFAULT_PORT:
            return port


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of a GET; status 0 while nothing listens (a starting process)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""
