"""sidecar.config: defaults, SIDECAR_* overrides, exit code 78 with a named variable, no leaked secrets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.config import EX_CONFIG, Settings, describe_errors, load_settings_or_exit, redact_url
from sidecar.core.engine import EngineConfig


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No SIDECAR_* from the outer environment and no .env from the repo."""
    for name in list(os.environ):
        if name.upper().startswith("SIDECAR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield


def test_defaults() -> None:
    s = Settings()
    assert s.ws_url == "wss://ws-subscriptions-clob.polymarket.com/ws/market"
    assert s.rest_url == "https://clob.polymarket.com"
    assert s.rest_enabled is True
    assert s.rest_max_rps == 5.0
    assert s.max_tokens_per_conn == 200
    assert s.max_tokens == 5000
    assert s.ping_interval_s == 10.0
    assert s.pong_timeout_s == 30.0
    assert s.connect_spacing_s == 0.25
    assert s.backoff_min_s == 0.5
    assert s.backoff_max_s == 30.0
    assert s.silence_min_s == 0.5
    assert s.silence_max_s == 120.0
    assert s.probe_timeout_s == 3.0
    assert s.confirm_timeout_s == 20.0
    assert s.redrive_max == 2
    assert s.quiet_confirm_s == 30.0
    assert s.ready_quote_health == 0.9
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.redis_password is None
    assert s.redis_tls_ca_file is None
    assert s.key_prefix == "pm:"
    assert s.desired_poll_s == 1.0
    assert s.alive_ttl_s == 5
    assert s.unsubscribed_ttl_s == 300
    assert s.write_flush_ms == 2.0
    assert s.metrics_addr == "127.0.0.1"
    assert s.metrics_port == 9464
    assert s.log_level == "INFO"
    assert EX_CONFIG == 78


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_WS_URL", "ws://127.0.0.1:9999/ws/market")
    monkeypatch.setenv("SIDECAR_REST_URL", "http://127.0.0.1:8080/")
    monkeypatch.setenv("SIDECAR_KEY_PREFIX", "test:")
    monkeypatch.setenv("SIDECAR_MAX_TOKENS_PER_CONN", "50")
    monkeypatch.setenv("SIDECAR_SILENCE_MAX_S", "60.5")
    monkeypatch.setenv("SIDECAR_REST_ENABLED", "false")
    monkeypatch.setenv("sidecar_log_level", "debug")  # case-insensitive names, normalised value
    monkeypatch.setenv("SIDECAR_METRICS_ADDR", "0.0.0.0")
    monkeypatch.setenv("SIDECAR_ALIVE_TTL_S", "9")
    s = load_settings_or_exit()
    assert s.ws_url == "ws://127.0.0.1:9999/ws/market"
    assert s.rest_url == "http://127.0.0.1:8080"  # trailing slash stripped
    assert s.key_prefix == "test:"
    assert s.max_tokens_per_conn == 50
    assert s.silence_max_s == 60.5
    assert s.rest_enabled is False
    assert s.log_level == "DEBUG"
    assert s.metrics_addr == "0.0.0.0"
    assert s.alive_ttl_s == 9


def test_dotenv_in_cwd_is_read_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SIDECAR_KEY_PREFIX=fromfile:\nSIDECAR_MAX_TOKENS=77\n")
    monkeypatch.setenv("SIDECAR_MAX_TOKENS", "88")
    s = Settings()
    assert s.key_prefix == "fromfile:"
    assert s.max_tokens == 88


def test_unknown_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_NO_SUCH_SETTING", "1")
    assert Settings().key_prefix == "pm:"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SIDECAR_MAX_TOKENS_PER_CONN", "0"),
        ("SIDECAR_MAX_TOKENS_PER_CONN", "501"),
        ("SIDECAR_MAX_TOKENS_PER_CONN", "abc"),
        ("SIDECAR_MAX_TOKENS", "0"),
        ("SIDECAR_PING_INTERVAL_S", "0"),
        ("SIDECAR_PING_INTERVAL_S", "-1"),
        ("SIDECAR_PING_INTERVAL_S", "nan"),
        ("SIDECAR_CONNECT_SPACING_S", "-0.1"),
        ("SIDECAR_REDRIVE_MAX", "-1"),
        ("SIDECAR_READY_QUOTE_HEALTH", "1.5"),
        ("SIDECAR_ALIVE_TTL_S", "0"),
        ("SIDECAR_DESIRED_POLL_S", "0"),  # a busy loop of SMEMBERS against Redis
        ("SIDECAR_DESIRED_POLL_S", "-1"),
        ("SIDECAR_DESIRED_POLL_S", "inf"),
        ("SIDECAR_REST_MAX_RPS", "0"),  # 1/0: the REST thread would die on its first request
        ("SIDECAR_REST_MAX_RPS", "-5"),
        ("SIDECAR_METRICS_PORT", "70000"),
        ("SIDECAR_WS_URL", "https://ws-subscriptions-clob.polymarket.com/ws/market"),
        ("SIDECAR_REST_URL", "ftp://clob.polymarket.com"),
        ("SIDECAR_REDIS_URL", "http://127.0.0.1:6379"),
        ("SIDECAR_LOG_LEVEL", "verbose"),
        ("SIDECAR_REST_ENABLED", "maybe"),
    ],
)
def test_invalid_value_exits_78_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as info:
        load_settings_or_exit()
    assert info.value.code == 78
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"pm-sidecar: invalid configuration: {name}: ")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SIDECAR_SILENCE_MIN_S": "200"}, "SIDECAR_SILENCE_MIN_S"),
        ({"SIDECAR_BACKOFF_MIN_S": "10", "SIDECAR_BACKOFF_MAX_S": "5"}, "SIDECAR_BACKOFF_MIN_S"),
    ],
)
def test_inconsistent_pair_exits_78_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str], named: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as info:
        load_settings_or_exit()
    assert info.value.code == 78
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("pm-sidecar: invalid configuration: ")
    assert named in err[0]


def test_every_bad_variable_gets_its_own_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIDECAR_MAX_TOKENS", "x")
    monkeypatch.setenv("SIDECAR_LOG_LEVEL", "loud")
    with pytest.raises(SystemExit) as info:
        load_settings_or_exit()
    assert info.value.code == 78
    err = capsys.readouterr().err
    assert "SIDECAR_MAX_TOKENS: " in err
    assert "SIDECAR_LOG_LEVEL: must be DEBUG, INFO, WARNING or ERROR" in err
    assert len(err.strip().splitlines()) == 2


def test_describe_errors_drops_pydantic_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("SIDECAR_WS_URL", "http://x")
    with pytest.raises(ValidationError) as info:
        Settings()
    assert describe_errors(info.value) == [
        "pm-sidecar: invalid configuration: SIDECAR_WS_URL: must be a ws:// or wss:// URL"
    ]


def test_error_line_never_echoes_a_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIDECAR_REDIS_URL", "http://user:hunter2@127.0.0.1:6379/0")
    with pytest.raises(SystemExit):
        load_settings_or_exit()
    captured = capsys.readouterr()
    assert "SIDECAR_REDIS_URL" in captured.err
    assert "hunter2" not in captured.err + captured.out


def test_redis_password_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_REDIS_PASSWORD", "hunter2")
    s = Settings()
    assert s.redis_password is not None
    assert s.redis_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s)
    assert "**********" in repr(s)


def test_password_in_redis_url_is_masked_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_REDIS_URL", "redis://app:hunter2@10.0.0.5:6379/0")
    s = Settings()
    assert s.redis_url == "redis://app:hunter2@10.0.0.5:6379/0"  # the value itself is intact
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://app:hunter2@10.0.0.5:6379/0", "redis://app:***@10.0.0.5:6379/0"),
        ("redis://:hunter2@redis.internal/2", "redis://:***@redis.internal/2"),
        ("rediss://u:p%40ss@host:6380/0?ssl_cert_reqs=none", "rediss://u:***@host:6380/0?ssl_cert_reqs=none"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://user@host:6379/0", "redis://user@host:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("redis://h:6379/0?password=hunter2", "redis://h:6379/0?password=***"),
        ("rediss://:pw@[::1]:6380/0?Password=x&db=1", "rediss://:***@[::1]:6380/0?Password=***&db=1"),
        ("unix:///run/redis.sock?password=hunter2&db=0", "unix:///run/redis.sock?password=***&db=0"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_redis_url_redacted_method(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_REDIS_URL", "redis://:hunter2@h:6379/0")
    assert Settings().redis_url_redacted() == "redis://:***@h:6379/0"


def test_redact_url_keeps_ipv6_brackets() -> None:
    assert redact_url("redis://:hunter2@[::1]:6379/0") == "redis://:***@[::1]:6379/0"


def test_redis_url_with_bad_port_exits_78(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIDECAR_REDIS_URL", "redis://:hunter2@127.0.0.1:99999/0")
    with pytest.raises(SystemExit) as info:
        load_settings_or_exit()
    assert info.value.code == 78
    assert "SIDECAR_REDIS_URL" in capsys.readouterr().err


def test_infinite_durations_exit_78(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_PONG_TIMEOUT_S", "inf")
    with pytest.raises(SystemExit) as info:
        load_settings_or_exit()
    assert info.value.code == 78


def test_engine_config_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_MAX_TOKENS_PER_CONN", "150")
    monkeypatch.setenv("SIDECAR_CONFIRM_TIMEOUT_S", "12.5")
    monkeypatch.setenv("SIDECAR_REST_ENABLED", "0")
    s = Settings()
    cfg = EngineConfig.from_settings(s)
    assert cfg.max_tokens_per_conn == 150
    assert cfg.confirm_timeout_s == 12.5
    assert cfg.rest_enabled is False
    assert cfg.silence_max_s == 120.0
    assert cfg.unsubscribed_ttl_s == 300
    assert cfg.connect_spacing_s == 0.25
    for name in EngineConfig.__dataclass_fields__:
        if name != "extra":
            assert getattr(cfg, name) == getattr(s, name), name
