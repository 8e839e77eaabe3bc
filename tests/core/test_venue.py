"""The venue's state (sidecar/core/venue.py): judged from socket outcomes alone, one shared probe
while down, every token back without a burst when it returns. Pure: the clock is the test's."""

from __future__ import annotations

import itertools
import logging
import random
from typing import Any

import pytest

from sidecar.core.actions import Open
from sidecar.core.shards import CONNECTING
from sidecar.core.venue import PROBE_MAX_S, STABLE_S, Venue, VenueState
from tests.core.harness import T0, Sim, engine_cfg, tok

UP, DEGRADED, DOWN = VenueState.UP, VenueState.DEGRADED, VenueState.DOWN
AFTER = 3.0  # SIDECAR_VENUE_DOWN_AFTER_S in these tests
SPACING = 0.25  # SIDECAR_CONNECT_SPACING_S in these tests
TOKENS = [tok(i) for i in range(1, 7)]  # three shards of two


# ---- the judge alone ---------------------------------------------------------------------------------


def test_judge_up_degraded_down() -> None:
    v = Venue(0.0, 0)
    shards = [0, 1, 2]
    assert v.judge(shards, (), 10.0, AFTER) is UP
    v.shard_failed(0, 10.0)
    assert v.judge(shards, (), 10.0, AFTER) is DEGRADED
    v.shard_failed(1, 11.0)
    v.shard_failed(2, 12.0)
    assert v.judge(shards, (), 12.0 + AFTER - 0.01, AFTER) is DEGRADED  # all failing, not for long
    assert v.judge(shards, (), 12.0 + AFTER, AFTER) is DOWN  # counted from the last one to fail
    v.shard_failed(0, 50.0)  # failing again does not restart its clock
    assert v.failing[0] == 10.0
    assert v.judge([], (), 99.0, AFTER) is UP  # nothing desired: nothing to judge


def test_an_open_socket_spares_its_shard_until_the_venue_is_down() -> None:
    v = Venue(0.0, 0)
    for s in (0, 1):
        v.shard_failed(s, 0.0)
    assert v.judge([0, 1], [1], 10.0, AFTER) is DEGRADED  # shard 1 just reopened (not proven yet)
    v.state = DOWN
    # once down, only a proven socket (shard_works) brings it back: an open probe is not enough
    assert v.judge([0, 1], [1], 10.0, AFTER) is DOWN
    v.shard_works(1)
    assert v.judge([0, 1], [1], 10.0, AFTER) is DEGRADED
    v.shard_works(0)
    assert v.judge([0, 1], [0, 1], 10.0, AFTER) is UP


def test_probe_delay_grows_jittered_and_is_capped() -> None:
    v = Venue(0.0, 0)
    rng = random.Random(5)
    delays = [v.probe_failed(rng, 0.0, 0.5, 30.0) for _ in range(40)]
    caps = [min(PROBE_MAX_S, 0.5 * 2.0**k) for k in range(1, 41)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, caps, strict=True))  # never near 0: no storm
    assert len(set(delays)) == len(delays)  # jittered
    assert max(delays) > 0.9 * PROBE_MAX_S  # grew to the cap
    assert v.probes == 40 and v.probe_conn is None


# ---- the engine through an outage -------------------------------------------------------------------


class Exchange:
    """Drives a :class:`Sim` like the shell would: each Open is refused (venue down) or opened and
    answered with a book for every token its shard subscribes (venue up)."""

    def __init__(self, s: Sim) -> None:
        self.s = s
        self.down = False
        self.seen = 0
        self.open_times: list[float] = []
        self.refused = 0
        self.most_connecting = 0  # most sockets connecting at once while the venue was down

    def run(self, seconds: float, step: float = 0.05) -> None:
        s = self.s
        start = s.now
        for k in range(1, round(seconds / step) + 1):
            s.tick_at(start + k * step)
            self.answer()

    def answer(self) -> None:
        s = self.s
        opens = s.opens()[self.seen :]
        self.seen += len(opens)
        for o in opens:
            self.open_times.append(s.now)
            if self.down:
                self.most_connecting = max(
                    self.most_connecting, sum(1 for c in s.engine.conns.values() if c.state == CONNECTING)
                )
                self.refused += 1
                s.engine.on_connect_failed(o.conn_id, "http_503", s.now, 503)
                s.pump()
            else:
                self.open(o)

    def open(self, o: Open) -> None:
        s = self.s
        s.connect(o.conn_id)
        shard = s.engine.shards.shards[o.shard_id]
        s.frame(o.conn_id, *[s.snapshot(t) for t in sorted(shard.tokens)])

    def drop_all(self) -> None:
        self.down = True
        for conn_id in list(self.s.open_conns):
            self.s.close_from_server(conn_id, "reset")


def outage_sim(**overrides: Any) -> tuple[Sim, Exchange]:
    cfg = engine_cfg(
        max_tokens_per_conn=2,
        connect_spacing_s=SPACING,
        backoff_min_s=0.5,
        backoff_max_s=30.0,
        venue_down_after_s=AFTER,
        **overrides,
    )
    s = Sim(cfg, auto_open=False)
    x = Exchange(s)
    s.desired(TOKENS)
    x.run(2.0)
    assert all(s.status(t) == "live" for t in TOKENS)
    assert len(s.engine.shards) == 3
    assert s.engine.ctx.venue.state is UP
    return s, x


def venue_lines(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(words)]


def test_a_full_outage_is_down_in_seconds_probed_with_one_socket_and_returns_paced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    s, x = outage_sim()
    venue = s.engine.ctx.venue
    x.drop_all()
    lost_at = s.now
    x.run(AFTER - 0.5)
    assert venue.state is DEGRADED  # all failing, not yet for long
    x.run(1.0)
    assert venue.state is DOWN
    assert venue.since - lost_at <= AFTER + 0.5
    assert s.engine.summary(s.wall_ms, "v")["venue"] == "down"
    assert s.engine.summary(s.wall_ms, "v")["venue_since"] == str(venue.since_ms)
    assert {(s.status(t), s.engine.tokens[t].reason) for t in TOKENS} == {("stale", "venue_down")}
    assert s.last(TOKENS[0])["reason"] == "venue_down"  # written, not only held
    refused_before = x.refused
    down_at = s.now
    x.run(60.0)
    during = x.refused - refused_before
    # one socket at a time, every 2.5-5 s once the backoff is at its cap: about 15-25 in a minute
    assert x.most_connecting <= 1
    assert 60 / PROBE_MAX_S - 1 <= during <= 60 / (PROBE_MAX_S / 2) + 3, during
    assert s.stat("redrives", "confirm_timeout") == 0 and s.stat("moves") == 0  # ladders paused
    assert venue.state is DOWN
    assert len(venue_lines(caplog, "venue down")) == 1
    assert not venue_lines(caplog, "venue up")
    # back: the next probe opens and delivers, then the other shards open SPACING apart
    x.down = False
    back_at = s.now
    opens_before = len(x.open_times)
    x.run(PROBE_MAX_S + 3 * SPACING + 0.5)
    assert venue.state is UP
    assert all(s.status(t) == "live" for t in TOKENS)
    reopened = x.open_times[opens_before:]
    assert len(reopened) == 3
    assert reopened[0] - back_at <= PROBE_MAX_S
    assert all(b - a >= SPACING - 1e-9 for a, b in itertools.pairwise(reopened))
    assert len(venue_lines(caplog, "venue down")) == 1
    assert len(venue_lines(caplog, "venue up")) == 1
    assert s.engine.summary(s.wall_ms, "v")["venue"] == "up"
    assert s.engine.report(s.now, s.wall_ms).venue is UP
    assert down_at > lost_at


def test_one_shard_failing_is_degraded_not_down() -> None:
    s, x = outage_sim()
    conn = s.conn_of(TOKENS[0])
    x.down = True
    s.close_from_server(conn, "reset")
    # the other two sockets stay open; only the lost shard keeps being refused
    x.run(20.0)
    assert s.engine.ctx.venue.state is DEGRADED
    assert s.engine.tokens[TOKENS[0]].reason == "connection_reset"
    assert s.status(TOKENS[2]) == "live"
    x.down = False
    x.run(31.0)
    assert s.engine.ctx.venue.state is UP
    assert all(s.status(t) == "live" for t in TOKENS)


def test_a_socket_that_opens_and_closes_at_once_keeps_the_venue_failing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    s, x = outage_sim()
    x.drop_all()
    x.down = False
    # handshakes succeed but every socket is closed before it delivers anything
    for _ in range(200):
        s.tick_at(s.now + 0.05)
        opens = s.opens()[x.seen :]
        x.seen += len(opens)
        for o in opens:
            s.connect(o.conn_id)
            s.close_from_server(o.conn_id, "close_1011")
    assert s.engine.ctx.venue.state is DOWN
    assert len(venue_lines(caplog, "venue down")) == 1


def test_a_probe_that_opens_without_data_brings_the_venue_back_after_stable_s() -> None:
    s, x = outage_sim(confirm_timeout_s=1.0)
    x.drop_all()
    x.run(AFTER + 1.0)
    venue = s.engine.ctx.venue
    assert venue.state is DOWN
    x.down = False
    mark = x.seen
    while len(s.opens()) == mark:
        s.tick_at(s.now + 0.05)
    (probe,) = s.opens()[mark:]
    x.seen += 1
    s.connect(probe.conn_id)  # open, but the exchange says nothing yet
    s.run_for(STABLE_S - 0.1, step=0.05)
    assert venue.state is DOWN  # not proven yet
    assert len(s.opens()) == mark + 1  # and nothing else opened meanwhile
    assert s.stat("redrives", "confirm_timeout") == 0  # past the confirm timeout, but paused
    s.tick_at(s.now + 0.2)
    assert venue.state is not DOWN


def test_ladders_resume_fresh_when_the_venue_returns() -> None:
    s, x = outage_sim()
    quiet = TOKENS[0]
    s.engine.tokens[quiet].redrives = 2  # its redrive budget was spent before the outage
    x.drop_all()
    x.run(AFTER + 30.0)
    x.down = False
    s.mute.add(quiet)
    x.open = lambda o: mute_open(s, o, quiet)  # type: ignore[method-assign]
    x.run(PROBE_MAX_S + 2.0)
    assert s.engine.ctx.venue.state is UP
    assert s.status(quiet) == "stale"
    x.run(30.0)  # past the confirm timeout: the ladder starts at its first rung, not at a move
    assert s.stat("redrives", "confirm_timeout") >= 1
    assert s.stat("moves") == 0


def mute_open(s: Sim, o: Open, quiet: str) -> None:
    """Open the socket and send a book for every token of its shard but ``quiet``."""
    s.connect(o.conn_id)
    shard = s.engine.shards.shards[o.shard_id]
    s.frame(o.conn_id, *[s.snapshot(t) for t in sorted(shard.tokens) if t != quiet])


def test_a_token_added_while_down_waits_for_the_venue(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    s, x = outage_sim()
    x.drop_all()
    x.run(AFTER + 1.0)
    new = tok(50)
    s.desired([*TOKENS, new])
    x.run(10.0)
    assert s.engine.ctx.venue.state is DOWN  # a new shard does not flip it back
    assert not venue_lines(caplog, "venue up")  # not even for a moment
    assert x.most_connecting <= 1
    x.down = False
    x.run(PROBE_MAX_S + 2.0)
    assert s.status(new) == "live"


def test_a_429_pause_from_before_the_outage_does_not_hold_back_the_return() -> None:
    s, x = outage_sim()
    x.drop_all()
    s.engine.ctx.pause_until = s.now + 30.0  # as a 429 answer pauses every socket
    x.run(AFTER + 1.0)
    assert s.engine.ctx.venue.state is DOWN
    x.down = False
    x.run(PROBE_MAX_S + 3 * SPACING + 0.5)
    assert all(s.status(t) == "live" for t in TOKENS)


def test_venue_starts_up_with_its_since_at_start() -> None:
    s = Sim(engine_cfg())
    summary = s.engine.summary(s.wall_ms, "v")
    assert (summary["venue"], summary["venue_since"]) == ("up", str(s.wall_ms))
    assert s.now == T0


def test_a_socket_still_connecting_when_the_venue_went_down_is_not_the_probe() -> None:
    """Its late failure must not reset the shared probe: one probe socket at a time, always."""
    s, x = outage_sim()
    venue = s.engine.ctx.venue
    x.drop_all()
    start = s.now
    for k in range(1, round((AFTER + 1.0) / 0.05) + 1):  # nobody answers: the reopened sockets hang
        s.tick_at(start + k * 0.05)
    assert venue.state is DOWN
    stragglers = [c for c, conn in s.engine.conns.items() if conn.state == CONNECTING]
    assert len(stragglers) == 3  # every shard reopened before the venue was judged down
    for conn_id in stragglers:
        s.engine.on_connect_failed(conn_id, "timeout", s.now, None)
        s.pump()
        t0 = s.now
        for k in range(1, round(PROBE_MAX_S / 0.05) + 2):  # long enough for any probe wait
            s.tick_at(t0 + k * 0.05)
    probes = [c for c, conn in s.engine.conns.items() if c not in stragglers and conn.state == CONNECTING]
    assert len(probes) == 1  # the first refusal queued a shard for the one probe; the others did not
    assert venue.probe_conn == probes[0]
    assert venue.probes == 0  # no probe has failed yet: stragglers do not grow the shared backoff
