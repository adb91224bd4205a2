"""The in-process runner and ``mpshield sync`` against the sandbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from typer.testing import CliRunner

from mpshield.cli.main import app
from mpshield.db.engine import session_scope
from mpshield.db.models import ShopStatus
from mpshield.db.shops import set_shop_status
from mpshield.exceptions import ConfigurationError
from mpshield.jobs.runner import Outcome, ShopResult, run_sync
from mpshield.jobs.sync import FeedStatus
from mpshield.settings import LimitOverride, Settings
from mpshield.state.store import StateStore
from test_sync import Market, assert_exact, open_market, ozon_shop, wb_shop


@pytest.fixture(name="market")
async def market_fixture(
    db_ready: Settings, store: StateStore
) -> AsyncIterator[Market]:
    """The sandbox for one test, on the test's database and key prefix."""
    async with open_market(db_ready) as market:
        yield market


async def disable(settings: Settings, shop_id: int) -> None:
    async with session_scope(settings) as session:
        await set_shop_status(
            session, shop_id, ShopStatus.AUTH_ERROR, "token_withdrawn"
        )


async def test_all_shops_run_concurrently_and_skip_what_they_must(
    market: Market,
) -> None:
    """Every shop is synced; a disabled one and an unauthorized feed say why."""
    wb, ozon = await wb_shop(market, orders=20), await ozon_shop(market, orders=20)
    partial = await wb_shop(market, orders=10, scopes=("marketplace",))
    dead = await wb_shop(market, orders=5)
    await disable(market.settings, dead.shop_id)
    seen: list[ShopResult] = []

    results = await run_sync(
        "all", settings=market.settings, concurrency=2, progress=seen.append
    )

    by_shop = {result.shop_id: result for result in results}
    assert [r.shop_id for r in results] == sorted(by_shop)
    assert len(seen) == 4
    assert by_shop[wb.shop_id].outcome is Outcome.OK
    assert by_shop[ozon.shop_id].outcome is Outcome.OK
    assert by_shop[dead.shop_id].outcome is Outcome.DISABLED
    assert by_shop[dead.shop_id].error == "token_withdrawn"
    report = by_shop[partial.shop_id].report
    assert report is not None
    assert report.feeds["wb_stats"].status is FeedStatus.UNAUTHORIZED
    assert report.feeds["wb_fbs"].status is FeedStatus.OK
    await assert_exact(market, wb)
    await assert_exact(market, ozon)


async def test_short_waits_are_retried_within_the_run(market: Market) -> None:
    """A feed deferred for less than retry_within runs again and finishes."""
    limits = {"wb.supplier_orders": LimitOverride(limit=1, period=0.5, burst=1)}
    settings = market.settings.model_copy(update={"limits": limits})
    shop = await wb_shop(market, orders=5)

    deferred = await run_sync([shop.shop_id], settings=settings, max_wait=0.0)
    retried = await run_sync(
        [shop.shop_id], settings=settings, max_wait=0.0, retry_within=1.0
    )

    assert deferred[0].outcome is Outcome.DEFERRED
    assert deferred[0].retry_after is not None
    assert retried[0].outcome is Outcome.OK and retried[0].attempts >= 2
    await assert_exact(market, shop)


async def test_unknown_shop_is_reported(market: Market) -> None:
    """An id with no shop is a not_found result, not a crash of the run."""
    results = await run_sync([987654], settings=market.settings)
    assert results[0].outcome is Outcome.NOT_FOUND


class TestCli:
    async def test_sync_prints_a_table_per_shop(
        self, market: Market, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``mpshield sync --all`` syncs, shows each shop and exits 0."""
        wb = await wb_shop(market, orders=10)
        dead = await wb_shop(market, orders=5)
        await disable(market.settings, dead.shop_id)
        monkeypatch.setattr("mpshield.cli.sync.get_settings", lambda: market.settings)

        # The command runs its own event loop, so it runs in a thread while
        # this loop keeps serving the sandbox.
        result = await asyncio.to_thread(
            CliRunner().invoke, app, ["sync", "--all", "--concurrency", "2"]
        )

        assert result.exit_code == 0, result.output
        assert "token_withdrawn" in result.output
        assert f"{wb.shop_id}" in result.output and "ok" in result.output
        await assert_exact(market, wb)

    def test_needs_all_or_a_shop(self) -> None:
        """Without --all or --shop the command refuses before doing anything."""
        result = CliRunner().invoke(app, ["sync"])
        assert isinstance(result.exception, ConfigurationError)
