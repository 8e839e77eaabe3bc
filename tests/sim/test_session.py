"""The exchange session alone (no sockets): every wire rule as a decision on one frame."""

from __future__ import annotations

import orjson
import pytest
from pmsim import messages
from pmsim.session import INVALID_SUBSCRIPTION, TOO_MANY_ASSETS, CloseSocket, Kind, Reply, Session

A, B, C = "101", "202", "303"


def frame(obj: object) -> str:
    return orjson.dumps(obj).decode()


def greeted(*ids: str, **flags: bool) -> Session:
    session = Session()
    reply = session.receive(frame(messages.subscription(list(ids), **flags)))
    assert reply.kind is Kind.SUBSCRIPTION and not reply.violations
    return session


@pytest.mark.parametrize("first", ["PING", "not json", "{}", '{"type": "user", "assets_ids": []}', "[1, 2]"])
def test_a_first_frame_that_is_not_a_subscription_closes_with_1008(first: str) -> None:
    session = Session()
    reply = session.receive(first)
    assert reply.close == INVALID_SUBSCRIPTION == CloseSocket(1008, "invalid subscription payload")
    assert reply.kind is Kind.REFUSED and len(reply.violations) == 1
    assert "first frame" in reply.violations[0]
    assert not session.greeted and session.subscribed == set()
    # The socket is closing: nothing after it counts, not even a valid subscription.
    assert session.receive(frame(messages.subscription([A]))) == Reply(Kind.IGNORED)


def test_the_subscription_adds_its_ids_in_order_and_asks_for_their_books() -> None:
    session = Session()
    reply = session.receive(frame({"type": "Market", "assets_ids": [B, A]}))  # type is case-insensitive
    assert reply == Reply(Kind.SUBSCRIPTION, added=(B, A), dump=True)
    assert session.greeted and session.subscribed == {A, B}
    assert not session.custom  # custom_feature_enabled defaults to false
    assert session.receive(frame(messages.subscription([C], initial_dump=False))).kind is Kind.REFUSED


def test_initial_dump_false_and_an_empty_subscription_are_accepted() -> None:
    session = Session()
    reply = session.receive(frame({"type": "market", "assets_ids": [], "initial_dump": False}))
    assert reply == Reply(Kind.SUBSCRIPTION, added=(), dump=False)
    assert session.greeted


def test_custom_features_follow_the_flag_unless_the_server_has_none() -> None:
    assert greeted(A).custom  # messages.subscription turns them on
    assert not greeted(A, custom_feature_enabled=False).custom
    off = Session(custom_features=False)
    off.receive(frame(messages.subscription([A])))
    assert not off.custom
    session = greeted(A)
    session.receive(frame({"operation": "subscribe", "assets_ids": [B], "custom_feature_enabled": False}))
    assert not session.custom


def test_ping_is_answered_with_pong_and_counted() -> None:
    session = greeted(A)
    assert session.receive("PING") == Reply(Kind.PING, answer=messages.PONG)
    session.receive("PING")
    assert session.pings == 2


def test_a_second_subscription_frame_is_an_invalid_operation() -> None:
    session = greeted(A)
    reply = session.receive(frame(messages.subscription([B])))
    assert (reply.kind, reply.answer, reply.added) == (Kind.REFUSED, "INVALID OPERATION", ())
    assert "second subscription" in reply.violations[0]
    assert session.subscribed == {A}


@pytest.mark.parametrize(
    "bad",
    [
        {"operation": "replace", "assets_ids": [B]},
        {"operation": "subscribe", "assets_ids": B},
        {"assets_ids": [B]},
    ],
)
def test_a_bad_operation_frame_is_an_invalid_operation(bad: dict[str, object]) -> None:
    session = greeted(A)
    reply = session.receive(frame(bad))
    assert (reply.kind, reply.answer) == (Kind.REFUSED, "INVALID OPERATION")
    assert len(reply.violations) == 1 and session.subscribed == {A}


def test_garbage_after_the_subscription_is_recorded_and_not_answered() -> None:
    session = greeted(A)
    reply = session.receive("hello")
    assert (reply.kind, reply.answer, reply.close) == (Kind.IGNORED, None, None)
    assert reply.violations == ("unexpected frame 'hello'",)


def test_subscribe_adds_only_new_ids_and_a_repeat_is_refused() -> None:
    session = greeted(A)
    reply = session.receive(frame({"operation": "SUBSCRIBE", "assets_ids": [A, B]}))
    assert (reply.kind, reply.added, reply.dump) == (Kind.SUBSCRIBE, (B,), True)
    assert reply.violations == (f"re-subscribe of already subscribed asset {A}",)
    again = session.receive(frame(messages.operation("subscribe", [A, B])))
    assert (again.added, again.answer, len(again.violations)) == ((), "NO NEW ASSETS", 2)


def test_unsubscribe_removes_and_unmutes_and_an_unknown_id_is_a_violation() -> None:
    session = greeted(A, B)
    session.mute(A)
    reply = session.receive(frame(messages.operation("unsubscribe", [A, C])))
    assert (reply.kind, reply.removed) == (Kind.UNSUBSCRIBE, (A,))
    assert reply.violations == (f"unsubscribe of asset {C} that is not subscribed on the socket",)
    assert session.subscribed == {B} and session.muted == set()


def test_invalid_and_repeated_ids_are_skipped_one_violation_each() -> None:
    session = Session()
    reply = session.receive(frame(messages.subscription([A, "0xdeadbeef", 12345, "1" * 101, A])))  # type: ignore[list-item]
    assert reply.added == (A,) and len(reply.violations) == 4
    assert reply.violations[-1] == f"asset {A} twice in one frame"
    assert session.subscribed == {A}


def test_more_than_100_ids_close_the_socket_in_strict_mode_only() -> None:
    ids = [str(10**20 + i) for i in range(101)]
    strict = Session()
    reply = strict.receive(frame(messages.subscription(ids)))
    assert reply.close == TOO_MANY_ASSETS == CloseSocket(1008, "too many assets")
    assert reply.violations == ("subscription with 101 ids (max 100)",) and strict.subscribed == set()
    hundred = greeted(*ids[:100])
    assert hundred.receive(frame(messages.operation("subscribe", ids[100:] * 101))).close == TOO_MANY_ASSETS
    lax = Session(strict=False)
    assert len(lax.receive(frame(messages.subscription(ids))).added) == 101


def test_a_binary_frame_is_a_violation_and_still_applied() -> None:
    session = Session()
    reply = session.receive(frame(messages.subscription([A])), binary=True)
    assert reply.added == (A,) and len(reply.violations) == 1 and "binary" in reply.violations[0]


def test_muted_and_custom_only_events_reach_only_the_sockets_that_get_them() -> None:
    plain, custom = greeted(A, B, custom_feature_enabled=False), greeted(A)
    assert (
        plain.receives(A) and not plain.receives(A, custom_only=True) and custom.receives(A, custom_only=True)
    )
    assert not plain.receives(C)
    plain.mute(A)
    plain.mute(C)  # not subscribed: nothing to mute
    assert not plain.receives(A) and plain.receives(B) and plain.muted == {A}
    assert custom.gets_broadcasts and not plain.gets_broadcasts
    assert not Session().gets_broadcasts  # not subscribed yet


def test_a_price_change_shows_the_whole_market_unless_a_token_is_muted() -> None:
    session = greeted(A)
    assert session.shown({A, B}) == {A, B}  # the sibling leaks, as on the live server
    assert session.shown({B, C}) == set()  # nothing it holds: not sent at all
    session.mute(A)
    assert session.shown({A, B}) == set()  # only a muted token of its own: nothing
    both = greeted(A, B)
    both.mute(A)
    assert both.shown({A, B, C}) == {B, C}
