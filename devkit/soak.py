#!/usr/bin/env python3
"""`make soak`: the sidecar under steady load and periodic faults for a long time; does memory stay flat?

Everything runs locally and is stopped again at the end (also on Ctrl-C): the exchange simulator
(in this process), a throwaway redis-server on a free port and the real sidecar (`python -m sidecar
run`, exactly what systemd runs).

  * load: random market activity at --rate events/s (default 2,000) over --tokens tokens (500);
  * faults: one socket dropped every ~60 s (every third time all of them), a zombie socket every
    ~150 s, malformed frames every ~30 s, and one Redis restart (kill + start empty on the same port,
    the scheduler then rewrites its desired set) near the middle of the run;
  * every 10 s: the sidecar's RSS (VmRSS from /proc/<pid>/status), quote health and statuses, socket
    and reconnect counts, event rate, writer backlog, and how many of 100 random tokens are live and
    equal to the simulator's truth.

Verdict (exit 1 if any fails): RSS growth after warm-up (the first 20 % of the run, at most
2 minutes) under --max-growth-pct (5 %); the sidecar never died and exits 0 on SIGTERM; once the
load stops every quote is live and equal to the truth again within 60 s; the truth sampler read
Redis every time but at most once (the Redis restart). --tls serves the market channel as wss://.
Results, samples included, go to --out (soak-results.json).

    .venv/bin/python -m devkit.soak [--minutes 10] [--rate 2000] [--tokens 500] [--tls] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import redis
from pmsim import Simulator
from pmsim.tls import make_self_signed

from devkit.procfs import status as proc_status
from devkit.procs import SidecarProcess, sidecar_env
from devkit.redis_server import RedisServer
from devkit.scrape import Samples, by_label, scrape, total
from devkit.simfix import trust
from devkit.truth import truth_top
from devkit.wait import wait_for

P = "pm:"
TOP_FIELDS = ("status", "bid", "bid_size", "ask", "ask_size")
SETTLE_S = 60.0

MALFORMED: list[bytes | str] = [
    "{not json",
    "[1, 2",
    b'{"event_type": "\xff\xfe"}',
    '[1, "two", null]',
    '{"event_type": "book", "asset_id": "1", "bids": "lots", "asks": []}',
    '{"event_type": "book", "bids": [{"price": "0.5", "size": "NaN"}], "asks": []}',
    '{"event_type": "price_change", "price_changes": "x"}',
    '{"event_type": "price_change", "price_changes": [{"side": "UP", "asset_id": "1"}]}',
    '{"event_type": "brand_new_event"}',
    "INVALID OPERATION",
    "SOMETHING ODD",
    b"[" + b"{" * 200_000,  # 200 kB of garbage
]


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Sample:
    t: float  # seconds since the load started
    rss_mb: float
    threads: int
    quote_health: float
    live: int
    stale: int
    pending: int
    resyncing: int
    sockets_up: int
    reconnects: int
    events_per_s: float
    backlog: int
    parse_errors: int
    truth_match: float  # share of sampled tokens that are live and equal to the truth
    faults: str


class _Stop(Exception):
    pass


def _raise_stop(*_: Any) -> None:
    raise _Stop


class Soak:
    def __init__(self, args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
        self.args = args
        self.stack = stack
        self.tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pm-soak-")))
        self.rng = random.Random(args.seed)
        self.samples: list[Sample] = []
        self.faults: list[dict[str, Any]] = []
        self.results: dict[str, Any] = {}
        self.died_at: float | None = None
        self.unreadable = 0  # truth samples that could not read Redis
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("soak: redis-server is not installed (apt-get install redis-server)")
        self.redis_binary = binary

    # -- plumbing

    def start(self) -> None:
        self.redis = RedisServer(self.redis_binary, self.tmp)
        self.redis.start()
        self.stack.callback(self.redis.stop)
        self.r = self.redis.client()
        # Production is wss://: --tls is the same run over TLS, the sidecar trusting our CA.
        cert = make_self_signed(self.tmp / "tls") if self.args.tls else None
        self.sim = Simulator(seed=self.args.seed, tls=cert.server_context() if cert else None)
        self.sim.start()
        self.stack.callback(self.sim.stop)
        markets = [self.sim.add_market() for _ in range((self.args.tokens + 1) // 2)]
        by_market = self.sim.markets()
        self.tokens = [t for m in markets for t in by_market[m]][: self.args.tokens]
        self.r.sadd(P + "desired", *self.tokens)
        env = sidecar_env(self.redis.url, self.sim.ws_url, self.sim.rest_url, desired_poll_s=1)
        if cert is not None:
            trust(env, cert)
        self.proc = SidecarProcess(env, self.tmp / "sidecar.log")
        self.stack.callback(self._stop_sidecar)
        self.port = self.proc.metrics_port
        started = time.monotonic()
        wait_for(self.all_live, 120, interval=0.5, what=f"{len(self.tokens)} tokens live")
        wait_for(
            lambda: total(scrape(self.port), "pm_sidecar_tokens", status="live") == len(self.tokens),
            10,
            interval=0.2,
            what="metrics to show every token live",
        )
        took = time.monotonic() - started
        log(f"{len(self.tokens)} tokens live in {took:.1f}s (sidecar pid {self.proc.proc.pid})")

    def _stop_sidecar(self) -> None:
        """SIGTERM first (the sidecar stales its quotes and leaves), SIGKILL if it lingers."""
        self.proc.shutdown(signal.SIGTERM, timeout=5)

    def all_live(self) -> bool:
        pipe = self.r.pipeline(transaction=False)
        for t in self.tokens:
            pipe.hget(P + "quote:" + t, "status")
        return set(pipe.execute()) == {"live"}

    def truth_match(self, tokens: list[str]) -> float:
        """Share of tokens live and equal to the truth read just before or just after Redis."""
        before = [truth_top(self.sim, t) for t in tokens]
        pipe = self.r.pipeline(transaction=False)
        for t in tokens:
            pipe.hmget(P + "quote:" + t, *TOP_FIELDS)
        rows = pipe.execute()
        after = [truth_top(self.sim, t) for t in tokens]
        good = 0
        for row, t0, t1 in zip(rows, before, after, strict=True):
            status, *top = row
            good += status == "live" and tuple(top) in (t0, t1)
        return good / len(tokens)

    def open_conns(self) -> list[int]:
        return [c.id for c in self.sim.connections() if c.open and c.mode == "normal"]

    # -- faults

    def fault(self, t: float, kind: str, detail: str = "") -> None:
        self.faults.append({"t": round(t, 1), "kind": kind, "detail": detail})
        log(f"t={t:5.0f}s fault: {kind} {detail}")

    def drop(self, t: float, n: int) -> None:
        conns = self.open_conns()
        if n % 3 == 2:
            self.sim.drop()
            self.fault(t, "drop_all", f"{len(conns)} sockets")
        elif conns:
            cid = self.rng.choice(conns)
            self.sim.drop(cid)
            self.fault(t, "drop", f"socket {cid}")

    def zombie(self, t: float) -> None:
        conns = self.open_conns()
        if conns:
            cid = self.rng.choice(conns)
            self.sim.zombie(cid)
            self.fault(t, "zombie", f"socket {cid}")

    def malformed(self, t: float) -> None:
        for payload in MALFORMED:
            self.sim.send_raw(payload)
        # and a few well-formed events that lie about types, for tokens we do hold
        token = self.rng.choice(self.tokens)
        self.sim.send_raw(
            orjson.dumps(
                {
                    "event_type": "price_change",
                    "price_changes": [{"asset_id": token, "price": "1e400", "size": "-1", "side": "BUY"}],
                }
            )
        )
        self.fault(t, "malformed", f"{len(MALFORMED) + 1} frames to every socket")

    def restart_redis(self, t: float) -> None:
        self.redis.stop()
        self.redis.start()
        self.fault(t, "redis_restart", "killed, started empty on the same port")
        # The scheduler notices and rewrites its desired set a second later.
        time.sleep(1.0)
        self.r = self.redis.client()
        self.r.sadd(P + "desired", *self.tokens)
        self.r.publish(P + "desired:changed", "1")

    # -- the run

    def run(self) -> None:
        a = self.args
        duration = a.minutes * 60.0
        self.warmup = min(120.0, 0.2 * duration)
        log(
            f"soak: {a.minutes:g} min, {a.rate:g} events/s over {a.tokens} tokens, RSS every "
            f"{a.sample_s:g}s, warm-up {self.warmup:.0f}s, max growth {a.max_growth_pct:g} %"
        )
        self.start()
        self.sim.start_activity(a.rate, self.tokens)
        t0 = time.monotonic()
        schedule: list[tuple[float, str]] = []
        schedule += [(s, "drop") for s in _every(30.0, a.drop_every_s, duration)]
        schedule += [(s, "zombie") for s in _every(75.0, a.zombie_every_s, duration)]
        schedule += [(s, "malformed") for s in _every(15.0, a.malformed_every_s, duration)]
        schedule.append((round(duration * 0.45), "redis_restart"))
        schedule.sort()
        drops = 0
        next_sample = 0.0
        prev: tuple[float, Samples] | None = None
        print(_header(), flush=True)
        while True:
            now = time.monotonic() - t0
            if self.proc.proc.poll() is not None:
                self.died_at = now
                log(f"the sidecar died at t={now:.0f}s (exit code {self.proc.proc.returncode})")
                break
            while schedule and schedule[0][0] <= now:
                _, kind = schedule.pop(0)
                if kind == "drop":
                    self.drop(now, drops)
                    drops += 1
                elif kind == "zombie":
                    self.zombie(now)
                elif kind == "malformed":
                    self.malformed(now)
                else:
                    self.restart_redis(now)
            if now >= next_sample:
                prev = self.sample(now, prev)
                next_sample += a.sample_s
                if now >= duration:
                    break
            time.sleep(min(0.2, max(0.0, next_sample - (time.monotonic() - t0))))
        self.sim.stop_activity()
        self.results["duration_s"] = round(time.monotonic() - t0, 1)
        self.finish()

    def sample(self, t: float, prev: tuple[float, Samples] | None) -> tuple[float, Samples]:
        snap = scrape(self.port)
        now = time.monotonic()
        rate = 0.0
        if prev is not None:
            rate = (_events(snap) - _events(prev[1])) / max(now - prev[0], 1e-6)
        try:
            match = self.truth_match(self.rng.sample(self.tokens, min(100, len(self.tokens))))
        except redis.RedisError:
            match = float("nan")
            self.unreadable += 1
        recent = ",".join(sorted({f["kind"] for f in self.faults if t - self.args.sample_s < f["t"] <= t}))
        st = proc_status(self.proc.pid)
        s = Sample(
            t=round(t, 1),
            rss_mb=round(st.rss_mb, 2),
            threads=st.threads,
            quote_health=total(snap, "pm_sidecar_quote_health"),
            live=int(total(snap, "pm_sidecar_tokens", status="live")),
            stale=int(total(snap, "pm_sidecar_tokens", status="stale")),
            pending=int(total(snap, "pm_sidecar_tokens", status="pending")),
            resyncing=int(total(snap, "pm_sidecar_tokens", status="resyncing")),
            sockets_up=int(total(snap, "pm_sidecar_sockets", state="open")),
            reconnects=int(total(snap, "pm_sidecar_reconnects_total")),
            events_per_s=round(rate, 1),
            backlog=int(total(snap, "pm_sidecar_writer_backlog_tokens")),
            parse_errors=int(total(snap, "pm_sidecar_parse_errors_total")),
            truth_match=round(match, 3),
            faults=recent,
        )
        self.samples.append(s)
        print(_row(s), flush=True)
        return now, snap

    def finish(self) -> None:
        a = self.args
        alive = self.died_at is None and self.proc.proc.poll() is None
        recovered_s: float | None = None
        if alive:
            started = time.monotonic()
            try:
                wait_for(
                    lambda: self.truth_match(self.tokens) == 1.0,
                    SETTLE_S,
                    interval=0.5,
                    what="all quotes live and equal to the truth",
                )
                recovered_s = round(time.monotonic() - started, 1)
            except AssertionError as exc:
                log(f"not recovered: {exc}"[:300])
        snap = scrape(self.port) if alive else {}
        exit_code: int | None = None
        if alive:
            exit_code = self.proc.terminate(signal.SIGTERM, timeout=10)

        after = [s for s in self.samples if s.t >= self.warmup]
        rss = {"warmup_s": self.warmup}
        growth_pct = float("nan")
        if len(after) >= 2:
            base = after[0].rss_mb
            final = statistics.median(s.rss_mb for s in after[-3:])
            growth_pct = (final - base) / base * 100.0
            xs = [s.t for s in after]
            ys = [s.rss_mb for s in after]
            slope = statistics.linear_regression(xs, ys).slope * 60.0 if len(after) >= 3 else 0.0
            rss.update(
                baseline_mb=base,
                final_mb=final,
                max_mb=max(ys),
                growth_pct=round(growth_pct, 2),
                slope_mb_per_min=round(slope, 3),
            )
        checks = {
            "rss_growth_under_limit": bool(growth_pct == growth_pct and growth_pct < a.max_growth_pct),
            "sidecar_never_died": alive,
            "clean_exit_on_sigterm": exit_code == 0,
            "recovered_to_truth": recovered_s is not None,
            # Redis is down only across its one restart: at most the sample that fell into it.
            "truth_sampler_read_redis": self.unreadable <= 1,
        }
        self.results.update(
            config={
                "minutes": a.minutes,
                "rate": a.rate,
                "tokens": a.tokens,
                "sample_s": a.sample_s,
                "max_growth_pct": a.max_growth_pct,
                "seed": a.seed,
                "tls": a.tls,
            },
            machine={
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "system": platform.platform(),
            },
            rss=rss,
            recovered_after_s=recovered_s,
            truth_samples_unreadable=self.unreadable,
            exit_code=exit_code,
            reconnects_by_reason=by_label(snap, "pm_sidecar_reconnects_total"),
            connect_failures_by_reason=by_label(snap, "pm_sidecar_connect_failures_total"),
            parse_errors_by_reason=by_label(snap, "pm_sidecar_parse_errors_total"),
            silence_probes=by_label(snap, "pm_sidecar_silence_probes_total"),
            redis_errors=by_label(snap, "pm_sidecar_redis_errors_total"),
            faults=self.faults,
            samples=[asdict(s) for s in self.samples],
            checks=checks,
            verdict="PASS" if all(checks.values()) else "FAIL",
        )
        if not all(checks.values()):
            self.results["sidecar_log_tail"] = self.proc.log()[-8000:]

    def report(self) -> None:
        res = self.results
        print()
        print("RSS and quote health over time")
        print(_header())
        for s in self.samples:
            print(_row(s))
        print()
        rss = res.get("rss", {})
        if "baseline_mb" in rss:
            print(
                f"RSS after warm-up ({rss['warmup_s']:.0f}s): {rss['baseline_mb']:.1f} MB -> "
                f"{rss['final_mb']:.1f} MB ({rss['growth_pct']:+.2f} %, "
                f"limit {self.args.max_growth_pct:g} %), "
                f"max {rss['max_mb']:.1f} MB, trend {rss['slope_mb_per_min']:+.3f} MB/min"
            )
        health = [s.quote_health for s in self.samples]
        match = [s.truth_match for s in self.samples if s.truth_match == s.truth_match]  # not NaN
        if health and match:
            print(
                f"quote health: min {min(health):.3f}, mean {statistics.fmean(health):.3f}; "
                f"live and equal to truth (100 random tokens): min {min(match):.2f}, "
                f"mean {statistics.fmean(match):.3f}"
            )
        rates = [s.events_per_s for s in self.samples[1:]]
        if rates:
            print(
                f"events/s applied by the sidecar: mean {statistics.fmean(rates):.0f}, min {min(rates):.0f}"
            )
        for title, key in (
            ("reconnects by reason", "reconnects_by_reason"),
            ("connect failures by reason", "connect_failures_by_reason"),
            ("parse errors by reason", "parse_errors_by_reason"),
            ("silence probes", "silence_probes"),
        ):
            values = res.get(key) or {}
            body = ", ".join(f"{k}={v:.0f}" for k, v in sorted(values.items())) or "none"
            print(f"{title}: {body}")
        kinds: dict[str, int] = {}
        for f in self.faults:
            kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
        print("faults injected: " + (", ".join(f"{k}={v}" for k, v in sorted(kinds.items())) or "none"))
        print(
            f"all quotes live = truth {res.get('recovered_after_s')} s after the load stopped; "
            f"exit code on SIGTERM {res.get('exit_code')}"
        )
        for name, ok in res.get("checks", {}).items():
            print(f"  [{'ok' if ok else 'FAIL'}] {name}")
        print(f"VERDICT: {res.get('verdict', 'FAIL')}  (results in {self.args.out})")


def _events(snap: Samples) -> float:
    """Events applied (those for other sockets' tokens, "filtered", do not count)."""
    name = "pm_sidecar_events_total"
    return total(snap, name) - total(snap, name, type="filtered")


def _every(first: float, period: float, duration: float) -> list[float]:
    if period <= 0:
        return []
    out = []
    t = first
    while t < duration:
        out.append(t)
        t += period
    return out


def _header() -> str:
    return (
        f"{'t(s)':>6} {'RSS MB':>7} {'thr':>3} {'health':>6} {'live':>5} {'stale':>5} {'pend':>4} "
        f"{'resync':>6} {'socks':>5} {'reconn':>6} {'events/s':>8} {'backlog':>7} {'bad':>5} "
        f"{'truth':>5}  faults"
    )


def _row(s: Sample) -> str:
    return (
        f"{s.t:6.0f} {s.rss_mb:7.1f} {s.threads:3d} {s.quote_health:6.3f} {s.live:5d} {s.stale:5d} "
        f"{s.pending:4d} {s.resyncing:6d} {s.sockets_up:5d} {s.reconnects:6d} {s.events_per_s:8.0f} "
        f"{s.backlog:7d} {s.parse_errors:5d} {s.truth_match:5.2f}  {s.faults}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m devkit.soak", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="length of the loaded run (default 10)")
    p.add_argument("--rate", type=float, default=2000.0, help="random events per second (default 2000)")
    p.add_argument("--tokens", type=int, default=500, help="desired tokens (default 500)")
    p.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples (default 10)")
    p.add_argument("--drop-every-s", type=float, default=60.0)
    p.add_argument("--zombie-every-s", type=float, default=150.0)
    p.add_argument("--malformed-every-s", type=float, default=30.0)
    p.add_argument("--max-growth-pct", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tls", action="store_true", help="serve the market channel as wss:// (self-signed)")
    p.add_argument("--out", default="soak-results.json")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.tokens < 2:
        p.error("--minutes and --rate must be positive, --tokens at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_stop)
    interrupted = False
    with contextlib.ExitStack() as stack:
        soak = Soak(args, stack)
        try:
            soak.run()
        except (KeyboardInterrupt, _Stop):
            interrupted = True
            log("interrupted: stopping the sidecar, Redis and the simulator")
            soak.results.update(
                interrupted=True, faults=soak.faults, samples=[asdict(s) for s in soak.samples]
            )
        finally:
            if soak.results:
                Path(args.out).write_bytes(orjson.dumps(soak.results, option=orjson.OPT_INDENT_2))
        if not interrupted:
            soak.report()
    if interrupted:
        return 130
    return 0 if soak.results.get("verdict") == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
