"""The in-process runner: ``sync_shop`` for many shops at once, without a broker.

It is what ``mpshield sync`` runs, and what a small deployment can call from
its own scheduler. Shops run concurrently up to ``concurrency``; the shared
rate limiter still keeps each seller inside its limits, so concurrency only
decides how many shops wait at once.

Nothing one shop does stops the others:

- a disabled shop (dead key, open circuit) is reported with the reason;
- a feed that must wait is recorded (``sync_state.next_attempt_at``) and,
  when the wait is at most ``retry_within`` seconds, run again in this run,
  at most ``max_retries`` times;
- any other error is reported on its shop.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from mpshield.db.engine import ensure_schema, session_scope
from mpshield.db.shops import list_shops
from mpshield.exceptions import (
    MpShieldError,
    RetryLaterError,
    ShopDisabledError,
    ShopNotFoundError,
)
from mpshield.jobs.sync import FeedStatus, SyncReport, sync_shop
from mpshield.redaction import get_logger
from mpshield.settings import Settings, get_settings

logger = get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class Outcome(enum.StrEnum):
    """How one shop's sync ended."""

    OK = "ok"  # every feed read up to the present
    DEFERRED = "deferred"  # some feed must wait (rate limit, no proxy, outage)
    DISABLED = "disabled"  # the shop may not call the marketplace
    ERROR = "error"  # a feed or the shop failed; see ``error``
    NOT_FOUND = "not_found"  # no such shop


@dataclass
class ShopResult:
    """One shop's part of a run.

    Attributes:
        shop_id: The shop.
        outcome: How its sync ended.
        report: What its feeds did (None when the sync never started).
        error: Why it did not end ``ok``.
        retry_after: Seconds until a deferred shop may run again.
        attempts: How many times it ran in this run.
    """

    shop_id: int
    outcome: Outcome
    report: SyncReport | None = None
    error: str | None = None
    retry_after: float | None = None
    attempts: int = 1


Progress = Callable[[ShopResult], None]


async def run_sync(
    shops: Sequence[int] | Literal["all"],
    *,
    settings: Settings | None = None,
    concurrency: int | None = None,
    feeds: Sequence[str] | None = None,
    max_wait: float | None = None,
    retry_within: float = 0.0,
    max_retries: int = 2,
    progress: Progress | None = None,
    sleep: Sleep = asyncio.sleep,
) -> list[ShopResult]:
    """Sync shops concurrently in this process.

    Args:
        shops: Shop ids, or ``"all"`` for every shop in the database.
        settings: Defaults to the process-wide settings.
        concurrency: Shops synced at once (default ``settings.sync_concurrency``).
        feeds: Only these feeds; every feed of each shop by default.
        max_wait: Seconds a request may wait for the rate limiter.
        retry_within: A deferred feed whose wait is at most this long is run
            again in this run; 0 never retries.
        max_retries: The most extra runs of one shop.
        progress: Called with each shop's result as it finishes.
        sleep: How the runner waits before a retry; tests pass their own.

    Returns:
        One result per shop, in the order of ``shops`` (id order for ``"all"``).

    Raises:
        DatabaseUnavailableError: The shop list cannot be read.
        ConfigurationError: The database is not at head.
    """
    settings = settings or get_settings()
    limit = concurrency or settings.sync_concurrency
    if limit < 1:
        raise ValueError("concurrency must be at least 1")
    await ensure_schema(settings)
    ids = await _all_shop_ids(settings) if shops == "all" else list(shops)
    gate = asyncio.Semaphore(limit)

    async def one(shop_id: int) -> ShopResult:
        async with gate:
            result = await _sync_with_retries(
                shop_id, settings, feeds, max_wait, retry_within, max_retries, sleep
            )
        if progress is not None:
            progress(result)
        return result

    return list(await asyncio.gather(*(one(shop_id) for shop_id in ids)))


async def _all_shop_ids(settings: Settings) -> list[int]:
    async with session_scope(settings) as session:
        return [shop.id for shop in await list_shops(session)]


async def _sync_with_retries(
    shop_id: int,
    settings: Settings,
    feeds: Sequence[str] | None,
    max_wait: float | None,
    retry_within: float,
    max_retries: int,
    sleep: Sleep,
) -> ShopResult:
    result = await _sync_once(shop_id, settings, feeds, max_wait)
    attempts = 1
    while (
        result.outcome is Outcome.DEFERRED
        and result.retry_after is not None
        and result.retry_after <= retry_within
        and attempts <= max_retries
    ):
        await sleep(result.retry_after)
        waiting = _deferred_feeds(result)
        again = await _sync_once(shop_id, settings, waiting or feeds, max_wait)
        attempts += 1
        result = _merge(result, again)
    result.attempts = attempts
    return result


async def _sync_once(
    shop_id: int,
    settings: Settings,
    feeds: Sequence[str] | None,
    max_wait: float | None,
) -> ShopResult:
    try:
        report = await sync_shop(
            shop_id,
            settings=settings,
            feeds=feeds,
            max_wait=max_wait,
            raise_retry_later=False,
        )
    except ShopDisabledError as exc:
        logger.info("sync shop=%s skipped: disabled (%s)", shop_id, exc.reason)
        return ShopResult(
            shop_id,
            Outcome.DISABLED,
            error=exc.reason or str(exc),
            retry_after=exc.retry_after,
        )
    except ShopNotFoundError as exc:
        return ShopResult(shop_id, Outcome.NOT_FOUND, error=str(exc))
    except RetryLaterError as exc:
        return ShopResult(
            shop_id, Outcome.DEFERRED, error=str(exc), retry_after=exc.retry_after
        )
    except MpShieldError as exc:
        logger.warning("sync shop=%s failed: %s", shop_id, exc)
        return ShopResult(shop_id, Outcome.ERROR, error=str(exc))
    except Exception as exc:
        # One shop's bug must not end every other shop's sync.
        logger.exception("sync shop=%s failed unexpectedly", shop_id)
        return ShopResult(shop_id, Outcome.ERROR, error=f"{type(exc).__name__}: {exc}")
    return _from_report(report)


def _from_report(report: SyncReport) -> ShopResult:
    statuses = {feed.status for feed in report.feeds.values()}
    errors = "; ".join(f"{name}: {text}" for name, text in report.errors.items())
    if FeedStatus.ERROR in statuses:
        outcome = Outcome.ERROR
    elif FeedStatus.DEFERRED in statuses:
        outcome = Outcome.DEFERRED
    else:
        outcome = Outcome.OK
    return ShopResult(
        report.shop_id,
        outcome,
        report=report,
        error=errors or None,
        retry_after=report.retry_after,
    )


def _deferred_feeds(result: ShopResult) -> list[str]:
    if result.report is None:
        return []
    return [
        name
        for name, feed in result.report.feeds.items()
        if feed.status is FeedStatus.DEFERRED
    ]


def _merge(first: ShopResult, again: ShopResult) -> ShopResult:
    """The first run's feeds, with those run again replaced by the later run's."""
    if first.report is None or again.report is None:
        return again
    merged = SyncReport(first.report.shop_id, first.report.marketplace)
    for name, feed in first.report.feeds.items():
        later = again.report.feeds.get(name)
        if later is None:
            merged.feeds[name] = feed
            continue
        # Counts add up; the later run says how the feed ended.
        later.pages += feed.pages
        later.orders += feed.orders
        later.new += feed.new
        later.updated += feed.updated
        merged.feeds[name] = later
    return _from_report(merged)
