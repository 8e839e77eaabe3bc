"""Waiting on a condition with a deadline: the only way the dev kit waits for "it happened"."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def poll(cond: Callable[[], T], timeout: float, interval: float = 0.02) -> T:
    """Call ``cond`` until it returns something truthy or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        last = cond()
        if last or time.monotonic() >= deadline:
            return last
        time.sleep(interval)


def wait_for(cond: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll ``cond`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    last = poll(cond, timeout, interval)
    if not last:
        raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what or cond}; last={last!r}")
    return last


def wait_for_none(
    problems: Callable[[], Sequence[str]], timeout: float, interval: float = 0.02, what: str = ""
) -> None:
    """Wait until ``problems()`` lists nothing; on timeout fail with what it still lists."""
    try:
        wait_for(lambda: not problems(), timeout, interval, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstill: " + "\n".join(problems())) from None
