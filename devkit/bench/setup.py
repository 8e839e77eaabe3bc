"""Phases 1 and 2: the 200-token sidecar live at the truth, the helper processes connected, the
stream generated and the simulator's truth moved to its end."""

from __future__ import annotations

import json
import time

from devkit.bench.context import TOP_FIELDS, Bench, P, log, stage
from devkit.bench.stream import BookModel, Change


def setup(b: Bench) -> None:
    a = b.args
    with stage("setup: redis, simulator, 100 markets, sidecar"):
        b.start_redis()
        b.start_sim()
        b.markets = [b.sim.add_market() for _ in range(a.tokens // 2)]
        by_market = b.sim.markets()
        b.market_tokens = [(m, by_market[m]) for m in b.markets]
        b.tokens = [t for _, toks in b.market_tokens for t in toks]
        b.r.sadd(P + "desired", *b.tokens)
        # The bench deliberately leaves the sidecar's socket idle for up to a minute while the
        # simulator's truth is already ahead of the queued stream: a silence probe (redrive) in
        # that window would fetch the future book. Probes and REST confirmation are pushed out.
        b.side = b.start_sidecar("main", silence_min_s=300, silence_max_s=300, quiet_confirm_s=3600)
        want = b.truths(b.tokens)
        deadline = time.monotonic() + 30
        while True:
            got = b.tops(b.tokens, P + "quote:", (*TOP_FIELDS, "status"))
            if all(g[4] == "live" and tuple(g[:4]) == w for g, w in zip(got, want, strict=True)):
                break
            if time.monotonic() > deadline or b.side.proc.poll() is not None:
                raise RuntimeError("sidecar did not get every token live:\n" + b.side.log()[-3000:])
            time.sleep(0.05)
        b.side_conns = b.open_conns()
        b.side_conn = next(c.id for c in b.sim.connections() if c.open and set(b.tokens) <= c.subscribed)


def connect_workers(b: Bench) -> None:
    """The naive client and the transport sink; the naive client's initial books must predate
    apply_silently, so this runs before :func:`generate`."""
    tokens_file = b.tmp / "tokens.json"
    tokens_file.write_text(json.dumps(b.tokens))
    with stage("naive baseline client and transport sink connect"):
        before = b.open_conns()
        b.naive = b.worker("naive", b.sim.ws_url, str(b.redis.port), str(tokens_file))
        b.naive.line(60)
        b.naive_conn = max(b.open_conns() - before)
        before = b.open_conns()
        b.sink = b.worker("sink", b.sim.ws_url, str(b.tmp / "sink.cmd"))
        b.sink.line(30)
        time.sleep(0.1)
        b.sink_conn = max(b.open_conns() - before)
        log(f"sockets: sidecar {b.side_conn}, naive {b.naive_conn}, sink {b.sink_conn}")


def generate(b: Bench) -> None:
    a = b.args
    with stage(f"generate {a.events:,} events + latency stream from a model of sim.book()"):
        b.model = BookModel(b.sim, b.market_tokens, a.seed + 1)
        b.s = b.model.stream(a.events // 2, encode=True)
        b.final = [b.model.top(t) for t in b.tokens]
        b.last_tokens = tokens_of(b.s.changes[-1])
        lat_frames = int((a.latency_s + a.warmup_s) * a.latency_rate / 2)
        b.lat = b.model.stream(lat_frames, encode=False)
    with stage("apply_silently: simulator truth := end of the stream"):
        flat = [ch for chs in b.s.changes for ch in chs]
        for i in range(0, len(flat), 20_000):
            b.sim.apply_silently(flat[i : i + 20_000])
        assert b.truths(b.tokens) == b.final, "bench model disagrees with the simulator"
        b.s.changes = []
    b.results["stream"] = {
        "tokens": len(b.tokens),
        "markets": len(b.markets),
        "entries_per_frame": 2,
        "frame_bytes_avg": round(sum(len(f) for f in b.s.frames) / len(b.s.frames)),
        "events": b.s.events,
        "top_of_book_moves_pct": round(100 * b.s.top_moves / b.s.events, 1),
        "composition": "each entry: ~40% size change at the best level, ~15% new best inside the "
        "spread, ~10% best level removed, ~35% below the top (add/resize/remove); "
        f"{100 * b.s.top_moves / b.s.events:.0f}% of entries move the top",
    }


def tokens_of(changes: list[Change]) -> list[str]:
    return [c[0] for c in changes]
