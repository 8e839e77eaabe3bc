"""Subscription lifecycle and two-layer health against the simulator's fault controls."""

from __future__ import annotations

import itertools
import socket
import time

import orjson
import pytest
from pmsim import Simulator

from devkit.net import http_get
from devkit.scrape import families, metric, wait_metric
from devkit.wait import wait_for
from tests.integration.common import P, all_match, quote, start_live, statuses

pytestmark = pytest.mark.integration


def test_thousand_tokens_shard_over_five_sockets_and_all_go_live(redis_server, sim, sidecar) -> None:
    r = redis_server.client()
    tokens = [str(3 * 10**40 + i) for i in range(1000)]
    r.sadd(P + "desired", *tokens)
    proc = sidecar(max_tokens_per_conn=200)
    # Five sockets 0.25 s apart, then 1,000 snapshots to apply and write: seconds, not a minute.
    wait_for(lambda: statuses(r, tokens) == {"live"}, 20, interval=0.2, what="1,000 tokens live")
    conns = [c for c in sim.connections() if c.open]
    assert len(conns) == 5
    assert all(len(c.subscribed) <= 200 for c in conns)
    assert sorted(t for c in conns for t in c.subscribed) == sorted(tokens)
    opened = sorted(c.opened_at for c in sim.connections())
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(opened)), "sockets open paced"
    for conn in conns:
        for _, text in conn.received:
            if text != "PING":
                assert len(orjson.loads(text)["assets_ids"]) <= 100
    assert sim.violations == []
    wait_for(lambda: r.hget(P + "sidecar", "live") == "1000", 5, what="sidecar hash counts")
    assert r.hget(P + "sidecar", "connections_up") == "5"
    assert proc.http_get("/readyz")[0] == 200
    assert proc.terminate() == 0


def test_token_without_first_event_is_redriven_then_moved(redis_server, sim, sidecar) -> None:
    r = redis_server.client()
    market = sim.add_market()
    good, stuck = sim.markets()[market]
    # Silent for the initial subscribe and both redrives; a fresh socket then works.
    sim.mute(stuck, subscribes=3)
    r.sadd(P + "desired", good, stuck)
    proc = sidecar(confirm_timeout_s=0.5, redrive_max=2)
    wait_for(lambda: quote(r, good).get("status") == "live", 10, what="good token live")
    t0 = time.monotonic()
    wait_for(
        lambda: quote(r, stuck).get("reason", "").startswith("no_first_event"),
        0.5 + 2.0,
        what="stuck token visible as pending with a reason",
    )
    assert quote(r, stuck)["status"] == "pending"
    # Patience 0.5 s, doubling: redrives after 0.5 and 1.5 s, the move after 3.5 s; then a fresh
    # socket and its snapshot.
    wait_for(
        lambda: quote(r, stuck).get("status") == "live", 3.5 + 4.0, what="stuck token live after the move"
    )
    assert time.monotonic() - t0 <= 3.5 + 4.0
    first = sim.connections()[0]
    ops = [orjson.loads(t) for _, t in first.received if t != "PING"]
    redrives = [o for o in ops if o.get("operation") == "unsubscribe" and stuck in o["assets_ids"]]
    assert len(redrives) >= 2, "redriven on its socket before being moved"
    mover = sim.conn_for(stuck)
    assert mover is not None and mover.id != first.id, "moved to a fresh socket"
    assert good in first.subscribed and good not in mover.subscribed, "the other token did not move"
    wait_metric(proc, "pm_sidecar_redrives_total", 2, reason="confirm_timeout")
    wait_metric(proc, "pm_sidecar_token_moves_total", 1)
    assert sim.violations == []
    assert proc.terminate() == 0


def test_zombie_socket_is_replaced_and_quotes_match_truth_again(redis_server, sim, sidecar) -> None:
    silence_max = 6.0
    probe_timeout = 1.5
    tokens, r, proc = start_live(
        redis_server,
        sim,
        sidecar,
        3,
        timeout=15,
        silence_min_s=1,
        silence_max_s=silence_max,
        probe_timeout_s=probe_timeout,
        ping_interval_s=0.5,
    )
    sim.start_activity(60, tokens)
    # The socket's event-rate norm comes from the gaps between its own events: wait for ~2 s of them.
    wait_metric(proc, "pm_sidecar_events_total", 120, timeout=10, type="price_change")
    zombie = sim.conn_for(tokens[0])
    assert zombie is not None
    sim.zombie(zombie.id)
    started = time.monotonic()
    wait_for(
        lambda: sim.conn_for(tokens[0]) is not None and sim.conn_for(tokens[0]).id != zombie.id,
        silence_max + 10,
        what="a replacement socket",
    )
    replaced = time.monotonic() - started
    sim.stop_activity()
    wait_for(lambda: all_match(r, sim, tokens), 5, what="tokens match the truth again")
    # Silent past the threshold (at most SIDECAR_SILENCE_MAX_S), then a probe that times out,
    # then a new socket (spacing, handshake): a few seconds of slack for those and a busy host.
    assert replaced <= silence_max + probe_timeout + 3.0, replaced
    # The zombie kept answering PING the whole time: only the data judged it.
    assert sim.conn(zombie.id).pings >= 1
    wait_metric(proc, "pm_sidecar_reconnects_total", 1, reason="silence")
    wait_metric(proc, "pm_sidecar_silence_probes_total", 1, result="failed")
    wait_for(lambda: not sim.conn(zombie.id).open, 15, what="old socket closed after the replacement")
    assert sim.violations == []
    assert proc.terminate() == 0


def test_quiet_tokens_on_a_healthy_socket_are_never_reconnected(redis_server, sim, sidecar) -> None:
    # Tight bounds so that a wrong design would reconnect many times within the test.
    tokens, r, proc = start_live(
        redis_server,
        sim,
        sidecar,
        2,
        silence_min_s=0.5,
        silence_max_s=2,
        probe_timeout_s=2,
        quiet_confirm_s=1,
    )
    sim.start_activity(0.2, tokens)  # one event every ~5 s across all tokens: a sleepy market
    seen: set[str] = set()
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        seen |= statuses(r, tokens)
        time.sleep(0.1)
    sim.stop_activity()
    assert seen == {"live"}, f"quiet tokens left live: {seen}"
    assert sim.handshakes == 1, "no reconnect of a quiet but healthy socket"
    assert metric(proc, "pm_sidecar_reconnects_total") == 0
    wait_metric(proc, "pm_sidecar_silence_probes_total", 1, result="ok")
    # Quiet quotes stay fresh through REST confirmation: updated_at keeps moving.
    before = {t: int(quote(r, t)["updated_at"]) for t in tokens}
    wait_for(
        lambda: all(int(quote(r, t)["updated_at"]) > before[t] for t in tokens),
        6,
        what="updated_at refreshed for quiet tokens",
    )
    wait_metric(proc, "pm_sidecar_rest_confirms_total", 1, result="match")
    assert proc.terminate() == 0


def test_half_open_socket_is_detected_by_missing_pongs(redis_server, sim, sidecar) -> None:
    r = redis_server.client()
    market = sim.add_market()
    tokens = sim.markets()[market]
    r.sadd(P + "desired", *tokens)
    proc = sidecar(ping_interval_s=0.3, pong_timeout_s=1.5, silence_max_s=60)
    wait_for(lambda: all_match(r, sim, tokens), 10, what="live")
    conn = sim.conn_for(tokens[0])
    sim.half_open(conn.id)
    # PING every 0.3 s, no PONG for 1.5 s: stale by ~1.8 s after the socket went deaf.
    wait_for(lambda: statuses(r, tokens) == {"stale"}, 0.3 + 1.5 + 1.2, what="stale after missing PONGs")
    wait_for(lambda: all_match(r, sim, tokens), 15, what="live again on a new socket")
    wait_metric(proc, "pm_sidecar_reconnects_total", 1, reason="pong_timeout")
    assert metric(proc, "pm_sidecar_reconnects_total") == 1, "exactly one reconnect, for the dead socket"
    assert proc.terminate() == 0


def test_metrics_families_and_health_endpoints(redis_server, sim: Simulator, sidecar) -> None:
    r = redis_server.client()
    market = sim.add_market()
    tokens = sim.markets()[market]
    r.sadd(P + "desired", *tokens, "not-a-token")
    proc = sidecar()
    wait_for(lambda: all_match(r, sim, tokens), 10, what="live")
    sim.send_raw("{broken json")
    sim.send_raw("SOMETHING ODD")
    sim.send_raw(orjson.dumps({"event_type": "brand_new_event", "asset_id": tokens[0]}))
    wait_metric(proc, "pm_sidecar_unknown_events_total", 1)
    wait_metric(proc, "pm_sidecar_receive_to_redis_seconds_count", 2)
    names = families(proc)
    expected = [
        "pm_sidecar_sockets",
        "pm_sidecar_reconnects_total",
        "pm_sidecar_frames_total",
        "pm_sidecar_events_total",
        "pm_sidecar_parse_errors_total",
        "pm_sidecar_unknown_events_total",
        "pm_sidecar_control_frames_total",
        "pm_sidecar_tokens",
        "pm_sidecar_desired_tokens",
        "pm_sidecar_live_tokens",
        "pm_sidecar_pending_tokens",
        "pm_sidecar_quote_health",
        "pm_sidecar_socket_last_data_age_seconds",
        "pm_sidecar_oldest_live_quote_age_seconds",
        "pm_sidecar_confirm_latency_seconds_bucket",
        "pm_sidecar_redrives_total",
        "pm_sidecar_bbo_mismatches_total",
        "pm_sidecar_crossed_books_total",
        "pm_sidecar_redis_write_latency_seconds_bucket",
        "pm_sidecar_redis_errors_total",
        "pm_sidecar_exchange_to_redis_seconds_bucket",
        "pm_sidecar_receive_to_redis_seconds_bucket",
        "pm_sidecar_desired_invalid_entries",
    ]
    missing = [name for name in expected if name.removesuffix("_total").removesuffix("_bucket") not in names]
    assert missing == []
    wait_metric(proc, "pm_sidecar_parse_errors_total", 1, reason="bad_json")
    wait_metric(proc, "pm_sidecar_control_frames_total", 1, text="other")
    assert metric(proc, "pm_sidecar_desired_tokens") == 2
    assert metric(proc, "pm_sidecar_desired_invalid_entries") == 1
    assert metric(proc, "pm_sidecar_tokens", status="live") == 2
    assert metric(proc, "pm_sidecar_quote_health") == 1.0
    assert all_match(r, sim, tokens), "bad frames must not disturb good quotes"
    assert proc.http_get("/healthz")[0] == 200
    assert proc.http_get("/readyz")[0] == 200
    sim.reject_handshakes(503, 10_000)  # the exchange is down for a while
    sim.drop()
    wait_for(lambda: proc.http_get("/readyz")[0] == 503, 5, what="not ready while quotes are stale")
    assert proc.http_get("/healthz")[0] == 200, "connection trouble is not process ill-health"
    wait_metric(proc, "pm_sidecar_connect_failures_total", 1, reason="http_503")
    sim.reject_handshakes(503, 0)
    wait_for(lambda: proc.http_get("/readyz")[0] == 200, 40, what="ready again")
    assert proc.terminate() == 0


def test_metrics_listen_only_on_the_configured_address(redis_server, sim: Simulator, sidecar) -> None:
    """SIDECAR_METRICS_ADDR is honoured end to end (a 0.0.0.0 bind would expose it everywhere)."""
    proc = sidecar(metrics_addr="127.0.0.2")

    def answers() -> int:
        return http_get(f"http://127.0.0.2:{proc.metrics_port}/metrics", timeout=2)[0]

    assert wait_for(answers, 10, interval=0.1, what="/metrics on 127.0.0.2") == 200
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", proc.metrics_port), timeout=2),
    ):
        pass
    assert proc.terminate() == 0
