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

    Zero-size levels are dropped. Raises :class:`Malformed` on anything but a list and on any bad
    level: a book is applied whole or not at all.
    """
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


def book_sides(event: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """Bids and asks of a ``book`` (or REST summary) under either naming (``bids/asks`` or
    ``buys/sells``).

    Each side must be present and a list: a missing or non-list side is :class:`Malformed`
    (``bad_book``), never an empty side. Only an explicit ``[]`` empties a side.
    """
    return _book_side(event, "bids", "buys"), _book_side(event, "asks", "sells")


def _book_side(event: dict[str, Any], name: str, old_name: str) -> list[Any]:
    if name in event:
        levels = event[name]
    elif old_name in event:
        levels, name = event[old_name], old_name
    else:
        raise Malformed("bad_book", f"no {name} or {old_name}")
    if not isinstance(levels, list):
        raise Malformed("bad_book", f"{name} is {type(levels).__name__}, not a list")
    return levels


_SIDES = {"BUY": BUY, "buy": BUY, "SELL": SELL, "sell": SELL}


@dataclass(slots=True)
class LevelChange:
    """One valid level update of ``price_change``: ``size`` is the new total at ``price``."""

    asset_id: str
    side: int
    price: str
    size: str
    key: float  # numeric value of ``price`` (see :func:`price_key`)
    zero: bool  # size is zero: the level goes away
    best_bid: str | None = None  # server's top after the change, when it sent one
    best_ask: str | None = None


@dataclass(frozen=True, slots=True)
class BadEntry:
    """One ``price_change`` entry that cannot be applied, kept so the caller can tell which book it
    leaves wrong. ``asset_id`` is ``None`` when the entry does not even say which asset."""

    asset_id: str | None
    reason: str
    detail: str = ""


Entry = LevelChange | BadEntry


def level_change(asset: str, raw: dict[str, Any], best_bid: Any = None, best_ask: Any = None) -> Entry:
    """Validate one level update; a bad side, price or size makes a :class:`BadEntry` for ``asset``."""
    raw_side = raw.get("side")
    side = _SIDES.get(raw_side) if type(raw_side) is str else None
    if side is None:
        return BadEntry(asset, "bad_side", repr(raw_side)[:20])
    try:
        price = raw.get("price")
        key = price_key(price)
        size = raw.get("size")
        zero = size_value(size) == 0.0
    except Malformed as exc:
        return BadEntry(asset, exc.reason, exc.detail)
    return LevelChange(asset, side, price, size, key, zero, best_bid, best_ask)  # type: ignore[arg-type]


def price_changes(event: dict[str, Any]) -> list[Entry]:
    """Every level change of a ``price_change`` event, in any of its three schemas.

    - since 2025-09-15: ``price_changes: [{asset_id, price, size, side, best_bid, best_ask}]``
      (one message may cover several assets, including ones this socket did not subscribe to);
    - legacy: ``asset_id`` + ``changes: [{price, side, size}]``;
    - oldest: one level per message with ``asset_id, price, side, size`` at the top level.

    Each entry stands alone: a bad one becomes a :class:`BadEntry` in its place and never costs the
    others. Raises :class:`Malformed` (``bad_price_change``) only when the event as a whole has no
    recognisable entries and names no asset.
    """
    entries = event.get("price_changes")
    if entries is not None:
        if not isinstance(entries, list):
            raise Malformed("bad_price_change", "price_changes is not a list")
        out: list[Entry] = []
        for entry in entries:
            if not isinstance(entry, dict):
                out.append(BadEntry(None, "bad_price_change", "entry is not an object"))
                continue
            asset = entry.get("asset_id")
            if not isinstance(asset, str):
                out.append(BadEntry(None, "bad_price_change", "entry without asset_id"))
                continue
            out.append(level_change(asset, entry, entry.get("best_bid"), entry.get("best_ask")))
        return out
    asset = event.get("asset_id")
    if not isinstance(asset, str):
        raise Malformed("bad_price_change", "no asset_id")
    changes = event.get("changes")
    if changes is not None:
        if not isinstance(changes, list):
            return [BadEntry(asset, "bad_price_change", "changes is not a list")]
        return [
            level_change(asset, c)
            if isinstance(c, dict)
            else BadEntry(asset, "bad_price_change", "change is not an object")
            for c in changes
        ]
    if "price" in event:
        return [level_change(asset, event)]
    return [BadEntry(asset, "bad_price_change", "no recognised schema")]


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
