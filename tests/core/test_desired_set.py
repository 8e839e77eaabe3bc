"""sidecar.core.desired_set: the desired set applied (garbage counted, cap, removals), driven the way
the shell drives the engine (tests.core.harness.Sim)."""

from __future__ import annotations

from typing import Any

from sidecar.core.engine import Close
from tests.core.harness import (
    TS0,
    Sim,
    book_ev,
    encode,
    engine_cfg,
    subscribed_ids,
    tok,
    top,
)

A, B, C = tok(1), tok(2), tok(3)


# ---- desired set -------------------------------------------------------------------------------


def test_invalid_desired_members_are_counted_and_never_sent() -> None:
    s = Sim()
    hundred = "9" * 100
    members: list[Any] = [
        A,
        B.encode(),  # the desired reader hands over bytes, as read from Redis
        hundred,
        f"  {A} ",  # padded duplicates: normalised, sent once
        A + "\n",
        b" " + B.encode(),
        "abc",
        "12a",
        "9" * 101,
        "",
        b"",
        b"\xff\xfe",
        "   ",
        "-5",
        "1.5",
        "0x1f",
        "\u0661\u0662",
        None,
        123,
    ]
    writes = s.desired(members)
    assert s.engine.invalid_desired == 13
    assert s.engine.summary(TS0, "t")["invalid_desired"] == "13"
    assert sorted(s.engine.tokens) == sorted([A, B, hundred])
    assert sorted(w.token for w in writes) == sorted([A, B, hundred])
    s.tick()
    assert sorted(subscribed_ids(s)) == sorted([A, B, hundred])  # each exactly once
    for send in s.sends():
        assert " " not in send.text and "abc" not in send.text and "9" * 101 not in send.text
    s.desired([A, B, hundred])
    assert s.engine.invalid_desired == 0


def test_desired_cap_keeps_existing_tokens_first() -> None:
    s = Sim(engine_cfg(max_tokens=3))
    s.desired([tok(i) for i in range(5, 0, -1)])
    assert sorted(s.engine.tokens) == [tok(1), tok(2), tok(3)]
    assert s.engine.capped_desired == 2
    assert s.engine.summary(TS0, "t")["capped_desired"] == "2"
    s.tick()
    assert sorted(subscribed_ids(s)) == [tok(1), tok(2), tok(3)]
    s.desired([tok(4), tok(5)])
    assert s.engine.capped_desired == 0
    m = s.mark()
    s.desired([tok(i) for i in range(1, 7)])
    # the two already followed stay; only the lowest new one fits
    assert sorted(s.engine.tokens) == [tok(1), tok(4), tok(5)]
    assert s.engine.capped_desired == 3
    conn = s.conn_of(tok(4))
    assert s.ops(m) == [(conn, "subscribe", [tok(1)])]


def test_removing_tokens_unsubscribes_and_writes_a_final_quote() -> None:
    s = Sim()
    s.start_live([A, B])
    conn = s.conn_of(A)
    seq_before = int(s.last(A)["seq"])
    m = s.mark()
    writes = s.desired([B])
    assert s.ops(m) == [(conn, "unsubscribe", [A])]
    (final,) = writes
    assert final.token == A
    assert final.publish is True
    assert final.expire_s == 300
    assert final.fields["status"] == "unsubscribed"
    assert final.fields["reason"] == "removed_from_desired"
    assert int(final.fields["seq"]) == seq_before + 1
    assert top(final.fields) == ("0.49", "200", "0.51", "150")
    assert A not in s.engine.tokens
    assert s.closes(m) == []
    # the last token leaves: its socket is closed, and nothing more is sent to it
    m = s.mark()
    (final_b,) = s.desired([])
    assert final_b.token == B and final_b.fields["status"] == "unsubscribed"
    assert s.closes(m) == [Close(conn, "empty")]
    s.run_for(60)
    assert s.sends(m) == []
    assert s.opens(m) == []
    # a frame that was still in flight is not applied anywhere
    assert s.raw(conn, encode(book_ev(B))) == []
    assert s.stat("frames", "orphan") == 1
