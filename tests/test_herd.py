"""No thundering herd: shops told to wait at the same instant wake up spread out."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobhelpers import add_test_shop, private_database
from mpshield.exceptions import RateLimitedError
from mpshield.jobs.tasks import execute_sync_shop, plan_fanout
from mpshield.settings import Settings
from mpshield.state.store import StateStore

SHOPS = 50
NOW = dt.datetime(2026, 9, 1, 12, 0, 0, tzinfo=dt.UTC)


def clock() -> dt.datetime:
    return NOW


@pytest.fixture
async def herd_db(
    settings: Settings, backend: str, tmp_path: Path, store: StateStore
) -> AsyncIterator[Settings]:
    async with private_database(settings, backend, tmp_path) as private:
        yield private


def busiest_second(offsets: list[float]) -> int:
    return max(Counter(math.floor(offset) for offset in offsets).values())


async def test_429_retries_spread_over_twenty_seconds(herd_db: Settings) -> None:
    """Fifty shops limited at one instant retry over 20+ s, at most 5 in any second."""
    shop_ids = [
        await add_test_shop(herd_db, feeds={"wb_fbs": None}) for _ in range(SHOPS)
    ]

    async def limited(shop_id: int, *, settings: Settings) -> None:
        raise RateLimitedError("429", retry_after=2.0)

    outcomes = await asyncio.gather(
        *(
            execute_sync_shop(shop_id, settings=herd_db, sync=limited, clock=clock)
            for shop_id in shop_ids
        )
    )

    countdowns = [outcome.countdown for outcome in outcomes]
    assert all(c is not None for c in countdowns)
    wakes = [c for c in countdowns if c is not None]
    assert min(wakes) >= 2.0 + herd_db.retry_jitter_min_seconds
    assert max(wakes) - min(wakes) >= 20.0
    assert busiest_second(wakes) <= 5


async def test_scheduler_tick_spreads_shops_over_the_period(herd_db: Settings) -> None:
    """A beat tick queues fifty due shops across the period, not at its first second."""
    for _ in range(SHOPS):
        await add_test_shop(herd_db)

    plan = await plan_fanout(herd_db, clock=clock)

    offsets = [countdown for _, countdown in plan]
    assert len(offsets) == SHOPS
    assert max(offsets) - min(offsets) >= herd_db.sync_period_seconds / 2
    assert busiest_second(offsets) <= 5
