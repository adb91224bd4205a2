"""Settings: defaults from the design, impossible values refused by name."""

from __future__ import annotations

import pytest

from mpshield.exceptions import ConfigurationError
from mpshield.redaction import redact
from mpshield.settings import load_settings


def test_defaults_are_the_designs_numbers() -> None:
    """Breaker, quarantine and jitter defaults match the design."""
    settings = load_settings()

    assert settings.key_prefix == "mms"
    assert settings.breaker_failure_threshold == 10
    assert settings.breaker_distinct_proxies == 2
    assert settings.breaker_open_seconds == 3600
    assert (
        settings.quarantine_403_seconds,
        settings.quarantine_429_seconds,
        settings.quarantine_5xx_seconds,
    ) == (1800, 900, 300)
    assert (settings.retry_jitter_min_seconds, settings.retry_jitter_max_seconds) == (
        10,
        30,
    )


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"breaker_open_seconds": -1}, "MPSHIELD_BREAKER_OPEN_SECONDS"),
        ({"breaker_open_seconds": float("inf")}, "MPSHIELD_BREAKER_OPEN_SECONDS"),
        ({"breaker_failure_threshold": 0}, "MPSHIELD_BREAKER_FAILURE_THRESHOLD"),
        ({"limits": {"wb.fbs": {"limit": 0, "period": 60}}}, "MPSHIELD_LIMITS[wb.fbs]"),
        (
            {"limits": {"wb.fbs": {"limit": 5, "period": -60}}},
            "MPSHIELD_LIMITS[wb.fbs]",
        ),
        (
            {"retry_jitter_min_seconds": 30, "retry_jitter_max_seconds": 10},
            "MPSHIELD_RETRY_JITTER_MAX_SECONDS",
        ),
        ({"key_prefix": ""}, "MPSHIELD_KEY_PREFIX"),
    ],
)
def test_impossible_values_are_refused_by_name(
    overrides: dict[str, object], named: str
) -> None:
    """An impossible value raises ConfigurationError naming the variable."""
    with pytest.raises(ConfigurationError, match=named.replace("[", r"\[")):
        load_settings(**overrides)


@pytest.mark.parametrize(
    "url",
    [
        "garbage",
        "ftp://user:hunter2-secret@127.0.0.1:21",
        "http://user:hunter2-secret@127.0.0.1:notaport",
        "http://user:hunter2-secret@:3128",
        "http://user:ab/hunter2-secret@127.0.0.1:3128",
        "http://user:3128/hunter2-secret@127.0.0.1:3128",
        "user:hunter2-secret@127.0.0.1:3128",
    ],
)
def test_bad_proxy_urls_are_refused_without_the_password(url: str) -> None:
    """A bad proxy URL is refused at start, and its password is not shown."""
    with pytest.raises(ConfigurationError, match="MPSHIELD_PROXIES") as caught:
        load_settings(proxies=[url])

    assert "hunter2-secret" not in str(caught.value)


def test_proxy_password_is_registered_as_a_secret() -> None:
    """A good proxy URL's password is masked wherever mpshield writes text."""
    load_settings(proxies=["http://user:s3cret-proxy-pw@127.0.0.1:3128"])

    assert redact("connect via s3cret-proxy-pw failed") == "connect via *** failed"


def test_bad_json_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A list setting that is not JSON gets a one-line error naming it."""
    monkeypatch.setenv("MPSHIELD_PROXIES", "http://127.0.0.1:3128")

    with pytest.raises(ConfigurationError, match="MPSHIELD_PROXIES: expected JSON"):
        load_settings()
