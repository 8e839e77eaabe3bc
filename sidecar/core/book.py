"""Per-token L2 order book, kept just well enough to know its top exactly.

Levels are keyed by the price's numeric value (so "0.5" and "0.50" are one level) and keep the
exchange's own strings, which are what we publish: no float ever reaches Redis. The best price on
each side is cached and recomputed only when the best level itself goes away, so a delta below
the top costs a dict write.
"""

from __future__ import annotations

from sidecar.core.protocol import BUY, Levels

Top = tuple[str, str, str, str]  # bid, bid_size, ask, ask_size ("" for an empty side)

EMPTY_TOP: Top = ("", "", "", "")


class Book:
    __slots__ = ("ask_key", "asks", "bid_key", "bids")

    def __init__(self) -> None:
        self.bids: Levels = {}
        self.asks: Levels = {}
        self.bid_key: float | None = None
        self.ask_key: float | None = None

    def replace(self, bids: Levels, asks: Levels) -> None:
        """A snapshot replaces the whole book; merging would keep levels the server dropped."""
        self.bids = bids
        self.asks = asks
        self.bid_key = max(bids) if bids else None
        self.ask_key = min(asks) if asks else None

    def set_level(self, side: int, key: float, price: str, size: str, zero: bool) -> bool:
        """Set the new total size at a level (``zero`` removes it). Returns True if the top moved."""
        if side == BUY:
            levels, best = self.bids, self.bid_key
            if zero:
                if levels.pop(key, None) is None:
                    return False
                if key != best:
                    return False
                self.bid_key = max(levels) if levels else None
                return True
            old = levels.get(key)
            levels[key] = (price, size)
            if best is None or key > best:
                self.bid_key = key
                return True
            return key == best and old != (price, size)
        levels, best = self.asks, self.ask_key
        if zero:
            if levels.pop(key, None) is None:
                return False
            if key != best:
                return False
            self.ask_key = min(levels) if levels else None
            return True
        old = levels.get(key)
        levels[key] = (price, size)
        if best is None or key < best:
            self.ask_key = key
            return True
        return key == best and old != (price, size)

    def top(self) -> Top:
        bid_key, ask_key = self.bid_key, self.ask_key
        if bid_key is None:
            bid, bid_size = "", ""
        else:
            bid, bid_size = self.bids[bid_key]
        if ask_key is None:
            ask, ask_size = "", ""
        else:
            ask, ask_size = self.asks[ask_key]
        return bid, bid_size, ask, ask_size

    @property
    def crossed(self) -> bool:
        """Live books are sometimes briefly crossed; we flag it and carry on."""
        return self.bid_key is not None and self.ask_key is not None and self.bid_key >= self.ask_key

    def depth(self) -> tuple[int, int]:
        return len(self.bids), len(self.asks)
