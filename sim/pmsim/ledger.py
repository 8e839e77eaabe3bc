"""What the simulator counts and what it has been told to refuse, shared across threads.

The event loop, the HTTP threads and the caller's threads all touch these, so they sit behind
one lock and nothing else: no loop state lives here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class Refusals:
    """The next ``count`` requests are refused with HTTP ``status``."""

    status: int = 0
    count: int = 0

    def take(self) -> int | None:
        """The status to refuse this request with (one fewer left), or None to serve it."""
        if self.count <= 0:
            return None
        self.count -= 1
        return self.status


@dataclass(frozen=True)
class Outage:
    """The whole venue is down: every handshake (and, with ``rest``, every REST request) is refused."""

    status: int  # 503 or 429
    rest: bool
    drop: bool  # sockets are dropped: one that slips through its handshake as it begins is cut too


class Ledger:
    """Protocol violations, handshake and REST counters, and the pending refusals."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._violations: list[str] = []
        self._handshakes = 0
        self._reject = Refusals()
        self._rest_requests = 0
        self._rest_fail = Refusals()
        self._rest_delay = 0.0
        self._rest_in_flight = 0
        self._outage: Outage | None = None
        self._outage_handshakes = 0  # handshakes since the last outage began (until the next)
        self._retry_after = 1  # the Retry-After seconds of every 429/503 answer (0: no header)

    # ---- violations

    def violation(self, text: str) -> None:
        with self._lock:
            self._violations.append(text)

    @property
    def violations(self) -> list[str]:
        with self._lock:
            return list(self._violations)

    # ---- WebSocket handshakes

    @property
    def handshakes(self) -> int:
        with self._lock:
            return self._handshakes

    def reject_handshakes(self, status: int, count: int) -> None:
        with self._lock:
            self._reject = Refusals(status, count)

    def handshake(self) -> int | None:
        """Count a handshake; return the HTTP status to refuse it with, or None to upgrade."""
        with self._lock:
            self._handshakes += 1
            if self._outage is not None:
                self._outage_handshakes += 1
                return self._outage.status
            return self._reject.take()

    # ---- venue outage

    def venue_down(self, status: int, rest: bool, drop: bool) -> None:
        with self._lock:
            self._outage = Outage(status, rest, drop)
            self._outage_handshakes = 0

    def venue_up(self) -> None:
        with self._lock:
            self._outage = None

    @property
    def down(self) -> bool:
        with self._lock:
            return self._outage is not None

    @property
    def dropping(self) -> bool:
        """Down, and every socket is to be dropped (one accepted just now included)."""
        with self._lock:
            return self._outage is not None and self._outage.drop

    @property
    def outage_handshakes(self) -> int:
        """Handshakes refused during the current (or the last) outage."""
        with self._lock:
            return self._outage_handshakes

    @property
    def retry_after(self) -> int:
        with self._lock:
            return self._retry_after

    def set_retry_after(self, seconds: int) -> None:
        with self._lock:
            self._retry_after = seconds

    # ---- REST (the RestHooks the HTTP threads call)

    @property
    def rest_requests(self) -> int:
        with self._lock:
            return self._rest_requests

    @property
    def rest_in_flight(self) -> int:
        with self._lock:
            return self._rest_in_flight

    def set_rest_delay(self, seconds: float) -> None:
        with self._lock:
            self._rest_delay = seconds

    def rest_fail(self, status: int, count: int) -> None:
        with self._lock:
            self._rest_fail = Refusals(status, count)

    def rest_begin(self) -> int | None:
        """Count a request as received and in flight; return a status to fail it with, or None."""
        with self._lock:
            self._rest_requests += 1
            self._rest_in_flight += 1
            if self._outage is not None and self._outage.rest:
                return self._outage.status
            return self._rest_fail.take()

    def rest_hold(self) -> float:
        with self._lock:
            return self._rest_delay

    def rest_end(self) -> None:
        with self._lock:
            self._rest_in_flight -= 1
