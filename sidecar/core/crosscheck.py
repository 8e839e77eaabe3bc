"""Cross-checks of a token's local book against the exchange's own best prices. Pure functions.

``price_change`` entries (since 2025-09-15) and ``best_bid_ask`` events carry the exchange's top of
book. In live traffic a crossing trade arrives as several ``price_change`` messages with one
timestamp, and ``best_bid``/``best_ask`` on the first of them already reflect level removals the
later ones carry: for a few messages the local book disagrees (or is crossed) and then agrees
again. So a disagreement is only an inconsistency once it has outlasted a short grace
(``SIDECAR_BBO_GRACE_S``); the engine holds the token out of ``live`` meanwhile (see
``Engine._crosscheck``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.core.protocol import Malformed, price_key

Claim = tuple[float | None, float | None]  # the exchange's (best bid, best ask); None = no level

NO_LEVEL = (0.0, 1.0)  # prices the exchange writes for an empty side, on either side


def server_level(value: Any) -> float | None:
    """One side of the exchange's stated top as a price key, or ``None`` for "no level".

    Seen for an empty side: ``best_bid`` ``"0"``, ``best_ask`` ``"1"`` or ``""``, and ``"0"`` for
    both in ``best_bid_ask``. A price of 0 or 1 is never a real level, so either means "no level"
    on either side. Raises :class:`Malformed` (``bad_bbo``) for anything that is not a price.
    """
    if value is None or value == "":
        return None
    try:
        key = price_key(value)
    except Malformed:
        raise Malformed("bad_bbo", repr(value)[:40]) from None
    return None if key in NO_LEVEL else key


_CLAIMS: dict[tuple[str, str], Claim] = {}  # valid claims seen so far (pairs of tick-grid prices)
_CLAIMS_MAX = 100_000


def claim(best_bid: Any, best_ask: Any) -> Claim | None:
    """The top the exchange states, or ``None`` when the message states none (both fields absent)."""
    if type(best_bid) is str and type(best_ask) is str:  # the hot path: every price_change entry
        key = (best_bid, best_ask)
        stated = _CLAIMS.get(key)
        if stated is None:
            stated = server_level(best_bid), server_level(best_ask)  # raises: invalid is never cached
            if len(_CLAIMS) >= _CLAIMS_MAX:
                _CLAIMS.clear()
            _CLAIMS[key] = stated
        return stated
    if best_bid is None and best_ask is None:
        return None
    return server_level(best_bid), server_level(best_ask)


def states_top(best_bid: Any, best_ask: Any) -> bool:
    """Does the message state a readable top? Only such a statement can confirm a quote."""
    try:
        return claim(best_bid, best_ask) is not None
    except Malformed:
        return False


def agrees(stated: Claim | None, bid_key: float | None, ask_key: float | None) -> bool:
    """Is the local top consistent: not crossed, and equal to the exchange's stated top if any?"""
    if bid_key is not None and ask_key is not None and bid_key >= ask_key:
        return False  # the exchange's own book is never crossed
    return stated is None or stated == (bid_key, ask_key)


@dataclass(slots=True)
class Unsettled:
    """A token whose top stopped agreeing with the exchange's at ``since`` (receive time).

    ``claim`` is the exchange's latest stated top: a later message without one (the legacy
    schema) is judged against it. Past ``deadline`` a still-disagreeing token is resynced.
    """

    since: float
    deadline: float
    claim: Claim | None


def same_tick(current: str | None, new: Any) -> bool:
    """Is ``new`` (a tick_size_change's ``new_tick_size``) the tick size the book already has?"""
    if current is None or not isinstance(new, str):
        return False
    if current == new:
        return True
    try:
        return price_key(current) == price_key(new)  # "0.01" and "0.010" are one tick
    except Malformed:
        return False
