"""The sync task's decisions, run as plain coroutines without a broker."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jobhelpers import add_test_shop, next_attempts, private_database
from mpshield.db.models import ShopStatus
from mpshield.exceptions import (
    DatabaseUnavailableError,
    NoProxyAvailableError,
    RateLimitedError,
    ShopDisabledError,
    StateStoreUnavailableError,
)
from mpshield.jobs import loop
from mpshield.jobs.celery_app import (
    SYNC_ALL,
    SYNC_SHOP,
    broker_url,
    celery_config,
    max_countdown,
)
from mpshield.jobs.coordination import LOCK_TTL_SECONDS, ShopLock
from mpshield.jobs.tasks import (
    MAX_TRANSIENT_RETRIES,
    execute_sync_shop,
    plan_fanout,
)
from mpshield.protection.timing import Jitter
from mpshield.settings import Settings
from mpshield.state.store import StateStore

NOW = dt.datetime(2026, 9, 1, 12, 0, tzinfo=dt.UTC)


def clock() -> dt.datetime:
    return NOW


@pytest.fixture
async def jobs_db(
    settings: Settings, backend: str, tmp_path: Path, store: StateStore
) -> AsyncIterator[Settings]:
    """The test's settings with a private, migrated database (and its store)."""
    tuned = settings.model_copy(update={"celery_visibility_timeout_seconds": 600.0})
    async with private_database(tuned, backend, tmp_path) as private:
        yield private


def raising(exc: Exception) -> Any:
    async def sync(shop_id: int, *, settings: Settings) -> None:
        raise exc

    return sync


async def synced(shop_id: int, *, settings: Settings) -> None:
    return None


class TestConfig:
    def test_embedded_socket_becomes_a_kombu_socket_url(self, tmp_path: Path) -> None:
        """An embedded Redis socket is handed to kombu as ``redis+socket://``."""
        settings = Settings(redis_url="unix:///tmp/x/redis.socket", home=tmp_path)

        assert broker_url(settings) == "redis+socket:///tmp/x/redis.socket"

    def test_delivery_guarantees_are_configured(self) -> None:
        """Late acks, redelivery on a lost worker, one prefetch, prefixed keys."""
        settings = Settings(redis_url="redis://127.0.0.1:6379/0", key_prefix="pfx")

        config = celery_config(settings)

        assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
        assert config["worker_prefetch_multiplier"] == 1
        assert config["broker_transport_options"]["global_keyprefix"] == "pfx:celery:"
        assert config["broker_transport_options"]["visibility_timeout"] == 3600.0
        assert config["beat_schedule"]["sync-all"]["task"] == SYNC_ALL

    def test_countdowns_stay_inside_the_visibility_timeout(self) -> None:
        """The longest countdown leaves a margin before redelivery."""
        assert max_countdown(Settings(celery_visibility_timeout_seconds=3600)) == 2880
        assert max_countdown(Settings(celery_visibility_timeout_seconds=120)) == 60


class TestRetries:
    async def test_disabled_shop_is_not_retried(self, jobs_db: Settings) -> None:
        """A disabled shop stops the task without a retry."""
        shop_id = await add_test_shop(jobs_db)
        error = ShopDisabledError("dead key", shop_id=shop_id, reason="401 x10")

        outcome = await execute_sync_shop(
            shop_id, settings=jobs_db, sync=raising(error)
        )

        assert outcome.action == "disabled"
        assert outcome.countdown is None
        assert outcome.reason == "401 x10"

    async def test_short_wait_retries_after_hint_plus_jitter(
        self, jobs_db: Settings
    ) -> None:
        """A short rate-limit wait becomes a countdown of hint + 10-30 s."""
        shop_id = await add_test_shop(jobs_db, feeds={"wb_fbs": None})
        error = RateLimitedError("limited", retry_after=7.0)

        outcome = await execute_sync_shop(
            shop_id,
            settings=jobs_db,
            sync=raising(error),
            jitter=Jitter(jobs_db),
            clock=clock,
        )

        assert outcome.action == "retry"
        assert outcome.countdown is not None
        assert 17.0 <= outcome.countdown <= 37.0
        assert await next_attempts(jobs_db, shop_id) == [outcome.next_attempt_at]

    async def test_long_wait_is_recorded_not_counted_down(
        self, jobs_db: Settings
    ) -> None:
        """A wait past the visibility timeout goes to next_attempt_at, not a countdown."""
        shop_id = await add_test_shop(jobs_db, feeds={"wb_fbs": None, "wb_stats": None})
        error = NoProxyAvailableError("all quarantined", retry_after=1800.0)

        outcome = await execute_sync_shop(
            shop_id,
            settings=jobs_db,
            sync=raising(error),
            jitter=Jitter(jobs_db),
            clock=clock,
        )

        assert outcome.action == "deferred"
        assert outcome.countdown is None
        assert outcome.next_attempt_at is not None
        waited = (outcome.next_attempt_at - NOW).total_seconds()
        assert 1810.0 <= waited <= 1830.0
        assert await next_attempts(jobs_db, shop_id) == [outcome.next_attempt_at] * 2

    @pytest.mark.parametrize(
        "error",
        [
            DatabaseUnavailableError("db down"),
            StateStoreUnavailableError("redis down"),
            ValueError("a bug"),
        ],
    )
    async def test_transient_errors_retry_a_bounded_number_of_times(
        self, jobs_db: Settings, error: Exception
    ) -> None:
        """Transient failures retry with capped backoff, then give up."""
        shop_id = await add_test_shop(jobs_db)
        countdowns = []
        transient = 0
        while True:
            outcome = await execute_sync_shop(
                shop_id, settings=jobs_db, sync=raising(error), transient=transient
            )
            if outcome.countdown is None:
                break
            countdowns.append(outcome.countdown)
            transient = outcome.transient

        assert outcome.action == "failed"
        assert len(countdowns) == MAX_TRANSIENT_RETRIES
        assert all(0 <= c <= jobs_db.backoff_cap_seconds for c in countdowns)

    async def test_successful_sync_is_done(self, jobs_db: Settings) -> None:
        """A sync that returns ends the task."""
        shop_id = await add_test_shop(jobs_db)

        outcome = await execute_sync_shop(shop_id, settings=jobs_db, sync=synced)

        assert (outcome.action, outcome.countdown) == ("synced", None)


class TestFanout:
    async def test_only_active_due_shops_are_spread_over_the_period(
        self, jobs_db: Settings
    ) -> None:
        """sync_all queues active shops that are due, each at an offset in the period."""
        past, future = NOW - dt.timedelta(minutes=1), NOW + dt.timedelta(minutes=5)
        never = await add_test_shop(jobs_db)
        due = await add_test_shop(jobs_db, feeds={"a": past, "b": future})
        unset = await add_test_shop(jobs_db, feeds={"a": None})
        await add_test_shop(jobs_db, feeds={"a": future, "b": future})
        await add_test_shop(jobs_db, status=ShopStatus.AUTH_ERROR)

        plan = await plan_fanout(jobs_db, clock=clock)

        assert [shop for shop, _ in plan] == [never, due, unset]
        assert all(0 <= c <= jobs_db.sync_period_seconds for _, c in plan)


class TestLock:
    async def test_second_delivery_waits_for_the_lock(
        self, jobs_db: Settings, store: StateStore
    ) -> None:
        """A delivery that finds the shop locked retries instead of syncing."""
        shop_id = await add_test_shop(jobs_db)
        holder = ShopLock(store, shop_id)
        assert await holder.acquire()
        calls = []

        async def sync(shop: int, *, settings: Settings) -> None:
            calls.append(shop)

        outcome = await execute_sync_shop(shop_id, settings=jobs_db, sync=sync)

        assert calls == []
        assert outcome.action == "retry" and outcome.reason == "locked"
        assert outcome.countdown is not None
        assert outcome.countdown <= LOCK_TTL_SECONDS + jobs_db.backoff_cap_seconds

    async def test_deliveries_of_one_shop_never_overlap(
        self, jobs_db: Settings
    ) -> None:
        """Two concurrent deliveries: one syncs, the other is told to retry."""
        shop_id = await add_test_shop(jobs_db)
        running = 0
        peak = 0

        async def slow_sync(shop: int, *, settings: Settings) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.2)
            running -= 1

        outcomes = await asyncio.gather(
            execute_sync_shop(shop_id, settings=jobs_db, sync=slow_sync),
            execute_sync_shop(shop_id, settings=jobs_db, sync=slow_sync),
        )

        assert peak == 1
        assert sorted(o.action for o in outcomes) == ["retry", "synced"]

    async def test_lock_is_freed_after_the_sync(
        self, jobs_db: Settings, store: StateStore
    ) -> None:
        """After a run (even a failed one) the next delivery takes the lock."""
        shop_id = await add_test_shop(jobs_db)
        await execute_sync_shop(
            shop_id,
            settings=jobs_db,
            sync=raising(RateLimitedError("x", retry_after=1)),
        )

        assert await ShopLock(store, shop_id).acquire()


def test_worker_loop_is_reused_and_closed() -> None:
    """Every task of a process runs on one loop; shutdown runs the closers."""
    closed = []

    async def closer() -> None:
        closed.append(True)

    async def current() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    loop.add_closer(closer)
    try:
        first = loop.run(current())
        second = loop.run(current())
        loop.close_worker_loop()
    finally:
        loop.remove_closer(closer)

    assert first is second
    assert first.is_closed()
    assert closed == [True]
    assert SYNC_SHOP == "mpshield.sync_shop"
