"""What the legacy ``ws_cache.json`` says, decided from quotes: the bridge's pure core.

The maker bot's workers read ``data/ws_cache.json`` (docs/migration.md). This module turns the
sidecar's quotes into that file's entries and decides which tokens have an entry. It reads no
clock and touches no file or socket: the shell (``sidecar.bridge``) passes the desired set, the
quotes and the time in, so every rule here is unit-tested exactly.

Rules (issue 10, docs/migration.md):

- A token gets an entry once the bridge has seen it ``live`` with its sidecar alive (the scheduler
  starts a worker when the entry exists), keeps it while it is in ``P desired`` and loses it when
  it leaves.
- ``best_bid``, ``best_ask`` and ``price`` are ``0.0`` (the workers' "unknown", which sends them to
  their REST fallback) whenever the token is not ``live`` or its sidecar is not alive, and
  ``updated_at`` stays at the exchange's last confirmation: the bridge never moves it.
- ``resolved`` tokens carry ``market_closed: true`` and ``status: "resolved"``; no other entry has a
  ``status`` key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sidecar.client.quote import LIVE, RESOLVED, Quote

# An empty desired set right after the bridge starts or Redis comes back usually means "Redis came
# back without persistence", not "the scheduler wants nothing": hold the last set this long after
# such a moment, as the sidecar does after a reconnect (sidecar/desired.py). At any other time an
# emptied set is the scheduler's word (``set_wanted([])``) and applies at once.
EMPTY_DESIRED_GRACE_S = 60.0
# quote_status of a member whose hash is gone (Redis restarted empty, or the key expired).
MISSING = "missing"


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One token's entry in ``ws_cache.json``, before its ``age_s`` is computed at write time."""

    best_bid: float
    best_ask: float
    price: float
    ts: int | None
    updated_at: float | None  # epoch seconds of the exchange's last confirmation
    seq: int
    event_type: str
    quote_status: str
    bid_empty: bool
    ask_empty: bool
    sidecar_alive: bool
    tick_size: float | None

    def as_json(self, now_s: float) -> dict[str, Any]:
        """The entry as workers read it; ``age_s`` is the age of ``updated_at`` at ``now_s``."""
        out: dict[str, Any] = {
            "best_bid": self.best_bid,
            "best_ask": self.best_ask,
            "price": self.price,
            "ts": self.ts,
            "updated_at": self.updated_at,
            "seq": self.seq,
            "event_type": self.event_type,
        }
        if self.quote_status == RESOLVED:
            out["market_closed"] = True
            out["status"] = RESOLVED
        out["quote_status"] = self.quote_status
        out["age_s"] = None if self.updated_at is None else round(max(0.0, now_s - self.updated_at), 3)
        out["bid_empty"] = self.bid_empty
        out["ask_empty"] = self.ask_empty
        out["sidecar_alive"] = self.sidecar_alive
        out["tick_size"] = self.tick_size
        return out


def entry_for(quote: Quote | None, last: CacheEntry | None, reachable: bool = True) -> CacheEntry:
    """A member token's entry from its latest quote.

    ``quote`` is ``None`` when its hash is missing; ``reachable`` is False when Redis could not be
    read (then ``quote`` is the last one read, and nothing vouches for it: not alive). ``last`` is
    the entry written before, whose ``updated_at``/``ts`` are kept when the hash has none (a
    restarted sidecar's ``pending`` hash), so ``updated_at`` always says the last confirmation.
    """
    if quote is None:
        if last is None:
            raise ValueError("a token without a quote has no entry to keep")
        return replace(unvouched(last), quote_status=MISSING)
    alive = reachable and quote.alive
    usable = alive and quote.status == LIVE
    updated_at = quote.updated_at_ms / 1000.0 if quote.updated_at_ms is not None else None
    if updated_at is None and last is not None:
        updated_at = last.updated_at
    ts = quote.ts_ms if quote.ts_ms is not None else (last.ts if last is not None else None)
    bid, ask = finite(quote.bid), finite(quote.ask)
    if usable:
        price = finite(quote.last_trade_price)
        if price is None and bid is not None and ask is not None:
            price = (bid + ask) / 2.0
        bid, ask, price = bid or 0.0, ask or 0.0, price or 0.0
    else:
        bid = ask = price = 0.0
    return CacheEntry(
        best_bid=bid,
        best_ask=ask,
        price=price,
        ts=ts,
        updated_at=updated_at,
        seq=quote.seq,
        event_type=quote.source,
        quote_status=quote.status,
        bid_empty=quote.bid is None,
        ask_empty=quote.ask is None,
        sidecar_alive=alive,
        tick_size=finite(quote.tick_size),
    )


@dataclass
class BridgeState:
    """Which tokens have an entry, and each entry: the decisions behind one ``ws_cache.json``."""

    empty_grace_s: float = EMPTY_DESIRED_GRACE_S
    entries: dict[str, CacheEntry] = field(default_factory=dict)
    desired: frozenset[str] = frozenset()
    hold_empty_until: float | None = None  # on the clock the shell passes to effective_desired
    _quotes: dict[str, Quote] = field(default_factory=dict)

    def reconnected(self, now_s: float) -> None:
        """The shell says: the bridge just started, or Redis was just read again after a failed
        read. An empty desired set read in the next ``empty_grace_s`` is held, not applied."""
        self.hold_empty_until = now_s + self.empty_grace_s

    def effective_desired(self, read: Iterable[str] | None, now_s: float) -> frozenset[str]:
        """The desired set to use: the one read, except that ``None`` (read failed) keeps the
        last, and an empty set replacing a non-empty one within the grace after
        :meth:`reconnected` is held until that grace ends."""
        if read is None:
            return self.desired
        new = frozenset(read)
        if not new and self.desired and self.hold_empty_until is not None and now_s < self.hold_empty_until:
            return self.desired
        self.desired = new
        return new

    def seed(self, entries: Mapping[str, CacheEntry]) -> None:
        """Entries a previous run wrote (see :func:`entry_from_json`): they stay, as the last known
        desired set, until a read of Redis says otherwise, so a bridge restarted while Redis is
        down does not make every token vanish from the file."""
        self.entries.update(entries)
        self.desired = frozenset(self.entries)

    def apply(self, desired: frozenset[str], quotes: Mapping[str, Quote | None] | None) -> bool:
        """Update the entries of ``desired`` from ``quotes``; True when any entry changed.

        ``quotes`` is ``None`` when Redis could not be read: every entry then says not alive.
        """
        changed = False
        for token in [t for t in self.entries if t not in desired]:
            del self.entries[token]
            self._quotes.pop(token, None)
            changed = True
        for token in desired:
            last = self.entries.get(token)
            if quotes is None:
                if last is None:
                    continue
                known = self._quotes.get(token)
                entry = entry_for(known, last, reachable=False) if known else unvouched(last)
            else:
                quote = quotes.get(token)
                if last is None and not (quote is not None and quote.live):
                    continue
                if quote is not None:
                    self._quotes[token] = quote
                else:
                    self._quotes.pop(token, None)
                entry = entry_for(quote, last)
            if entry != last:
                self.entries[token] = entry
                changed = True
        return changed

    def document(self, now_s: float) -> bytes:
        """The whole file: ``updated_at`` (ISO-8601 UTC of this write) and ``tokens``."""
        doc = {
            "updated_at": iso_utc(now_s),
            "tokens": {t: e.as_json(now_s) for t, e in sorted(self.entries.items())},
        }
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def finite(value: float | None) -> float | None:
    """``None`` for a missing or non-finite number: the file must stay valid JSON (no NaN)."""
    return value if value is not None and math.isfinite(value) else None


def unvouched(entry: CacheEntry) -> CacheEntry:
    """The same entry with nothing vouching for it: prices 0.0, not alive, the rest kept."""
    return replace(entry, best_bid=0.0, best_ask=0.0, price=0.0, sidecar_alive=False)


def entry_from_json(obj: object) -> CacheEntry | None:
    """An entry of a file this bridge wrote before, with nothing vouching for it any more: prices
    0.0, not alive; ``updated_at``, ``ts``, ``seq`` and the status kept. ``None`` if malformed,
    including a number that is not finite (``Infinity``/``NaN`` parse as floats, and would make the
    next write fail: the file must stay valid JSON) or too large for a float."""
    if not isinstance(obj, dict):
        return None
    nums: dict[str, float | None] = {}
    for key in ("ts", "seq", "updated_at", "tick_size"):
        value = obj.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            nums[key] = None
            continue
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            return None
        if not math.isfinite(number):
            return None
        nums[key] = number
    ts, seq = nums["ts"], nums["seq"]
    return CacheEntry(
        best_bid=0.0,
        best_ask=0.0,
        price=0.0,
        ts=None if ts is None else int(ts),
        updated_at=nums["updated_at"],
        seq=0 if seq is None else int(seq),
        event_type=str(obj.get("event_type") or ""),
        quote_status=str(obj.get("quote_status") or MISSING),
        bid_empty=obj.get("bid_empty") is True,
        ask_empty=obj.get("ask_empty") is True,
        sidecar_alive=False,
        tick_size=nums["tick_size"],
    )


def iso_utc(now_s: float) -> str:
    """``2026-11-30T14:54:03.123456+00:00``, as the old aggregator wrote it (``isoformat``)."""
    return datetime.fromtimestamp(now_s, tz=UTC).isoformat()
