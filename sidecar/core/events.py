"""A frame, parsed once into typed events: the engine dispatches on their type and never reads wire
fields itself.

:func:`parse_frame` turns one WebSocket frame into a :class:`Control` text, a :class:`BadFrame`, or
a list of events. Every event kind the market channel sends has its own class; anything that cannot
be applied becomes a :class:`BadEvent` in its place (never an exception), carrying the asset it was
about when it names one, so the engine can still attribute it (an asset on another socket is
filtered, not counted as an error). Parsing is the only place that knows the wire's field names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from sidecar.core.protocol import (
    Control,
    Entry,
    Levels,
    Malformed,
    book_sides,
    decode_frame,
    parse_levels,
    price_changes,
    price_key,
    timestamp_ms,
)

# Event kinds, as counted in ``pm_sidecar_events{type}`` (the wire's event_type values).
BOOK = "book"
PRICE_CHANGE = "price_change"
BEST_BID_ASK = "best_bid_ask"
TRADE = "last_trade_price"
TICK_SIZE_CHANGE = "tick_size_change"
RESOLVED = "market_resolved"
NEW_MARKET = "new_market"
UNKNOWN = "unknown"


@dataclass(slots=True)
class Book:
    """A full snapshot of one asset's book (``book``): replaces whatever was known."""

    asset_id: str | None
    bids: Levels
    asks: Levels
    ts: int | None
    market: str | None
    tick_size: str | None
    min_order_size: str | None = None  # reference data, when the summary carries it
    neg_risk: bool | None = None


@dataclass(slots=True)
class LevelChanges:
    """A ``price_change``: level updates, possibly for several assets, each with the exchange's
    best prices after it (see :class:`sidecar.core.protocol.LevelChange`)."""

    market: str | None
    ts: int | None
    entries: list[Entry]


@dataclass(slots=True)
class BestBidAsk:
    """The exchange's top of book for one asset. ``best_bid``/``best_ask`` are the raw values, judged
    by :func:`sidecar.core.crosscheck.claim` only when the token's book is trusted."""

    asset_id: str | None
    best_bid: object
    best_ask: object


@dataclass(slots=True)
class Trade:
    """``last_trade_price``: shown in the quote hash, never moves the book."""

    asset_id: str | None
    price: str
    size: str | None
    side: str | None
    ts: int | None


@dataclass(slots=True)
class TickSizeChange:
    asset_id: str | None
    new_tick_size: str | None
    ts: int | None


@dataclass(slots=True)
class Resolution:
    """``market_resolved``: every asset of the market, and the winner if named."""

    asset_ids: list[str | None]
    winner: str | None


@dataclass(slots=True)
class Broadcast:
    """A venue-wide event (``new_market``): not about this socket's tokens, never its data."""

    kind: str


@dataclass(slots=True)
class Unknown:
    """An ``event_type`` we do not know; ``kind`` is bounded to 40 characters."""

    kind: str


@dataclass(slots=True)
class BadEvent:
    """An event that cannot be applied. ``kind`` is its event kind (``""``: not even an object);
    ``asset_id`` the asset it names, if any; ``market`` for a price_change without entries."""

    kind: str
    reason: str
    detail: str
    asset_id: str | None = None
    market: str | None = None
    error: Exception | None = field(default=None, compare=False)  # a parser bug ("unexpected"), for the log


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame that is not JSON we can read (``reason`` is bounded, for metrics)."""

    reason: str
    detail: str


Event = (
    Book | LevelChanges | BestBidAsk | Trade | TickSizeChange | Resolution | Broadcast | Unknown | BadEvent
)
Frame = list[Event] | Control | BadFrame


def parse_frame(data: bytes | str) -> Frame:
    """One frame in, typed pieces out. Never raises: hostile input becomes ``BadFrame``/``BadEvent``."""
    try:
        decoded = decode_frame(data)
    except Malformed as exc:
        return BadFrame(exc.reason, str(exc))
    if isinstance(decoded, Control):
        return decoded
    return list(map(parse_event, decoded))


def parse_event(raw: Any) -> Event:
    if type(raw) is not dict:
        return BadEvent("", "bad_event", "event is not an object")
    kind = raw.get("event_type")
    try:
        if kind == PRICE_CHANGE:  # the hot path (most events), without a parser lookup and call
            market = raw.get("market")
            return LevelChanges(
                market if type(market) is str else None,
                timestamp_ms(raw.get("timestamp")),
                price_changes(raw),
            )
        if type(kind) is not str or (parse := _PARSERS.get(kind)) is None:
            return Unknown(str(kind)[:40])
        return parse(raw)
    except Malformed as exc:
        asset = raw.get("asset_id")
        market = raw.get("market")
        return BadEvent(
            str(kind),  # a parser's kind: always a str here
            exc.reason,
            exc.detail,
            asset if isinstance(asset, str) else None,
            market if isinstance(market, str) else None,
        )
    except Exception as exc:  # hostile input must never kill the socket
        return BadEvent(str(kind), "unexpected", repr(exc)[:200], error=exc)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _book(raw: dict[str, Any]) -> Event:
    asset = _str(raw.get("asset_id"))
    raw_bids, raw_asks = book_sides(raw)
    return Book(
        asset,
        parse_levels(raw_bids),
        parse_levels(raw_asks),
        timestamp_ms(raw.get("timestamp")),
        _str(raw.get("market")),
        _str(raw.get("tick_size")),
        number_text(raw.get("min_order_size")),
        flag(raw.get("neg_risk")),
    )


def _best_bid_ask(raw: dict[str, Any]) -> Event:
    return BestBidAsk(_str(raw.get("asset_id")), raw.get("best_bid"), raw.get("best_ask"))


def _trade(raw: dict[str, Any]) -> Event:
    price = raw.get("price")
    if not isinstance(price, str):
        raise Malformed("bad_price", repr(price)[:40])
    price_key(price)  # raises Malformed: a trade at no valid price is not shown
    return Trade(
        _str(raw.get("asset_id")),
        price,
        _str(raw.get("size")),
        _str(raw.get("side")),
        timestamp_ms(raw.get("timestamp")),
    )


def _tick_size(raw: dict[str, Any]) -> Event:
    return TickSizeChange(
        _str(raw.get("asset_id")), _str(raw.get("new_tick_size")), timestamp_ms(raw.get("timestamp"))
    )


def _resolved(raw: dict[str, Any]) -> Event:
    assets = raw.get("assets_ids")
    if not isinstance(assets, list):
        asset = raw.get("asset_id")
        assets = [asset] if asset is not None else []
    return Resolution([_str(a) for a in assets], _str(raw.get("winning_asset_id")))


def _new_market(raw: dict[str, Any]) -> Event:
    return Broadcast(NEW_MARKET)


_PARSERS = {
    BOOK: _book,
    BEST_BID_ASK: _best_bid_ask,
    TRADE: _trade,
    TICK_SIZE_CHANGE: _tick_size,
    RESOLVED: _resolved,
    NEW_MARKET: _new_market,
}


def parse_rest_books(books: list[object]) -> list[Book | BadEvent]:
    """``POST /books`` answers: one :class:`Book` (or :class:`BadEvent` naming its asset) per
    summary object; anything that is not an object is skipped."""
    out: list[Book | BadEvent] = []
    for raw in books:
        if not isinstance(raw, dict):
            continue
        try:
            raw_bids, raw_asks = book_sides(raw)
            bids, asks = parse_levels(raw_bids), parse_levels(raw_asks)
        except Malformed as exc:
            out.append(BadEvent(BOOK, exc.reason, exc.detail, _str(raw.get("asset_id"))))
            continue
        out.append(
            Book(
                _str(raw.get("asset_id")),
                bids,
                asks,
                timestamp_ms(raw.get("timestamp")),
                _str(raw.get("market")),
                _str(raw.get("tick_size")),
                number_text(raw.get("min_order_size")),
                flag(raw.get("neg_risk")),
            )
        )
    return out


# ---- reference data and market states (GET /markets/{condition_id}) -------------------------------


def number_text(value: Any) -> str | None:
    """A reference number as the hash shows it: the exchange's string as given, a JSON number
    (the market endpoint's ``5``, ``0.01``) in its shortest decimal form; anything else unknown."""
    if isinstance(value, str):
        text = value.strip()
        return text or None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        d = Decimal(repr(value))
    except InvalidOperation:
        return None
    if not d.is_finite() or d <= 0:
        return None
    return format(d.normalize(), "f")


def flag(value: Any) -> bool | None:
    """A boolean the wire may send as JSON ``true`` or as the text ``"true"``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


@dataclass(frozen=True, slots=True)
class MarketState:
    """One market's state over REST: closed or not, its winner when one is flagged, its reference
    data (``tick_size`` from ``minimum_tick_size``, ``min_order_size`` from ``minimum_order_size``)."""

    market: str
    closed: bool
    tokens: tuple[str, ...]
    winner: str | None
    tick_size: str | None
    min_order_size: str | None
    neg_risk: bool | None


def parse_market_state(market: str, raw: Any) -> MarketState | None:
    """The CLOB market object for ``market``; None when it cannot be judged (not an object, no
    boolean ``closed``, or another market's id)."""
    if not isinstance(raw, dict) or not isinstance(closed := raw.get("closed"), bool):
        return None
    cid = raw.get("condition_id")
    if isinstance(cid, str) and cid != market:
        return None
    tokens: list[str] = []
    winner = None
    entries = raw.get("tokens")
    for entry in entries if isinstance(entries, list) else ():
        token = entry.get("token_id") if isinstance(entry, dict) else None
        if not isinstance(token, str):
            continue
        tokens.append(token)
        if entry.get("winner") is True:
            winner = token
    return MarketState(
        market,
        closed,
        tuple(tokens),
        winner,
        number_text(raw.get("minimum_tick_size")),
        number_text(raw.get("minimum_order_size")),
        flag(raw.get("neg_risk")),
    )
