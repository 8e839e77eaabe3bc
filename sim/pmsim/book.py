"""Order-book truth of the simulator: canonical number strings and a price-level book.

Every price and size the simulator emits goes through :func:`canon`, so a client that copies
strings out of frames can compare them with the simulator's truth by plain string equality.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

Num = str | int | float | Decimal

BUY = "BUY"
SELL = "SELL"
_SIDES = {
    "BUY": BUY,
    "BID": BUY,
    "BIDS": BUY,
    "SELL": SELL,
    "ASK": SELL,
    "ASKS": SELL,
}

ZERO = Decimal(0)
ONE = Decimal(1)


def to_dec(x: Num) -> Decimal:
    """Parse a price or size; floats go through repr so 0.1 means 0.1, not its binary neighbour."""
    if isinstance(x, bool):
        raise TypeError("bool is not a number")
    try:
        if isinstance(x, Decimal):
            d = x
        elif isinstance(x, int):
            d = Decimal(x)
        elif isinstance(x, float):
            d = Decimal(repr(x))
        elif isinstance(x, str):
            d = Decimal(x.strip())
        else:
            raise TypeError(f"not a number: {x!r}")
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {x!r}") from exc
    if not d.is_finite():
        raise ValueError(f"not a finite number: {x!r}")
    return d


def canon(x: Num) -> str:
    """The one string for a number: no exponent, no trailing zeros ("0.5", "100", "12.5")."""
    d = to_dec(x)
    if d == 0:
        return "0"
    return format(d.normalize(), "f")


def norm_side(side: str) -> str:
    """Map BUY/SELL (and bid/ask spellings) to the wire's BUY (bids) or SELL (asks)."""
    try:
        return _SIDES[side.strip().upper()]
    except (KeyError, AttributeError) as exc:
        raise ValueError(f"side must be BUY or SELL, got {side!r}") from exc


@dataclass(frozen=True)
class Top:
    """True top of book as wire strings; "" marks an empty side."""

    bid: str
    bid_size: str
    ask: str
    ask_size: str


Levels = list[tuple[str, str]]


@dataclass
class Book:
    """One token's price levels. Prices are Decimal keys, so "0.50" and "0.5" are one level."""

    asset_id: str
    market: str
    tick: Decimal
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    last_trade_price: str = ""

    def side(self, side: str) -> dict[Decimal, Decimal]:
        """The level dict for a wire side (BUY = bids)."""
        return self.bids if side == BUY else self.asks

    def best_bid(self) -> Decimal | None:
        return max(self.bids) if self.bids else None

    def best_ask(self) -> Decimal | None:
        return min(self.asks) if self.asks else None

    def set_level(self, side: str, price: Decimal, size: Decimal) -> None:
        """Apply a level update the way price_change means it: size is the new total, 0 removes."""
        if size < 0:
            raise ValueError(f"negative size {size}")
        levels = self.side(side)
        if size == 0:
            levels.pop(price, None)
        else:
            levels[price] = size

    def replace(self, bids: dict[Decimal, Decimal], asks: dict[Decimal, Decimal]) -> None:
        """Swap in a whole new book, as a snapshot does."""
        self.bids = dict(bids)
        self.asks = dict(asks)

    def top(self) -> Top:
        bb = self.best_bid()
        ba = self.best_ask()
        return Top(
            canon(bb) if bb is not None else "",
            canon(self.bids[bb]) if bb is not None else "",
            canon(ba) if ba is not None else "",
            canon(self.asks[ba]) if ba is not None else "",
        )

    def levels(self) -> tuple[Levels, Levels]:
        """Bids and asks, best first on both sides (the natural order for tests)."""
        bids = [(canon(p), canon(self.bids[p])) for p in sorted(self.bids, reverse=True)]
        asks = [(canon(p), canon(self.asks[p])) for p in sorted(self.asks)]
        return bids, asks

    def wire_levels(self) -> tuple[Levels, Levels]:
        """Bids ascending and asks descending: best level LAST on both sides, as live frames do."""
        bids = [(canon(p), canon(self.bids[p])) for p in sorted(self.bids)]
        asks = [(canon(p), canon(self.asks[p])) for p in sorted(self.asks, reverse=True)]
        return bids, asks


def parse_levels(levels: list[tuple[Num, Num]]) -> dict[Decimal, Decimal]:
    """Validate scripted levels: prices in (0, 1), sizes > 0 (a book never holds an empty level)."""
    out: dict[Decimal, Decimal] = {}
    for price, size in levels:
        p = to_dec(price)
        s = to_dec(size)
        check_price(p)
        if s <= 0:
            raise ValueError(f"book level {canon(p)} needs a positive size, got {size!r}")
        out[p] = s
    return out


def check_price(p: Decimal) -> None:
    if not ZERO < p < ONE:
        raise ValueError(f"price must be in (0, 1), got {canon(p)}")


def random_size(rng: random.Random) -> Decimal:
    """A plausible resting size: mostly round numbers, sometimes cents, occasionally whales."""
    r = rng.random()
    if r < 0.5:
        return Decimal(rng.choice((5, 10, 20, 25, 50, 100, 150, 200, 250, 500, 1000, 2000, 5000)))
    if r < 0.9:
        return Decimal(rng.randint(100, 2_500_000)) / 100
    return Decimal(rng.randint(10_000, 10_000_000))


def random_levels(rng: random.Random, tick: Decimal) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
    """10-30 levels a side on the tick grid inside (0, 1), dense near the top, bids below asks."""
    n = int(ONE / tick)  # grid points are tick * 1 .. tick * (n - 1)
    if n < 3:
        raise ValueError(f"tick {tick} leaves no room for a book")
    lo = max(1, int(n * 0.15))
    hi = max(lo, int(n * 0.85) - 1)
    bb = rng.randint(lo, min(hi, n - 2))
    ba = min(bb + rng.randint(1, 3), n - 1)
    nb = rng.randint(10, 30)
    na = rng.randint(10, 30)
    bid_pool = range(max(1, bb - 3 * nb), bb)
    ask_pool = range(ba + 1, min(n, ba + 1 + 3 * na))
    bid_idx = [bb, *rng.sample(bid_pool, min(nb - 1, len(bid_pool)))]
    ask_idx = [ba, *rng.sample(ask_pool, min(na - 1, len(ask_pool)))]
    bids = {tick * i: random_size(rng) for i in bid_idx}
    asks = {tick * i: random_size(rng) for i in ask_idx}
    return bids, asks
