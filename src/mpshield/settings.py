"""Settings, read from ``MPSHIELD_*`` environment variables (or a ``.env`` file).

The defaults are the numbers of the design: a circuit opens after 10 auth
failures seen through at least 2 proxies and lets one probe through after an
hour; proxies are quarantined for 30 / 15 / 5 minutes after a 403 / 429 / 5xx;
a 429 wake-up is the marketplace's hint plus 10-30 s of jitter.

Unset ``MPSHIELD_REDIS_URL`` and ``MPSHIELD_DATABASE_URL`` select the embedded
defaults: a Redis server run from the package and a SQLite file, both under
``MPSHIELD_HOME`` (``./.mpshield``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from mpshield.exceptions import ConfigurationError
from mpshield.redaction import mask_url, register_secret

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1)]


class LimitOverride(BaseModel):
    """One rate-limit rule: ``limit`` requests per ``period`` seconds, ``burst`` at once."""

    limit: Count
    period: Seconds
    burst: Count = 1


class Settings(BaseSettings):
    """All of mpshield's settings; see the module docstring for the defaults."""

    model_config = SettingsConfigDict(
        env_prefix="MPSHIELD_",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    # Where state lives.
    home: Path = Path(".mpshield")
    redis_url: str | None = None
    database_url: str | None = None
    key_prefix: str = Field(default="mms", min_length=1)

    # Circuit breaker.
    breaker_failure_threshold: Count = 10
    breaker_distinct_proxies: Count = 2
    breaker_open_seconds: Seconds = 3600.0
    breaker_probe_lease_seconds: Seconds = 120.0
    # A HALF_OPEN circuit whose probe never reports back returns to OPEN.
    breaker_half_open_timeout_seconds: Seconds = 600.0

    # Proxies.
    proxies: list[str] = Field(default_factory=list)
    proxy_lease_seconds: Seconds = 900.0
    quarantine_403_seconds: Seconds = 1800.0
    quarantine_429_seconds: Seconds = 900.0
    quarantine_5xx_seconds: Seconds = 300.0
    quarantine_connection_seconds: Seconds = 300.0
    quarantine_max_seconds: Seconds = 4 * 3600.0
    # A proxy quarantined again within this long of its release stays out twice as long.
    quarantine_memory_seconds: Seconds = 3600.0

    # Jitter and retries.
    retry_jitter_min_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 10.0
    retry_jitter_max_seconds: Seconds = 30.0
    acquire_jitter_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.05
    backoff_base_seconds: Seconds = 0.5
    backoff_cap_seconds: Seconds = 20.0
    max_attempts: Count = 4
    max_wait_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 5.0

    # Rate limits: "<marketplace>.<group>" -> rule, on top of the built-in tables.
    limits: dict[str, LimitOverride] = Field(default_factory=dict)
    # Multiplies the periods of the built-in limit tables. Only for running
    # against a sandbox whose clock is scaled the same way; 1 for real traffic.
    time_scale: Seconds = 1.0

    # Transport.
    wb_base_url: str | None = None
    ozon_base_url: str | None = None
    wb_storefront_base_url: str | None = None
    ca_bundle: Path | None = None
    connect_timeout_seconds: Seconds = 10.0
    read_timeout_seconds: Seconds = 60.0

    # Jobs.
    celery_broker_url: str | None = None
    celery_result_backend: str | None = None
    celery_visibility_timeout_seconds: Seconds = 3600.0
    sync_period_seconds: Seconds = 600.0
    sync_concurrency: Count = 8

    @field_validator("proxies")
    @classmethod
    def _check_proxies(cls, urls: list[str]) -> list[str]:
        for url in urls:
            try:
                parts = urlsplit(url)
                port = parts.port
            except ValueError:
                port, parts = None, None
            if (
                parts is None
                or parts.scheme not in {"http", "https", "socks5", "socks5h"}
                or not parts.hostname
                or port is None
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
            ):
                raise ValueError(
                    f"{mask_url(url)!r} is not a proxy URL like "
                    "http://user:password@host:3128"
                )
            register_secret(parts.password)
        return urls

    @model_validator(mode="after")
    def _check_ranges(self) -> Self:
        if self.retry_jitter_max_seconds < self.retry_jitter_min_seconds:
            raise ValueError(
                "MPSHIELD_RETRY_JITTER_MAX_SECONDS must not be below "
                "MPSHIELD_RETRY_JITTER_MIN_SECONDS"
            )
        if self.backoff_cap_seconds < self.backoff_base_seconds:
            raise ValueError(
                "MPSHIELD_BACKOFF_CAP_SECONDS must not be below "
                "MPSHIELD_BACKOFF_BASE_SECONDS"
            )
        return self


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning a validation failure into a ConfigurationError.

    The message names each offending variable as the user would set it.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except SettingsError as exc:
        # Raised before validation when a complex value (a list, a mapping)
        # is not valid JSON; the message names the field.
        field = str(exc).split('"')[1] if '"' in str(exc) else "settings"
        raise ConfigurationError(
            f"invalid settings: MPSHIELD_{field.upper()}: expected JSON, "
            "e.g. MPSHIELD_PROXIES='[\"http://user:password@host:3128\"]'"
        ) from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            path = [str(part) for part in error["loc"]]
            name = "MPSHIELD_" + path[0].upper() if path else "settings"
            if len(path) > 1:
                name += "[" + "].[".join(path[1:]) + "]"
            problems.append(f"{name}: {error['msg']}")
        raise ConfigurationError("invalid settings: " + "; ".join(problems)) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
