"""The state of the market lifecycle part (sidecar/core/lifecycle.py), held by the engine's context.

Apart from lifecycle.py so that the context can hold it without importing the parts it uses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Closed:
    """A token known resolved: by the exchange in this run, or read back (``confirmed`` False
    until a poll or event agrees)."""

    market: str | None
    reason: str
    confirmed: bool = True


@dataclass(slots=True)
class Saved:
    """A token's market and reference data read back from its hash at start-up."""

    market: str | None
    tick_size: str | None
    min_order_size: str | None
    neg_risk: bool | None


class Lifecycle:
    """The lifecycle part's state (``Context.lifecycle``)."""

    def __init__(self, now: float) -> None:
        self.due: dict[str, float] = {}  # market of a desired token -> when it is next polled
        self.polls: dict[str, int] = {}  # market -> answers so far (varies its jitter)
        self.urgent: dict[str, None] = {}  # markets to poll out of turn, in order
        self.last_urgent: dict[str, float] = {}
        self.ready: list[str] = []  # markets due at the last scan, earliest first
        self.inflight: dict[int, tuple[float, list[str]]] = {}  # request id -> (sent at, markets)
        self.asked: set[str] = set()  # markets in flight
        self.done: set[str] = set()  # closed with a winner: never polled again
        self.resolved: dict[str, Closed] = {}  # token -> its resolution, for the process lifetime
        self.saved: dict[str, Saved] = {}  # read back at start-up, taken when the token is added
        self.next_scan = now
