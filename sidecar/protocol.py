"""Market-channel wire format: frames in, normalised pieces out.

Pure functions only. The server sends JSON objects, JSON arrays of objects, and bare text control
strings (``PONG``, ``INVALID OPERATION``, ``NO NEW ASSETS``); every number is a string. Nothing here
raises on hostile input: callers get ``None`` or a :class:`Malformed` reason they can count.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

# Token ids are uint256 decimal strings; anything else must never reach the exchange.
TOKEN_ID_RE = re.compile(r"[0-9]{1,100}")

# Plain decimals only: " 0.5", "0.2_5" or non-ASCII digits parse as floats but must never be
# published as prices.
NUMBER_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+")

CONTROL_TEXTS = frozenset({"PONG", "INVALID OPERATION", "NO NEW ASSETS"})

BUY = 0  # bid side
SELL = 1  # ask side


class Malformed(Exception):
    """A frame or event that cannot be applied; ``reason`` is a short, bounded label for metrics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Control:
    """A non-JSON text frame. ``label`` is bounded (known texts, else ``other``) for metrics."""

    text: str

    @property
    def label(self) -> str:
        return self.text if self.text in CONTROL_TEXTS else "other"


def is_token_id(value: str) -> bool:
    return TOKEN_ID_RE.fullmatch(value) is not None


def decode_frame(data: bytes | str) -> list[Any] | Control:
    """Split a frame into raw events, or recognise it as a control string.

    Raises :class:`Malformed` for JSON that is neither an object nor an array.
    """
    if not data:
        return Control("")
    first = data[0]
    if first not in (123, 91, "{", "["):  # not '{' or '['
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        return Control(text.strip()[:64])
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Malformed("bad_json", str(exc)[:120]) from None
    if isinstance(obj, list):
        return obj
    if isinstance(obj, dict):
        return [obj]
    raise Malformed("bad_json", "top level is not an object or array")


_PRICE_KEYS: dict[str, float] = {}  # valid price strings seen so far (tick grids: a few hundred)
_PRICE_KEYS_MAX = 100_000


def price_key(price: Any) -> float:
    """Numeric key of a price string; validates it is a finite price in [0, 1].

    Floats are exact enough for *ordering and identity* of tick-grid prices ("0.5" and "0.50"
    map to the same key); the original strings are what gets written out.
    """
    key = _PRICE_KEYS.get(price) if type(price) is str else None
    if key is not None:
        return key
    key = _price_key(price)  # raises Malformed: invalid strings are never cached
    if len(_PRICE_KEYS) >= _PRICE_KEYS_MAX:
        _PRICE_KEYS.clear()
    _PRICE_KEYS[price] = key
    return key


def _price_key(price: Any) -> float:
    if not isinstance(price, str) or NUMBER_RE.fullmatch(price) is None:
        raise Malformed("bad_price", repr(price)[:40])
    value = float(price)
    if not (0.0 <= value <= 1.0):  # also rejects NaN
        raise Malformed("bad_price", price[:40])
    return value


def size_value(size: Any) -> float:
    """Numeric value of a size string; finite and non-negative or :class:`Malformed`."""
    if not isinstance(size, str) or NUMBER_RE.fullmatch(size) is None:
        raise Malformed("bad_size", repr(size)[:40])
    value = float(size)
    if not (0.0 <= value < math.inf):  # rejects NaN, inf, negatives
        raise Malformed("bad_size", size[:40])
    return value


Levels = dict[float, tuple[str, str]]


def parse_levels(levels: Any) -> Levels:
    """A snapshot side (``[{price, size}, ...]`` in any order) as ``{key: (price, size)}``.

    Zero-size levels are dropped. Raises :class:`Malformed` on any bad level: a book is applied
    whole or not at all.
    """
    if levels is None:
        return {}
    if not isinstance(levels, list):
        raise Malformed("bad_levels", type(levels).__name__)
    out: Levels = {}
    for level in levels:
        if not isinstance(level, dict):
            raise Malformed("bad_levels", "level is not an object")
        price = level.get("price")
        size = level.get("size")
        key = price_key(price)
        if size_value(size) > 0.0:
            out[key] = (price, size)  # type: ignore[assignment]
    return out


def book_sides(event: dict[str, Any]) -> tuple[Any, Any]:
    """Bids and asks of a ``book`` event under either naming (``bids/asks`` or ``buys/sells``)."""
    bids = event["bids"] if "bids" in event else event.get("buys")
    asks = event["asks"] if "asks" in event else event.get("sells")
    if bids is None and asks is None:
        raise Malformed("bad_book", "no bids/asks or buys/sells")
    return bids, asks


def side_of(side: Any) -> int:
    if side == "BUY" or side == "buy":
        return BUY
    if side == "SELL" or side == "sell":
        return SELL
    raise Malformed("bad_side", repr(side)[:20])


@dataclass(slots=True)
class LevelChange:
    """One level update of ``price_change``: ``size`` is the new total at ``price``."""

    asset_id: str
    side: int
    price: str
    size: str
    best_bid: str | None  # server's top after the change, when it sent one
    best_ask: str | None


def price_changes(event: dict[str, Any]) -> list[LevelChange]:
    """Every level change of a ``price_change`` event, in any of its three schemas.

    - since 2025-09-15: ``price_changes: [{asset_id, price, size, side, best_bid, best_ask}]``
      (one message may cover several assets, including ones this socket did not subscribe to);
    - legacy: ``asset_id`` + ``changes: [{price, side, size}]``;
    - oldest: one level per message with ``asset_id, price, side, size`` at the top level.
    """
    entries = event.get("price_changes")
    if entries is not None:
        if not isinstance(entries, list):
            raise Malformed("bad_price_change", "price_changes is not a list")
        out = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise Malformed("bad_price_change", "entry is not an object")
            asset = entry.get("asset_id")
            if not isinstance(asset, str):
                raise Malformed("bad_price_change", "entry without asset_id")
            out.append(
                LevelChange(
                    asset,
                    side_of(entry.get("side")),
                    entry.get("price"),  # type: ignore[arg-type]  # validated when applied
                    entry.get("size"),  # type: ignore[arg-type]
                    entry.get("best_bid"),
                    entry.get("best_ask"),
                )
            )
        return out
    asset = event.get("asset_id")
    if not isinstance(asset, str):
        raise Malformed("bad_price_change", "no asset_id")
    changes = event.get("changes")
    if changes is not None:
        if not isinstance(changes, list):
            raise Malformed("bad_price_change", "changes is not a list")
        return [
            LevelChange(asset, side_of(c.get("side")), c.get("price"), c.get("size"), None, None)
            for c in changes
            if _is_dict_or_raise(c)
        ]
    if "price" in event:
        return [
            LevelChange(asset, side_of(event.get("side")), event.get("price"), event.get("size"), None, None)
        ]
    raise Malformed("bad_price_change", "no recognised schema")


def _is_dict_or_raise(value: Any) -> bool:
    if not isinstance(value, dict):
        raise Malformed("bad_price_change", "change is not an object")
    return True


def server_best(value: Any, *, empty_marker: float) -> float | None:
    """Server-reported best price as a key, or ``None`` for "no level".

    The server writes an empty side as best_bid ``"0"`` / best_ask ``"1"`` (or ``""``); those are
    never prices.
    """
    if value is None or value == "":
        return None
    try:
        key = price_key(value)
    except Malformed:
        return None
    if key == empty_marker:
        return None
    return key


def timestamp_ms(value: Any) -> int | None:
    """Exchange timestamps are millisecond integers sent as strings."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**16:
        return value
    return None


def subscribe_first(asset_ids: Iterable[str]) -> str:
    """The one ``type: market`` frame a socket may send, and it must be the first."""
    return orjson.dumps(
        {
            "type": "market",
            "assets_ids": list(asset_ids),
            "initial_dump": True,
            "custom_feature_enabled": True,
        }
    ).decode()


def subscribe_op(operation: str, asset_ids: Iterable[str]) -> str:
    """Incremental (un)subscribe on an open socket."""
    return orjson.dumps({"operation": operation, "assets_ids": list(asset_ids)}).decode()
