"""Random market activity: a random walk of the books at a set event rate, and periodic new markets.

:class:`RandomWalk` picks one plausible book change at a time (level adds, resizes, removals,
trades, sibling changes in the same market) that keeps every book uncrossed and on its tick grid.
:class:`Activity` runs it on the simulator's loop as Poisson arrivals over the active tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from .book import BUY, SELL, Book, random_size
from .market import Change
from .script import Script


class RandomWalk:
    """One random book change at a time, sent through the script like a scripted one."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.markets = script.markets
        self.rng = script.markets.rng

    def event(self, token: str) -> None:
        """One random book change that keeps bids strictly below asks."""
        book = self.markets.books[token]
        rng = self.rng
        r = rng.random()
        if r < 0.05 and self._trade(book):
            return
        changes: list[Change] = []
        side = rng.choice((BUY, SELL))
        levels = book.side(side)
        if r < 0.20 and len(levels) >= 4:
            best = max(levels) if side == BUY else min(levels)
            changes.append((token, side, best, 0))
        elif (r < 0.45 or len(levels) < 4) and len(levels) < 40:
            price = self._new_price(book, side)
            if price is not None:
                changes.append((token, side, price, random_size(rng)))
        if not changes:
            other = BUY if side == SELL else SELL
            change = self._resize(book, side) or self._resize(book, other)
            if change is None:
                return
            changes.append(change)
        if rng.random() < 0.1:
            siblings = [t for t in self.markets.markets[book.market] if t != token]
            if siblings:
                sibling = self.markets.books[rng.choice(siblings)]
                change = self._resize(sibling, rng.choice((BUY, SELL)))
                if change is not None:
                    changes.append(change)
        self.script.price_change(changes)

    def _resize(self, book: Book, side: str) -> Change | None:
        levels = book.side(side)
        if not levels:
            return None
        near = sorted(levels, reverse=side == BUY)[:5]
        price = near[min(int(self.rng.expovariate(0.8)), len(near) - 1)]
        return (book.asset_id, side, price, random_size(self.rng))

    def _new_price(self, book: Book, side: str) -> Decimal | None:
        tick = book.tick
        n = int(Decimal(1) / tick)
        bb, ba = book.best_bid(), book.best_ask()
        # Integer grid bounds that keep the new level strictly on its own side of the spread.
        max_bid = int((ba / tick).to_integral_value(ROUND_CEILING)) - 1 if ba is not None else n - 1
        min_ask = int((bb / tick).to_integral_value(ROUND_FLOOR)) + 1 if bb is not None else 1
        levels = book.side(side)
        for _ in range(6):
            if side == BUY:
                top = int((bb / tick).to_integral_value(ROUND_FLOOR)) if bb is not None else max_bid
                if self.rng.random() < 0.3 and top < max_bid:
                    idx = self.rng.randint(top + 1, max_bid)
                else:
                    idx = min(top, max_bid) - self.rng.randint(0, 8)
                ok = 1 <= idx <= max_bid
            else:
                top = int((ba / tick).to_integral_value(ROUND_CEILING)) if ba is not None else min_ask
                if self.rng.random() < 0.3 and top > min_ask:
                    idx = self.rng.randint(min_ask, top - 1)
                else:
                    idx = max(top, min_ask) + self.rng.randint(0, 8)
                ok = min_ask <= idx <= n - 1
            price = tick * idx
            if ok and price not in levels:
                return price
        return None

    def _trade(self, book: Book) -> bool:
        """Take liquidity at the best level (a price_change), then last_trade_price and a book."""
        taker = self.rng.choice((BUY, SELL))
        maker_side = SELL if taker == BUY else BUY
        levels = book.side(maker_side)
        if not levels:
            return False
        price = min(levels) if maker_side == SELL else max(levels)
        size = levels[price]
        if len(levels) >= 4 and self.rng.random() < 0.3:
            traded = size
        else:
            traded = max(Decimal(1), (size * Decimal(self.rng.randint(1, 50)) / 100).quantize(Decimal(1)))
            traded = min(traded, size)
        self.script.price_change([(book.asset_id, maker_side, price, size - traded)])
        self.script.trade(book.asset_id, price, traded, taker)
        return True


class Activity:
    """The random walk at a total rate (or per-token rates), plus the new-market broadcasts."""

    def __init__(self, script: Script, on_error: Callable[[str], None]) -> None:
        self.walk = RandomWalk(script)
        self.script = script
        self.markets = script.markets
        self.on_error = on_error  # a failed event is reported, and the market stays alive
        self.rate = 0.0
        self.tokens: list[str] | None = None  # None: every token, including ones created later
        self.token_rates: dict[str, float] = {}
        self.on = False
        self._dirty = True
        self._seen_version = -1
        self._task: asyncio.Task[None] | None = None
        self._bcast_task: asyncio.Task[None] | None = None

    # ---- controls (on the loop, or inline before the loop runs)

    def configure(self, rate: float, tokens: list[str] | None) -> None:
        self.rate = rate
        self.tokens = tokens
        self.on = True
        self._dirty = True

    def set_token_rate(self, token: str, rate: float) -> None:
        self.token_rates[token] = rate
        self._dirty = True

    def ensure_task(self) -> None:
        """Start the arrival loop on the running loop if it is not running yet."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def stop(self) -> None:
        self.on = False
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def start_broadcasts(self, interval_s: float) -> None:
        self.stop_broadcasts()

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                self.script.new_market(None, "0.01", None, True, None)

        self._bcast_task = asyncio.get_running_loop().create_task(loop())

    def stop_broadcasts(self) -> None:
        if self._bcast_task is not None:
            self._bcast_task.cancel()
            self._bcast_task = None

    # ---- the arrival loop

    def weights(self) -> tuple[list[str], list[float], float]:
        """Active tokens, their cumulative rates and the total rate."""
        books = self.markets.books
        tokens = self.tokens if self.tokens is not None else list(books)
        live = self.markets.has_book  # a closed market's books stop
        default = [t for t in tokens if live(t) and t not in self.token_rates]
        share = self.rate / len(default) if default else 0.0
        names: list[str] = []
        cum: list[float] = []
        total = 0.0
        for token in default:
            if share > 0:
                total += share
                names.append(token)
                cum.append(total)
        for token, rate in self.token_rates.items():
            if rate > 0 and live(token):
                total += rate
                names.append(token)
                cum.append(total)
        return names, cum, total

    def _changed(self) -> bool:
        """Rates or the token set changed since the weights were computed."""
        changed = self._dirty or self._seen_version != self.markets.version
        self._dirty = False
        self._seen_version = self.markets.version
        return changed

    async def _loop(self) -> None:
        """Poisson arrivals over all active tokens; bursts are emitted in one go if the loop lagged."""
        loop = asyncio.get_running_loop()
        rng = self.markets.rng
        names: list[str] = []
        cum: list[float] = []
        total = 0.0
        next_t = loop.time()
        while True:
            if self._changed():
                names, cum, total = self.weights()
                if total > 0:
                    next_t = loop.time() + rng.expovariate(total)
            if total <= 0:
                await asyncio.sleep(0.05)
                continue
            now = loop.time()
            if next_t > now:
                await asyncio.sleep(min(next_t - now, 0.05))
                continue
            emitted = 0
            while next_t <= now and emitted < 2000:
                token = rng.choices(names, cum_weights=cum)[0]
                try:
                    self.walk.event(token)
                except Exception as exc:  # keep the market alive; a bug here must not kill activity
                    self.on_error(f"simulator activity error on {token}: {exc!r}")
                next_t += rng.expovariate(total)
                emitted += 1
            if next_t <= now:
                next_t = now  # far behind: drop the backlog rather than catch up in one burst
            await asyncio.sleep(0)
