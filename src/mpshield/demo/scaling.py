"""mpshield's settings for a sandbox whose clock runs ``time_scale`` times real time.

The sandbox multiplies every marketplace period by ``time_scale``; mpshield's
own periods (limit tables, breaker, quarantines, jitter, backoff, waits) must
shrink the same way, or a scaled minute would still cost mpshield a real one.
Network timeouts and the broker's visibility timeout are real time and stay.
"""

from __future__ import annotations

from mpshield.settings import Settings

# Settings that are periods of the marketplace's (or mpshield's) clock.
SCALED_FIELDS = (
    "breaker_open_seconds",
    "breaker_probe_lease_seconds",
    "breaker_half_open_timeout_seconds",
    "proxy_lease_seconds",
    "quarantine_403_seconds",
    "quarantine_429_seconds",
    "quarantine_5xx_seconds",
    "quarantine_connection_seconds",
    "quarantine_max_seconds",
    "quarantine_memory_seconds",
    "retry_jitter_min_seconds",
    "retry_jitter_max_seconds",
    "acquire_jitter_seconds",
    "backoff_base_seconds",
    "backoff_cap_seconds",
    "max_wait_seconds",
)


def scaled_env(time_scale: float) -> dict[str, str]:
    """``MPSHIELD_*`` variables that scale mpshield's periods by ``time_scale``."""
    defaults = Settings.model_fields
    env = {"MPSHIELD_TIME_SCALE": repr(time_scale)}
    for name in SCALED_FIELDS:
        default = defaults[name].default
        env[f"MPSHIELD_{name.upper()}"] = repr(float(default) * time_scale)
    return env
