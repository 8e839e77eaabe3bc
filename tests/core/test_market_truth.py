"""sidecar.core.market: what counts as data, and what becomes prices (issue 9, items 3, 5, 6, 7, 13).

- Only events for a socket's own tokens are its data: broadcasts, unknown event types and other
  assets' events never reset its silence clock or answer its silence probe.
- Each ``price_change`` entry stands alone; a trusted book that missed an entry resyncs.
- A ``book`` with a missing or non-list side is malformed, never an empty side.
- Only a snapshot makes prices: deltas applied to a book that is not live never reach Redis.
- REST confirmation compares best sizes too; the per-token stall redrive runs and backs off.

All on :class:`tests.core.harness.Sim` with time passed in.
"""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.core.engine import RestFetch
from tests.core.harness import (
    T0,
    TS0,
    Sim,
    book_ev,
    by_token,
    engine_cfg,
    legacy_pc_ev,
    levels,
    live_from,
    pc_entry,
    pc_ev,
    tok,
    top,
    trade_ev,
)

A, B, C, D = tok(1), tok(2), tok(3), tok(4)
FOREIGN = tok(999)  # desired by no one


LIVE_TOP = ("0.49", "200", "0.51", "150")  # the top of unit_helpers' default snapshot


# ---- item 3: only a token's own events are its socket's data ------------------------------------


def noise(k: int) -> list[dict[str, Any]]:
    """What a socket that stopped delivering its own books may still relay: venue-wide broadcasts,
    unknown event types (even naming one of its tokens), and events for assets it does not carry
    (here C, which lives on another socket, and an asset nobody desired)."""
    return [
        {"event_type": "new_market", "market": f"0xnew{k}", "assets_ids": [tok(500 + k)], "active": True},
        {
            "event_type": "market_resolved",
            "market": "0xother",
            "assets_ids": [FOREIGN],
            "winning_asset_id": FOREIGN,
        },
        {"event_type": "brand_new_feature", "asset_id": A},
        book_ev(C),
        pc_ev([pc_entry(C, "0.3", str(k), "BUY"), pc_entry(FOREIGN, "0.3", "1", "BUY")]),
        trade_ev(FOREIGN, "0.5", "1", "BUY"),
    ]


def busy_socket_then_only_noise(s: Sim) -> int:
    """A (busy: an event a second until T0+20) and quiet B share a socket; C has its own. From
    T0+21 A's socket relays only noise, every second."""
    s.start_live([A, B, C])
    conn = s.conn_of(A)
    assert s.conn_of(B) == conn and s.conn_of(C) != conn
    for k in range(1, 21):
        s.tick_at(T0 + k)
        s.frame(conn, legacy_pc_ev(A, [("0.3", "BUY", str(k))]))
    return conn


def test_a_socket_relaying_only_broadcasts_is_judged_silent_and_replaced() -> None:
    s = Sim(engine_cfg(max_tokens_per_conn=2))
    conn = busy_socket_then_only_noise(s)
    other = s.conn_of(C)
    data_at = s.engine.conns[conn].last_data_at
    assert data_at == T0 + 20
    for k in range(21, 40):
        s.tick_at(T0 + k)
        s.frame(conn, *noise(k))
        assert s.engine.conns[conn].last_data_at == data_at  # noise never resets the silence clock
    assert s.stat("probes", "sent") == 0
    # 20 of its 1 s gaps without its own data: A (overdue) goes stale and is the probe
    writes = by_token(s.tick_at(T0 + 40))
    assert (writes[A].fields["status"], writes[A].fields["reason"]) == ("stale", "silence_suspected")
    assert s.stat("probes", "sent") == 1
    for k in range(41, 50):  # noise does not answer the probe
        s.tick_at(T0 + k)
        s.frame(conn, *noise(k))
    assert s.stat("probes", "failed") == 0
    assert s.engine.conns[conn].probe_token == A
    writes = by_token(s.tick_at(T0 + 50))
    assert s.stat("probes", "failed") == 1
    assert s.stat("probes", "ok") == 0
    assert s.stat("reconnects", "silence") == 1
    assert (writes[A].fields["status"], writes[A].fields["reason"]) == ("stale", "silence")
    assert (writes[B].fields["status"], writes[B].fields["reason"]) == ("stale", "silence")
    # C's socket is untouched, and the noise was counted for what it is
    assert s.status(C) == "live" and s.conn_of(C) == other
    assert s.stat("events", "new_market") == 28
    assert s.stat("events", "unknown") == 28


def test_own_token_events_in_a_noisy_frame_still_answer_the_probe() -> None:
    """The positive control: the same noise with one event of the socket's own in the frame is data."""
    s = Sim(engine_cfg(max_tokens_per_conn=2))
    conn = busy_socket_then_only_noise(s)
    s.tick_at(T0 + 40)
    assert s.engine.conns[conn].probe_token == A
    s.now = T0 + 41
    s.frame(conn, *noise(41), trade_ev(B, "0.5", "1", "SELL"))
    assert s.engine.conns[conn].last_data_at == T0 + 41
    assert s.stat("probes", "ok") == 1
    assert s.engine.conns[conn].probe_token is None
    s.run_for(20)
    assert s.stat("reconnects", "silence") == 0


def test_noise_never_feeds_the_socket_gap_estimate() -> None:
    s = Sim(engine_cfg(max_tokens_per_conn=2))
    conn = busy_socket_then_only_noise(s)
    gap = s.engine.conns[conn].gap_ewma
    assert gap == pytest.approx(1.0)
    s.now = T0 + 20.01
    s.frame(conn, *noise(1))
    s.now = T0 + 20.02
    s.frame(conn, *noise(2))
    assert s.engine.conns[conn].gap_ewma == gap
    assert s.engine.conns[conn].last_data_at == T0 + 20


# ---- item 5: each price_change entry stands alone -------------------------------------------------


BAD_ENTRIES = [
    pytest.param({"price": "1.5", "size": "1", "side": "BUY"}, "bad_price", id="price>1"),
    pytest.param({"price": "0.4x", "size": "1", "side": "BUY"}, "bad_price", id="price-garbage"),
    pytest.param({"size": "1", "side": "BUY"}, "bad_price", id="price-missing"),
    pytest.param({"price": "0.4", "size": "-1", "side": "BUY"}, "bad_size", id="size<0"),
    pytest.param({"price": "0.4", "size": 5, "side": "BUY"}, "bad_size", id="size-number"),
    pytest.param({"price": "0.4", "size": "1", "side": "BID"}, "bad_side", id="side"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_ENTRIES)
def test_a_bad_entry_resyncs_its_token_and_costs_no_other_asset_its_update(
    bad: dict[str, Any], reason: str
) -> None:
    s = Sim(engine_cfg(rest_enabled=True))
    s.start_live([A, B])
    conn = s.conn_of(A)
    m = s.mark()
    s.now = T0 + 1
    writes = by_token(
        s.frame(
            conn,
            pc_ev(
                [
                    {"asset_id": A, "hash": "h", **bad},
                    pc_entry(B, "0.50", "12", "BUY", best_bid="0.50", best_ask="0.51"),
                ]
            ),
        )
    )
    # B's valid entry is applied and published as live
    assert top(writes[B].fields) == ("0.50", "12", "0.51", "150")
    assert (writes[B].fields["status"], writes[B].fields["source"]) == ("live", "price_change")
    # A's book missed an update: no longer vouched for, with the prices it had when live
    assert (writes[A].fields["status"], writes[A].fields["reason"]) == ("resyncing", "bad_entry")
    assert top(writes[A].fields) == LIVE_TOP
    assert writes[A].fields["updated_at"] == str(TS0)  # nothing confirmed it
    assert s.stat("parse_errors", reason) == 1
    # reseeded at once: a fresh WS book asked for, and its book over REST
    assert s.ops(m) == [(conn, "unsubscribe", [A]), (conn, "subscribe", [A])]
    assert s.stat("redrives", "bad_entry") == 1
    assert [a.tokens for _, a in s.actions[m:] if isinstance(a, RestFetch)] == [[A]]
    # the snapshot settles it
    s.now = T0 + 1.1
    (w,) = s.frame(conn, book_ev(A, [("0.47", "3")], [("0.53", "4")]))
    assert (w.fields["status"], top(w.fields)) == ("live", ("0.47", "3", "0.53", "4"))


def test_a_bad_entry_is_reseeded_by_a_rest_book_not_older_than_it() -> None:
    """The REST book asked for at once makes the token live again, unless it predates the entry
    the book missed (then it cannot contain that change, and the WS book must settle it)."""
    s = Sim(engine_cfg(rest_enabled=True))
    s.start_live([A])
    conn = s.conn_of(A)
    m = s.mark()
    s.now = T0 + 1
    (w,) = s.frame(conn, pc_ev([pc_entry(A, "0.49", "-7", "BUY")], ts=TS0 + 500))
    assert (w.fields["status"], w.fields["reason"], w.fields["ts"]) == (
        "resyncing",
        "bad_entry",
        str(TS0 + 500),
    )
    (req,) = [a for _, a in s.actions[m:] if isinstance(a, RestFetch)]
    s.now = T0 + 1.2
    older = rest_summary([("0.47", "9")], [("0.53", "8")], TS0 + 499)
    assert s.rest(req.request_id, [older]) == []
    assert s.status(A) == "resyncing"
    s.tick_at(T0 + 6)  # no book within RESYNC_WAIT_S: both asked for again
    (again,) = [a for _, a in s.actions[m:] if isinstance(a, RestFetch) and a is not req]
    (w,) = s.rest(again.request_id, [rest_summary([("0.47", "9")], [("0.53", "8")], TS0 + 500)])
    assert live_from(w) == ("live", "rest", ("0.47", "9", "0.53", "8"))
    assert w.fields["updated_at"] == str(TS0 + 6000)


def test_a_bad_entry_among_good_ones_of_the_same_token_still_resyncs_it() -> None:
    s = Sim()
    s.start_live([A])
    conn = s.conn_of(A)
    s.now = T0 + 1
    (w,) = s.frame(
        conn,
        pc_ev(
            [
                pc_entry(A, "0.50", "7", "BUY", best_bid="0.50", best_ask="0.51"),
                pc_entry(A, "0.52", "NaN", "SELL", best_bid="0.50", best_ask="0.51"),
            ]
        ),
    )
    assert (w.fields["status"], w.fields["reason"]) == ("resyncing", "bad_entry")
    assert top(w.fields) == LIVE_TOP  # the good entry went into an untrusted book: not shown
    assert w.fields["updated_at"] == str(TS0)
    assert s.stat("parse_errors", "bad_size") == 1


def test_bad_entries_in_the_legacy_schemas_resync_their_asset() -> None:
    s = Sim()
    s.start_live([A, B, C])
    conn = s.conn_of(A)
    writes = by_token(
        s.frame(
            conn,
            legacy_pc_ev(A, [("0.45", "BUY", "1"), ("0.55", "SELL", "?")]),
            {"event_type": "price_change", "asset_id": B, "market": "0xmarket", "changes": "x"},
            {"event_type": "price_change", "asset_id": C, "price": "2", "side": "BUY", "size": "1"},
        )
    )
    for token in (A, B, C):
        assert (writes[token].fields["status"], writes[token].fields["reason"]) == ("resyncing", "bad_entry")
    assert (s.stat("parse_errors", "bad_size"), s.stat("parse_errors", "bad_price_change")) == (1, 1)
    assert s.stat("parse_errors", "bad_price") == 1


def test_an_entry_naming_no_asset_resyncs_the_tokens_of_its_market_on_that_socket() -> None:
    s = Sim()
    s.desired([A, B, C])
    s.tick()
    conn = s.conn_of(A)
    s.frame(conn, book_ev(A, market="0xm1"), book_ev(B, market="0xm1"), book_ev(C, market="0xm2"))
    writes = by_token(
        s.frame(
            conn,
            {
                "event_type": "price_change",
                "market": "0xm1",
                "price_changes": [{"price": "0.4", "size": "1", "side": "BUY"}],
            },
        )
    )
    assert sorted(writes) == sorted([A, B])
    assert {w.fields["reason"] for w in writes.values()} == {"bad_entry"}
    assert s.status(C) == "live"
    assert s.stat("parse_errors", "bad_price_change") == 1
    # a whole event without entries, naming the market, does the same
    s.frame(conn, book_ev(A, market="0xm1"), book_ev(B, market="0xm1"))
    writes = by_token(s.frame(conn, {"event_type": "price_change", "market": "0xm2", "price_changes": 7}))
    assert list(writes) == [C]
    assert (writes[C].fields["status"], writes[C].fields["reason"]) == ("resyncing", "bad_entry")
    assert s.status(A) == s.status(B) == "live"


def test_a_bad_entry_for_another_sockets_asset_is_not_ours() -> None:
    s = Sim(engine_cfg(max_tokens_per_conn=1))
    s.start_live([A, B])
    conn = s.conn_of(A)
    assert s.conn_of(B) != conn
    (w,) = s.frame(
        conn,
        pc_ev(
            [
                pc_entry(B, "x", "1", "BUY"),
                pc_entry(FOREIGN, "0.1", "1", "?"),
                pc_entry(A, "0.50", "1", "BUY", best_bid="0.50", best_ask="0.51"),
            ]
        ),
    )
    assert w.token == A and w.fields["status"] == "live"
    assert s.status(B) == "live"
    assert sum(v for (n, _), v in s.engine.stats.items() if n == "parse_errors") == 0
    assert s.stat("events", "filtered") == 2


def test_a_bad_entry_for_a_pending_token_changes_nothing_but_the_count() -> None:
    s = Sim()
    s.desired([A])
    s.tick()
    m = s.mark()
    assert s.frame(s.conn_of(A), pc_ev([pc_entry(A, "0.4", "1", "NOPE")])) == []
    assert s.status(A) == "pending"
    assert s.ops(m) == []
    assert s.stat("parse_errors", "bad_side") == 1


# ---- item 6: malformed is not empty -------------------------------------------------------------


@pytest.mark.parametrize(
    "sides",
    [
        pytest.param({"bids": levels([("0.3", "5")])}, id="asks-missing"),
        pytest.param({"asks": levels([("0.7", "5")])}, id="bids-missing"),
        pytest.param({"bids": levels([("0.3", "5")]), "asks": None}, id="asks-null"),
        pytest.param({"bids": "lots", "asks": []}, id="bids-string"),
        pytest.param(
            {"buys": levels([("0.3", "5")]), "sells": {"price": "0.7", "size": "1"}}, id="sells-dict"
        ),
        pytest.param({}, id="no-sides"),
    ],
)
def test_a_book_with_a_missing_or_non_list_side_is_not_applied(sides: dict[str, Any]) -> None:
    s = Sim()
    s.start_live([A])
    conn = s.conn_of(A)
    s.now = T0 + 1
    event = {"event_type": "book", "asset_id": A, "market": "0xmarket", "timestamp": str(TS0 + 1), **sides}
    assert s.frame(conn, event) == []
    assert s.stat("parse_errors", "bad_book") == 1
    assert s.engine.tokens[A].book.top() == LIVE_TOP
    assert s.status(A) == "live"


def test_only_an_explicit_empty_list_empties_a_side() -> None:
    s = Sim()
    s.start_live([A])
    (w,) = s.frame(s.conn_of(A), book_ev(A, [("0.3", "5")], []))
    assert top(w.fields) == ("0.3", "5", "", "")
    (w,) = s.frame(s.conn_of(A), book_ev(A, [], [("0.7", "2")], names=("buys", "sells")))
    assert top(w.fields) == ("", "", "0.7", "2")
    assert s.stat("parse_errors", "bad_book") == 0


def test_a_rest_summary_missing_a_side_is_no_evidence_either_way() -> None:
    s = Sim(engine_cfg(rest_enabled=True))
    s.start_live([A])
    s.tick_at(T0 + 30)
    (req,) = s.rest_requests
    m = s.mark()
    summary = {"asset_id": A, "timestamp": str(TS0 + 29_000), "bids": levels([("0.49", "200")])}
    assert s.rest(req.request_id, [summary]) == []
    assert s.stat("parse_errors", "rest_bad_book") == 1
    assert s.engine.tokens[A].book.top() == LIVE_TOP
    assert s.ops(m) == []


# ---- item 7: nothing but a snapshot makes prices -----------------------------------------------


def test_a_pending_token_shows_no_prices_whatever_deltas_arrive() -> None:
    s = Sim()
    s.desired([A])
    s.tick()
    conn = s.conn_of(A)
    s.frame(conn, legacy_pc_ev(A, [("0.30", "BUY", "10"), ("0.70", "SELL", "20")]))
    (w,) = s.frame(conn, trade_ev(A, "0.5", "1", "BUY"))  # any write of the token
    assert w.fields["status"] == "pending"
    assert top(w.fields) == ("", "", "", "")
    assert w.fields["updated_at"] == ""
    (w,) = s.frame(conn, book_ev(A))
    assert (w.fields["status"], top(w.fields)) == ("live", LIVE_TOP)


def test_a_stale_token_keeps_the_prices_it_had_when_live() -> None:
    s = Sim(engine_cfg(max_tokens_per_conn=2))
    conn = busy_socket_then_only_noise(s)  # A's last live top: bid 0.49 / 200 (deltas below it)
    writes = by_token(s.tick_at(T0 + 40))
    assert (writes[A].fields["status"], top(writes[A].fields)) == ("stale", LIVE_TOP)
    # the socket is still open: deltas for the stale token are applied to its book, never shown
    s.now = T0 + 40.5
    assert s.frame(conn, legacy_pc_ev(A, [("0.495", "BUY", "9"), ("0.50", "SELL", "1")])) == []
    (w,) = s.frame(conn, trade_ev(A, "0.5", "1", "BUY"))
    assert (w.fields["status"], top(w.fields)) == ("stale", LIVE_TOP)
    s.desired([B, C])  # and so does its final unsubscribed write
    (final,) = [x for x in s.token_writes(A) if x.fields["status"] == "unsubscribed"]
    assert top(final.fields) == LIVE_TOP


def test_a_resyncing_token_keeps_its_last_live_prices_until_a_snapshot() -> None:
    s = Sim()
    s.start_live([A])
    conn = s.conn_of(A)
    s.now = T0 + 1
    (w,) = s.frame(conn, pc_ev([pc_entry(A, "0.495", "5", "BUY", best_bid="0.495", best_ask="0.51")]))
    live_top = ("0.495", "5", "0.51", "150")
    assert (w.fields["status"], top(w.fields)) == ("live", live_top)
    s.frame(conn, legacy_pc_ev(A, [("0.51", "SELL", "1"), ("0.52", "SELL", "7")]))  # touches the ask
    s.frame(conn, pc_ev([pc_entry(A, "0.49", "NaN", "BUY")]))  # a bad entry: resyncing
    assert s.status(A) == "resyncing"
    # deltas into the untrusted book; a trade forces a write
    s.frame(conn, legacy_pc_ev(A, [("0.60", "BUY", "10"), ("0.40", "SELL", "10")]))
    (w,) = s.frame(conn, trade_ev(A, "0.5", "1", "BUY"))
    assert w.fields["status"] == "resyncing"
    assert top(w.fields) == ("0.495", "5", "0.51", "1")  # as last shown live, not (0.60, 0.40)
    (w,) = s.frame(conn, book_ev(A, [("0.44", "1")], [("0.56", "2")]))
    assert (w.fields["status"], top(w.fields)) == ("live", ("0.44", "1", "0.56", "2"))


def test_shutdown_and_a_lost_socket_keep_the_last_live_prices() -> None:
    s = Sim()
    s.start_live([A])
    conn = s.conn_of(A)
    (w,) = s.frame(conn, legacy_pc_ev(A, [("0.495", "BUY", "3")]))
    assert top(w.fields) == ("0.495", "3", "0.51", "150")
    (w,) = s.close_from_server(conn)
    assert (w.fields["status"], top(w.fields)) == ("stale", ("0.495", "3", "0.51", "150"))
    s.engine.shutdown()
    (w,) = s.pump()
    assert (w.fields["reason"], top(w.fields)) == ("sidecar_stopped", ("0.495", "3", "0.51", "150"))


def test_a_resolved_token_takes_prices_from_snapshots_only() -> None:
    s = Sim()
    s.start_live([A])
    conn = s.conn_of(A)
    s.frame(conn, {"event_type": "market_resolved", "assets_ids": [A], "winning_asset_id": A})
    s.frame(conn, legacy_pc_ev(A, [("0.99", "BUY", "1")]))
    (w,) = s.frame(conn, trade_ev(A, "0.99", "1", "BUY"))
    assert (w.fields["status"], top(w.fields)) == ("resolved", LIVE_TOP)
    (w,) = s.frame(conn, book_ev(A, [("0.999", "5")], []))
    assert (w.fields["status"], top(w.fields)) == ("resolved", ("0.999", "5", "", ""))


# ---- item 13: REST size mismatch, stall redrive ---------------------------------------------------


def rest_summary(bids: list[tuple[str, str]], asks: list[tuple[str, str]], ts: int) -> dict[str, Any]:
    return {
        "asset_id": A,
        "market": "0xmarket",
        "timestamp": str(ts),
        "bids": levels(bids),
        "asks": levels(asks),
    }


@pytest.mark.parametrize(
    ("bids", "asks", "expected_top"),
    [
        pytest.param([("0.49", "201"), ("0.48", "100")], [("0.51", "150")],
                     ("0.49", "201", "0.51", "150"), id="bid"),
        pytest.param([("0.49", "200")], [("0.51", "149.99"), ("0.52", "3")],
                     ("0.49", "200", "0.51", "149.99"), id="ask"),
    ],
)  # fmt: skip
def test_a_rest_book_with_the_same_best_prices_but_another_best_size_is_a_mismatch(
    bids: list[tuple[str, str]], asks: list[tuple[str, str]], expected_top: tuple[str, ...]
) -> None:
    s = Sim(engine_cfg(rest_enabled=True))
    s.start_live([A])
    conn = s.conn_of(A)
    s.tick_at(T0 + 30)
    (req,) = s.rest_requests
    m = s.mark()
    (w,) = s.rest(req.request_id, [rest_summary(bids, asks, TS0 + 29_000)])
    assert s.stat("rest_confirm", "mismatch") == 1
    assert s.stat("rest_confirm", "match") == 0
    assert w.publish and (w.fields["source"], top(w.fields)) == ("rest", expected_top)
    assert s.ops(m) == [(conn, "unsubscribe", [A]), (conn, "subscribe", [A])]


def test_a_rest_book_with_equal_sizes_in_other_spellings_is_a_match() -> None:
    s = Sim(engine_cfg(rest_enabled=True))
    s.start_live([A])
    s.tick_at(T0 + 30)
    (req,) = s.rest_requests
    writes = s.rest(req.request_id, [rest_summary([("0.490", "200.0")], [("0.51", "150.00")], TS0 + 29_000)])
    assert [(w.token, w.publish) for w in writes] == [(A, False)]
    assert s.stat("rest_confirm", "match") == 1


def test_a_stalled_token_on_a_flowing_socket_is_redriven_with_backoff() -> None:
    """B had a norm (an event a second) and stops while A keeps the socket flowing: after 30 of
    its gaps (never under 30 s) it is redriven, then again only after 60 s, 120 s, ..."""
    s = Sim(engine_cfg(silence_max_s=120.0))
    s.start_live([A, B])
    conn = s.conn_of(A)
    for k in range(1, 21):
        s.tick_at(T0 + k)
        s.frame(conn, legacy_pc_ev(A, [("0.3", "BUY", str(k))]), legacy_pc_ev(B, [("0.3", "BUY", str(k))]))
    assert s.engine.tokens[B].event_gap == pytest.approx(1.0)
    redrives: list[float] = []
    for k in range(21, 200):
        m = s.mark()
        s.tick_at(T0 + k)
        s.frame(conn, legacy_pc_ev(A, [("0.3", "BUY", str(k))]))  # only A talks
        if (conn, "subscribe", [B]) in s.ops(m):
            redrives.append(s.now - T0)
    # idle > 30 s after its last event at T0+20 -> T0+51; then backoff 60 s, then 120 s
    assert redrives == [51, 111]
    assert s.stat("redrives", "stall") == 2
    assert s.status(B) == "live"  # its socket flows: a stall is redriven, not judged stale
    assert all(ids != [A] for _, _, ids in s.ops())  # the busy token is never redriven


def test_a_crossed_rest_book_that_disagrees_is_never_shown_live() -> None:
    """A quiet confirmation whose REST book differs but is itself crossed: neither book can be
    shown as live, so the token resyncs and keeps the prices it last showed as live."""
    s = Sim(engine_cfg(rest_enabled=True))
    s.start_live([A])
    s.tick_at(T0 + 30)
    (req,) = s.rest_requests
    (w,) = s.rest(req.request_id, [rest_summary([("0.60", "5")], [("0.40", "5")], TS0 + 29_000)])
    assert (w.fields["status"], w.fields["reason"]) == ("resyncing", "rest_mismatch")
    assert top(w.fields) == ("0.49", "200", "0.51", "150")
    assert s.stat("rest_confirm", "crossed") == 1
    assert s.stat("rest_confirm", "mismatch") == 0
