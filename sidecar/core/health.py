"""Health arithmetic: event-rate estimates, silence thresholds, backoff.

Liveness on this channel must be judged on market data, never on PONGs: a "zombie" socket
answers PING for hours while delivering nothing, and a quiet market can legitimately be silent
for many minutes. So every threshold here scales with what the socket or token normally does.
"""

from __future__ import annotations

import random

GAP_ALPHA = 0.1  # weight of the newest inter-event gap in the EWMA
SILENCE_FACTOR = 20.0  # a socket is suspect after this many of its usual gaps without data
STALL_FACTOR = 30.0  # a token is stalled after this many of its usual gaps without events
STALL_MIN_S = 30.0
OVERDUE_FACTOR = 5.0  # on a silent socket, a token this many of its gaps late is not vouched for
OVERDUE_MIN_EVENTS = 3
STALL_MIN_EVENTS = 10  # no per-token norm before this many events
STALL_BACKOFF_S = 60.0
STALL_BACKOFF_MAX_S = 3600.0


def update_gap(ewma: float | None, gap: float) -> float:
    if ewma is None:
        return gap
    return ewma + GAP_ALPHA * (gap - ewma)


def silence_threshold(gap_ewma: float | None, quiet_mult: float, lo: float, hi: float) -> float:
    """Seconds without data after which a socket gets probed.

    Busy sockets are suspect after seconds, sleepy ones only after ``hi``; every probe that
    proves a quiet socket healthy doubles ``quiet_mult`` so a quiet market is not probed in a loop.
    """
    base = hi if gap_ewma is None else SILENCE_FACTOR * gap_ewma
    return min(hi, max(lo, base) * quiet_mult)


def stall_threshold(gap_ewma: float | None, events: int, hi: float) -> float | None:
    """Seconds of silence after which a token is stalled while its socket flows; None: no norm yet."""
    if gap_ewma is None or events < STALL_MIN_EVENTS:
        return None
    return min(max(STALL_MIN_S, STALL_FACTOR * gap_ewma), max(hi, STALL_MIN_S))


def overdue(gap_ewma: float | None, events: int, idle: float, lo: float) -> bool:
    """On a socket gone silent, is this token's own silence abnormal? Quiet tokens are not: their
    quote is very likely still right, so they stay live and do not flap."""
    if gap_ewma is None or events < OVERDUE_MIN_EVENTS:
        return False
    return idle > max(lo, OVERDUE_FACTOR * gap_ewma)


def stall_backoff(redrives: int) -> float:
    return min(STALL_BACKOFF_MAX_S, STALL_BACKOFF_S * (2.0**redrives))


def full_jitter(rng: random.Random, attempts: int, lo: float, hi: float) -> float:
    """Exponential backoff with full jitter, so many sockets never reconnect in lock-step."""
    cap = min(hi, lo * (2.0 ** min(attempts, 30)))
    return rng.uniform(0.0, cap) if attempts > 0 else rng.uniform(0.0, lo)
