"""Each market's reference data and lifecycle, and the CLOB market object built from them.

The live exchange publishes, per market, a minimum order size, a tick size and whether the market
is neg-risk, and it closes markets (with a winner, or before the winner is known). The simulator
keeps that truth here so the WS ``book`` frames, the REST book summaries and
``GET /markets/{condition_id}`` all say the same thing. The reference data is drawn from a hash
of the market id (itself drawn from the seed), so it is deterministic without touching the random
stream that books and activity draw from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from .book import canon

# What derived reference data is drawn from (real markets: mostly 5, some 1/10/15; ticks 0.01/0.001).
MIN_ORDER_SIZES = ("5", "5", "10", "15", "1")
TICK_SIZES = ("0.01", "0.001")


class MarketInfo(NamedTuple):
    """A token's reference data as the wire strings carry it (``sim.market_info(token)``)."""

    tick_size: str
    min_order_size: str
    neg_risk: bool


@dataclass
class MarketState:
    """One market's reference data and lifecycle. Ticks stay per book (tick_size_change is per token)."""

    market: str
    tokens: list[str]
    min_order_size: str
    neg_risk: bool
    question: str
    closed: bool = False
    winner: str | None = None  # a token id once the winner is known (only when closed)

    @property
    def has_book(self) -> bool:
        """A closed market has no order book: /book answers 404 and no book frames are sent."""
        return not self.closed

    def close(self, winner: str | None) -> None:
        if winner is not None and winner not in self.tokens:
            raise ValueError(f"token {winner} is not in market {self.market}")
        self.closed = True
        self.winner = winner


def _draw(market: str, what: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{what}:{market}".encode()).digest()[:8], "big")


def derived_tick(market: str) -> str:
    """The tick size a market created without an explicit one gets."""
    return TICK_SIZES[_draw(market, "tick") % len(TICK_SIZES)]


def new_state(market: str, tokens: list[str], question: str | None = None) -> MarketState:
    """A fresh open market with reference data derived from its id."""
    return MarketState(
        market=market,
        tokens=list(tokens),
        min_order_size=MIN_ORDER_SIZES[_draw(market, "min_order_size") % len(MIN_ORDER_SIZES)],
        neg_risk=_draw(market, "neg_risk") % 3 == 0,
        question=question or f"Will simulated market {market[2:10]} resolve Yes?",
    )


def _number(text: str) -> int | float:
    """A wire string as the JSON number the market endpoint uses (5, 0.01)."""
    d = Decimal(text)
    return int(d) if d == d.to_integral_value() else float(d)


def market_object(
    state: MarketState, outcomes: list[str], ticks: list[str], prices: list[str | None]
) -> dict[str, Any]:
    """``GET /markets/{condition_id}`` in the CLOB's shape (a subset of its fields).

    ``ticks`` and ``prices`` are per token, in token order (price: the token's last trade or mid,
    None when unknown). A closed market with a known winner prices the winner 1 and the rest 0.
    """
    open_ = not state.closed
    tokens = []
    for token, outcome, price in zip(state.tokens, outcomes, prices, strict=True):
        if state.closed and state.winner is not None:
            value: int | float = 1 if token == state.winner else 0
        else:
            value = _number(price) if price else 0.5
        winner = token == state.winner
        tokens.append({"token_id": token, "outcome": outcome, "price": value, "winner": winner})
    return {
        "enable_order_book": state.has_book,
        "active": open_,
        "closed": state.closed,
        "archived": False,
        "accepting_orders": open_,
        "minimum_order_size": _number(state.min_order_size),
        "minimum_tick_size": _number(canon(ticks[0])),
        "condition_id": state.market,
        "question": state.question,
        "market_slug": f"sim-market-{state.market[2:10]}",
        "neg_risk": state.neg_risk,
        "tokens": tokens,
    }
