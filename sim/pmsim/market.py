"""The simulator's truth: every market and token book, how changes move them, and the messages
that report them.

Nothing here sends anything: each operation updates the books and returns the wire messages
(built by :mod:`pmsim.messages`) for the fan-out to deliver. Prices and sizes go out through
:func:`pmsim.book.canon`, so frames and :meth:`Markets.book` agree by string equality.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from . import messages
from .book import BUY, SELL, Book, Num, canon, check_price, norm_side, parse_levels, random_levels, to_dec
from .messages import EMPTY_ASK, EMPTY_BID, Event
from .state import MarketInfo, MarketState, derived_tick, market_object, new_state

Change = tuple[str, str, Num, Num]  # (token, side, price, new total size)
Prices = tuple[Decimal | None, Decimal | None]  # (best bid, best ask)

# price_change(corrupt=...): the unreadable value each field is sent with.
CORRUPTIONS = {"price": "not-a-price", "size": "-3", "side": "HOLD"}


def now_ms() -> str:
    """Wall-clock milliseconds as the wire writes timestamps."""
    return str(time.time_ns() // 1_000_000)


def prices(book: Book) -> Prices:
    return book.best_bid(), book.best_ask()


@dataclass(frozen=True)
class Crossing:
    """A crossing trade as the live exchange reports it: one price_change per touched level (all
    carrying the final top), then last_trade_price."""

    market: str
    entries: list[Event]  # in send order: the resting remainder first, then each consumed level
    timestamp: str
    trade: Event
    moved: bool  # the top price changed


class Markets:
    """Books by token, tokens by market, and the random source every simulated choice draws from."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.books: dict[str, Book] = {}
        self.markets: dict[str, list[str]] = {}
        self.states: dict[str, MarketState] = {}  # market id -> reference data and lifecycle
        self.version = 0  # bumped when tokens are added (random activity re-reads its token list)
        self._seq = itertools.count(1)

    # ---- markets

    def _new_token_id(self) -> str:
        digits = self.rng.randint(70, 77)
        while True:
            tid = str(self.rng.randint(10 ** (digits - 1), 10**digits - 1))
            if tid not in self.books:
                return tid

    def add_market(
        self, token_ids: list[str] | None, tick_size: Num | None, market_id: str | None, seed_book: bool
    ) -> str:
        """Create a market (default: two fresh 70-77 digit token ids); returns its id.

        tick_size=None draws the tick from the market id (0.01 or 0.001)."""
        if tick_size is not None:
            check_price(to_dec(tick_size))
        if token_ids is None:
            token_ids = [self._new_token_id(), self._new_token_id()]
        if not token_ids:
            raise ValueError("a market needs at least one token")
        for tid in token_ids:
            if not isinstance(tid, str) or not tid:
                raise ValueError(f"token ids are non-empty strings, got {tid!r}")
            if tid in self.books:
                raise ValueError(f"token {tid} already exists (market {self.books[tid].market})")
        if len(set(token_ids)) != len(token_ids):
            raise ValueError("duplicate token ids")
        if market_id is None:
            market_id = self._new_market_id()
            while market_id in self.markets:
                market_id = self._new_market_id()
        elif market_id in self.markets:
            raise ValueError(f"market {market_id} already exists")
        tick = to_dec(tick_size if tick_size is not None else derived_tick(market_id))
        self.markets[market_id] = list(token_ids)
        self.states[market_id] = new_state(market_id, token_ids)
        for tid in token_ids:
            book = Book(asset_id=tid, market=market_id, tick=tick)
            if seed_book:
                bids, asks = random_levels(self.rng, tick)
                book.replace(bids, asks)
                bb = book.best_bid()
                book.last_trade_price = canon(bb) if bb is not None else ""
            self.books[tid] = book
        self.version += 1
        return market_id

    def _new_market_id(self) -> str:
        return "0x" + format(self.rng.getrandbits(256), "064x")

    def book(self, token: str) -> Book:
        try:
            return self.books[token]
        except KeyError:
            raise KeyError(f"unknown token {token}") from None

    # ---- reference data and lifecycle

    def state(self, market_id: str) -> MarketState:
        try:
            return self.states[market_id]
        except KeyError:
            raise KeyError(f"unknown market {market_id}") from None

    def info(self, token: str) -> MarketInfo:
        book = self.book(token)
        state = self.states[book.market]
        return MarketInfo(canon(book.tick), state.min_order_size, state.neg_risk)

    def has_book(self, token: str) -> bool:
        """Known, and its market still has an order book (not closed)."""
        book = self.books.get(token)
        return book is not None and self.states[book.market].has_book

    def close(self, market_id: str, winner: str | None) -> None:
        """Close the market in the truth (with its winner if known): its books stop."""
        self.state(market_id).close(winner)
        self.version += 1  # random activity re-reads its token list and leaves these out

    def market_json(self, market_id: str) -> Event | None:
        """The CLOB market object of ``GET /markets/{condition_id}``, or None for an unknown market."""
        state = self.states.get(market_id)
        if state is None:
            return None
        books = [self.books[t] for t in state.tokens]
        ticks = [canon(b.tick) for b in books]
        return market_object(state, messages.outcomes(len(books)), ticks, [b.last_trade_price for b in books])

    # ---- messages of the truth

    def _hash(self, *parts: str) -> str:
        return hashlib.sha1(":".join((*parts, str(next(self._seq)))).encode()).hexdigest()

    def _event_id(self) -> str:
        return str(self.rng.randint(100_000, 999_999))

    def _tx_hash(self) -> str:
        return "0x" + format(self.rng.getrandbits(256), "064x")

    def book_msg(self, token: str, naming: messages.BookNaming = "bids_asks") -> Event:
        """A ``book`` snapshot of the truth, hashed like the live one."""
        book = self.book(token)
        bids, asks = book.wire_levels()
        msg = messages.book(
            book.asset_id,
            book.market,
            bids,
            asks,
            now_ms(),
            tick_size=canon(book.tick),
            last_trade_price=book.last_trade_price,
            min_order_size=self.states[book.market].min_order_size,
            neg_risk=self.states[book.market].neg_risk,
            naming=naming,
        )
        return messages.with_digest(msg)

    def summary(self, token: str) -> Event | None:
        """The REST book summary of token, or None for an unknown token or a closed market."""
        if not self.has_book(token):
            return None
        book = self.books[token]
        state = self.states[book.market]
        bids, asks = book.wire_levels()
        return messages.book_summary(
            book.asset_id,
            book.market,
            bids,
            asks,
            now_ms(),
            tick_size=canon(book.tick),
            last_trade_price=book.last_trade_price,
            min_order_size=state.min_order_size,
            neg_risk=state.neg_risk,
        )

    def bba_msg(self, token: str) -> Event:
        book = self.book(token)
        top = book.top()
        bid = top.bid or EMPTY_BID
        ask = top.ask or EMPTY_ASK
        spread = canon(to_dec(ask) - to_dec(bid))
        return messages.best_bid_ask(book.asset_id, book.market, bid, ask, spread, now_ms())

    # ---- changes

    def set_book(self, token: str, bids: list[tuple[Num, Num]], asks: list[tuple[Num, Num]]) -> bool:
        """Replace the book; True if a top price moved."""
        book = self.book(token)
        new_bids, new_asks = parse_levels(bids), parse_levels(asks)
        before = prices(book)
        book.replace(new_bids, new_asks)
        return prices(book) != before

    def apply_changes(self, changes: Iterable[Change]) -> tuple[dict[str, list[Event]], list[str]]:
        """Apply level updates in order; return price_change entries per market and moved tokens."""
        by_market: dict[str, list[Event]] = {}
        moved: list[str] = []
        parsed = []
        for token, side, price, size in changes:  # validate everything before touching the truth
            book = self.book(token)
            p, s = to_dec(price), to_dec(size)
            check_price(p)
            if s < 0:
                raise ValueError(f"negative size {size!r}")
            parsed.append((book, norm_side(side), p, s))
        ts = now_ms()
        for book, side, p, s in parsed:
            before = prices(book)
            book.set_level(side, p, s)
            top = book.top()
            entry = messages.price_change_entry(
                book.asset_id,
                canon(p),
                canon(s),
                side,
                self._hash(book.asset_id, ts),
                top.bid or EMPTY_BID,
                top.ask or EMPTY_ASK,
            )
            by_market.setdefault(book.market, []).append(entry)
            if prices(book) != before and book.asset_id not in moved:
                moved.append(book.asset_id)
        return by_market, moved

    def crossing(self, token: str, side: str, price: Num, size: Num) -> Crossing:
        """Fill an aggressive ``side`` order up to limit ``price``; the rest rests at the limit."""
        book = self.book(token)
        taker = norm_side(side)
        limit, want = to_dec(price), to_dec(size)
        check_price(limit)
        if want <= 0:
            raise ValueError(f"size must be positive, got {size!r}")
        maker = SELL if taker == BUY else BUY
        levels = book.side(maker)
        crossing = sorted(p for p in levels if (p <= limit if taker == BUY else p >= limit))
        if taker == SELL:
            crossing.reverse()  # best (highest) bid first
        if not crossing:
            raise ValueError(f"a {taker} at {canon(limit)} does not cross the book of {token}")
        fills: list[tuple[Decimal, Decimal]] = []  # (level price, size taken)
        left = want
        for p in crossing:
            if left <= 0:
                break
            take = min(left, levels[p])
            fills.append((p, take))
            left -= take
        steps: list[tuple[str, Decimal, Decimal]] = []  # (side, price, new total size), in send order
        if left > 0:  # the remainder rests at the limit: locally crossed until the removals arrive
            steps.append((taker, limit, book.side(taker).get(limit, Decimal(0)) + left))
        steps += [(maker, p, levels[p] - take) for p, take in fills]
        before = prices(book)
        for step_side, p, new_size in steps:
            book.set_level(step_side, p, new_size)
        top = book.top()  # final: what every message's best_bid/best_ask already says
        book.last_trade_price = canon(fills[-1][0])
        ts = now_ms()
        entries = [
            messages.price_change_entry(
                token,
                canon(p),
                canon(new_size),
                step_side,
                self._hash(token, ts),
                top.bid or EMPTY_BID,
                top.ask or EMPTY_ASK,
            )
            for step_side, p, new_size in steps
        ]
        trade = messages.last_trade_price(
            token,
            book.market,
            canon(fills[-1][0]),
            canon(want - left),
            taker,
            ts,
            transaction_hash=self._tx_hash(),
        )
        return Crossing(book.market, entries, ts, trade, prices(book) != before)

    def legacy_change(self, token: str, changes: list[tuple[str, Num, Num]]) -> tuple[Event, bool]:
        """The pre-2025-09 per-asset price_change for (side, price, size) changes; True if moved."""
        book = self.book(token)
        by_market, moved = self.apply_changes([(token, side, price, size) for side, price, size in changes])
        ts = now_ms()
        entries = by_market.get(book.market, [])
        msg = messages.legacy_price_change(
            token,
            book.market,
            [(e["price"], e["side"], e["size"]) for e in entries],
            ts,
            self._hash(token, ts),
        )
        return msg, bool(moved)

    def tick_change(self, token: str, new_tick: Num) -> Event:
        book = self.book(token)
        tick = to_dec(new_tick)
        check_price(tick)
        old = canon(book.tick)
        book.tick = tick
        return messages.tick_size_change(token, book.market, old, canon(tick), now_ms())

    def trade(self, token: str, price: Num, size: Num, side: str) -> Event:
        """A last_trade_price; the book itself is left as it is."""
        book = self.book(token)
        p = to_dec(price)
        check_price(p)
        book.last_trade_price = canon(p)
        return messages.last_trade_price(
            token,
            book.market,
            canon(p),
            canon(size),
            norm_side(side),
            now_ms(),
            transaction_hash=self._tx_hash(),
        )

    def check_winner(self, market_id: str, winning_token: str) -> None:
        if winning_token not in self.markets[market_id]:
            raise ValueError(f"token {winning_token} is not in market {market_id}")

    def resolution(self, market_id: str, winning_token: str) -> Event:
        self.check_winner(market_id, winning_token)
        tokens = self.markets[market_id]
        return messages.market_resolved(self._event_id(), market_id, tokens, winning_token, now_ms())

    def announcement(self, market_id: str, question: str | None) -> Event:
        """The new_market broadcast of an existing market (its question is kept for /markets)."""
        state = self.state(market_id)
        if question:
            state.question = question
        question = state.question
        return messages.new_market(self._event_id(), market_id, self.markets[market_id], question, now_ms())


def check_corrupt(changes: list[Change], corrupt: dict[str, str]) -> None:
    """A corrupt request names a known field and a token that has a change to corrupt."""
    for token, field_name in corrupt.items():
        if field_name not in CORRUPTIONS:
            raise ValueError(f"corrupt field must be one of {sorted(CORRUPTIONS)}, got {field_name!r}")
        if token not in {c[0] for c in changes}:
            raise ValueError(f"corrupt token {token} has no change to corrupt")


def corrupt_entries(by_market: dict[str, list[Event]], corrupt: dict[str, str]) -> None:
    """Replace the named field of each corrupt token's entries with an unreadable value."""
    for entries in by_market.values():
        for entry in entries:
            bad_field = corrupt.get(entry["asset_id"])
            if bad_field is not None:
                entry[bad_field] = CORRUPTIONS[bad_field]
