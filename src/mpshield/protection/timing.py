"""Jitter and waiting: how long to sleep, with the random source injectable.

Three kinds of delay:

- a 429 wake-up is the marketplace's own hint plus 10-30 s, so that shops
  told to wait at the same instant do not all come back at the same instant;
- internal backoff is "full jitter" (uniform between 0 and the capped
  exponential), the variant that does least work in total under contention;
- scheduled fan-out gives each shop a stable offset in the period, plus a
  little noise, so a beat tick is no thundering herd.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable

from mpshield.settings import Settings

Sleep = Callable[[float], Awaitable[None]]


class Jitter:
    """Delays drawn from ``settings``; pass ``rng`` to make them reproducible."""

    def __init__(self, settings: Settings, rng: random.Random | None = None) -> None:
        self._settings = settings
        self._rng = rng or random.Random()

    def retry_delay(self, hint: float) -> float:
        """The wait after a 429: the marketplace's hint plus the jitter range."""
        low = self._settings.retry_jitter_min_seconds
        high = self._settings.retry_jitter_max_seconds
        return max(0.0, hint) + self._rng.uniform(low, high)

    def backoff(self, attempt: int) -> float:
        """Full-jitter backoff before retry number ``attempt`` (0-based)."""
        base = self._settings.backoff_base_seconds
        ceiling = min(self._settings.backoff_cap_seconds, base * 2 ** max(attempt, 0))
        return self._rng.uniform(0.0, ceiling)

    def small(self) -> float:
        """A little noise added to short limiter waits, so waiters do not align."""
        return self._rng.uniform(0.0, self._settings.acquire_jitter_seconds)

    def spread(self, key: str, period: float) -> float:
        """A stable offset in ``[0, period)`` for ``key``, plus up to 2 % noise.

        The stable part comes from a hash of the key (not Python's ``hash``,
        which changes per process), so one shop keeps its slot across ticks
        and machines while all shops cover the period evenly.
        """
        if period <= 0:
            return 0.0
        digest = hashlib.sha1(key.encode("utf-8"), usedforsecurity=False).digest()
        stable = int.from_bytes(digest[:8], "big") / 2**64 * period
        noisy = stable + self._rng.uniform(0.0, period * 0.02)
        return min(max(noisy, 0.0), period * (1 - 1e-9))


class RecordingSleep:
    """A sleeper for tests: records each requested wait and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)

    @property
    def total(self) -> float:
        return sum(self.calls)


class ManualClock:
    """A monotonic clock for tests: it moves only when told."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
