"""`pm-sidecar check`: the pure decisions (eviction, persistence, role, plan, socket and REST outcomes)."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from typing import Any

import pytest

from sidecar.check import check_metrics_port, main
from sidecar.check_rules import (
    EX_OK,
    EX_PROBLEM,
    EX_USAGE,
    NOT_JSON,
    Level,
    Plan,
    WsOutcome,
    eviction_finding,
    exit_code,
    fail,
    ok,
    persistence_finding,
    plan_lines,
    rest_finding,
    role_finding,
    warn,
    ws_finding,
)
from sidecar.config import Settings

TOKEN = "1234567890" * 7


def settings(**kw: Any) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("policy", "maxmemory", "level"),
    [
        # issue 12: "warn when an eviction policy could evict quote hashes or the desired set"
        ("allkeys-lru", 100 << 20, Level.WARN),
        ("allkeys-lfu", 1, Level.WARN),
        ("allkeys-random", 1, Level.WARN),
        ("allkeys-lru", 0, Level.WARN),  # nothing is evicted without a limit, but one set later would
        ("volatile-lru", 100 << 20, Level.WARN),
        ("volatile-ttl", 100 << 20, Level.WARN),
        ("volatile-lru", 0, Level.OK),
        ("noeviction", 100 << 20, Level.OK),
        ("noeviction", 0, Level.OK),
        ("something-new", 1, Level.WARN),
    ],
)
def test_eviction_policy(policy: str, maxmemory: int, level: Level) -> None:
    finding = eviction_finding(policy, maxmemory, "pm:")
    assert finding.level is level
    assert policy in finding.text


def test_eviction_texts_say_what_can_go() -> None:
    allkeys = eviction_finding("allkeys-lru", 1, "pm:").text
    assert allkeys.startswith("maxmemory-policy allkeys-lru with maxmemory 1 bytes: once memory is full")
    assert "live quote hashes" in allkeys and "pm:desired (read as empty" in allkeys
    assert "every token unsubscribed at once" in allkeys
    volatile = eviction_finding("volatile-lru", 1, "pm:").text
    assert "pm:sidecar:alive" in volatile and "live quotes and the desired set are safe" in volatile


@pytest.mark.parametrize(
    ("save", "aof", "level"),
    [
        ("3600 1 300 100", False, Level.OK),
        ("", True, Level.OK),
        (None, True, Level.OK),
        ("", False, Level.WARN),
        ("  ", False, Level.WARN),
        (None, False, Level.WARN),
    ],
)
def test_persistence(save: str | None, aof: bool, level: Level) -> None:
    finding = persistence_finding(save, aof, "pm:")
    assert finding.level is level
    if level is Level.WARN:
        assert "60 s" in finding.text  # the sidecar's own hold of the last desired set


@pytest.mark.parametrize(
    ("role", "read_only", "level"),
    [("master", True, Level.OK), ("slave", True, Level.FAIL), ("slave", False, Level.WARN)],
)
def test_role(role: str, read_only: bool, level: Level) -> None:
    assert role_finding(role, read_only).level is level


def test_plan_applies_the_engines_rules() -> None:
    members: list[bytes | str] = [b"12", " 34 ", "junk", b"", "5" * 70, "-1"]
    members += [str(1000 + i) for i in range(400)]
    plan = Plan.from_members(members, max_tokens=300, per_conn=200)
    # valid: 12, 34, 5...5 and 400 others = 403; cap 300 -> 103 ignored; 2 sockets of <= 200
    assert (plan.valid, plan.invalid, plan.capped, plan.sockets) == (300, 3, 103, 2)
    assert plan.first_token == "1000"
    assert Plan.from_members(["1"] * 3 + ["2"], 10, 1) == Plan(2, 0, 0, 2, "1")
    assert Plan.from_members([], 10, 200) == Plan(0, 0, 0, 0, None)
    assert Plan.from_members([str(i) for i in range(201)], 5000, 200).sockets == 2
    assert Plan.from_members([str(i) for i in range(200)], 5000, 200).sockets == 1


def test_plan_lines() -> None:
    s = settings(metrics_addr="127.0.0.2", metrics_port=9999, max_tokens_per_conn=50)
    text = "\n".join(plan_lines(s, Plan(120, 1, 0, 3, "7")))
    assert "pm:desired now: 120 tokens (1 invalid ids ignored, 0 over SIDECAR_MAX_TOKENS ignored)" in text
    assert "3 socket(s) of at most 50 tokens" in text
    assert "http://127.0.0.2:9999/metrics" in text
    assert "could not be read" in plan_lines(s, None)[0]
    assert "REST disabled" in plan_lines(settings(rest_enabled=False), None)[1]
    secret = settings(redis_url="redis://:hunter2@127.0.0.1:6379/0")
    assert "hunter2" not in "\n".join(plan_lines(secret, None))


def test_ws_outcomes() -> None:
    url = "ws://x/ws/market"
    assert [f.level for f in ws_finding(WsOutcome(url, None, error="ConnectionRefusedError"), 5)] == [
        Level.FAIL
    ]
    assert [f.level for f in ws_finding(WsOutcome(url, None), 5)] == [Level.FAIL]  # no PONG
    # an empty subscription refused proves the handshake only: a warning, not a failure
    refused_empty = ws_finding(WsOutcome(url, None, close_code=1008, close_reason="invalid"), 5)
    assert [f.level for f in refused_empty] == [Level.WARN]
    refused = ws_finding(WsOutcome(url, TOKEN, close_code=1008, close_reason="invalid"), 5)
    assert [f.level for f in refused] == [Level.FAIL]
    assert "1008 invalid" in refused[0].text
    assert [f.level for f in ws_finding(WsOutcome(url, None, pong=True), 5)] == [Level.OK]
    assert [f.level for f in ws_finding(WsOutcome(url, TOKEN, pong=True, book=True), 5)] == [Level.OK] * 2
    assert [f.level for f in ws_finding(WsOutcome(url, TOKEN, pong=True), 5)] == [Level.OK, Level.WARN]


@pytest.mark.parametrize(
    ("status", "body", "error", "token", "level"),
    [
        (200, [{"asset_id": "1"}], None, TOKEN, Level.OK),
        (200, [], None, TOKEN, Level.OK),
        (200, {"error": "x"}, None, TOKEN, Level.FAIL),
        (404, {"error": "not found"}, None, TOKEN, Level.FAIL),
        (400, {"error": "Invalid payload"}, None, TOKEN, Level.FAIL),
        # the empty request (nothing desired): the CLOB's answers are ok ...
        (200, [], None, None, Level.OK),  # what the simulator (and an API that allows it) answers
        (400, {"error": "Invalid payload"}, None, None, Level.OK),  # a JSON refusal of []
        (422, {"error": "Invalid payload"}, None, None, Level.OK),
        # ... anything that shows it is not the CLOB's /books is not
        (404, {"error": "not found"}, None, None, Level.FAIL),
        (404, NOT_JSON, None, None, Level.FAIL),
        (405, NOT_JSON, None, None, Level.FAIL),
        (401, {"error": "unauthorized"}, None, None, Level.FAIL),
        (403, NOT_JSON, None, None, Level.FAIL),
        (301, NOT_JSON, None, None, Level.FAIL),
        (302, NOT_JSON, None, None, Level.FAIL),
        (307, NOT_JSON, None, None, Level.FAIL),
        (308, NOT_JSON, None, None, Level.FAIL),
        (410, {"error": "gone"}, None, None, Level.FAIL),
        (200, NOT_JSON, None, None, Level.FAIL),  # an HTML page
        (400, NOT_JSON, None, None, Level.FAIL),
        (200, {"status": "ok"}, None, None, Level.FAIL),  # JSON, but no list
        (400, [], None, None, Level.FAIL),
        (204, NOT_JSON, None, None, Level.FAIL),  # no body
        (503, NOT_JSON, None, None, Level.FAIL),
        (500, NOT_JSON, None, TOKEN, Level.FAIL),
        (429, {"error": "slow down"}, None, None, Level.FAIL),
        (None, None, "TimeoutError: timed out", TOKEN, Level.FAIL),
        (None, None, "ConnectionRefusedError: refused", None, Level.FAIL),
    ],
)
def test_rest_outcomes(
    status: int | None, body: object, error: str | None, token: str | None, level: Level
) -> None:
    assert rest_finding("http://x/books", status, body, error, token).level is level


def test_rest_texts_say_why_the_url_is_wrong() -> None:
    url = "http://x/books"
    assert rest_finding(url, 404, NOT_JSON, None, None).line() == (
        f"FAIL rest: POST {url}: HTTP 404: no /books here; check SIDECAR_REST_URL"
    )
    assert rest_finding(url, 405, NOT_JSON, None, None).line() == (
        f"FAIL rest: POST {url}: HTTP 405: POST not allowed here; check SIDECAR_REST_URL"
    )
    assert rest_finding(url, 301, NOT_JSON, None, None, "https://x/books").line() == (
        f"FAIL rest: POST {url}: HTTP 301: redirect to https://x/books "
        "(not followed: a POST /books does not survive a redirect); check SIDECAR_REST_URL"
    )
    assert "refused (authentication" in rest_finding(url, 403, NOT_JSON, None, None).text
    assert rest_finding(url, 200, NOT_JSON, None, None).line() == (
        f"FAIL rest: POST {url}: HTTP 200 with a body that is not JSON: not the CLOB's /books"
    )
    assert rest_finding(url, 200, [], None, None).line() == (
        f"ok   rest: POST {url}: HTTP 200, a JSON list (empty request: reachable, no book checked)"
    )


def test_exit_code() -> None:
    assert exit_code([ok("a", ""), warn("b", "")]) == EX_OK
    assert exit_code([ok("a", ""), fail("b", ""), warn("c", "")]) == EX_PROBLEM
    assert exit_code([]) == EX_OK


def test_metrics_port_taken() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        s = settings(metrics_port=port)
        assert check_metrics_port(s, sidecar_alive=False).level is Level.FAIL
        assert check_metrics_port(s, sidecar_alive=True).level is Level.WARN
    assert check_metrics_port(s, sidecar_alive=False).level is Level.OK
    assert check_metrics_port(settings(metrics_port=0), sidecar_alive=False).level is Level.OK


def test_bad_token_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(settings(), argparse.Namespace(token="12ab", timeout=1.0)) == EX_USAGE
    assert "not a token id" in capsys.readouterr().err


def test_invalid_configuration_exits_78_before_any_network() -> None:
    env = {"PATH": "/usr/bin:/bin", "SIDECAR_REDIS_URL": "http://nope", "SIDECAR_MAX_TOKENS_PER_CONN": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "sidecar", "check"],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2
    assert any("SIDECAR_REDIS_URL" in line for line in lines)
    assert any("SIDECAR_MAX_TOKENS_PER_CONN" in line for line in lines)
    assert proc.stdout == ""
