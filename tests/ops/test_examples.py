"""The examples in examples/ run as documented against a real redis-server, the real sidecar and
the simulator, and do what they say: the worker prices only from usable quotes and exits on a
resolved market; the scheduler replaces the desired set and starts workers once quotes are live."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from types import ModuleType

import pytest
import redis

from devkit import REPO
from devkit.net import free_port
from devkit.wait import wait_for

integration = pytest.mark.integration

P = "pm:"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(
    name: str, *args: str, timeout: float = 30.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run an example; ``env`` replaces every ``SIDECAR_*`` variable of this process's environment."""
    environ = None
    if env is not None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")} | env
    return subprocess.run(
        [sys.executable, str(REPO / "examples" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO),
        env=environ,
    )


@integration
def test_maker_worker_prices_from_live_quotes_and_exits_on_resolution(redis_server, sim, sidecar) -> None:
    market = sim.add_market()
    token, other = sim.markets()[market]
    r = redis_server.client()
    r.sadd(P + "desired", token, other)
    sidecar()
    wait_for(lambda: r.hget(P + "quote:" + token, "status") == "live", 10, what="live")
    top = sim.truth(token)
    worker_args = ["--token", token, "--duration", "20"]
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "examples" / "maker_worker.py"),
            "--redis-url",
            redis_server.url,
            *worker_args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(REPO),
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("start: status=live"), first
    usable = proc.stdout.readline()
    assert usable.startswith(f"usable: bid={float(top.bid)} ask={float(top.ask)}"), usable
    sim.resolve(market, token)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert "resolved (won): cancel orders and exit" in lines
    assert lines[-1].startswith("summary: ") and "0 not usable" in lines[-1]


@integration
def test_maker_worker_does_not_price_from_a_stale_quote(redis_server, sim, sidecar) -> None:
    market = sim.add_market()
    token = sim.markets()[market][0]
    r = redis_server.client()
    r.sadd(P + "desired", token)
    sidecar(confirm_timeout_s=30)
    wait_for(lambda: r.hget(P + "quote:" + token, "status") == "live", 10, what="live")
    conn = sim.conn_for(token)
    assert conn is not None
    sim.mute(token)  # after the drop, nothing more for this token: it stays stale
    sim.drop(conn.id)
    wait_for(lambda: r.hget(P + "quote:" + token, "status") == "stale", 5, what="stale")
    top = sim.truth(token)
    sim.apply_silently([(token, "BUY", top.bid, str(Decimal(top.bid_size) + 5))])
    done = run_example(
        "maker_worker.py", "--redis-url", redis_server.url, "--token", token, "--duration", "2.5"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert not any(line.startswith("usable") for line in lines), lines
    assert any(line.startswith("not usable: status=stale reason=connection_") for line in lines), lines
    assert lines[-1].startswith("summary: 0 usable")


@integration
def test_scheduler_replaces_the_desired_set_and_starts_workers_once_live(redis_server, sim, sidecar) -> None:
    market = sim.add_market()
    tokens = sim.markets()[market]
    r = redis_server.client()
    r.sadd(P + "desired", "999")  # left over from an earlier cycle: set_wanted must remove it
    sidecar()
    done = run_example(
        "scheduler.py",
        "--redis-url",
        redis_server.url,
        "--tokens",
        ",".join(tokens),
        "--cycle-s",
        "0.5",
        "--duration",
        "3",
    )
    assert done.returncode == 0, done.stderr
    assert r.smembers(P + "desired") == set(tokens)
    lines = done.stdout.splitlines()
    started = [line for line in lines if line.startswith("live, start worker: ")]
    assert sorted(line.split()[3] for line in started) == sorted(tokens)
    for token in tokens:
        top = sim.truth(token)
        assert f"live, start worker: {token} bid={float(top.bid)} ask={float(top.ask)}" in lines
    assert sum(line.startswith("cycle: ") for line in lines) >= 3
    assert lines[-1] == "summary: 2/2 workers started"


@integration
def test_scheduler_rejects_an_invalid_token_before_writing(redis_server) -> None:
    r = redis_server.client()
    r.sadd(P + "desired", "123")
    done = run_example(
        "scheduler.py", "--redis-url", redis_server.url, "--tokens", "123,abc", "--duration", "1"
    )
    assert done.returncode != 0
    assert "invalid token id 'abc'" in done.stderr
    assert r.smembers(P + "desired") == {"123"}


@integration
def test_the_examples_use_the_password_of_the_env_file(redis_server) -> None:
    """The installed env file sets SIDECAR_REDIS_PASSWORD: the examples must send it, also when
    --redis-url/--prefix override the URL/prefix."""
    redis_server.client().config_set("requirepass", "s3cret")
    authed = redis.Redis(port=redis_server.port, password="s3cret", decode_responses=True)
    env = {"SIDECAR_REDIS_URL": redis_server.url, "SIDECAR_REDIS_PASSWORD": "s3cret"}
    quick = ["--cycle-s", "0.1", "--start-timeout-s", "0.1", "--duration", "0.3"]
    done = run_example("scheduler.py", "--tokens", "123", *quick, env=env)
    assert done.returncode == 0, done.stderr
    assert authed.smembers(P + "desired") == {"123"}
    elsewhere = {**env, "SIDECAR_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    done = run_example(
        "scheduler.py",
        "--redis-url",
        redis_server.url,
        "--prefix",
        "x:",
        "--tokens",
        "456",
        *quick,
        env=elsewhere,
    )
    assert done.returncode == 0, done.stderr
    assert authed.smembers("x:desired") == {"456"}
    done = run_example("maker_worker.py", "--token", "123", "--duration", "0.3", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "start: no quote (token not desired yet?)"
    refused = run_example(
        "maker_worker.py", "--token", "123", "--duration", "0.3", env={**env, "SIDECAR_REDIS_PASSWORD": ""}
    )
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"error: cannot read Redis at QuoteClient({redis_server.url!r}, prefix='pm:'): "
        "AuthenticationError: Authentication required."
    ]
    authed.close()


def test_maker_worker_without_redis_says_so_retries_and_exits_1() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = run_example("maker_worker.py", "--redis-url", url, "--token", "123", "--duration", "1.5", env={})
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr  # no traceback: one line, a retry, one line
    assert lines[0].startswith(f"cannot read Redis at QuoteClient({url!r}, prefix='pm:'): ConnectionError: ")
    assert lines[0].endswith("; retrying every second")
    assert lines[1].startswith("error: cannot read Redis at ")
    assert done.stdout == ""


def test_compare_counts_agreement_old_false_freshness_and_membership() -> None:
    compare = load_example("compare_ws_cache").compare
    now = 1_000.0

    def e(bid: float, ask: float, age: float, **extra: object) -> dict[str, object]:
        return {"best_bid": bid, "best_ask": ask, "updated_at": now - age, **extra}

    old = {
        "tokens": {
            "1": e(0.5, 0.6, 1),
            "2": e(0.5, 0.6, 1),  # the old aggregator's false freshness after a reconnect
            "3": e(0.5, 0.6, 1),
            "4": e(0.5, 0.6, 61),  # too old for a worker: neither side prices
            "5": e(0.5, 0.6, 1),
        }
    }
    new = {
        "tokens": {
            "1": e(0.5, 0.6, 2, quote_status="live"),
            "2": e(0.0, 0.0, 40, quote_status="stale"),
            "3": e(0.5, 0.61, 1, quote_status="live"),
            "4": e(0.0, 0.0, 61, quote_status="stale"),
            "6": e(0.4, 0.5, 1, quote_status="live"),
        }
    }
    assert compare(old, new, now, 60.0) == Counter(
        both_price_agree=1,
        old_prices_new_stale=1,
        both_price_differ=1,
        neither_prices=1,
        only_in_old=1,
        only_in_new=1,
    )


def test_scheduler_without_redis_says_so_in_one_line_without_a_traceback() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    args = ["--redis-url", url, "--tokens", "123", "--cycle-s", "1", "--duration", "0.5"]  # one cycle
    done = run_example("scheduler.py", *args, env={})
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.splitlines()  # no traceback
    assert line.startswith(f"cannot write Redis at QuoteClient({url!r}, prefix='pm:'): ConnectionError: ")
    assert done.stdout.splitlines() == ["summary: 0/1 workers started"]
