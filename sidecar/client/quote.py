"""One token's quote as a worker sees it: the Redis hash, parsed once, with the alive rule applied.

Pure code (no Redis, no clock reads): the reader passes the hash, the alive key's value and the
time in, so every rule here is tested exactly.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

N = TypeVar("N", int, float)

LIVE = "live"
RESOLVED = "resolved"

# The sidecar's own rule for a desired-set member (docs/redis-contract.md): 1-100 decimal digits.
_TOKEN_RE = re.compile(r"[0-9]{1,100}")


def check_tokens(tokens: Iterable[str] | str) -> list[str]:
    """Token ids as a list, each stripped; ``ValueError`` naming the first invalid one.

    A single string is one token, not its characters. Nothing is written before this passes.
    """
    items = [tokens] if isinstance(tokens, str) else list(tokens)
    out: list[str] = []
    for item in items:
        token = item.strip() if isinstance(item, str) else None
        if token is None or not _TOKEN_RE.fullmatch(token):
            raise ValueError(f"invalid token id {item!r}: expected 1-100 decimal digits")
        out.append(token)
    return out


def number(text: str | None, kind: Callable[[str], N]) -> N | None:
    """A decimal string as ``kind`` (``int`` or ``float``); ``None`` for an empty or unknown value.

    Hash fields from Redis are read with this: a missing field or a value from a newer sidecar
    that does not parse is "not known", never an exception or a zero.
    """
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        return None


def _num(text: str | None) -> float | None:
    """The exchange's decimal string as a float; ``None`` for an empty side or an unknown value."""
    return number(text, float)


def _int(text: str | None) -> int | None:
    return number(text, int)


@dataclass(frozen=True, slots=True)
class Quote:
    """A token's top of book and status as the sidecar last wrote it.

    Prices are ``None`` when that side is empty or unknown, never ``0.0``. ``alive`` is whether
    the sidecar run that wrote this quote is still running (``P sidecar:alive`` equals ``epoch``).
    A quote is something to trade on only when :meth:`usable` says so.
    """

    token: str
    bid: float | None
    ask: float | None
    bid_size: float | None
    ask_size: float | None
    bid_str: str
    ask_str: str
    status: str
    reason: str
    source: str
    seq: int
    epoch: str
    ts_ms: int | None
    updated_at_ms: int | None
    tick_size: float | None
    market: str | None
    last_trade_price: float | None
    alive: bool
    # Age at read time; it keeps growing after that, so it takes no part in equality.
    age_s: float | None = field(default=None, compare=False)
    # The market's reference data when the sidecar knows it (order size floor, neg-risk market).
    min_order_size: float | None = None
    neg_risk: bool | None = None

    @property
    def live(self) -> bool:
        """Live at the exchange and vouched for by a running sidecar (age not considered)."""
        return self.alive and self.status == LIVE

    @property
    def resolved(self) -> bool:
        return self.status == RESOLVED

    @property
    def mid(self) -> float | None:
        """Mid price when both sides have a level, else ``None``."""
        if self.bid is None or self.ask is None:
            return None
        return (self.bid + self.ask) / 2.0

    def age_at(self, now_s: float) -> float | None:
        """Seconds between the exchange's last confirmation and ``now_s`` (epoch seconds)."""
        if self.updated_at_ms is None:
            return None
        return max(0.0, now_s - self.updated_at_ms / 1000.0)

    def usable(self, max_age_s: float, now_s: float | None = None) -> bool:
        """Safe to price from: sidecar alive, ``live``, confirmed less than ``max_age_s`` ago.

        The age is judged now (or at ``now_s``), not when the quote was read, so a quote held
        too long stops being usable by itself.
        """
        if not self.live:
            return False
        age = self.age_at(time.time() if now_s is None else now_s)
        return age is not None and age < max_age_s


def quote_from_fields(
    token: str, fields: Mapping[str, str], alive_epoch: str | None, now_s: float
) -> Quote | None:
    """Parse one quote hash (or pub/sub message); ``None`` for a missing (empty) hash.

    ``alive_epoch`` is the value of ``P sidecar:alive`` (``None`` when the key is missing).
    """
    if not fields:
        return None
    get = fields.get
    epoch = get("epoch") or ""
    updated_at_ms = _int(get("updated_at"))
    bid_str = get("bid") or ""
    ask_str = get("ask") or ""
    return Quote(
        token=token,
        bid=_num(bid_str),
        ask=_num(ask_str),
        bid_size=_num(get("bid_size")) if bid_str else None,
        ask_size=_num(get("ask_size")) if ask_str else None,
        bid_str=bid_str,
        ask_str=ask_str,
        status=get("status") or "",
        reason=get("reason") or "",
        source=get("source") or "",
        seq=_int(get("seq")) or 0,
        epoch=epoch,
        ts_ms=_int(get("ts")),
        updated_at_ms=updated_at_ms,
        tick_size=_num(get("tick_size")),
        market=get("market") or None,
        last_trade_price=_num(get("last_trade_price")),
        alive=alive_epoch is not None and epoch != "" and alive_epoch == epoch,
        age_s=None if updated_at_ms is None else max(0.0, now_s - updated_at_ms / 1000.0),
        min_order_size=_num(get("min_order_size")),
        neg_risk=_flag(get("neg_risk")),
    )


def _flag(text: str | None) -> bool | None:
    """``"true"``/``"false"`` as a bool; ``None`` when missing or anything else."""
    if text == "true":
        return True
    if text == "false":
        return False
    return None
