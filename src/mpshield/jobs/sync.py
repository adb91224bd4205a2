"""The order sync of one shop: every feed, page by page, from its stored cursor.

``sync_shop`` is what the Celery task, the in-process runner and the CLI all
run. For each of the shop's feeds it loads the stored cursor, asks the
marketplace for the next page through ``MarketplaceClient``, and stores the
page's orders with the advanced cursor in one transaction
(``mpshield.jobs.store``). A failure at any point leaves the database at the
end of the last stored page, and the next run goes on from there.

What stops a feed, and what then happens:

- ``CategoryUnauthorizedError``: the token lacks the feed's category. The
  client marks the category on the shop; this feed is skipped from then on
  (until the key is reset) and the other feeds go on.
- ``RetryLaterError`` (rate limit, no proxy, marketplace down): the feed's
  ``next_attempt_at`` and ``last_error`` are recorded and the other feeds go
  on; then the first such error is raised (or, with
  ``raise_retry_later=False``, reported), so a task retries the shop later.
- ``MarketplaceError`` (a refusal, a malformed page): recorded on the feed
  and in the report; the other feeds go on. Nothing of the bad page is stored.
- ``ShopDisabledError``: raised at once; the caller decides.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from mpshield.client import MarketplaceClient
from mpshield.client.response import Response
from mpshield.db.engine import ensure_schema, get_sessionmaker
from mpshield.db.shops import get_shop
from mpshield.exceptions import (
    CategoryUnauthorizedError,
    MarketplaceError,
    MpShieldError,
    RetryLaterError,
)
from mpshield.jobs import store
from mpshield.jobs.feeds import Feed, feeds_for
from mpshield.jobs.feeds.base import FeedRequest
from mpshield.jobs.store import SessionFactory
from mpshield.redaction import get_logger
from mpshield.settings import Settings, get_settings

logger = get_logger(__name__)

Clock = Callable[[], dt.datetime]
# A run stops after this many pages of one feed; the cursor is stored, so the
# next run goes on. It bounds a run, not a shop's history.
DEFAULT_PAGE_LIMIT = 1000


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class FeedStatus(enum.StrEnum):
    """How a feed's run ended."""

    OK = "ok"  # read up to the present
    MORE = "more"  # stopped at the page limit; the next run goes on
    DEFERRED = "deferred"  # a RetryLaterError; try after ``retry_after``
    UNAUTHORIZED = "unauthorized"  # the token lacks the feed's category
    ERROR = "error"  # a MarketplaceError; see ``error``


@dataclass
class FeedReport:
    """One feed's part of a sync.

    Attributes:
        feed: The feed's name.
        status: How the run ended.
        pages: Pages stored.
        orders: Orders read from those pages.
        new: Orders stored for the first time.
        updated: Stored orders that changed.
        error: Why the feed stopped, when it did not end ``ok``.
        retry_after: Seconds to wait, when ``deferred``.
        failure: The error that stopped the feed, for callers that act on its type.
    """

    feed: str
    status: FeedStatus = FeedStatus.OK
    pages: int = 0
    orders: int = 0
    new: int = 0
    updated: int = 0
    error: str | None = None
    retry_after: float | None = None
    failure: MpShieldError | None = field(default=None, repr=False, compare=False)


@dataclass
class SyncReport:
    """What one sync of a shop did, feed by feed."""

    shop_id: int
    marketplace: str | None = None
    feeds: dict[str, FeedReport] = field(default_factory=dict)

    @property
    def orders(self) -> int:
        return sum(report.orders for report in self.feeds.values())

    @property
    def new(self) -> int:
        return sum(report.new for report in self.feeds.values())

    @property
    def updated(self) -> int:
        return sum(report.updated for report in self.feeds.values())

    @property
    def pages(self) -> int:
        return sum(report.pages for report in self.feeds.values())

    @property
    def ok(self) -> bool:
        """Whether every feed that could run read up to the present."""
        return all(
            report.status in (FeedStatus.OK, FeedStatus.UNAUTHORIZED)
            for report in self.feeds.values()
        )

    @property
    def retry_after(self) -> float | None:
        """The longest wait a deferred feed asked for, if any feed was deferred."""
        waits = [
            r.retry_after for r in self.feeds.values() if r.retry_after is not None
        ]
        return max(waits) if waits else None

    @property
    def errors(self) -> dict[str, str]:
        """Why each feed that did not end ``ok`` stopped."""
        return {name: r.error for name, r in self.feeds.items() if r.error is not None}


async def sync_shop(
    shop_id: int,
    *,
    settings: Settings | None = None,
    feeds: Sequence[str] | None = None,
    max_wait: float | None = None,
    raise_retry_later: bool = True,
    page_limit: int = DEFAULT_PAGE_LIMIT,
    clock: Clock = utcnow,
) -> SyncReport:
    """Pull a shop's new and changed orders into the database.

    Args:
        shop_id: The shop to sync.
        settings: Defaults to the process-wide settings.
        feeds: Run only these feeds (names of the other marketplace's feeds
            are ignored); all of the shop's feeds by default.
        max_wait: Seconds a request may wait for the rate limiter before the
            feed is deferred (default ``settings.max_wait_seconds``).
        raise_retry_later: Raise the first ``RetryLaterError`` after all
            feeds ran (the default, for task queues), or only report it.
        page_limit: The most pages one feed reads in this run.
        clock: The current time (UTC); tests pass their own.

    Returns:
        What each feed did.

    Raises:
        ShopNotFoundError: No such shop.
        ShopDisabledError: The shop is disabled or its circuit is open.
        RetryLaterError: A feed must wait; everything read so far is stored.
        DatabaseUnavailableError: The database cannot be reached.
        ConfigurationError: An unknown feed name, or a database not at head.
    """
    settings = settings or get_settings()
    await ensure_schema(settings)
    sessions = get_sessionmaker(settings)
    report = SyncReport(shop_id=shop_id)
    deferred: RetryLaterError | None = None

    async with sessions() as db:
        shop = await get_shop(db, shop_id)
        report.marketplace = shop.marketplace
        chosen = feeds_for(shop.marketplace, feeds)
        unauthorized = set(shop.unauthorized_categories or ())
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    client = await stack.enter_async_context(
                        MarketplaceClient(
                            db, shop_id, settings=settings, max_wait=max_wait
                        )
                    )
                except RetryLaterError as exc:
                    # No exit to send through (every proxy quarantined):
                    # each feed waits.
                    await db.commit()
                    await _defer_all(sessions, shop_id, chosen, report, exc, clock)
                    deferred = exc
                else:
                    # The client may have written (its browser profile):
                    # commit, so the page transactions never wait on this session.
                    await db.commit()
                    for feed in chosen:
                        error = await _run_one(
                            client,
                            db,
                            sessions,
                            shop_id,
                            feed,
                            unauthorized,
                            report,
                            page_limit,
                            clock,
                        )
                        if deferred is None and isinstance(error, RetryLaterError):
                            deferred = error
        finally:
            # Whatever the client recorded (a disabled shop, an unauthorized
            # category) must outlive this session.
            if db.in_transaction():
                await db.commit()

    logger.info(
        "sync shop=%s marketplace=%s pages=%d orders=%d new=%d updated=%d %s",
        shop_id,
        report.marketplace,
        report.pages,
        report.orders,
        report.new,
        report.updated,
        " ".join(f"{name}={r.status}" for name, r in report.feeds.items()),
    )
    if deferred is not None and raise_retry_later:
        raise deferred
    return report


async def _run_one(
    client: MarketplaceClient,
    db: AsyncSession,
    sessions: SessionFactory,
    shop_id: int,
    feed: Feed,
    unauthorized: set[str],
    report: SyncReport,
    page_limit: int,
    clock: Clock,
) -> RetryLaterError | MarketplaceError | None:
    feed_report = report.feeds[feed.name] = FeedReport(feed.name)
    if feed.category in unauthorized:
        # Known before any request: a 401 would only cost the shop's budget.
        feed_report.status = FeedStatus.UNAUTHORIZED
        feed_report.error = f"the key has no access to category {feed.category!r}"
        return None
    return await _run_guarded(
        client, db, sessions, shop_id, feed, feed_report, page_limit, clock
    )


async def _defer_all(
    sessions: SessionFactory,
    shop_id: int,
    feeds: Sequence[Feed],
    report: SyncReport,
    error: RetryLaterError,
    clock: Clock,
) -> None:
    now = clock()
    retry_at = now + dt.timedelta(seconds=error.retry_after)
    for feed in feeds:
        report.feeds[feed.name] = FeedReport(
            feed.name,
            status=FeedStatus.DEFERRED,
            error=str(error),
            retry_after=error.retry_after,
            failure=error,
        )
        await store.record_failure(
            sessions,
            shop_id,
            feed.name,
            error=str(error),
            next_attempt_at=retry_at,
            now=now,
        )


async def _run_guarded(
    client: MarketplaceClient,
    db: AsyncSession,
    sessions: SessionFactory,
    shop_id: int,
    feed: Feed,
    report: FeedReport,
    page_limit: int,
    clock: Clock,
) -> RetryLaterError | MarketplaceError | None:
    """Run one feed, turning the errors that stop only this feed into its report."""
    error: CategoryUnauthorizedError | RetryLaterError | MarketplaceError
    try:
        await run_feed(client, db, sessions, shop_id, feed, report, page_limit, clock)
        return None
    except (CategoryUnauthorizedError, RetryLaterError, MarketplaceError) as exc:
        error = exc
    # What the client wrote about it (an unauthorized category) goes first, so
    # the note below never waits on this session's lock.
    await db.commit()
    now = clock()
    retry_at: dt.datetime | None = None
    if isinstance(error, CategoryUnauthorizedError):
        report.status = FeedStatus.UNAUTHORIZED
    elif isinstance(error, RetryLaterError):
        report.status, report.retry_after = FeedStatus.DEFERRED, error.retry_after
        retry_at = now + dt.timedelta(seconds=error.retry_after)
        logger.info(
            "sync shop=%s feed=%s deferred for %.1f s after %d pages",
            shop_id,
            feed.name,
            error.retry_after,
            report.pages,
        )
    else:
        report.status = FeedStatus.ERROR
        logger.warning("sync shop=%s feed=%s failed: %s", shop_id, feed.name, error)
    report.error, report.failure = str(error), error
    await store.record_failure(
        sessions,
        shop_id,
        feed.name,
        error=str(error),
        next_attempt_at=retry_at,
        now=now,
    )
    return None if isinstance(error, CategoryUnauthorizedError) else error


async def run_feed(
    client: MarketplaceClient,
    db: AsyncSession,
    sessions: SessionFactory,
    shop_id: int,
    feed: Feed,
    report: FeedReport,
    page_limit: int = DEFAULT_PAGE_LIMIT,
    clock: Clock = utcnow,
) -> None:
    """Read one feed from its stored cursor up to the present (or ``page_limit``).

    Each page is stored with its cursor before the next is asked for, so
    ``report`` counts only what is in the database. ``db`` is the client's
    session: what the client wrote is committed before each page, since a
    SQLite writer would otherwise wait on it.

    Raises:
        Whatever the client raises, and MalformedResponseError for a page
        without the documented shape; all pages before it are stored.
    """
    now = clock()
    cursor = feed.begin(await store.load_cursor(sessions, shop_id, feed.name), now)
    for _ in range(page_limit):
        body = (await _send(client, feed.request(cursor))).json()
        page = feed.read(body, cursor, now)
        await db.commit()
        counts = await store.save_page(
            sessions,
            shop_id=shop_id,
            feed=feed,
            orders=page.orders,
            cursor=page.cursor,
            finished=not page.more,
            now=clock(),
        )
        report.pages += 1
        report.orders += len(page.orders)
        report.new += counts.new
        report.updated += counts.updated
        cursor = page.cursor
        if not page.more:
            report.status = FeedStatus.OK
            return
    report.status = FeedStatus.MORE


async def _send(client: MarketplaceClient, request: FeedRequest) -> Response:
    if request.method == "GET":
        return await client.get(request.path, params=request.params)
    return await client.post(request.path, json=request.json)
