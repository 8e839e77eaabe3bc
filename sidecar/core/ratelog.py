"""Log a recurring problem once, then count repeats instead of flooding journald at 3 a.m.

Each line carries structured fields for JSON logs (sidecar.logs): ``count`` (occurrences the
line stands for: itself plus the repeats suppressed since the last line of its key) and, when the
caller names them, ``conn``, ``token`` and ``reason``.
"""

from __future__ import annotations

import logging
from typing import Any

MAX_KEYS = 10_000


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def _allow(self, key: str, now: float) -> int | None:
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        if len(self._last) >= MAX_KEYS:  # bounded memory under hostile input
            self._last.clear()
            self._suppressed.clear()
        self._last[key] = now
        return self._suppressed.pop(key, 0)

    def log(
        self,
        level: int,
        key: str,
        now: float,
        msg: str,
        *args: Any,
        conn: int | None = None,
        token: str | None = None,
        reason: str | None = None,
        **kwargs: Any,
    ) -> bool:
        suppressed = self._allow(key, now)
        if suppressed is None:
            return False
        if suppressed:
            msg = f"{msg} (+{suppressed} similar in the last {self.interval_s:.0f}s)"
        extra = dict(kwargs.pop("extra", None) or {})
        for name, value in (("conn", conn), ("token", token), ("reason", reason)):
            if value is not None:
                extra[name] = value
        extra["count"] = suppressed + 1
        self.logger.log(level, msg, *args, extra=extra, **kwargs)
        return True

    def info(self, key: str, now: float, msg: str, *args: Any, **kwargs: Any) -> bool:
        return self.log(logging.INFO, key, now, msg, *args, **kwargs)

    def warning(self, key: str, now: float, msg: str, *args: Any, **kwargs: Any) -> bool:
        return self.log(logging.WARNING, key, now, msg, *args, **kwargs)

    def error(self, key: str, now: float, msg: str, *args: Any, **kwargs: Any) -> bool:
        return self.log(logging.ERROR, key, now, msg, *args, **kwargs)
