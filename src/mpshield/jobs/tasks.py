"""Celery tasks: ``mpshield.sync_shop`` for one shop, ``mpshield.sync_all`` for the fleet.

What a sync's outcome turns into:

| outcome | what the task does |
| --- | --- |
| synced | done |
| ShopDisabledError | logs it and stops; no retry (the user must fix the key) |
| RetryLaterError, short | retries after the hint plus 10-30 s, in a wake slot with room |
| RetryLaterError, long | writes ``next_attempt_at``; the scheduler resumes it |
| lock held by another delivery | retries when that lock would expire |
| store/database down, bug | a few retries with full-jitter backoff, then stops |

"Long" is any wait the broker's visibility timeout would cut short
(:func:`mpshield.jobs.celery_app.max_countdown`): Redis would deliver such a
countdown twice. The task logic lives in plain coroutines
(:func:`execute_sync_shop`, :func:`plan_fanout`) that return what to do, so it
is tested without a broker; the Celery tasks only carry the decision out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from celery import Task

from mpshield.db.engine import dispose_engines, session_scope
from mpshield.exceptions import (
    DatabaseUnavailableError,
    MpShieldError,
    RetryLaterError,
    ShopDisabledError,
    ShopNotFoundError,
    StateStoreUnavailableError,
)
from mpshield.jobs import loop
from mpshield.jobs.celery_app import SYNC_ALL, SYNC_SHOP, app, max_countdown
from mpshield.jobs.coordination import ShopLock, WakeSlots
from mpshield.jobs.schedule import defer_shop, due_shop_ids
from mpshield.protection.timing import Jitter
from mpshield.redaction import get_logger
from mpshield.settings import Settings, get_settings
from mpshield.state.store import StateStore, get_store

logger = get_logger(__name__)

# Transient failures (Redis or the database down, a bug) get this many retries;
# the next scheduler tick tries again after that.
MAX_TRANSIENT_RETRIES = 5
# Short waits in a row before the wait goes to the database instead.
MAX_SHORT_RETRIES = 20

Action = Literal["synced", "disabled", "retry", "deferred", "failed"]


class SyncFunction(Protocol):
    def __call__(self, shop_id: int, /, *, settings: Settings) -> Awaitable[Any]: ...


class JitterSource(Protocol):
    """The part of :class:`mpshield.protection.timing.Jitter` the tasks use."""

    def retry_delay(self, hint: float) -> float: ...

    def backoff(self, attempt: int) -> float: ...

    def spread(self, key: str, period: float) -> float: ...


@dataclass(frozen=True)
class Outcome:
    """What one run of a shop's task decided.

    ``countdown`` is set when the task must retry that many seconds from now;
    ``next_attempt_at`` when a wait was recorded in the database.
    """

    shop_id: int
    action: Action
    reason: str = ""
    countdown: float | None = None
    next_attempt_at: dt.datetime | None = None
    transient: int = 0
    short: int = 0
    orders: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def as_result(self) -> dict[str, Any]:
        """A JSON-safe summary, the task's result."""
        result = asdict(self)
        if self.next_attempt_at is not None:
            result["next_attempt_at"] = self.next_attempt_at.isoformat()
        return result


def _default_sync() -> SyncFunction:
    # Imported here: a process that only queues tasks needs no client stack.
    from mpshield.jobs.sync import sync_shop

    return sync_shop


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def execute_sync_shop(
    shop_id: int,
    *,
    settings: Settings,
    transient: int = 0,
    short: int = 0,
    sync: SyncFunction | None = None,
    jitter: JitterSource | None = None,
    clock: Callable[[], dt.datetime] = _now,
) -> Outcome:
    """Sync one shop under its lock and decide what the task does next.

    Args:
        shop_id: the shop.
        settings: the settings.
        transient: transient failures retried so far in this chain.
        short: short waits retried so far in this chain.
        sync: the sync coroutine (``mpshield.jobs.sync.sync_shop`` by default).
        jitter: the jitter source (from ``settings`` by default).
        clock: the current time.

    Returns:
        The outcome; it never raises for a sync failure.
    """
    sync = sync or _default_sync()
    jitter = jitter or Jitter(settings)
    lock = ShopLock(_store(settings), shop_id)
    try:
        if not await lock.acquire():
            if short >= MAX_SHORT_RETRIES:
                return Outcome(shop_id, "failed", "locked", short=short)
            wait = await lock.remaining() + jitter.backoff(transient)
            logger.info("shop %s: already being synced; again in %.1fs", shop_id, wait)
            return Outcome(shop_id, "retry", "locked", countdown=wait, short=short + 1)
    except StateStoreUnavailableError as exc:
        return _transient(shop_id, exc, transient, short, jitter)

    budget = asyncio.timeout(max_countdown(settings) or None)
    try:
        async with lock.kept(), budget:
            report = await sync(shop_id, settings=settings)
    except ShopDisabledError as exc:
        logger.warning("shop %s is disabled (%s); not retrying", shop_id, exc.reason)
        return Outcome(shop_id, "disabled", exc.reason or str(exc))
    except ShopNotFoundError as exc:
        logger.warning("shop %s: %s; not retrying", shop_id, exc)
        return Outcome(shop_id, "failed", str(exc))
    except RetryLaterError as exc:
        return await _retry_later(shop_id, exc, settings, short, jitter, clock)
    except TimeoutError as exc:
        if not budget.expired():
            return _transient(shop_id, exc, transient, short, jitter)
        # Pages are committed as they come; go on from the cursor soon.
        wait = jitter.backoff(0)
        logger.info("shop %s: sync ran out of time; resuming in %.1fs", shop_id, wait)
        return Outcome(shop_id, "retry", "timeout", countdown=wait, short=short)
    except Exception as exc:
        return _transient(shop_id, exc, transient, short, jitter)
    finally:
        await _release(lock)
    return _after_sync(shop_id, report, transient, short, jitter)


def _after_sync(
    shop_id: int, report: Any, transient: int, short: int, jitter: JitterSource
) -> Outcome:
    """A finished run may still owe pages (page limit) or have a refused feed."""
    statuses = {
        name: str(getattr(feed, "status", "ok"))
        for name, feed in getattr(report, "feeds", {}).items()
    }
    orders = int(getattr(report, "orders", 0))
    if "error" in statuses.values():
        errors = getattr(report, "errors", {})
        reason = "; ".join(f"{name}: {text}" for name, text in errors.items())
        outcome = _transient(shop_id, _FeedFailed(reason), transient, short, jitter)
        return replace(outcome, orders=orders, details=statuses)
    if "more" in statuses.values():
        wait = jitter.backoff(0)
        return Outcome(
            shop_id, "retry", "more pages", countdown=wait, short=short, orders=orders
        )
    return Outcome(shop_id, "synced", orders=orders, details=statuses)


class _FeedFailed(MpShieldError):
    """A feed stopped on a refused or malformed page; the run is retried."""


async def _release(lock: ShopLock) -> None:
    try:
        await lock.release()
    except StateStoreUnavailableError:
        logger.warning("shop %s: sync lock left to expire", lock.shop_id)


def _transient(
    shop_id: int, exc: Exception, transient: int, short: int, jitter: JitterSource
) -> Outcome:
    expected = isinstance(exc, StateStoreUnavailableError | DatabaseUnavailableError)
    reason = str(exc) if isinstance(exc, MpShieldError) else type(exc).__name__
    if transient >= MAX_TRANSIENT_RETRIES:
        logger.error(
            "shop %s: giving up after %d retries: %s", shop_id, transient, reason
        )
        return Outcome(shop_id, "failed", reason, transient=transient, short=short)
    wait = jitter.backoff(transient)
    logger.warning(
        "shop %s: %s; retry %d in %.1fs",
        shop_id,
        reason,
        transient + 1,
        wait,
        exc_info=not expected,
    )
    return Outcome(
        shop_id, "retry", reason, countdown=wait, transient=transient + 1, short=short
    )


async def _retry_later(
    shop_id: int,
    exc: RetryLaterError,
    settings: Settings,
    short: int,
    jitter: JitterSource,
    clock: Callable[[], dt.datetime],
) -> Outcome:
    now = clock()
    delay = jitter.retry_delay(exc.retry_after)
    reason = f"{type(exc).__name__}: retry after {exc.retry_after:.0f}s"
    limit = max_countdown(settings)
    if delay <= limit and short < MAX_SHORT_RETRIES:
        slots = WakeSlots(_store(settings), width=settings.time_scale)
        try:
            wake = await slots.claim(now.timestamp() + delay)
            delay = wake - now.timestamp()
        except StateStoreUnavailableError:
            pass
    if delay <= limit and short < MAX_SHORT_RETRIES:
        until = now + dt.timedelta(seconds=delay)
        # Recorded so that a scheduler tick meanwhile does not queue it again.
        await _record_wait(shop_id, until, reason, settings)
        logger.info("shop %s: %s; retrying in %.1fs", shop_id, reason, delay)
        return Outcome(
            shop_id,
            "retry",
            reason,
            countdown=delay,
            next_attempt_at=until,
            short=short + 1,
        )

    until = now + dt.timedelta(seconds=delay)
    if not await _record_wait(shop_id, until, reason, settings):
        # Without the record nobody would resume it: retry as late as is safe.
        logger.warning("shop %s: could not record the wait; retrying early", shop_id)
        return Outcome(shop_id, "retry", reason, countdown=limit, short=short + 1)
    logger.info("shop %s: %s; resuming at %s", shop_id, reason, until.isoformat())
    return Outcome(shop_id, "deferred", reason, next_attempt_at=until)


async def _record_wait(
    shop_id: int, until: dt.datetime, reason: str, settings: Settings
) -> bool:
    try:
        async with session_scope(settings) as session:
            await defer_shop(session, shop_id, until, reason)
    except (DatabaseUnavailableError, OSError):
        return False
    return True


async def plan_fanout(
    settings: Settings,
    *,
    jitter: JitterSource | None = None,
    clock: Callable[[], dt.datetime] = _now,
) -> list[tuple[int, float]]:
    """The due shops and each one's countdown within the sync period.

    Each shop keeps a stable offset in the period (plus a little jitter), so a
    scheduler tick starts a trickle of syncs rather than all of them at once.
    """
    jitter = jitter or Jitter(settings)
    async with session_scope(settings) as session:
        shop_ids = await due_shop_ids(session, clock())
    limit = max_countdown(settings)
    period = settings.sync_period_seconds
    return [
        (shop_id, min(jitter.spread(f"shop:{shop_id}", period), limit))
        for shop_id in shop_ids
    ]


@app.task(bind=True, name=SYNC_SHOP, max_retries=None)
def sync_shop(
    self: Task[Any, Any], shop_id: int, transient: int = 0, short: int = 0
) -> dict[str, Any]:
    """Sync one shop's orders; retries and waits as the module docstring says."""
    outcome = loop.run(
        execute_sync_shop(
            shop_id, settings=get_settings(), transient=transient, short=short
        )
    )
    _pause_before_ack(shop_id)
    if outcome.countdown is not None:
        raise self.retry(
            args=(shop_id,),
            kwargs={"transient": outcome.transient, "short": outcome.short},
            countdown=outcome.countdown,
        )
    return outcome.as_result()


# Crash tests kill a worker between the sync's commit and the broker ack: with
# this set to a directory, the first run of each shop writes ``<shop>.paused``
# (holding its pid) there and sleeps so that the test can kill it.
PAUSE_BEFORE_ACK_ENV = "MPSHIELD_TEST_PAUSE_BEFORE_ACK_DIR"
PAUSE_BEFORE_ACK_SECONDS = 60.0


def _pause_before_ack(shop_id: int) -> None:
    directory = os.environ.get(PAUSE_BEFORE_ACK_ENV)
    if not directory:
        return
    # Only the shops a test asked for, and only once each.
    if not (Path(directory) / f"{shop_id}.pause").exists():
        return
    marker = Path(directory) / f"{shop_id}.paused"
    try:
        with marker.open("x") as handle:
            handle.write(str(os.getpid()))
    except FileExistsError:
        return
    time.sleep(PAUSE_BEFORE_ACK_SECONDS)


@app.task(name=SYNC_ALL)
def sync_all() -> int:
    """Queue every due shop, spread over the sync period; returns how many."""
    plan = loop.run(plan_fanout(get_settings()))
    for shop_id, countdown in plan:
        sync_shop.apply_async((shop_id,), countdown=countdown)
    logger.info(
        "queued %d shops over %.0fs", len(plan), get_settings().sync_period_seconds
    )
    return len(plan)


# The stores this process's tasks used, closed with the worker loop.
_stores: dict[int, StateStore] = {}


def _store(settings: Settings) -> StateStore:
    store = get_store(settings)
    _stores[id(store)] = store
    return store


async def _close_pools() -> None:
    while _stores:
        _, store = _stores.popitem()
        await store.aclose()
    await dispose_engines()


loop.add_closer(_close_pools)
