"""Phase 4: latency at a steady rate. Frames are paced at ``--latency-rate`` events/s with the
truth moved in lock step; a separate subscriber process timestamps every PUBLISH, and each
top-of-book move is matched to the quote carrying its unique size: send -> receive exactly.
Receive -> PUBLISH comes from the sidecar's own histogram; CPU from /proc, per thread too."""

from __future__ import annotations

import signal
import time
from typing import Any

import orjson

from devkit.bench import profile
from devkit.bench.context import Bench, P, stage
from devkit.bench.setup import tokens_of
from devkit.bench.stream import Change, Top, now_ms, price_change_frame
from devkit.procfs import cpu_s, cpu_split, thread_cpu_s
from devkit.scrape import Samples, hist_delta, hist_quantile, scrape, total

HEALTH_COUNTERS = (
    "pm_sidecar_bbo_mismatches_total",
    "pm_sidecar_redrives_total",
    "pm_sidecar_parse_errors_total",
    "pm_sidecar_silence_probes_total",
    "pm_sidecar_reconnects_total",
)


def pct(values: list[float], q: float) -> float:
    """Exact percentile (nearest rank) of raw samples."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))
    return s[k]


def latency(b: Bench) -> None:
    a = b.args
    out = b.tmp / "sub.json"
    sub = b.worker("subscriber", str(b.redis.port), P + "quote:*", str(out))
    sub.line(30)
    pid = b.side.pid
    frame_rate = a.latency_rate / 2
    n = len(b.lat.frames)
    warm = int(a.warmup_s * frame_rate)
    sent_at: list[float] = [0.0] * n
    spy = None
    with stage(f"latency: {a.latency_rate:,.0f} events/s paced for {a.warmup_s + a.latency_s:.0f}s"):
        t0 = time.monotonic()
        sent = 0
        cpu0 = t_cpu0 = 0.0
        before: Samples = {}
        threads0: dict[int, float] = {}
        split0 = (0.0, 0.0)
        sim = b.sim
        conn = b.side_conn
        frames = b.lat.frames
        changes = b.lat.changes
        while sent < n:
            now = time.monotonic()
            due = min(n, int((now - t0) * frame_rate) + 1)
            if due <= sent:
                time.sleep(min(0.001, (sent - (now - t0) * frame_rate) / frame_rate))
                continue
            if sent <= warm < due:
                before = scrape(b.side)
                threads0 = thread_cpu_s(pid)
                split0 = cpu_split(pid)
                cpu0, t_cpu0 = cpu_s(pid), time.monotonic()
                if a.profile:
                    spy = profile.record(b, pid, "steady")
            ts = now_ms()
            batch = []
            flat: list[Change] = []
            for k in range(sent, due):
                market, entries = frames[k]
                batch.append(price_change_frame(market, entries, ts))
                flat.extend(changes[k])
            sim.apply_silently(flat)  # truth in lock step with what is sent
            t_send = time.monotonic()
            sim.blast(batch, conn)
            for k in range(sent, due):
                sent_at[k] = t_send
            sent = due
        t_end = time.monotonic()
        cpu1 = cpu_s(pid)
        threads1 = thread_cpu_s(pid)
        split1 = cpu_split(pid)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        final = [b.model.top(t) for t in b.tokens]
        b.wait_final(P + "quote:", b.tokens, final, tokens_of(changes[-1]), 30)
        time.sleep(1.2)
        after = scrape(b.side)
        sub.stop()
    lat_ms = match_publishes(orjson.loads(out.read_bytes()), b.lat.tops, sent_at, warm)
    measured_events = (n - warm) * 2
    window = t_end - t_cpu0
    cpu = cpu1 - cpu0
    hist = hist_delta(before, after, "pm_sidecar_receive_to_redis_seconds")
    ex_hist = hist_delta(before, after, "pm_sidecar_exchange_to_redis_seconds")
    moves = sum(len(b.lat.tops[k]) for k in range(warm, n))
    flushes = "pm_sidecar_redis_flush_tokens_count"
    writes = "pm_sidecar_redis_flush_tokens_sum"
    b.results["latency"] = {
        "target_events_per_s": a.latency_rate,
        "achieved_events_per_s": round(measured_events / window),
        "measured_seconds": round(window, 2),
        "warmup_seconds": a.warmup_s,
        "events": measured_events,
        "top_of_book_moves": moves,
        "publishes_matched": len(lat_ms),
        "moves_coalesced_or_unmatched": moves - len(lat_ms),
        "send_to_subscriber_ms": {
            "p50": round(pct(lat_ms, 0.50), 3),
            "p99": round(pct(lat_ms, 0.99), 3),
            "p99.9": round(pct(lat_ms, 0.999), 3),
            "max": round(max(lat_ms), 3) if lat_ms else None,
            "method": "exact: simulator blast() call -> PUBLISH received by a separate subscriber "
            "process (CLOCK_MONOTONIC), each top-of-book move matched to its quote by its unique size",
        },
        "receive_to_publish_ms": {
            "p50": round(1000 * hist_quantile(hist, 0.50), 3),
            "p99": round(1000 * hist_quantile(hist, 0.99), 3),
            "p99.9": round(1000 * hist_quantile(hist, 0.999), 3),
            "samples": int(hist[-1][1]) if hist else 0,
            "buckets_ms": [[le * 1000 if le != float("inf") else "+Inf", int(c)] for le, c in hist],
            "method": "interpolated linearly inside the buckets of pm_sidecar_receive_to_redis_seconds "
            "(delta over the measured window)",
        },
        "exchange_to_redis_ms_p99": round(1000 * hist_quantile(ex_hist, 0.99), 3),
        "redis_flushes_per_s": round((total(after, flushes) - total(before, flushes)) / window),
        "quote_writes_per_s": round((total(after, writes) - total(before, writes)) / window),
        "sidecar_cpu_s": round(cpu, 3),
        "sidecar_cpu_s_per_1000_events": round(1000 * cpu / measured_events, 4),
        "sidecar_cpu_pct_one_core": round(100 * cpu / window, 1),
    }
    names = profile.thread_names(pid)
    per_thread = {}
    for tid, used in sorted(threads1.items(), key=lambda kv: -(kv[1] - threads0.get(kv[0], 0.0))):
        share = 100 * (used - threads0.get(tid, 0.0)) / window
        if share >= 0.05:
            per_thread[names.get(tid, f"tid {tid}")] = round(share, 2)
    b.results["latency"]["sidecar_cpu_pct_by_thread"] = per_thread
    b.results["latency"]["sidecar_cpu_pct_user_system"] = [
        round(100 * (split1[0] - split0[0]) / window, 1),
        round(100 * (split1[1] - split0[1]) / window, 1),
    ]
    b.results["sidecar_health_counters"] = {
        name.removeprefix("pm_sidecar_"): int(total(after, name)) for name in HEALTH_COUNTERS
    }


def match_publishes(
    rows: list[list[Any]], tops: list[list[tuple[str, Top]]], sent_at: list[float], warm: int
) -> list[float]:
    """Send -> receive in ms of every top move after the warm-up that a PUBLISH carried; moves
    coalesced into a later write (latest state wins) are skipped."""
    expected: dict[str, list[tuple[Top, float, bool]]] = {}
    for k, moved in enumerate(tops):
        for tok, top in moved:
            expected.setdefault(tok, []).append((top, sent_at[k], k >= warm))
    pos = dict.fromkeys(expected, 0)
    lat_ms: list[float] = []
    for t, tok, *quoted in rows:
        exp = expected.get(tok)
        if not exp:
            continue
        i = pos[tok]
        key = tuple(quoted)
        while i < len(exp) and exp[i][0] != key:
            i += 1  # earlier moves coalesced away (latest state wins)
        if i == len(exp):
            continue
        pos[tok] = i + 1
        if exp[i][2]:
            lat_ms.append((t - exp[i][1]) * 1000.0)
    return lat_ms
