"""Settings from ``SIDECAR_*`` environment variables (and ``.env``), validated at start-up.

A bad value must stop the process before it touches the network, with one line that names the
variable, and exit code 78 (EX_CONFIG) so systemd does not restart-loop on a typo.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sidecar.client.base import redact

EX_CONFIG = 78

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SIDECAR_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    # Exchange
    ws_url: str = "wss://ws-subscriptions-clob.polymarket.com/ws/market"
    rest_url: str = "https://clob.polymarket.com"
    rest_enabled: bool = True
    rest_max_rps: PositiveFloat = 5.0
    max_tokens_per_conn: Annotated[int, Field(ge=1, le=500)] = 200
    max_tokens: Annotated[int, Field(ge=1)] = 5000
    ping_interval_s: PositiveFloat = 10.0
    pong_timeout_s: PositiveFloat = 30.0
    connect_spacing_s: Annotated[float, Field(ge=0)] = 0.25
    backoff_min_s: PositiveFloat = 0.5
    backoff_max_s: PositiveFloat = 30.0

    # Health
    silence_min_s: PositiveFloat = 0.5
    silence_max_s: PositiveFloat = 120.0
    probe_timeout_s: PositiveFloat = 3.0
    confirm_timeout_s: PositiveFloat = 20.0
    redrive_max: Annotated[int, Field(ge=0)] = 2
    quiet_confirm_s: PositiveFloat = 30.0
    market_poll_s: PositiveFloat = 300.0  # each desired token's market state polled over REST
    venue_down_after_s: PositiveFloat = 3.0  # every socket failing this long: the venue is down
    # how long the local top may disagree with the exchange's stated best prices (or be crossed)
    # before that is an inconsistency: crossing trades arrive as several messages
    bbo_grace_s: Annotated[float, Field(gt=0, le=1.0, allow_inf_nan=False)] = 1.0
    ready_quote_health: Annotated[float, Field(ge=0, le=1)] = 0.9

    # Redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: SecretStr | None = None
    redis_tls_ca_file: str | None = None
    key_prefix: str = "pm:"
    desired_poll_s: PositiveFloat = 1.0
    alive_ttl_s: Annotated[int, Field(ge=1)] = 5
    unsubscribed_ttl_s: Annotated[int, Field(ge=1)] = 300
    write_flush_ms: Annotated[float, Field(ge=0)] = 2.0

    # Process
    metrics_addr: str = "127.0.0.1"
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9464
    log_level: str = "INFO"
    log_format: str = "text"  # text | json (sidecar.logs)

    @field_validator("ws_url")
    @classmethod
    def _ws_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("ws", "wss"):
            raise ValueError("must be a ws:// or wss:// URL")
        return value

    @field_validator("rest_url")
    @classmethod
    def _http_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        try:
            parts.port  # noqa: B018 - raises on an out-of-range port
        except ValueError:
            raise ValueError("invalid port") from None
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in ("text", "json"):
            raise ValueError("must be text or json")
        return value

    @model_validator(mode="after")
    def _ordering(self) -> Settings:
        if self.silence_min_s > self.silence_max_s:
            raise ValueError("SIDECAR_SILENCE_MIN_S must not exceed SIDECAR_SILENCE_MAX_S")
        if self.backoff_min_s > self.backoff_max_s:
            raise ValueError("SIDECAR_BACKOFF_MIN_S must not exceed SIDECAR_BACKOFF_MAX_S")
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """Secrets stay out of reprs and logs: the password inside the URL too."""
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "redis_url" else value)

    def redis_url_redacted(self) -> str:
        return redact_url(self.redis_url)


def redact_url(url: str) -> str:
    """The URL with any password replaced (user part or ``?password=``), for logs."""
    return redact(url)


def describe_errors(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = err.get("loc") or ()
        name = f"SIDECAR_{str(loc[0]).upper()}" if loc else "settings"
        msg = err.get("msg", "invalid value")
        msg = msg.removeprefix("Value error, ")
        lines.append(f"pm-sidecar: invalid configuration: {name}: {msg}")
    return lines


def load_settings_or_exit() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for line in describe_errors(exc):
            print(line, file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None
