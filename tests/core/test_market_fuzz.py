"""sidecar.core.market under fuzzed frames: nothing raises, and a good book still applies after."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core.harness import (
    T0,
    Sim,
    book_ev,
    tok,
    top,
)

A, B, C = tok(1), tok(2), tok(3)


# ---- fuzz ----------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
VALUE = st.one_of(st.sampled_from([A, B, "0.5", "0", "1", "BUY", "SELL", "", "NaN", "-1", "2"]), JSON)
LEVEL_LIST = st.lists(st.fixed_dictionaries({"price": VALUE, "size": VALUE}), max_size=3)
ENTRY = st.fixed_dictionaries(
    {"asset_id": VALUE, "price": VALUE, "size": VALUE, "side": VALUE},
    optional={"best_bid": VALUE, "best_ask": VALUE},
)
EVENT = st.builds(
    lambda kind, fields: {"event_type": kind, **fields},
    st.sampled_from(
        [
            "book",
            "price_change",
            "last_trade_price",
            "tick_size_change",
            "best_bid_ask",
            "market_resolved",
            "new_market",
            "???",
        ]
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "asset_id": VALUE,
            "assets_ids": st.lists(VALUE, max_size=3) | VALUE,
            "bids": LEVEL_LIST | VALUE,
            "asks": LEVEL_LIST | VALUE,
            "buys": LEVEL_LIST,
            "sells": LEVEL_LIST,
            "price_changes": st.lists(ENTRY | VALUE, max_size=3) | VALUE,
            "changes": st.lists(ENTRY | VALUE, max_size=3) | VALUE,
            "price": VALUE,
            "size": VALUE,
            "side": VALUE,
            "best_bid": VALUE,
            "best_ask": VALUE,
            "timestamp": VALUE,
            "market": VALUE,
            "new_tick_size": VALUE,
            "winning_asset_id": VALUE,
        },
    ),
)
PAYLOAD = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64),
    JSON.map(lambda v: json.dumps(v).encode()),
    EVENT.map(lambda e: json.dumps(e).encode()),
    st.lists(EVENT | JSON, max_size=4).map(lambda es: json.dumps(es).encode()),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(PAYLOAD, min_size=1, max_size=4))
def test_fuzzed_frames_never_raise_and_a_good_book_still_applies(payloads: list[bytes | str]) -> None:
    s = Sim()
    s.desired([A, B])
    s.tick()
    conn = s.conn_of(A)
    for payload in payloads:
        s.raw(conn, payload)
    s.tick_at(T0 + 1)
    writes = [w for w in s.frame(conn, book_ev(A, [("0.123", "4.5")], [("0.877", "6.5")])) if w.publish]
    (w,) = [w for w in writes if w.token == A]
    assert top(w.fields) == ("0.123", "4.5", "0.877", "6.5")
    assert w.fields["status"] in ("live", "resolved")
    s.run_for(5)
