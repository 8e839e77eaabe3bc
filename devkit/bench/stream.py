"""The bench's price_change stream, generated from a model of the simulator's books (the
frames built by ``pmsim.messages``, as the simulator builds its own).

The model starts from ``sim.book()`` and applies every entry it generates first, so each entry's
best_bid/best_ask is the truth the simulator will hold once the same changes are applied to it
(``apply_silently``). Every new size is unique, so a top of book seen in Redis names the entry
that made it.
"""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pmsim import canon, messages

TICK = Decimal("0.01")
Top = tuple[str, str, str, str]  # bid, bid_size, ask, ask_size
Change = tuple[str, str, str, str]  # token, side, price, size: what apply_silently takes
Entry = messages.Event  # one price_changes entry, as on the wire


def price_change_frame(market: str, entries: list[Entry], ts: str) -> bytes:
    """One encoded price_change frame, as the exchange sends it."""
    return messages.encode(messages.price_change(market, entries, ts))


def now_ms() -> str:
    return str(int(time.time() * 1000))


@dataclass
class Stream:
    frames: list[Any] = field(default_factory=list)  # encoded bytes, or (market, entries) to encode later
    changes: list[list[Change]] = field(default_factory=list)  # per frame
    tops: list[list[tuple[str, Top]]] = field(default_factory=list)  # per frame: top moves
    events: int = 0
    top_moves: int = 0


class BookModel:
    """The bench's own copy of every book (tick 0.01 grid, keyed by tick index), seeded from
    sim.book(); every generated entry is applied here first so best_bid/best_ask are the truth."""

    def __init__(self, sim: Any, markets: list[tuple[str, list[str]]], seed: int) -> None:
        self.rng = random.Random(seed)
        self.markets = markets
        self.prices = [""] + [canon(TICK * i) for i in range(1, 100)]
        idx_of = {p: i for i, p in enumerate(self.prices) if i}
        self.bids: dict[str, dict[int, str]] = {}
        self.asks: dict[str, dict[int, str]] = {}
        self.bb: dict[str, int] = {}
        self.ba: dict[str, int] = {}
        for _, tokens in markets:
            for tok in tokens:
                bids, asks = sim.book(tok)
                self.bids[tok] = {idx_of[p]: s for p, s in bids}
                self.asks[tok] = {idx_of[p]: s for p, s in asks}
                self.bb[tok] = max(self.bids[tok])
                self.ba[tok] = min(self.asks[tok])
        self.sizes = itertools.count(1_000_001)  # every new size is unique: tops are recognisable
        self.hashes = itertools.count(1)

    def top(self, tok: str) -> Top:
        bb, ba = self.bb[tok], self.ba[tok]
        return self.prices[bb], self.bids[tok][bb], self.prices[ba], self.asks[tok][ba]

    def entry(self, tok: str, force_top: bool = False) -> tuple[Entry, Change, bool]:
        """One level change: ~40% top size, ~15% new best inside the spread, ~10% best level
        removed, ~35% below the top (add / resize / remove). Books stay uncrossed, 4..40 levels."""
        rng = self.rng
        r = 0.0 if force_top else rng.random()
        buy = rng.random() < 0.5
        levels = self.bids[tok] if buy else self.asks[tok]
        best = self.bb[tok] if buy else self.ba[tok]
        other = self.ba[tok] if buy else self.bb[tok]
        moved = True
        size = str(next(self.sizes))
        if r < 0.40:
            idx = best
        elif r < 0.55:
            lo, hi = (best + 1, other - 1) if buy else (other + 1, best - 1)
            idx = rng.randint(lo, hi) if lo <= hi else best
        elif r < 0.65 and len(levels) >= 4:
            idx, size = best, "0"
        else:
            moved = False
            n = len(levels)
            if n < 8 or (n < 35 and rng.random() < 0.35):
                span = range(max(1, best - 20), best) if buy else range(best + 1, min(99, best + 20) + 1)
                free = [i for i in span if i not in levels]
                idx = rng.choice(free) if free else -1
            else:
                idx = -1
            if idx < 0:
                idx = rng.choice([i for i in levels if i != best])
                if n > 20 and rng.random() < 0.5:
                    size = "0"
        if size == "0":
            del levels[idx]
            if idx == best:
                if buy:
                    self.bb[tok] = max(levels)
                else:
                    self.ba[tok] = min(levels)
        else:
            levels[idx] = size
            if buy and idx > best:
                self.bb[tok] = idx
            elif not buy and idx < best:
                self.ba[tok] = idx
        side = "BUY" if buy else "SELL"
        price = self.prices[idx]
        best_bid, best_ask = self.prices[self.bb[tok]], self.prices[self.ba[tok]]
        digest = f"{next(self.hashes):040x}"
        e = messages.price_change_entry(tok, price, size, side, digest, best_bid, best_ask)
        return e, (tok, side, price, size), moved

    def stream(self, n_frames: int, encode: bool) -> Stream:
        out = Stream()
        rng = self.rng
        ts = now_ms()
        for k in range(n_frames):
            market, tokens = self.markets[rng.randrange(len(self.markets))]
            last = k == n_frames - 1  # the final frame moves both tops to never-seen sizes
            entries, changes, tops = [], [], []
            for tok in tokens:
                e, ch, moved = self.entry(tok, force_top=last)
                entries.append(e)
                changes.append(ch)
                if moved:
                    tops.append((tok, self.top(tok)))
            out.frames.append(price_change_frame(market, entries, ts) if encode else (market, entries))
            out.changes.append(changes)
            out.tops.append(tops)
            out.events += len(entries)
            out.top_moves += len(tops)
        return out
