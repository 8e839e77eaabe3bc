"""A token's status and reason: the one place they change, and the table of what may follow what.

The statuses and reasons are the public Redis contract. :data:`TRANSITIONS` says which status may
follow which and why; :data:`REASONS` says which reasons each status shows. :func:`set_status` is
the only code that changes a token's status or reason: it checks both tables and marks the token
for writing. ``docs/redis-contract.md`` shows :func:`render` of these tables, and a test keeps the
two equal, so the docs cannot drift from the code.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol

from sidecar.core.stats import Stat

if TYPE_CHECKING:
    from sidecar.core.quote import TokenState

log = logging.getLogger("sidecar.core.status")

Status = Literal["pending", "live", "resyncing", "stale", "resolved", "unsubscribed"]

PENDING: Final = "pending"
LIVE: Final = "live"
RESYNCING: Final = "resyncing"
STALE: Final = "stale"
RESOLVED: Final = "resolved"
UNSUBSCRIBED: Final = "unsubscribed"

# Reasons the engine itself tests for (the rest are only ever written).
SUBSCRIBING: Final = "subscribing"
BBO_SETTLING: Final = "bbo_settling"  # a top disagreeing with the exchange's that may still settle
NO_DATA: Final = "no_data"
SIDECAR_STOPPED: Final = "sidecar_stopped"
REMOVED: Final = "removed_from_desired"
VENUE_DOWN: Final = "venue_down"  # every socket failing: the venue is down (core/venue.py)
WON: Final = "won"
LOST: Final = "lost"
MARKET_CLOSED: Final = "market_closed"
MARKET_RESOLVED: Final = "market_resolved"

ADDED = "(added)"  # the "from" of a token entering the desired set (it has no status before)

# Set by the tests: an illegal change raises there; in production it is counted and logged.
STRICT = False


class IllegalTransition(AssertionError):
    pass


@dataclass(frozen=True, slots=True)
class Reasons:
    """The reasons a status shows: exact values, and families written ``prefix<...>``."""

    exact: tuple[str, ...]
    prefixes: tuple[str, ...]
    doc: str

    def allows(self, reason: str) -> bool:
        return reason in self.exact or reason.startswith(self.prefixes)


_RESOLVED = (
    "a `market_resolved` event names the token, or its market's state over REST says closed (each "
    "desired token's market is polled every `SIDECAR_MARKET_POLL_S`, default 300 s, staggered, and at "
    "once when its book goes empty or REST `/books` has no book for it)"
)
_REMOVED = (
    "the token left `P desired`: unsubscribe sent, final write, key expires after "
    "`SIDECAR_UNSUBSCRIBED_TTL_S` (default 300 s)"
)

# (from, to) -> when. A reason change within one status is a (status, status) row.
TRANSITIONS: dict[tuple[str, Status], str] = {
    (ADDED, PENDING): "the token is added to `P desired` (again: a new, higher `seq`, TTL removed)",
    (ADDED, RESOLVED): "the token is added while its market is known closed: resolved earlier in this "
    "run (a re-add keeps it), or read back `resolved` from its hash at start-up (same reason; its "
    "market is then polled at once to confirm)",
    (PENDING, PENDING): "re-subscribed without a first event, moved, given up on (retried every 5 min); "
    "its socket lost or judged silent; the venue went down (`venue_down`; `subscribing` again when it "
    "comes back); the sidecar stopped",
    (PENDING, LIVE): "its first `book` arrives",
    (PENDING, RESOLVED): _RESOLVED,
    (PENDING, UNSUBSCRIBED): _REMOVED,
    (LIVE, LIVE): "(a `book` or a delta moves the prices; the status stays)",
    (LIVE, STALE): "its socket was lost or judged silent (written within about 50 ms of the sidecar "
    "deciding so); its socket went silent past its norm while this token was overdue; the venue went "
    "down (`venue_down`: every socket failing for `SIDECAR_VENUE_DOWN_AFTER_S`, `venue` = `down` in "
    "`P sidecar`); the sidecar stopped",
    (LIVE, RESYNCING): "the local top disagrees with the exchange's `best_bid`/`best_ask` (on "
    "`price_change` or `best_bid_ask`) or is crossed: first `bbo_settling` (a crossing trade arrives as "
    "several messages, the first already stating the final top; nothing is re-subscribed); a "
    "`tick_size_change` the book does not already carry: REST at once (re-subscribed at once when REST "
    "is off); a `price_change` entry for it that cannot be applied, or a quiet-token REST check "
    "answered with a different book that is itself crossed: re-subscribed and fetched over REST at once",
    (LIVE, RESOLVED): _RESOLVED,
    (LIVE, UNSUBSCRIBED): _REMOVED,
    (RESYNCING, RESYNCING): "still disagreeing `SIDECAR_BBO_GRACE_S` (default 1 s) after `bbo_settling`, "
    "or another resync begins while settling: re-subscribed and fetched over REST at once. No book 5 s "
    "into a resync: both again; still none: both every 20 s, `SIDECAR_REDRIVE_MAX` (default 2) times, "
    "then moved to a fresh socket (20 s later the same budget there), then every 5 min; the reason "
    "stays the resync's",
    (RESYNCING, LIVE): "`bbo_settling`: the local top agrees again (`updated_at` = that message); "
    "otherwise a fresh WS `book`, or a REST book not older than the latest event applied and not "
    "crossed (`source` `rest`; the next WS book replaces it as usual)",
    (RESYNCING, STALE): "its socket was lost or judged silent; the venue went down; the sidecar stopped",
    (RESYNCING, RESOLVED): _RESOLVED,
    (RESYNCING, UNSUBSCRIBED): _REMOVED,
    (STALE, STALE): "its new socket is lost or judged silent too; the venue went down; the sidecar stopped",
    (STALE, LIVE): "a fresh `book` on the new socket (never before)",
    (STALE, RESOLVED): _RESOLVED,
    (STALE, UNSUBSCRIBED): _REMOVED,
    (RESOLVED, PENDING): "it was read back `resolved` at start-up, but the first answer about its "
    "market says open: re-subscribed, `live` on its next `book` (a resolution seen in this run is "
    "never undone)",
    (RESOLVED, RESOLVED): "the winner becomes known (`market_resolved`/`market_closed` to `won`/`lost`, "
    "never back); books still update its prices",
    (RESOLVED, UNSUBSCRIBED): _REMOVED,
}

_CONNECTION = (
    "`connection_<why>` with `<why>` one of `eof`, `close_<code>`, `reset`, `timeout`, `os_error`, "
    "`tls` (a TLS error on the socket), `protocol_error`, `error`, `pong_timeout`; `silence` (zombie "
    "socket replaced)"
)

REASONS: dict[Status, Reasons] = {
    PENDING: Reasons(
        (SUBSCRIBING, "no_first_event_moved", NO_DATA, "silence", VENUE_DOWN, SIDECAR_STOPPED),
        ("no_first_event_redrive_", "connection_"),
        "`subscribing`; `no_first_event_redrive_N` (re-subscribed N times without a first event); "
        "`no_first_event_moved` (moved to a fresh socket); `no_data` (all of that failed; retried "
        f"every 5 min); {_CONNECTION}; `venue_down` (every socket failing: the venue is down, "
        "redrives paused); `sidecar_stopped`",
    ),
    LIVE: Reasons(("",), (), '`""`'),
    STALE: Reasons(
        ("silence_suspected", "silence", VENUE_DOWN, SIDECAR_STOPPED),
        ("connection_",),
        f"{_CONNECTION}; `silence_suspected` (its socket went silent past its norm while this token was "
        "overdue; redriven, `live` again on a fresh book if the socket is healthy); `venue_down` (every "
        "socket failing: the venue is down; `live` again on a fresh book once it is back); `sidecar_stopped`",
    ),
    RESYNCING: Reasons(
        (BBO_SETTLING, "bbo_mismatch", "crossed_book", "tick_size_change", "bad_entry", "rest_mismatch"),
        (),
        "`bbo_settling` (top disagreeing with the exchange's, within the grace), `bbo_mismatch`, "
        "`crossed_book` (only crossed), `tick_size_change`, `bad_entry` (a `price_change` entry that "
        "cannot be applied; one naming no asset counts for every token of its `market` on that socket), "
        "`rest_mismatch`; never a pending-only `no_first_event_*`/`no_data`, also while re-subscribed",
    ),
    RESOLVED: Reasons(
        (WON, LOST, MARKET_CLOSED, MARKET_RESOLVED),
        (),
        "`won` (this token is the winning asset), `lost` (another token of its market won), "
        "`market_closed` (its market's state says closed, no winner flagged yet), `market_resolved` "
        "(a `market_resolved` event that names no winner)",
    ),
    UNSUBSCRIBED: Reasons((REMOVED,), (), "`removed_from_desired`"),
}


class Writable(Protocol):
    """What :func:`set_status` needs: the set of tokens to write, and the counters."""

    dirty: set[str]
    stats: Counter[tuple[Stat, str]]


def set_status(ctx: Writable, st: TokenState, status: Status, reason: str) -> None:
    """Change a token's status and reason (the only place that does) and mark it for writing.

    An illegal change (not in :data:`TRANSITIONS`, or a reason its status never shows) raises
    :class:`IllegalTransition` under :data:`STRICT` (tests); otherwise it is counted, logged and
    applied: the quote must still tell the truth as best it knows."""
    if st.status == status and st.reason == reason:
        return
    _change(ctx, st, st.status, status, reason)


def start(ctx: Writable, st: TokenState, status: Status, reason: str) -> None:
    """A token entering the desired set starts in ``status`` (an ``(added)`` row of the table)
    instead of ``pending``; checked like :func:`set_status`."""
    _change(ctx, st, ADDED, status, reason)


def _change(ctx: Writable, st: TokenState, old: str, status: Status, reason: str) -> None:
    if (old, status) not in TRANSITIONS or not REASONS[status].allows(reason):
        what = f"{old}->{status}:{reason}"
        if STRICT:
            raise IllegalTransition(f"token {st.token}: {what}")
        ctx.stats[Stat.ILLEGAL_TRANSITIONS, f"{old}->{status}"] += 1
        log.error("illegal status change for token %s: %s", st.token, what)
    st.status = status
    st.reason = reason
    ctx.dirty.add(st.token)


def render() -> str:
    """The status tables of docs/redis-contract.md, rendered from the code."""
    lines = ["| From | To | When |", "|---|---|---|"]
    lines += [
        f"| `{a}` | `{b}` | {when} |" if a != ADDED else f"| {a} | `{b}` | {when} |"
        for (a, b), when in TRANSITIONS.items()
    ]
    lines += ["", "Reasons you will see:", "", "| Status | `reason` |", "|---|---|"]
    lines += [f"| `{status}` | {reasons.doc} |" for status, reasons in REASONS.items()]
    return "\n".join(lines) + "\n"
