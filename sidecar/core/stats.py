"""The names of the engine's counters, shared with the shell's /metrics (sidecar/shell/metrics.py).

``Context.stats`` counts ``(Stat, label)`` pairs; ``label`` is ``""`` for an unlabelled counter.
A str enum, so a misspelt name fails at import, not silently at scrape time.
"""

from __future__ import annotations

from enum import StrEnum


class Stat(StrEnum):
    RECONNECTS = "reconnects"  # label: reason
    CONNECTS = "connects"
    CONNECT_FAILURES = "connect_failures"  # label: reason
    FRAMES = "frames"  # label: kind (data, orphan, replaced_socket)
    EVENTS = "events"  # label: event type, or filtered (not this socket's)
    PARSE_ERRORS = "parse_errors"  # label: reason
    CONTROL = "control"  # label: the control text (bounded)
    SUBSCRIBES = "subscribes"
    REDRIVES = "redrives"  # label: reason
    MOVES = "moves"
    PROBES = "probes"  # label: sent, ok, failed
    BBO_MISMATCH = "bbo_mismatch"
    BBO_SETTLED = "bbo_settled"
    TICK_SIZE_CHANGE = "tick_size_change"  # label: reflected, resync
    REST_RESEED = "rest_reseed"  # label: applied, older, crossed
    CROSSED_BOOKS = "crossed_books"
    REST = "rest"  # label: ok, error
    REST_CONFIRM = "rest_confirm"  # label: match, older, crossed, mismatch
    MARKET_POLLS = "market_polls"  # label: open, closed, unknown, error (markets answered / failed)
    ILLEGAL_TRANSITIONS = "illegal_transitions"  # label: from->to (not exported: a bug, logged)


Stats = dict[tuple[Stat, str], int]
