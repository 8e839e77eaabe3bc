"""The pure half of the client: parsing a quote hash, the alive rule, usable(), token checks."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.client.quote import Quote, check_tokens, quote_from_fields

NOW_S = 1_800_000_000.0
TOKEN = "7132" * 18


def fields(**over: str) -> dict[str, str]:
    base = {
        "bid": "0.511",
        "ask": "0.514",
        "bid_size": "120.5",
        "ask_size": "33",
        "ts": "1799999999000",
        "updated_at": str(int((NOW_S - 2.5) * 1000)),
        "seq": "1799999990000001",
        "epoch": "e1",
        "status": "live",
        "reason": "",
        "source": "book",
        "market": "0xabc",
        "tick_size": "0.001",
        "last_trade_price": "0.512",
        "min_order_size": "5",
        "neg_risk": "false",
    }
    base.update(over)
    return base


def test_a_live_hash_parses_into_typed_fields() -> None:
    q = quote_from_fields(TOKEN, fields(), "e1", NOW_S)
    assert q == Quote(
        token=TOKEN,
        bid=0.511,
        ask=0.514,
        bid_size=120.5,
        ask_size=33.0,
        bid_str="0.511",
        ask_str="0.514",
        status="live",
        reason="",
        source="book",
        seq=1799999990000001,
        epoch="e1",
        ts_ms=1799999999000,
        updated_at_ms=int((NOW_S - 2.5) * 1000),
        tick_size=0.001,
        market="0xabc",
        last_trade_price=0.512,
        alive=True,
        min_order_size=5.0,
        neg_risk=False,
    )
    assert q.age_s == pytest.approx(2.5, abs=0.001)
    assert q.mid == pytest.approx(0.5125)


def test_an_empty_side_is_none_never_zero() -> None:
    q = quote_from_fields(TOKEN, fields(bid="", bid_size="", ask="0.99", ask_size="5"), "e1", NOW_S)
    assert q is not None
    assert q.bid is None and q.bid_size is None and q.bid_str == ""
    assert q.ask == 0.99 and q.ask_size == 5.0
    assert q.mid is None


def test_a_pending_hash_has_no_prices_age_or_trade() -> None:
    raw = fields(bid="", ask="", bid_size="", ask_size="", updated_at="", ts="", status="pending")
    del raw["last_trade_price"], raw["tick_size"], raw["market"], raw["min_order_size"], raw["neg_risk"]
    q = quote_from_fields(TOKEN, raw, "e1", NOW_S)
    assert q is not None
    assert (q.bid, q.ask, q.updated_at_ms, q.age_s, q.ts_ms) == (None, None, None, None, None)
    assert (q.tick_size, q.market, q.last_trade_price) == (None, None, None)
    assert (q.min_order_size, q.neg_risk) == (None, None)
    assert not q.usable(3600, now_s=NOW_S)


def test_a_missing_hash_is_no_quote() -> None:
    assert quote_from_fields(TOKEN, {}, "e1", NOW_S) is None


@pytest.mark.parametrize(
    ("alive_value", "epoch", "alive"),
    [("e1", "e1", True), (None, "e1", False), ("e2", "e1", False), ("", "", False), (None, "", False)],
)
def test_alive_means_the_writing_run_still_runs(alive_value: str | None, epoch: str, alive: bool) -> None:
    q = quote_from_fields(TOKEN, fields(epoch=epoch), alive_value, NOW_S)
    assert q is not None and q.alive is alive
    assert q.usable(60, now_s=NOW_S) is alive


@pytest.mark.parametrize("status", ["pending", "resyncing", "stale", "resolved", "unsubscribed", ""])
def test_only_live_is_usable(status: str) -> None:
    q = quote_from_fields(TOKEN, fields(status=status), "e1", NOW_S)
    assert q is not None and not q.usable(60, now_s=NOW_S)
    assert q.live is False


def test_usable_judges_age_now_strictly_below_the_limit() -> None:
    q = quote_from_fields(TOKEN, fields(updated_at=str(int(NOW_S * 1000) - 10_000)), "e1", NOW_S)
    assert q is not None
    assert q.usable(10.001, now_s=NOW_S)
    assert not q.usable(10.0, now_s=NOW_S)
    # The same quote held for longer stops being usable by itself.
    assert not q.usable(10.001, now_s=NOW_S + 0.01)
    assert q.age_at(NOW_S + 5) == pytest.approx(15.0)


def test_age_is_not_part_of_equality() -> None:
    a = quote_from_fields(TOKEN, fields(), "e1", NOW_S)
    b = quote_from_fields(TOKEN, fields(), "e1", NOW_S + 30)
    assert a == b and a is not None and b is not None and a.age_s != b.age_s
    assert a != quote_from_fields(TOKEN, fields(updated_at="1"), "e1", NOW_S)


def test_quote_is_frozen() -> None:
    q = quote_from_fields(TOKEN, fields(), "e1", NOW_S)
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.bid = 0.1  # type: ignore[misc,union-attr]


def test_check_tokens_strips_accepts_one_string_and_rejects_the_rest() -> None:
    assert check_tokens([" 12 ", "3"]) == ["12", "3"]
    assert check_tokens("123") == ["123"]
    assert check_tokens([]) == []
    assert check_tokens(["1" * 100]) == ["1" * 100]
    for bad in (["1" * 101], ["12a"], [""], ["0x12"], [12], ["1 2"], ["-1"]):
        with pytest.raises(ValueError, match="invalid token id"):
            check_tokens(bad)  # type: ignore[arg-type]


@given(st.text(alphabet="0123456789", min_size=1, max_size=100))
def test_every_digit_string_up_to_100_is_a_token(token: str) -> None:
    assert check_tokens([token]) == [token]


def test_client_imports_with_nothing_but_redis() -> None:
    code = (
        "import sys, sidecar.client; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('websocket', 'websockets', 'pydantic', 'pydantic_settings', 'prometheus_client', 'orjson')"
        " or m.startswith(('sidecar.core', 'sidecar.shell', 'sidecar.config'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("raw", "want"), [("true", True), ("false", False), ("", None), ("True", None), ("1", None)]
)
def test_neg_risk_is_the_sidecars_true_or_false_and_nothing_else(raw: str, want: bool | None) -> None:
    q = quote_from_fields(TOKEN, fields(neg_risk=raw, min_order_size="15"), "e1", NOW_S)
    assert q is not None
    assert q.neg_risk is want
    assert q.min_order_size == 15.0
