"""The sidecar's one HTTP client for the exchange's REST API: kept-alive connections, connect/read
timeouts, one process-wide request budget, and the server's ``Retry-After`` obeyed.

Book confirmations (``POST /books``) and market-state polls (``GET /markets/{id}``) both go through
one :class:`HttpClient`, called only from the REST worker thread (``sidecar.shell.rest``), never from
the runtime loop: every wait here (the budget, a ``Retry-After``) blocks that thread alone, and while
it waits no other request goes out. Requests are never retried here; a failure costs one request and
the caller decides what to do next.
"""

from __future__ import annotations

import email.utils
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import urllib3

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 5.0
RETRY_AFTER_CAP_S = 60.0  # a server asking for longer is asked again after this (our own safety)
THROTTLED_PAUSE_S = 2.0  # after a 429 or 5xx without a usable Retry-After
THROTTLING = frozenset({429, 503})  # statuses whose Retry-After we obey


class RequestFailed(Exception):
    """The request got no usable answer (connection, timeout, cut or garbled answer)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, whatever its status: the caller judges it."""

    status: int
    body: bytes
    location: str | None = None  # a redirect's target (redirects are reported, never followed)


class Budget:
    """One request every ``1 / max_rps`` seconds, for the whole process; ``hold`` pushes the next
    slot later (a server's ``Retry-After``). Thread-safe; ``take`` blocks its caller only."""

    def __init__(
        self,
        max_rps: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not max_rps > 0:
            raise ValueError(f"max_rps must be positive, got {max_rps!r}")
        self.interval = 1.0 / max_rps
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_at = 0.0

    def take(self) -> None:
        """Wait for the next slot and spend it."""
        while True:
            with self._lock:
                now = self._clock()
                wait = self._next_at - now
                if wait <= 0:
                    self._next_at = now + self.interval
                    return
            self._sleep(wait)

    def hold(self, seconds: float) -> None:
        """No request before ``seconds`` from now (never shortens an earlier hold)."""
        with self._lock:
            self._next_at = max(self._next_at, self._clock() + seconds)


def retry_after_s(value: str | None, now_wall: float, cap: float = RETRY_AFTER_CAP_S) -> float | None:
    """A ``Retry-After`` value in seconds (delta-seconds or an HTTP date), capped; None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now_wall
    return min(max(seconds, 0.0), cap)


class HttpClient:
    """Requests to one base URL over a kept-alive connection, each after a slot of the budget.

    TLS is verified against the system's trust store (``ssl.create_default_context``, which reads
    ``SSL_CERT_FILE``), as ``urllib.request`` did before. A 429/503 holds the budget for its
    ``Retry-After`` (capped at :data:`RETRY_AFTER_CAP_S`); without one, and on any other 5xx, for
    :data:`THROTTLED_PAUSE_S`.
    """

    def __init__(self, base_url: str, budget: Budget, timeout_s: float | None = None) -> None:
        """``timeout_s`` replaces both the connect and the read timeout (``check``'s one-off probe)."""
        self.base_url = base_url.rstrip("/")
        self.budget = budget
        connect, read = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S) if timeout_s is None else (timeout_s, timeout_s)
        self._pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=1,  # one worker thread: one connection, reused
            timeout=urllib3.Timeout(connect=connect, read=read),
            retries=False,  # never retried here; redirects are not followed either
            ssl_context=ssl.create_default_context(),
        )

    def request(self, method: str, path: str, body: bytes | None = None) -> Answer:
        """One request, after the budget's next slot. Raises :class:`RequestFailed` without an answer."""
        self.budget.take()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            resp = self._pool.request(method, self.base_url + path, body=body, headers=headers)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            # A cut or garbled answer is a ProtocolError (an HTTPError): one failed request, and the
            # pool drops that connection. Messages name the host, never the URL's credentials.
            raise RequestFailed(f"{type(exc).__name__}: {self._redact(str(exc))}") from None
        status = resp.status
        if status in THROTTLING:
            wait = retry_after_s(resp.headers.get("Retry-After"), time.time(), RETRY_AFTER_CAP_S)
            self.budget.hold(THROTTLED_PAUSE_S if wait is None else wait)
        elif status >= 500:
            self.budget.hold(THROTTLED_PAUSE_S)
        return Answer(status, resp.data, resp.headers.get("Location"))

    def close(self) -> None:
        self._pool.clear()

    def _redact(self, text: str) -> str:
        return text.replace(self.base_url, _without_userinfo(self.base_url))


def _without_userinfo(url: str) -> str:
    parsed = urllib3.util.parse_url(url)
    if parsed.auth is None:
        return url
    return parsed._replace(auth="***").url
