"""`make demo`: the whole pipeline on one machine, in about 30 seconds, with nothing to set up.

It starts a throwaway Redis, the local exchange simulator with random activity, and the real
sidecar as a subprocess (exactly what systemd would run), puts the simulator's tokens in the
desired set and shows the quotes the way a worker would read them: from Redis. Halfway through it
drops every exchange socket, so you can watch quotes go stale and come back live, and at the end
it stops the sidecar with SIGTERM to show the clean-stop contract (quotes stale, alive key gone).
Beside it runs the legacy bridge (`python -m sidecar bridge`), which keeps the maker bot's
`ws_cache.json` current from Redis; the demo shows one token's entry live, during the drop, and
at the end.

    python -m devkit.demo [--seconds 30] [--tokens 20] [--rate 40]

Everything it starts is stopped again, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

import redis
from pmsim import Simulator

from devkit.demo_view import PREFIX, Pushes, Viewer, cache_entry, cache_line, listening, short, show_entry
from devkit.net import free_port
from devkit.procs import BridgeProcess, SidecarProcess, clean_env, sidecar_env
from devkit.redis_server import ThrowawayRedis, start_throwaway_redis
from devkit.truth import truth_top
from devkit.wait import poll

SLEEPY_RATE = 0.05  # events per second for the deliberately quiet tokens
DEMO_QUIET_CONFIRM_S = 5  # shorter than the default 30 s so the REST confirmation shows in a short demo
TTY_REFRESH_S = 0.25
PLAIN_REFRESH_S = 3.0


class DemoError(Exception):
    """Something the demo needs could not be started; the message says what to do."""


# ---- the sidecar subprocess -----------------------------------------------------------------------


def start_sidecar(redis_url: str, sim: Simulator, metrics_port: int, workdir: Path) -> SidecarProcess:
    """Run the real sidecar, configured only through SIDECAR_* variables, as in production.

    Inherited SIDECAR_* variables are dropped and the working directory is the scratch dir (no
    stray .env), so a developer's own configuration can never point the demo at a real Redis. It
    runs in a session of its own: we deliver SIGTERM ourselves, after the viewer is done.
    """
    env = sidecar_env(
        redis_url,
        sim.ws_url,
        sim.rest_url,
        metrics_addr="127.0.0.1",
        metrics_port=metrics_port,
        key_prefix=PREFIX,
        quiet_confirm_s=DEMO_QUIET_CONFIRM_S,
    )
    return SidecarProcess(env, workdir / "sidecar.log", cwd=workdir, own_session=True)


def start_bridge(redis_url: str, cache: Path, workdir: Path) -> BridgeProcess:
    """The ws_cache.json bridge, as its systemd unit runs it: `python -m sidecar bridge`."""
    env = clean_env()
    env.update(SIDECAR_REDIS_URL=redis_url, SIDECAR_KEY_PREFIX=PREFIX, SIDECAR_LOG_LEVEL="INFO")
    return BridgeProcess(env, cache, workdir / "bridge.log", cwd=workdir, own_session=True)


def wait_healthy(proc: SidecarProcess) -> None:
    """Until /healthz answers 200 (loop running, Redis reachable); fail fast if the sidecar died."""
    poll(lambda: proc.proc.poll() is not None or proc.http_get("/healthz")[0] == 200, 20.0, 0.1)
    if proc.proc.poll() is not None:
        raise DemoError(f"the sidecar exited with code {proc.proc.returncode}:\n{tail(proc.log())}")
    if proc.http_get("/healthz")[0] != 200:
        raise DemoError(f"the sidecar did not become healthy within 20 s:\n{tail(proc.log())}")


def tail(log: str, lines: int = 15) -> str:
    return "\n".join(log.splitlines()[-lines:]) or "(no log)"


# ---- the run ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m devkit.demo", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0, help="how long to show quotes (default 30)")
    p.add_argument("--tokens", type=int, default=20, help="tokens to trade, two per market (default 20)")
    p.add_argument("--rate", type=float, default=40.0, help="random market events per second (default 40)")
    p.add_argument("--seed", type=int, default=1, help="simulator random seed")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.tokens < 1 or args.rate < 0:
        p.error("--seconds and --tokens must be positive, --rate not negative")
    return args


def show(viewer: Viewer, seconds: float, sim: Simulator) -> None:
    """The viewing loop, with the mid-run connection drop and its recovery narrated."""
    refresh = TTY_REFRESH_S if viewer.tty else PLAIN_REFRESH_S
    start = time.monotonic()
    drop_at = start + seconds / 2
    dropped_at: float | None = None
    recovered = False
    next_frame = start
    n = len(viewer.tokens)
    while (now := time.monotonic()) < start + seconds:
        if dropped_at is None and now >= drop_at:
            dropped_at = drop_connections(viewer, sim)
            next_frame = time.monotonic() + refresh
        elif dropped_at is not None and not recovered:
            _, stale_at, live_at, _ = viewer.pushes.counts()
            if stale_at and len(live_at) >= len(stale_at):
                recovered = True
                worst = max(live_at.values()) - dropped_at
                viewer.note(f"all {len(live_at)} stale tokens are live again {worst:.2f}s after the drop")
                viewer.render("(all tokens back live on fresh books)")
                next_frame = time.monotonic() + refresh
        if now >= next_frame:
            viewer.render()
            next_frame = now + refresh
        time.sleep(0.02)
    if dropped_at is not None and not recovered:
        _, stale_at, live_at, _ = viewer.pushes.counts()
        viewer.note(f"{len(live_at)}/{len(stale_at) or n} stale tokens back live before the end")


def drop_connections(viewer: Viewer, sim: Simulator) -> float:
    """Abort every exchange socket; show the quotes going stale, as a worker would see them."""
    viewer.pushes.reset_transitions()
    viewer.note("simulator drops every exchange connection now (TCP abort, no close frame)")
    live = viewer.pushes.live_count()
    zeroed = ZeroedEntry(viewer.cache, viewer.tokens[0])
    dropped_at = time.monotonic()
    sim.drop()
    poll(lambda: zeroed.look() and len(viewer.pushes.counts()[1]) >= live, 2.0, interval=0.01)
    _, stale_at, _, reasons = viewer.pushes.counts()
    if stale_at:
        first = min(stale_at.values()) - dropped_at
        why = ", ".join(sorted(set(reasons.values())))
        viewer.note(
            f"{len(stale_at)} tokens went stale {first * 1000:.0f} ms after the drop (reason {why}); "
            "the sidecar is reconnecting with jittered backoff"
        )
        if viewer.cache is not None:
            poll(lambda: zeroed.look() and zeroed.line is not None, 1.0, interval=0.01)
            viewer.note(
                f"{zeroed.line} (the workers' 'unknown': REST fallback)"
                if zeroed.line is not None
                else f"ws_cache.json[{short(zeroed.token)}]: live again before the bridge's next read "
                "of Redis (every 0.2 s), so the file never showed it stale"
            )
        viewer.render("(just after the drop: quotes are stale until a fresh book arrives)")
    else:
        viewer.note("no token went stale within 2 s of the drop (unexpected)")
    return dropped_at


@dataclass
class ZeroedEntry:
    """Samples the bridge's file for the first moment it shows the token not live, prices 0.0."""

    cache: Path | None
    token: str
    line: str | None = None

    def look(self) -> bool:
        if self.cache is not None and self.line is None:
            entry = cache_entry(self.cache, self.token) or {}
            if entry.get("quote_status") not in (None, "live") and entry.get("best_bid") == 0.0:
                self.line = cache_line(self.cache, self.token)
        return True


def check_against_truth(viewer: Viewer, sim: Simulator) -> None:
    """Quiet the market, then compare every live quote with the simulator's own book."""
    sim.stop_activity()
    time.sleep(1.0)
    _, _, quotes = viewer.read()
    live = same = 0
    for token, q in zip(viewer.tokens, quotes, strict=True):
        if q.get("status") != "live":
            continue
        live += 1
        same += (q.get("bid"), q.get("bid_size"), q.get("ask"), q.get("ask_size")) == truth_top(sim, token)
    viewer.note(f"activity stopped: {same}/{live} live quotes equal the simulator's true top of book")


def stop_bridge(bridge: BridgeProcess, cache: Path, token: str | None, out: TextIO) -> None:
    """SIGTERM the bridge; it leaves every price at 0.0, since nothing keeps the file current."""
    code = bridge.shutdown(signal.SIGTERM, 5.0)
    line = f"bridge stopped with SIGTERM: exit code {code}"
    if token is not None:
        line += "; " + cache_line(cache, token)
    print(line, file=out, flush=True)


def stop_sidecar(viewer: Viewer | None, proc: SidecarProcess) -> None:
    """SIGTERM, as systemd does; then show what a worker sees after a clean stop."""
    began = time.monotonic()
    code = proc.shutdown(signal.SIGTERM, 10.0)
    took = time.monotonic() - began
    if viewer is None:
        return
    try:
        _, alive, quotes = viewer.read()
    except redis.RedisError:
        return
    stale = sum(1 for q in quotes if q.get("status") == "stale")
    line = (
        f"sidecar stopped with SIGTERM: exit code {code} after {took:.2f}s; alive key "
        f"{'still present (!)' if alive else 'deleted'}; {stale}/{len(quotes)} quotes now stale"
    )
    reasons = sorted({q.get("reason", "") for q in quotes if q.get("status") == "stale"})
    if reasons:
        line += f" (reason {', '.join(reasons)})"
    print(line, file=viewer.out, flush=True)


def run(args: argparse.Namespace, out: TextIO) -> int:
    tty = out.isatty()
    workdir = Path(tempfile.mkdtemp(prefix="pm-sidecar-demo-"))
    keep_workdir = False
    store: ThrowawayRedis | None = None
    sim: Simulator | None = None
    proc: SidecarProcess | None = None
    bridge: BridgeProcess | None = None
    viewer: Viewer | None = None
    client: redis.Redis | None = None
    try:
        with contextlib.ExitStack() as stack:
            print("starting a throwaway Redis ...", file=out, flush=True)
            try:
                store = start_throwaway_redis(workdir)
            except RuntimeError as exc:
                raise DemoError(str(exc)) from None
            kind = store.describe()
            print(f"redis: {kind}", file=out, flush=True)

            sim = Simulator(seed=args.seed).start()
            for _ in range(math.ceil(args.tokens / 2)):
                sim.add_market()
            tokens = sim.tokens()[: args.tokens]
            n_sleepy = 2 if len(tokens) >= 10 else 1 if len(tokens) >= 3 else 0
            sleepy = set(tokens[len(tokens) - n_sleepy :])
            for token in sleepy:
                sim.set_token_rate(token, SLEEPY_RATE)
            if args.rate > 0:
                sim.start_activity(args.rate, tokens=[t for t in tokens if t not in sleepy])
            print(
                f"simulator: {len(tokens)} tokens in {len(sim.markets())} markets at {sim.ws_url}, "
                f"~{args.rate:g} events/s ({len(sleepy)} quiet tokens at {SLEEPY_RATE} events/s)",
                file=out,
                flush=True,
            )

            metrics_port = free_port()
            proc = start_sidecar(store.url, sim, metrics_port, workdir)
            print(
                f"sidecar: `{Path(sys.executable).name} -m sidecar run` pid {proc.pid}, "
                f"metrics http://127.0.0.1:{metrics_port}/metrics, log {workdir / 'sidecar.log'}",
                file=out,
                flush=True,
            )
            wait_healthy(proc)
            cache = workdir / "ws_cache.json"
            bridge = start_bridge(store.url, cache, workdir)
            print(
                f"bridge: `{Path(sys.executable).name} -m sidecar bridge --ws-cache {cache}` "
                f"pid {bridge.pid}, log {workdir / 'bridge.log'}",
                file=out,
                flush=True,
            )
            print(
                f"try the examples meanwhile: examples/maker_worker.py --redis-url {store.url} --token "
                f"{tokens[0]}  |  examples/scheduler.py --redis-url {store.url} --tokens "
                f"{tokens[0]},{tokens[1 % len(tokens)]}",
                file=out,
                flush=True,
            )

            client = redis.Redis.from_url(store.url, socket_timeout=5.0)
            pushes = Pushes()
            stack.enter_context(listening(client, pushes))
            client.sadd(f"{PREFIX}desired", *tokens)
            client.publish(f"{PREFIX}desired:changed", "demo")
            print(
                f"added {len(tokens)} tokens to {PREFIX}desired and published {PREFIX}desired:changed\n",
                file=out,
                flush=True,
            )

            header = [
                f"pm-sidecar demo | redis: {kind}",
                f"exchange: simulator {sim.ws_url} | quiet tokens confirmed over REST every "
                f"{DEMO_QUIET_CONFIRM_S}s | Ctrl-C to stop",
            ]
            viewer = Viewer(client, tokens, sleepy, header, pushes, out, tty, cache=cache)
            began = time.monotonic()
            poll(lambda: pushes.live_count() >= len(tokens), 10.0)
            # P sidecar is written once a second: let it catch up so the first frame is coherent.
            poll(lambda: client.hget(f"{PREFIX}sidecar", "live") == str(len(tokens)).encode(), 2.0)
            viewer.note(
                f"{pushes.live_count()}/{len(tokens)} tokens live {time.monotonic() - began:.2f}s after "
                f"the desired set was written; connections will be dropped in {args.seconds / 2:.0f}s"
            )
            poll(lambda: cache_entry(cache, tokens[0]) is not None, 2.0)
            viewer.note(cache_line(cache, tokens[0]))
            show(viewer, args.seconds, sim)
            check_against_truth(viewer, sim)
            viewer.render("(final frame)")
            show_entry(cache, tokens[0], out)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=out, flush=True)
    except DemoError as exc:
        keep_workdir = True
        print(f"demo failed: {exc}", file=sys.stderr, flush=True)
        return 1
    except Exception:
        keep_workdir = True  # the sidecar's log is the first thing to look at
        raise
    finally:
        # Shut down in dependency order, even after Ctrl-C: the sidecar needs Redis for its clean stop.
        with ignoring_interrupts():
            if bridge is not None:
                stop_bridge(bridge, workdir / "ws_cache.json", viewer.tokens[0] if viewer else None, out)
            if proc is not None:
                stop_sidecar(viewer, proc)
            if client is not None:
                client.close()
            if sim is not None:
                sim.stop()
            if store is not None:
                store.stop()
            if keep_workdir:
                print(f"logs kept in {workdir}", file=sys.stderr)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    print("demo finished: sidecar, simulator and Redis stopped", file=out, flush=True)
    return 0


@contextlib.contextmanager
def ignoring_interrupts() -> Iterator[None]:
    """A second Ctrl-C must not leave a sidecar or Redis behind; every stop step is time-bounded."""
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C even when started with SIGINT ignored (as `cmd &` does), and `kill <demo>`, clean up alike.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    return run(args, sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
