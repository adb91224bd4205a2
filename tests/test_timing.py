"""Jitter: the ranges of each delay, full-jitter bounds, stable spreading."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpshield.protection.timing import Jitter, RecordingSleep
from mpshield.settings import Settings, load_settings


class LowRandom(random.Random):
    """A random source whose ``uniform`` always returns the low end."""

    def uniform(self, a: float, b: float) -> float:
        return a


class HighRandom(random.Random):
    """A random source whose ``uniform`` always returns the high end."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture
def timing_settings(tmp_path: Path) -> Settings:
    return load_settings(
        home=tmp_path,
        retry_jitter_min_seconds=10.0,
        retry_jitter_max_seconds=30.0,
        backoff_base_seconds=0.5,
        backoff_cap_seconds=20.0,
        acquire_jitter_seconds=0.05,
    )


@given(hint=st.floats(min_value=-5, max_value=3600), seed=st.integers(0, 2**32))
def test_retry_delay_is_hint_plus_jitter_range(hint: float, seed: int) -> None:
    """A 429 wake-up is the hint (never negative) plus 10-30 s."""
    jitter = Jitter(load_settings(), random.Random(seed))

    delay = jitter.retry_delay(hint)

    assert max(hint, 0) + 10.0 <= delay <= max(hint, 0) + 30.0


def test_retry_delays_spread_out(timing_settings: Settings) -> None:
    """Fifty shops told the same hint wake up over most of the 20 s range."""
    jitter = Jitter(timing_settings, random.Random(1))

    delays = [jitter.retry_delay(60.0) for _ in range(50)]

    assert max(delays) - min(delays) > 15.0
    assert max(Counter(int(d) for d in delays).values()) <= 8


@given(attempt=st.integers(min_value=-3, max_value=200), seed=st.integers(0, 2**32))
def test_backoff_is_full_jitter_under_the_cap(attempt: int, seed: int) -> None:
    """Backoff lies in [0, min(cap, base * 2**attempt)]."""
    jitter = Jitter(load_settings(), random.Random(seed))

    ceiling = min(20.0, 0.5 * 2 ** max(attempt, 0))

    assert 0.0 <= jitter.backoff(attempt) <= ceiling


def test_backoff_ceiling_doubles_then_caps(timing_settings: Settings) -> None:
    """The high end of the backoff doubles per attempt until the cap."""
    high = Jitter(timing_settings, HighRandom())
    low = Jitter(timing_settings, LowRandom())

    ceilings = [high.backoff(attempt) for attempt in range(8)]

    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0]
    assert all(low.backoff(attempt) == 0.0 for attempt in range(8))


def test_small_jitter_range(timing_settings: Settings) -> None:
    """The acquire jitter stays in [0, acquire_jitter_seconds]."""
    jitter = Jitter(timing_settings, random.Random(3))

    draws = [jitter.small() for _ in range(1000)]

    assert all(0.0 <= d <= 0.05 for d in draws)
    assert max(draws) > 0.04


def test_injected_rng_makes_delays_reproducible(timing_settings: Settings) -> None:
    """Two jitters seeded alike draw the same delays."""
    first = Jitter(timing_settings, random.Random(42))
    second = Jitter(timing_settings, random.Random(42))

    def draw(jitter: Jitter) -> list[float]:
        return [
            jitter.retry_delay(5),
            jitter.backoff(3),
            jitter.small(),
            jitter.spread("wb:1", 600),
        ]

    assert draw(first) == draw(second)


def test_spread_stable_part_comes_from_sha1(timing_settings: Settings) -> None:
    """Without noise, a key's offset is its SHA-1 fraction of the period."""
    jitter = Jitter(timing_settings, LowRandom())
    digest = hashlib.sha1(b"shop:17").digest()

    expected = int.from_bytes(digest[:8], "big") / 2**64 * 600.0

    assert jitter.spread("shop:17", 600.0) == pytest.approx(expected)


@given(key=st.text(max_size=40), period=st.floats(min_value=1e-3, max_value=1e6))
def test_spread_stays_in_the_period(key: str, period: float) -> None:
    """The offset lies in [0, period) whatever the key and the noise."""
    for rng in (LowRandom(), HighRandom(), random.Random(key)):
        offset = Jitter(load_settings(), rng).spread(key, period)

        assert 0.0 <= offset < period


def test_spread_is_stable_across_instances(timing_settings: Settings) -> None:
    """Differently seeded jitters put one key within the 2 % noise of each other."""
    offsets = [
        Jitter(timing_settings, random.Random(seed)).spread("ozon:client:99", 600.0)
        for seed in range(20)
    ]

    assert max(offsets) - min(offsets) <= 600.0 * 0.02


def test_spread_covers_the_period_evenly(timing_settings: Settings) -> None:
    """A thousand shops land in every tenth of the period, none crowded."""
    jitter = Jitter(timing_settings, random.Random(5))

    tenths = Counter(int(jitter.spread(f"shop:{i}", 600.0) // 60) for i in range(1000))

    assert set(tenths) == set(range(10))
    assert all(60 <= count <= 140 for count in tenths.values())


def test_spread_of_an_empty_period_is_zero(timing_settings: Settings) -> None:
    """A zero period leaves nothing to spread over."""
    assert Jitter(timing_settings).spread("shop:1", 0.0) == 0.0


async def test_recording_sleep_records_without_waiting() -> None:
    """The test sleeper remembers each request and their total."""
    sleep = RecordingSleep()

    await sleep(1.5)
    await sleep(0.25)

    assert sleep.calls == [1.5, 0.25]
    assert sleep.total == 1.75
