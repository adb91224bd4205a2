"""The order sync of one shop against the sandbox, through the real client.

Each test compares the database with what the sandbox's marketplace holds
(``World.truth``): the same orders, each once, with its latest state.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select

from mpshield.client import MarketplaceClient
from mpshield.db.engine import get_sessionmaker, session_scope
from mpshield.db.models import Order, ShopStatus, SyncState
from mpshield.db.shops import add_shop, set_shop_status
from mpshield.exceptions import (
    CategoryUnauthorizedError,
    MalformedResponseError,
    RateLimitedError,
    ShopDisabledError,
)
from mpshield.jobs import feeds as feed_registry
from mpshield.jobs import store
from mpshield.jobs.feeds import OzonFboFeed, OzonFbsFeed, WbFbsFeed, WbStatsFeed
from mpshield.jobs.sync import FeedStatus, sync_shop, utcnow
from mpshield.sandbox.faults import FaultConfig
from mpshield.sandbox.ozon import create_ozon_app
from mpshield.sandbox.wb import create_wb_app
from mpshield.sandbox.world import World, WorldSettings
from mpshield.settings import LimitOverride, Settings
from mpshield.state.store import StateStore
from test_feeds import validate

SCALE = 0.01


@dataclass
class Market:
    """The sandbox's marketplaces and settings that point the client at them."""

    world: World
    settings: Settings


@contextlib.asynccontextmanager
async def open_market(settings: Settings) -> AsyncIterator[Market]:
    """WB and Ozon sandboxes on loopback; time runs a hundred times faster."""
    world = World(
        time_scale=SCALE, seed=11, settings=WorldSettings(wb_stats_page_size=25)
    )
    wb = TestServer(create_wb_app(world), host="127.0.0.1")
    ozon = TestServer(create_ozon_app(world), host="127.0.0.1")
    async with wb, ozon:
        yield Market(
            world,
            settings.model_copy(
                update={
                    "wb_base_url": str(wb.make_url("")).rstrip("/"),
                    "ozon_base_url": str(ozon.make_url("")).rstrip("/"),
                    "time_scale": SCALE,
                    "backoff_base_seconds": 0.01,
                    "backoff_cap_seconds": 0.05,
                    "retry_jitter_min_seconds": 0.0,
                    "retry_jitter_max_seconds": 0.01,
                }
            ),
        )


@pytest.fixture(name="market")
async def market_fixture(
    db_ready: Settings, store: StateStore
) -> AsyncIterator[Market]:
    """The sandbox for one test, on the test's database and key prefix."""
    async with open_market(db_ready) as market:
        yield market


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of a few orders, so every sync walks several pages and cursors."""
    monkeypatch.setitem(
        feed_registry.FEEDS, "wb_fbs", functools.partial(WbFbsFeed, page_size=7)
    )
    monkeypatch.setitem(
        feed_registry.FEEDS, "ozon_fbs", functools.partial(OzonFbsFeed, page_size=5)
    )
    monkeypatch.setitem(
        feed_registry.FEEDS, "ozon_fbo", functools.partial(OzonFboFeed, page_size=4)
    )


async def stored_orders(settings: Settings, shop_id: int) -> dict[str, dict[str, Any]]:
    """feed -> external id -> payload, failing on any duplicate."""
    async with session_scope(settings) as session:
        rows = await session.execute(
            select(Order.feed, Order.external_id, Order.payload).where(
                Order.shop_id == shop_id
            )
        )
        found: dict[str, dict[str, Any]] = {}
        for feed, ident, payload in rows:
            assert ident not in found.setdefault(feed, {}), f"duplicate {feed} {ident}"
            found[feed][ident] = payload
        return found


def truth_by_id(world: World, seller: str) -> dict[str, dict[str, Any]]:
    keys: dict[str, Callable[[dict[str, Any]], str]] = {
        "wb_fbs": lambda row: str(row["id"]),
        "wb_stats": lambda row: str(row["srid"]),
        "ozon_fbs": lambda row: str(row["posting_number"]),
        "ozon_fbo": lambda row: str(row["posting_number"]),
    }
    return {
        feed: {keys[feed](row): row for row in rows}
        for feed, rows in world.truth(seller).items()
    }


async def assert_exact(market: Market, shop: Shop) -> None:
    """The database holds exactly the marketplace's orders, in their latest state."""
    assert await stored_orders(market.settings, shop.shop_id) == truth_by_id(
        market.world, shop.seller
    )


@dataclass
class Shop:
    shop_id: int
    seller: str


async def wb_shop(market: Market, orders: int = 60, **token: Any) -> Shop:
    sid = market.world.wb_create_seller(orders=orders)
    key = market.world.wb_issue_token(sid, **token)
    async with session_scope(market.settings) as session:
        shop = await add_shop(session, marketplace="wb", api_key=key, name="wb")
        return Shop(shop.id, sid)


async def ozon_shop(market: Market, orders: int = 40) -> Shop:
    client_id, key = market.world.ozon_create_seller(orders=orders)
    async with session_scope(market.settings) as session:
        shop = await add_shop(
            session, marketplace="ozon", api_key=key, client_id=client_id, name="oz"
        )
        return Shop(shop.id, client_id)


def requests_of(market: Market, seller: str) -> int:
    return int(market.world.stats()["sellers"].get(seller, {}).get("requests", 0))


async def cursors(settings: Settings, shop_id: int) -> dict[str, Any]:
    async with session_scope(settings) as session:
        states = await session.scalars(
            select(SyncState).where(SyncState.shop_id == shop_id)
        )
        return {state.feed: state.cursor for state in states}


class TestWb:
    async def test_first_and_second_run_are_exact(self, market: Market) -> None:
        """Both feeds match the truth; a later run reads only what changed."""
        shop = await wb_shop(market)

        report = await sync_shop(shop.shop_id, settings=market.settings)

        assert report.ok
        assert report.feeds["wb_fbs"].pages > 3  # several pages of seven: opaque next
        assert report.feeds["wb_stats"].pages > 2  # pages of 25: boundary repeats
        await assert_exact(market, shop)

        market.world.add_orders(shop.seller, 4)
        market.world.change_statuses(shop.seller, 12)
        before = requests_of(market, shop.seller)

        again = await sync_shop(shop.shop_id, settings=market.settings)

        assert again.ok
        assert again.feeds["wb_stats"].updated > 0
        assert requests_of(market, shop.seller) - before <= 8
        await assert_exact(market, shop)

    async def test_a_token_without_statistics_skips_that_feed(
        self, market: Market
    ) -> None:
        """The unauthorized category is reported and the other feed still syncs."""
        shop = await wb_shop(market, scopes=("marketplace",))

        report = await sync_shop(shop.shop_id, settings=market.settings)
        again = await sync_shop(shop.shop_id, settings=market.settings)

        for run in (report, again):
            assert run.feeds["wb_stats"].status is FeedStatus.UNAUTHORIZED
            assert run.feeds["wb_fbs"].status is FeedStatus.OK
        stored = await stored_orders(market.settings, shop.shop_id)
        assert set(stored) == {"wb_fbs"}
        assert stored["wb_fbs"] == truth_by_id(market.world, shop.seller)["wb_fbs"]
        assert isinstance(report.feeds["wb_stats"].failure, CategoryUnauthorizedError)

    async def test_rate_limit_ends_the_run_with_the_cursor_saved(
        self, market: Market
    ) -> None:
        """A statistics limit raises RateLimitedError after storing what was read."""
        limits = {"wb.supplier_orders": LimitOverride(limit=1, period=3600, burst=1)}
        settings = market.settings.model_copy(update={"limits": limits})
        shop = await wb_shop(market)

        with pytest.raises(RateLimitedError) as caught:
            await sync_shop(shop.shop_id, settings=settings, max_wait=0.1)

        assert caught.value.retry_after > 1
        stored = await stored_orders(settings, shop.shop_id)
        assert len(stored["wb_stats"]) == 25  # the one page the limit allowed
        async with session_scope(settings) as session:
            state = await session.get(SyncState, (shop.shop_id, "wb_stats"))
            assert state is not None and state.next_attempt_at is not None
            assert state.last_error is not None
            assert state.cursor["date_from"]

        # Later, with the bucket full again (a fresh key prefix stands for it).
        later = market.settings.model_copy(
            update={"key_prefix": f"{settings.key_prefix}:later"}
        )
        await sync_shop(shop.shop_id, settings=later, feeds=["wb_stats"])

        await assert_exact(market, shop)


class TestOzon:
    async def test_first_and_second_run_are_exact(self, market: Market) -> None:
        """FBS and FBO match the truth; status changes arrive on the next run."""
        shop = await ozon_shop(market)

        report = await sync_shop(shop.shop_id, settings=market.settings)

        assert report.ok and report.feeds["ozon_fbs"].pages > 2
        await assert_exact(market, shop)

        market.world.add_orders(shop.seller, 3)
        market.world.change_statuses(shop.seller, 10)
        before = requests_of(market, shop.seller)

        again = await sync_shop(shop.shop_id, settings=market.settings)

        assert again.ok and again.updated > 0
        assert requests_of(market, shop.seller) - before <= 10
        await assert_exact(market, shop)


class TestCrashSafety:
    @pytest.mark.parametrize("when", ["before_commit", "after_commit"])
    @pytest.mark.parametrize("nth", [1, 3])
    async def test_crash_then_rerun_is_exact(
        self, market: Market, monkeypatch: pytest.MonkeyPatch, when: str, nth: int
    ) -> None:
        """A crash before or after a page's commit loses and duplicates nothing."""
        shop = await wb_shop(market, orders=40)
        real_save = store.save_page
        calls = 0

        async def crashing(*args: Any, **kwargs: Any) -> store.PageCounts:
            nonlocal calls
            calls += 1
            if calls == nth and when == "before_commit":
                raise RuntimeError("worker died before the commit")
            counts = await real_save(*args, **kwargs)
            if calls == nth:
                raise RuntimeError("worker died after the commit")
            return counts

        monkeypatch.setattr(store, "save_page", crashing)
        with pytest.raises(RuntimeError):
            await sync_shop(shop.shop_id, settings=market.settings)
        monkeypatch.setattr(store, "save_page", real_save)

        await sync_shop(shop.shop_id, settings=market.settings)

        await assert_exact(market, shop)

    async def test_malformed_page_loses_nothing(self, market: Market) -> None:
        """A broken page is a typed error; the cursor stays; the re-run is exact."""
        shop = await ozon_shop(market)
        await sync_shop(shop.shop_id, settings=market.settings)
        market.world.add_orders(shop.seller, 6)
        saved = await cursors(market.settings, shop.shop_id)
        market.world.set_faults(shop.seller, FaultConfig(malformed_rate=1.0))

        report = await sync_shop(shop.shop_id, settings=market.settings)

        for name in ("ozon_fbs", "ozon_fbo"):
            assert report.feeds[name].status is FeedStatus.ERROR
            assert isinstance(report.feeds[name].failure, MalformedResponseError)
        assert await cursors(market.settings, shop.shop_id) == saved

        market.world.set_faults(shop.seller, FaultConfig())
        await sync_shop(shop.shop_id, settings=market.settings)

        await assert_exact(market, shop)

    async def test_gateway_pages_defer_the_shop(self, market: Market) -> None:
        """HTML 5xx pages outlive the retries: the feeds wait, nothing is stored."""
        shop = await wb_shop(market, orders=10)
        market.world.set_faults(
            shop.seller, FaultConfig(error_rate=1.0, html_share=1.0)
        )

        report = await sync_shop(
            shop.shop_id, settings=market.settings, raise_retry_later=False
        )

        assert {f.status for f in report.feeds.values()} == {FeedStatus.DEFERRED}
        assert report.retry_after is not None
        assert await stored_orders(market.settings, shop.shop_id) == {}


async def test_disabled_shop_raises_before_any_request(market: Market) -> None:
    """ShopDisabledError propagates and the marketplace sees nothing."""
    shop = await wb_shop(market, orders=5)
    async with session_scope(market.settings) as session:
        await set_shop_status(session, shop.shop_id, ShopStatus.DISABLED, "paused")

    with pytest.raises(ShopDisabledError):
        await sync_shop(shop.shop_id, settings=market.settings)

    assert requests_of(market, shop.seller) == 0
    async with session_scope(market.settings) as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 0


async def test_live_pages_match_the_specs(market: Market) -> None:
    """Pages fetched through the client are valid by the specs and read whole."""
    wb, ozon = await wb_shop(market, orders=8), await ozon_shop(market, orders=8)
    checks = [
        (wb, WbFbsFeed(), "wb-orders-fbs.json", "Order"),
        (wb, WbStatsFeed(), "wb-reports.json", "OrdersItem"),
        (ozon, OzonFbsFeed(), "ozon-seller-swagger.json", None),
        (ozon, OzonFboFeed(), "ozon-seller-swagger.json", None),
    ]
    now = utcnow()
    for shop, feed, document, row_schema in checks:
        async with (
            get_sessionmaker(market.settings)() as db,
            MarketplaceClient(db, shop.shop_id, settings=market.settings) as client,
        ):
            cursor = feed.begin(None, now)
            request = feed.request(cursor)
            if request.method == "GET":
                response = await client.get(request.path, params=request.params)
            else:
                response = await client.post(request.path, json=request.json)
            await db.commit()
        body = response.json()
        if row_schema is None:
            version = "v4.PostingFbs" if feed.name == "ozon_fbs" else "v3.PostingFbo"
            validate(document, f"posting.{version}ListResponse", body)
            rows = body["postings"]
        else:
            rows = body["orders"] if isinstance(body, dict) else body
            for row in rows:
                validate(document, row_schema, row)

        page = feed.read(body, cursor, now)

        assert rows and len(page.orders) == len(rows)
