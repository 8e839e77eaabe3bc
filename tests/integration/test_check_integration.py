"""`pm-sidecar check` against a real redis-server and the exchange simulator: all well, then one
fault at a time (Redis unreachable, socket refused, REST 5xx or not the CLOB), each one FAIL line;
an evicting policy is a WARN line."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pmsim import Simulator

from devkit import REPO
from devkit.net import free_port
from devkit.procs import SidecarProcess, sidecar_env
from devkit.redis_server import RedisServer
from devkit.wait import wait_for

pytestmark = pytest.mark.integration


def run_check(
    redis_url: str, ws_url: str, rest_url: str, *args: str, **overrides: Any
) -> tuple[int, list[str]]:
    return run_check_env(sidecar_env(redis_url, ws_url, rest_url, **overrides), *args)


def run_check_env(env: dict[str, str], *args: str) -> tuple[int, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-m", "sidecar", "check", "--timeout", "3", *args],
        env=env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stderr == "", proc.stderr
    return proc.returncode, proc.stdout.splitlines()


def fails(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("FAIL")]


def with_level(lines: list[str], level: str, area: str) -> list[str]:
    return [line for line in lines if line.startswith(f"{level:<4} {area}:")]


def a_token(sim: Simulator) -> str:
    market = sim.add_market()
    return sim.markets()[market][0]


def test_all_well(redis_server: RedisServer, sim: Simulator) -> None:
    token = a_token(sim)
    r = redis_server.client()
    r.sadd("pm:desired", token, "not-a-token")
    code, lines = run_check(redis_server.url, sim.ws_url, sim.rest_url)
    assert code == 0, lines
    assert fails(lines) == []
    assert with_level(lines, "ok", "redis")[0].endswith(f"Redis {r.info()['redis_version']}")
    short = f"{token[:6]}…{token[-6:]}"
    assert f"ok   ws: book for token {short} received" in lines
    assert any(
        line.startswith("ok   rest:") and f"HTTP 200, 1 book(s) for token {short}" in line for line in lines
    )
    # the fixture's redis-server runs without persistence: said, but not a failure
    assert len(with_level(lines, "WARN", "redis")) == 1
    assert "no persistence" in with_level(lines, "WARN", "redis")[0]
    plan = [line for line in lines if line.startswith("run would:")]
    assert "pm:desired now: 1 tokens (1 invalid ids ignored, 0 over SIDECAR_MAX_TOKENS ignored)" in plan[0]
    assert f"1 socket(s) of at most 200 tokens to {sim.ws_url}" in plan[0]
    assert lines[-1] == "check: 0 problem(s), 1 warning(s)"
    assert sim.violations == []

    # AOF on: the persistence warning goes away (read from INFO, not assumed)
    r.config_set("appendonly", "yes")
    code, lines = run_check(redis_server.url, sim.ws_url, sim.rest_url)
    assert code == 0, lines
    assert with_level(lines, "WARN", "redis") == []
    assert lines[-1] == "check: 0 problem(s), 0 warning(s)"


def test_no_desired_token_sends_an_empty_subscription(redis_server: RedisServer, sim: Simulator) -> None:
    code, lines = run_check(redis_server.url, sim.ws_url, sim.rest_url)
    assert code == 0, lines
    assert any(line.startswith("ok   ws:") and "subscription accepted, PONG" in line for line in lines)
    assert not any("book for token" in line for line in lines)
    assert any("empty request: reachable" in line for line in lines)
    assert sim.violations == []


def test_redis_unreachable(redis_server: RedisServer, sim: Simulator) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    code, lines = run_check(dead, sim.ws_url, sim.rest_url, "--token", a_token(sim))
    assert code == 1
    assert len(fails(lines)) == 1
    assert fails(lines)[0].startswith(f"FAIL redis: cannot use {dead}: ConnectionError")
    assert any(line.startswith("ok   ws: book for token") for line in lines)  # the rest still checked
    assert "pm:desired could not be read" in "\n".join(lines)


def test_socket_refused(redis_server: RedisServer, sim: Simulator) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/ws/market"
    code, lines = run_check(redis_server.url, dead, sim.rest_url)
    assert code == 1
    assert len(fails(lines)) == 1
    assert fails(lines)[0].startswith(f"FAIL ws: cannot open {dead}: ConnectionRefusedError")


def test_unresolvable_hosts(redis_server: RedisServer, sim: Simulator) -> None:
    """One FAIL line per host that does not resolve, not a second one for its connection."""
    code, lines = run_check(
        redis_server.url, "wss://no-such-host.invalid/ws/market", "https://no-such-rest.invalid"
    )
    assert code == 1
    assert [line.split(":")[0] for line in fails(lines)] == ["FAIL dns", "FAIL dns"]
    assert "'no-such-host.invalid' does not resolve" in fails(lines)[0]
    assert "'no-such-rest.invalid' does not resolve" in fails(lines)[1]


def test_handshake_rejected(redis_server: RedisServer, sim: Simulator) -> None:
    sim.reject_handshakes(429, 1)
    code, lines = run_check(redis_server.url, sim.ws_url, sim.rest_url)
    assert code == 1
    assert fails(lines) == [f"FAIL ws: cannot open {sim.ws_url}: HTTP 429 on the handshake"]


def test_rest_5xx(redis_server: RedisServer, sim: Simulator) -> None:
    redis_server.client().sadd("pm:desired", a_token(sim))
    sim.rest_fail(503, 1)
    code, lines = run_check(redis_server.url, sim.ws_url, sim.rest_url)
    assert code == 1
    assert fails(lines) == [f"FAIL rest: POST {sim.rest_url}/books: HTTP 503"]
    # REST disabled: not checked, so not failed
    sim.rest_fail(503, 1)
    code, lines = run_check(redis_server.url, sim.ws_url, sim.rest_url, rest_enabled="false")
    assert code == 0, lines
    assert "ok   rest: SIDECAR_REST_ENABLED=false: not checked" in lines


class _Stub(BaseHTTPRequestHandler):
    """Not the CLOB: every path answers what ``self.server.answer`` says (status, headers, body)."""

    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers, body = self.server.answer
        self.server.requests.append((self.command, self.path))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _serve


@pytest.fixture
def stub() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_rest_url_that_is_not_the_clob_fails_with_nothing_desired(
    redis_server: RedisServer, sim: Simulator, stub: Any
) -> None:
    """The normal state of a new host (an empty desired set): a wrong SIDECAR_REST_URL still fails."""
    url = f"http://127.0.0.1:{stub.server_address[1]}"
    stub.answer = (404, {"Content-Type": "text/html"}, b"<h1>Not Found</h1>")
    code, lines = run_check(redis_server.url, sim.ws_url, url)
    assert code == 1
    assert fails(lines) == [f"FAIL rest: POST {url}/books: HTTP 404: no /books here; check SIDECAR_REST_URL"]
    assert stub.requests == [("POST", "/books")]

    stub.answer = (301, {"Location": "https://elsewhere.example/books"}, b"")
    code, lines = run_check(redis_server.url, sim.ws_url, url)
    assert code == 1
    assert fails(lines) == [
        f"FAIL rest: POST {url}/books: HTTP 301: redirect to https://elsewhere.example/books "
        "(not followed: a POST /books does not survive a redirect); check SIDECAR_REST_URL"
    ]
    assert stub.requests[1:] == [("POST", "/books")]  # reported, not followed

    stub.answer = (200, {"Content-Type": "text/html"}, b"<html>a web server</html>")
    code, lines = run_check(redis_server.url, sim.ws_url, url)
    assert code == 1
    assert fails(lines) == [
        f"FAIL rest: POST {url}/books: HTTP 200 with a body that is not JSON: not the CLOB's /books"
    ]

    stub.answer = (400, {"Content-Type": "application/json"}, b'{"error": "Invalid payload"}')
    code, lines = run_check(redis_server.url, sim.ws_url, url)
    assert code == 0, lines  # a JSON refusal of the empty list: reachable, no book checked
    assert any(line.startswith(f"ok   rest: POST {url}/books: HTTP 400, a JSON refusal") for line in lines)


def test_evicting_policy(redis_server: RedisServer, sim: Simulator) -> None:
    r = redis_server.client()
    r.config_set("maxmemory-policy", "allkeys-lru")
    code, lines = run_check(redis_server.url, sim.ws_url, sim.rest_url)
    assert code == 0, lines  # no maxmemory: nothing is evicted yet, but it is said
    assert any(
        line.startswith("WARN redis: maxmemory-policy allkeys-lru with no maxmemory") for line in lines
    )
    r.config_set("maxmemory", str(512 << 20))
    code, lines = run_check(redis_server.url, sim.ws_url, sim.rest_url)
    assert code == 0, lines  # issue 12: a warning, said with what can be evicted
    assert fails(lines) == []
    evicting = [line for line in with_level(lines, "WARN", "redis") if "maxmemory-policy" in line]
    assert len(evicting) == 1
    assert evicting[0].startswith(
        f"WARN redis: maxmemory-policy allkeys-lru with maxmemory {512 << 20} bytes: once memory is full"
    )
    assert "live quote hashes" in evicting[0] and "pm:desired" in evicting[0]
    assert lines[-1] == "check: 0 problem(s), 2 warning(s)"  # and no persistence
    r.config_set("maxmemory-policy", "volatile-lru")
    code, lines = run_check(redis_server.url, sim.ws_url, sim.rest_url)
    assert code == 0, lines
    assert any(line.startswith("WARN redis: maxmemory-policy volatile-lru") for line in lines)


def test_desired_of_the_wrong_type(redis_server: RedisServer, sim: Simulator) -> None:
    redis_server.client().set("pm:desired", "oops")
    code, lines = run_check(redis_server.url, sim.ws_url, sim.rest_url)
    assert code == 1
    assert fails(lines) == [
        "FAIL redis: pm:desired is a string, not a set: run would keep an empty desired set"
    ]


def test_with_the_sidecar_running(
    redis_server: RedisServer, sim: Simulator, sidecar: Callable[..., SidecarProcess]
) -> None:
    """On a host where it already runs: its port is taken (a warning) and its epoch is shown."""
    proc = sidecar()
    r = redis_server.client()
    epoch = wait_for(lambda: r.get("pm:sidecar:alive"), timeout=10, what="the alive key")
    assert isinstance(epoch, str)
    code, lines = run_check_env(proc.env)
    assert code == 0, lines
    assert f"ok   redis: a sidecar is running on this Redis now (epoch {epoch})" in lines
    taken = with_level(lines, "WARN", "metrics")
    assert len(taken) == 1
    assert taken[0].startswith(f"WARN metrics: 127.0.0.1:{proc.metrics_port} is taken")
    proc.terminate()
    wait_for(lambda: r.get("pm:sidecar:alive") is None, timeout=5, what="the alive key to go")
    code, lines = run_check_env(proc.env)
    assert code == 0, lines
    assert f"ok   metrics: 127.0.0.1:{proc.metrics_port} is free" in lines


def test_a_user_that_may_read_but_not_write(redis_server: RedisServer, sim: Simulator) -> None:
    """An ACL user with read commands only: everything reads fine, the write probe fails."""
    r = redis_server.client()
    r.acl_setuser(
        "reader",
        enabled=True,
        passwords=["+s3cret-pw"],
        keys=["*"],
        channels=["*"],
        categories=["+@read", "+@connection", "+@transaction"],
        commands=["+info", "+config|get"],
    )
    url = f"redis://reader:s3cret-pw@127.0.0.1:{redis_server.port}/0"
    code, lines = run_check(url, sim.ws_url, sim.rest_url)
    assert code == 1
    assert len(fails(lines)) == 1
    assert fails(lines)[0].startswith("FAIL redis: cannot write as the sidecar does")
    assert "s3cret-pw" not in "\n".join(lines)
    assert r.keys("pm:check:*") == []
    # the default user writes, and leaves nothing behind
    code, lines = run_check(redis_server.url, sim.ws_url, sim.rest_url)
    assert code == 0, lines
    assert any(line.startswith("ok   redis: writes as the sidecar does") for line in lines)
    assert r.keys("pm:check:*") == []
