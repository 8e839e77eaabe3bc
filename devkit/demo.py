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
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import orjson
import redis
from pmsim import Simulator

PREFIX = "pm:"
ROOT = Path(__file__).resolve().parents[1]
SLEEPY_RATE = 0.05  # events per second for the deliberately quiet tokens
DEMO_QUIET_CONFIRM_S = 5  # shorter than the default 30 s so the REST confirmation shows in a short demo
TTY_REFRESH_S = 0.25
PLAIN_REFRESH_S = 3.0

CLEAR_HOME = "\x1b[2J\x1b[H"
COLORS = {"live": "32", "pending": "33", "resyncing": "33", "stale": "31", "resolved": "36"}


class DemoError(Exception):
    """Something the demo needs could not be started; the message says what to do."""


# ---- small helpers ------------------------------------------------------------------------------


def free_port() -> int:
    """A free loopback TCP port from the OS's ephemeral range (never Redis's 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port


def short(token: str) -> str:
    """Token ids are 70+ digits; the head and tail are enough to tell them apart on screen."""
    return token if len(token) <= 14 else f"{token[:8]}..{token[-4:]}"


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ---- throwaway Redis ----------------------------------------------------------------------------


@dataclass
class ThrowawayRedis:
    """A Redis only this demo uses: a real redis-server when installed, else fakeredis over TCP.

    The sidecar is a separate process, so it needs a real TCP endpoint either way.
    """

    url: str = ""
    kind: str = ""
    _proc: subprocess.Popen[bytes] | None = None
    _fake: Any = None
    _thread: threading.Thread | None = None

    def start(self, workdir: Path) -> ThrowawayRedis:
        binary = shutil.which("redis-server")
        if binary is not None:
            for _ in range(3):  # a port picked by free_port() can be taken before redis binds it
                port = free_port()
                if self._start_real(binary, port, workdir):
                    with redis.Redis(port=port) as probe:
                        version = probe.info("server").get("redis_version", "?")
                    self.url = f"redis://127.0.0.1:{port}/0"
                    self.kind = f"real redis-server {version} on 127.0.0.1:{port} (no persistence)"
                    return self
            print("redis-server would not start; falling back to fakeredis", flush=True)
        return self._start_fake(binary is None)

    def _start_real(self, binary: str, port: int, workdir: Path) -> bool:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(workdir), "--logfile", str(workdir / "redis.log")]
        # Own session: a Ctrl-C in the terminal must not kill Redis before the sidecar's clean stop.
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis(port=port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                client.ping()
                self._proc = proc
                return True
            except redis.RedisError:
                time.sleep(0.05)
            finally:
                client.close()
        stop_process(proc, signal.SIGTERM, 2.0)
        return False

    def _start_fake(self, missing: bool) -> ThrowawayRedis:
        try:
            import fakeredis
        except ImportError:
            raise DemoError(
                "no redis-server on PATH and fakeredis is not installed: "
                "run `make install` (installs fakeredis) or `apt install redis-server`"
            ) from None
        server = fakeredis.TcpFakeServer(("127.0.0.1", 0), server_type="redis")
        port = int(server.server_address[1])
        self._fake = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="fakeredis", daemon=True
        )
        self._thread.start()
        self.url = f"redis://127.0.0.1:{port}/0"
        why = "no redis-server on PATH" if missing else "redis-server failed"
        self.kind = f"embedded fakeredis {fakeredis.__version__} TCP server on 127.0.0.1:{port} ({why})"
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, signal.SIGTERM, 5.0)
            self._proc = None
        if self._fake is not None:
            self._fake.shutdown()
            self._fake.server_close()
            self._fake = None


def stop_process(proc: subprocess.Popen[bytes], sig: int, timeout_s: float) -> int | None:
    """Signal a child we started and wait for it; SIGKILL if it does not go in time."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)
    return proc.returncode


# ---- the sidecar subprocess -----------------------------------------------------------------------


def start_sidecar(
    redis_url: str, sim: Simulator, metrics_port: int, workdir: Path
) -> subprocess.Popen[bytes]:
    """Run the real sidecar, configured only through SIDECAR_* variables, as in production.

    Inherited SIDECAR_* variables are dropped and the working directory is the scratch dir (no
    stray .env), so a developer's own configuration can never point the demo at a real Redis.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update(
        SIDECAR_WS_URL=sim.ws_url,
        SIDECAR_REST_URL=sim.rest_url,
        SIDECAR_REDIS_URL=redis_url,
        SIDECAR_METRICS_ADDR="127.0.0.1",
        SIDECAR_METRICS_PORT=str(metrics_port),
        SIDECAR_KEY_PREFIX=PREFIX,
        SIDECAR_QUIET_CONFIRM_S=str(DEMO_QUIET_CONFIRM_S),
        SIDECAR_LOG_LEVEL="INFO",
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    log = (workdir / "sidecar.log").open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "sidecar", "run"],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # we deliver SIGTERM ourselves, after the viewer is done
        )
    finally:
        log.close()


def start_bridge(redis_url: str, cache: Path, workdir: Path) -> subprocess.Popen[bytes]:
    """The ws_cache.json bridge, as its systemd unit runs it: `python -m sidecar bridge`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update(SIDECAR_REDIS_URL=redis_url, SIDECAR_KEY_PREFIX=PREFIX, SIDECAR_LOG_LEVEL="INFO")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    log = (workdir / "bridge.log").open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "sidecar", "bridge", "--ws-cache", str(cache)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def cache_entry(cache: Path, token: str) -> dict[str, Any] | None:
    """One token's entry in ws_cache.json, read the way a worker reads it."""
    try:
        doc = orjson.loads(cache.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    entry = doc.get("tokens", {}).get(token)
    return entry if isinstance(entry, dict) else None


CACHE_KEYS = ("best_bid", "best_ask", "price", "updated_at", "seq", "quote_status", "sidecar_alive")


def cache_line(cache: Path, token: str) -> str:
    entry = cache_entry(cache, token)
    if entry is None:
        return f"ws_cache.json has no entry for {short(token)}"
    shown = ", ".join(f"{k}={entry.get(k)}" for k in CACHE_KEYS)
    return f"ws_cache.json[{short(token)}]: {shown}"


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def wait_healthy(proc: subprocess.Popen[bytes], metrics_port: int, log_path: Path) -> None:
    """Until /healthz answers 200 (loop running, Redis reachable); fail fast if the sidecar died."""
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"the sidecar exited with code {proc.returncode}:\n{tail(log_path)}")
        if http_status(f"http://127.0.0.1:{metrics_port}/healthz") == 200:
            return
        time.sleep(0.1)
    raise DemoError(f"the sidecar did not become healthy within 20 s:\n{tail(log_path)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---- watching the push channel ------------------------------------------------------------------


@dataclass
class Pushes:
    """What a worker subscribed to ``pm:quote:*`` sees: counts and status transitions."""

    messages: int = 0
    status: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    stale_at: dict[str, float] = field(default_factory=dict)
    live_again_at: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, data: bytes) -> None:
        msg = orjson.loads(data)
        token, status = msg["token"], msg["status"]
        now = time.monotonic()
        with self.lock:
            self.messages += 1
            before = self.status.get(token)
            self.status[token] = status
            if status == "stale" and before == "live":
                self.stale_at[token] = now
                self.reasons[token] = msg.get("reason", "")
                self.live_again_at.pop(token, None)
            elif status == "live" and before == "stale":
                self.live_again_at[token] = now

    def counts(self) -> tuple[int, dict[str, float], dict[str, float], dict[str, str]]:
        with self.lock:
            return self.messages, dict(self.stale_at), dict(self.live_again_at), dict(self.reasons)

    def live_count(self) -> int:
        with self.lock:
            return sum(1 for status in self.status.values() if status == "live")

    def reset_transitions(self) -> None:
        with self.lock:
            self.stale_at.clear()
            self.live_again_at.clear()
            self.reasons.clear()


@contextlib.contextmanager
def listening(client: redis.Redis, pushes: Pushes) -> Iterator[None]:
    """Subscribe to every quote channel in a background thread for as long as the block runs."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(**{f"{PREFIX}quote:*": lambda m: pushes.on_message(m["data"])})
    worker = pubsub.run_in_thread(sleep_time=0.05, daemon=True)
    try:
        yield
    finally:
        worker.stop()
        worker.join(2.0)
        with contextlib.suppress(Exception):
            pubsub.close()


# ---- the viewer -------------------------------------------------------------------------------


@dataclass
class Viewer:
    """Reads quotes back from Redis exactly as a worker would and draws them."""

    client: redis.Redis
    tokens: list[str]
    sleepy: set[str]
    header: list[str]
    pushes: Pushes
    out: TextIO
    tty: bool
    cache: Path | None = None  # the bridge's ws_cache.json
    notes: list[str] = field(default_factory=list)
    _prev: dict[str, tuple[str, str]] = field(default_factory=dict)
    _started: float = field(default_factory=time.monotonic)

    def note(self, line: str) -> None:
        """Narration: printed at once in plain mode, kept under the table on a TTY."""
        stamp = f"[{time.monotonic() - self._started:5.1f}s] {line}"
        self.notes = [*self.notes, stamp][-6:]
        if not self.tty:
            print(stamp, file=self.out, flush=True)

    def read(self) -> tuple[dict[str, str], bool, list[dict[str, str]]]:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(f"{PREFIX}sidecar")
        pipe.get(f"{PREFIX}sidecar:alive")
        for token in self.tokens:
            pipe.hgetall(f"{PREFIX}quote:{token}")
        raw = pipe.execute()
        summary = {text(k): text(v) for k, v in raw[0].items()}
        alive = raw[1] is not None and text(raw[1]) == summary.get("epoch")
        quotes = [{text(k): text(v) for k, v in h.items()} for h in raw[2:]]
        return summary, alive, quotes

    def render(self, title: str = "") -> None:
        summary, alive, quotes = self.read()
        now_ms = time.time() * 1000
        lines = list(self.header)
        if title:
            lines.append(title)
        beat = summary.get("heartbeat_at", "")
        beat_age = f"{max(0.0, now_ms - int(beat)) / 1000:.1f}s ago" if beat.isdigit() else "-"
        lines.append(
            f"{PREFIX}sidecar (written every 1 s, heartbeat {beat_age}): "
            "live {}/{} desired, pending {}, stale {}, quote_health {}, connections_up {}/{}, "
            "alive key {}".format(
                summary.get("live", "?"),
                summary.get("desired", "?"),
                summary.get("pending", "?"),
                summary.get("stale", "?"),
                summary.get("quote_health", "?"),
                summary.get("connections_up", "?"),
                summary.get("connections", "?"),
                "present (epoch matches)" if alive else "MISSING or epoch differs",
            )
        )
        messages, *_ = self.pushes.counts()
        lines.append(f"pushes received on {PREFIX}quote:* so far: {messages}")
        lines.append("")
        lines.append(
            f"  {'token':<15} {'bid':>6} {'ask':>6} {'bid_size':>10} {'ask_size':>10} {'age':>6}  "
            f"{'status':<10} {'seq':>17}  reason"
        )
        for token, q in zip(self.tokens, quotes, strict=True):
            lines.append(self._row(token, q, now_ms))
        lines.append("  (* = bid or ask moved since the previous frame, ~ = a deliberately quiet token)")
        if self.tty:
            lines.append("")
            lines.extend(self.notes)
            self.out.write(CLEAR_HOME + "\n".join(lines) + "\n")
        else:
            stamp = f"---- {time.strftime('%H:%M:%S')} (+{time.monotonic() - self._started:.1f}s) ----"
            self.out.write("\n".join([stamp, *lines[len(self.header) :]]) + "\n\n")
        self.out.flush()

    def _row(self, token: str, q: dict[str, str], now_ms: float) -> str:
        if not q:
            return f"  {short(token):<15} (no quote yet)"
        bid, ask = q.get("bid", ""), q.get("ask", "")
        moved = self._prev.get(token, (bid, ask)) != (bid, ask)
        self._prev[token] = (bid, ask)
        updated = q.get("updated_at", "")
        age = f"{max(0.0, now_ms - int(updated)) / 1000:.1f}s" if updated else "-"
        status = q.get("status", "?")
        shown = f"{status:<10}"
        if self.tty and status in COLORS:
            shown = f"\x1b[{COLORS[status]}m{shown}\x1b[0m"
        mark = "*" if moved else " "
        name = short(token) + ("~" if token in self.sleepy else "")
        return (
            f"{mark} {name:<15} {bid or '-':>6} {ask or '-':>6} {q.get('bid_size') or '-':>10} "
            f"{q.get('ask_size') or '-':>10} {age:>6}  {shown} {q.get('seq', ''):>17}  {q.get('reason', '')}"
        )


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


def wait_until(cond: Callable[[], bool], timeout_s: float, step_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step_s)
    return cond()


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
    wait_until(lambda: zeroed.look() and len(viewer.pushes.counts()[1]) >= live, 2.0, step_s=0.01)
    _, stale_at, _, reasons = viewer.pushes.counts()
    if stale_at:
        first = min(stale_at.values()) - dropped_at
        why = ", ".join(sorted(set(reasons.values())))
        viewer.note(
            f"{len(stale_at)} tokens went stale {first * 1000:.0f} ms after the drop (reason {why}); "
            "the sidecar is reconnecting with jittered backoff"
        )
        if viewer.cache is not None:
            wait_until(lambda: zeroed.look() and zeroed.line is not None, 1.0, step_s=0.01)
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
        t = sim.truth(token)
        same += (q.get("bid"), q.get("bid_size"), q.get("ask"), q.get("ask_size")) == (
            t.bid,
            t.bid_size,
            t.ask,
            t.ask_size,
        )
    viewer.note(f"activity stopped: {same}/{live} live quotes equal the simulator's true top of book")


def show_entry(cache: Path, token: str, out: TextIO) -> None:
    """One token's whole ws_cache.json entry: what the maker bot's workers read."""
    entry = cache_entry(cache, token)
    text_ = "(no entry)" if entry is None else orjson.dumps(entry, option=orjson.OPT_INDENT_2).decode()
    print(f"\nws_cache.json entry of {token}, as the bridge wrote it:\n{text_}\n", file=out, flush=True)


def stop_bridge(bridge: subprocess.Popen[bytes], cache: Path, token: str | None, out: TextIO) -> None:
    """SIGTERM the bridge; it leaves every price at 0.0, since nothing keeps the file current."""
    code = stop_process(bridge, signal.SIGTERM, 5.0)
    line = f"bridge stopped with SIGTERM: exit code {code}"
    if token is not None:
        line += "; " + cache_line(cache, token)
    print(line, file=out, flush=True)


def stop_sidecar(viewer: Viewer | None, proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as systemd does; then show what a worker sees after a clean stop."""
    began = time.monotonic()
    code = stop_process(proc, signal.SIGTERM, 10.0)
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
    store = ThrowawayRedis()
    sim: Simulator | None = None
    proc: subprocess.Popen[bytes] | None = None
    bridge: subprocess.Popen[bytes] | None = None
    viewer: Viewer | None = None
    client: redis.Redis | None = None
    try:
        with contextlib.ExitStack() as stack:
            print("starting a throwaway Redis ...", file=out, flush=True)
            store.start(workdir)
            print(f"redis: {store.kind}", file=out, flush=True)

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
            wait_healthy(proc, metrics_port, workdir / "sidecar.log")
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
                f"pm-sidecar demo | redis: {store.kind}",
                f"exchange: simulator {sim.ws_url} | quiet tokens confirmed over REST every "
                f"{DEMO_QUIET_CONFIRM_S}s | Ctrl-C to stop",
            ]
            viewer = Viewer(client, tokens, sleepy, header, pushes, out, tty, cache=cache)
            began = time.monotonic()
            wait_until(lambda: pushes.live_count() >= len(tokens), 10.0)
            # P sidecar is written once a second: let it catch up so the first frame is coherent.
            wait_until(lambda: client.hget(f"{PREFIX}sidecar", "live") == str(len(tokens)).encode(), 2.0)
            viewer.note(
                f"{pushes.live_count()}/{len(tokens)} tokens live {time.monotonic() - began:.2f}s after "
                f"the desired set was written; connections will be dropped in {args.seconds / 2:.0f}s"
            )
            wait_until(lambda: cache_entry(cache, tokens[0]) is not None, 2.0)
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
