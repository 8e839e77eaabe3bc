"""Scripted market events: change the truth, then send what the live exchange would send about it.

Each method runs on the simulator's loop (the :class:`~pmsim.server.Simulator` controls marshal
onto it); the two that space their messages in time are coroutines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from .book import Num
from .fanout import Fanout
from .market import Change, Markets, check_corrupt, corrupt_entries, now_ms
from .messages import BookNaming


class Script:
    """The truth (:class:`Markets`) and the delivery (:class:`Fanout`) moved together."""

    def __init__(self, markets: Markets, fanout: Fanout, custom_features: bool) -> None:
        self.markets = markets
        self.fanout = fanout
        self.custom_features = custom_features  # server-wide: False never sends custom-feature events

    def send_book(self, token: str, naming: BookNaming = "bids_asks") -> None:
        self.fanout.send_asset_event(token, self.markets.book_msg(token, naming))

    def auto_bba(self, tokens: Iterable[str]) -> None:
        """Custom-feature connections get best_bid_ask whenever a top price moved."""
        if not self.custom_features:
            return
        for token in tokens:
            self.fanout.send_asset_event(token, self.markets.bba_msg(token), custom_only=True)

    def set_book(
        self, token: str, bids: list[tuple[Num, Num]], asks: list[tuple[Num, Num]], naming: str
    ) -> None:
        if naming not in ("bids_asks", "buys_sells"):
            raise ValueError(f"naming must be 'bids_asks' or 'buys_sells', got {naming!r}")
        moved = self.markets.set_book(token, bids, asks)
        self.send_book(token, "buys_sells" if naming == "buys_sells" else "bids_asks")
        if moved:
            self.auto_bba([token])

    def price_change(self, changes: list[Change], corrupt: dict[str, str] | None = None) -> None:
        corrupt = corrupt or {}
        check_corrupt(changes, corrupt)
        by_market, moved = self.markets.apply_changes(changes)
        corrupt_entries(by_market, corrupt)
        ts = now_ms()
        for market, entries in by_market.items():
            self.fanout.send_price_entries(market, entries, ts)
        self.auto_bba(moved)

    async def crossing_trade(self, token: str, side: str, price: Num, size: Num, gap_s: float) -> None:
        crossing = self.markets.crossing(token, side, price, size)
        for i, entry in enumerate(crossing.entries):
            if i and gap_s > 0:
                await asyncio.sleep(gap_s)
            self.fanout.send_price_entries(crossing.market, [entry], crossing.timestamp)
        self.fanout.send_asset_event(token, crossing.trade)
        if crossing.moved:
            self.auto_bba([token])

    def price_change_legacy(self, token: str, changes: list[tuple[str, Num, Num]]) -> None:
        msg, moved = self.markets.legacy_change(token, changes)
        self.fanout.send_asset_event(token, msg)
        if moved:
            self.auto_bba([token])

    def best_bid_ask(self, token: str) -> None:
        if self.custom_features:
            self.fanout.send_asset_event(token, self.markets.bba_msg(token), custom_only=True)

    async def tick_size_change(self, token: str, new_tick: Num, book_delay_s: float) -> None:
        self.fanout.send_asset_event(token, self.markets.tick_change(token, new_tick))
        if book_delay_s > 0:
            await asyncio.sleep(book_delay_s)
        self.send_book(token)

    def trade(self, token: str, price: Num, size: Num, side: str) -> None:
        self.fanout.send_asset_event(token, self.markets.trade(token, price, size, side))
        self.send_book(token)

    def resolve(self, market_id: str, winning_token: str) -> None:
        self.markets.check_winner(market_id, winning_token)
        if not self.custom_features:
            return
        msg = self.markets.resolution(market_id, winning_token)
        self.fanout.send_to_market_custom(self.markets.markets[market_id], msg)

    def resolve_market(self, market_id: str, winner: str | None, announce: bool) -> None:
        """Close the market in the truth; with announce and a known winner, also send market_resolved."""
        state = self.markets.state(market_id)
        if winner is not None and winner not in state.tokens:
            raise ValueError(f"token {winner} is not in market {market_id}")
        self.markets.close(market_id, winner)
        if announce and winner is not None:
            self.resolve(market_id, winner)

    def new_market(
        self,
        token_ids: list[str] | None,
        tick_size: Num | None,
        market_id: str | None,
        seed_book: bool,
        question: str | None,
    ) -> str:
        market = self.markets.add_market(token_ids, tick_size, market_id, seed_book)
        if self.custom_features:
            self.fanout.broadcast(self.markets.announcement(market, question))
        return market
