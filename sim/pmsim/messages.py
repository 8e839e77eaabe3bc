"""The exchange's wire messages, built in one place.

The simulator's server, the engine's unit-test harness and the benchmark all build market-channel
messages here, so a field that changes on the live exchange changes once. Every function is pure:
it takes wire strings (prices, sizes, timestamps) and returns the dict the exchange would send
(or the client frame the exchange expects); :func:`encode` turns events into one frame.

Key order follows the live exchange's frames. Optional fields are left out when ``None``, as the
live exchange leaves them out (a ``book`` after a trade may carry no ``tick_size``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import orjson

Level = tuple[str, str]  # (price, size) as wire strings
Event = dict[str, Any]

# The price_change / best_bid_ask markers for an empty side: never real prices.
EMPTY_BID = "0"
EMPTY_ASK = "1"

# Text control frames the server answers with (not JSON).
PONG = "PONG"
INVALID_OPERATION = "INVALID OPERATION"
NO_NEW_ASSETS = "NO NEW ASSETS"

BookNaming = Literal["bids_asks", "buys_sells"]
_SIDE_NAMES: dict[str, tuple[str, str]] = {"bids_asks": ("bids", "asks"), "buys_sells": ("buys", "sells")}


def levels(pairs: Iterable[Level]) -> list[dict[str, str]]:
    """Price levels as the wire lists them: ``[{price, size}]`` in the order given."""
    return [{"price": p, "size": s} for p, s in pairs]


def digest(msg: Event) -> str:
    """A sha1 of the message itself, like the live ``hash`` (clients may use it as a marker only)."""
    return hashlib.sha1(orjson.dumps(msg)).hexdigest()


def with_digest(msg: Event) -> Event:
    """Fill ``msg["hash"]`` with the digest of ``msg`` as it stands with an empty hash."""
    msg["hash"] = ""
    msg["hash"] = digest(msg)
    return msg


def book(
    asset_id: str,
    market: str,
    bids: Iterable[Level],
    asks: Iterable[Level],
    timestamp: str | int,
    *,
    hash: str = "",
    tick_size: str | None = None,
    last_trade_price: str | None = None,
    min_order_size: str | None = None,
    neg_risk: bool | None = None,
    naming: BookNaming = "bids_asks",
) -> Event:
    """A ``book`` snapshot. Pass levels best LAST on both sides to look like live frames.

    naming="buys_sells" uses the older docs' side names. The reference data (``min_order_size``,
    ``tick_size``, ``neg_risk``) is in the order of the REST summary, each left out when None.
    """
    bid_key, ask_key = _SIDE_NAMES[naming]
    msg: Event = {
        "market": market,
        "asset_id": asset_id,
        "timestamp": str(timestamp),
        "hash": hash,
        bid_key: levels(bids),
        ask_key: levels(asks),
    }
    if min_order_size is not None:
        msg["min_order_size"] = min_order_size
    if tick_size is not None:
        msg["tick_size"] = tick_size
    if neg_risk is not None:
        msg["neg_risk"] = neg_risk
    if last_trade_price is not None:
        msg["last_trade_price"] = last_trade_price
    msg["event_type"] = "book"
    return msg


def book_summary(
    asset_id: str,
    market: str,
    bids: Iterable[Level],
    asks: Iterable[Level],
    timestamp: str | int,
    *,
    tick_size: str,
    last_trade_price: str,
    min_order_size: str = "5",
    neg_risk: bool = False,
) -> Event:
    """The REST book summary (``GET /book``, one item of ``POST /books``), hashed like the live one."""
    msg: Event = {
        "market": market,
        "asset_id": asset_id,
        "timestamp": str(timestamp),
        "hash": "",
        "bids": levels(bids),
        "asks": levels(asks),
        "min_order_size": min_order_size,
        "tick_size": tick_size,
        "neg_risk": neg_risk,
        "last_trade_price": last_trade_price,
    }
    return with_digest(msg)


def price_change_entry(
    asset_id: str,
    price: str,
    size: str,
    side: str,
    hash: str,
    best_bid: str | None = None,
    best_ask: str | None = None,
) -> Event:
    """One entry of a price_change: ``size`` is the level's NEW TOTAL ("0" removes it).

    ``best_bid``/``best_ask`` are the asset's top after the change (:data:`EMPTY_BID`/
    :data:`EMPTY_ASK` for an empty side); ``None`` leaves the field out (old recordings).
    """
    entry: Event = {"asset_id": asset_id, "price": price, "size": size, "side": side, "hash": hash}
    if best_bid is not None:
        entry["best_bid"] = best_bid
    if best_ask is not None:
        entry["best_ask"] = best_ask
    return entry


def price_change(market: str, entries: Sequence[Event], timestamp: str | int) -> Event:
    """A price_change in the schema live since 2025-09-15: one market, entries of any of its assets."""
    return {
        "market": market,
        "price_changes": list(entries),
        "timestamp": str(timestamp),
        "event_type": "price_change",
    }


def legacy_price_change(
    asset_id: str, market: str, changes: Iterable[tuple[str, str, str]], timestamp: str | int, hash: str
) -> Event:
    """The pre-2025-09 per-asset form; ``changes`` are (price, side, size)."""
    return {
        "asset_id": asset_id,
        "market": market,
        "changes": [{"price": p, "side": side, "size": s} for p, side, s in changes],
        "timestamp": str(timestamp),
        "hash": hash,
        "event_type": "price_change",
    }


def best_bid_ask(
    asset_id: str, market: str, best_bid: str, best_ask: str, spread: str, timestamp: str | int
) -> Event:
    """The custom-feature ``best_bid_ask``; pass the empty-side markers for an empty side."""
    return {
        "market": market,
        "asset_id": asset_id,
        "best_bid": best_bid,
        "best_ask": best_ask,
        "spread": spread,
        "timestamp": str(timestamp),
        "event_type": "best_bid_ask",
    }


def tick_size_change(asset_id: str, market: str, old: str, new: str, timestamp: str | int) -> Event:
    return {
        "asset_id": asset_id,
        "market": market,
        "old_tick_size": old,
        "new_tick_size": new,
        "timestamp": str(timestamp),
        "event_type": "tick_size_change",
    }


def last_trade_price(
    asset_id: str,
    market: str,
    price: str,
    size: str,
    side: str,
    timestamp: str | int,
    *,
    fee_rate_bps: str = "0",
    transaction_hash: str | None = None,
) -> Event:
    msg: Event = {
        "asset_id": asset_id,
        "market": market,
        "price": price,
        "size": size,
        "side": side,
        "fee_rate_bps": fee_rate_bps,
        "timestamp": str(timestamp),
    }
    if transaction_hash is not None:
        msg["transaction_hash"] = transaction_hash
    msg["event_type"] = "last_trade_price"
    return msg


def outcomes(n_tokens: int) -> list[str]:
    """Outcome names of a market: Yes/No for two tokens, numbered otherwise."""
    return ["Yes", "No"] if n_tokens == 2 else [f"Outcome {i}" for i in range(n_tokens)]


def market_resolved(
    event_id: str, market: str, assets_ids: Sequence[str], winning_asset_id: str, timestamp: str | int
) -> Event:
    """The custom-feature resolution broadcast; the winning outcome is named from the token's place."""
    tokens = list(assets_ids)
    return {
        "id": event_id,
        "market": market,
        "assets_ids": tokens,
        "winning_asset_id": winning_asset_id,
        "winning_outcome": outcomes(len(tokens))[tokens.index(winning_asset_id)],
        "timestamp": str(timestamp),
        "event_type": "market_resolved",
    }


def new_market(
    event_id: str, market: str, assets_ids: Sequence[str], question: str, timestamp: str | int
) -> Event:
    """The custom-feature venue-wide ``new_market`` broadcast (a subset of the live fields)."""
    tokens = list(assets_ids)
    return {
        "id": event_id,
        "question": question,
        "market": market,
        "slug": f"sim-market-{market[2:10]}",
        "description": "Simulated market.",
        "assets_ids": tokens,
        "outcomes": outcomes(len(tokens)),
        "timestamp": str(timestamp),
        "event_type": "new_market",
    }


def encode(*events: Event) -> bytes:
    """One event as a JSON object frame, several as one JSON array frame (as the server does)."""
    return orjson.dumps(events[0] if len(events) == 1 else list(events))


# ---- what a client sends -------------------------------------------------------------------------


def subscription(
    assets_ids: Sequence[str], *, initial_dump: bool = True, custom_feature_enabled: bool = True
) -> Event:
    """The first frame on a socket: the market subscription."""
    return {
        "type": "market",
        "assets_ids": list(assets_ids),
        "initial_dump": initial_dump,
        "custom_feature_enabled": custom_feature_enabled,
    }


def operation(op: Literal["subscribe", "unsubscribe"], assets_ids: Sequence[str]) -> Event:
    """A later change of the socket's subscription set."""
    return {"operation": op, "assets_ids": list(assets_ids)}
