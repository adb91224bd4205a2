"""Checking the database against the sandbox's truth, and what the demo saw."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from mpshield.db.engine import session_scope
from mpshield.db.models import Order, Shop, ShopStatus
from mpshield.demo.scenario import FEED_KEYS, DemoShop
from mpshield.settings import Settings


@dataclass
class FeedCheck:
    """One healthy shop's feed compared with the sandbox."""

    shop: DemoShop
    feed: str
    expected: int
    stored: int
    missing: int
    extra: int
    stale: int

    @property
    def exact(self) -> bool:
        return self.missing == self.extra == self.stale == 0


@dataclass
class Verdict:
    """Everything the final report says; ``ok`` decides the exit code."""

    checks: list[FeedCheck] = field(default_factory=list)
    disabled: dict[int, str] = field(default_factory=dict)
    wrongly_disabled: list[DemoShop] = field(default_factory=list)
    not_disabled: list[DemoShop] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def mismatches(self) -> list[FeedCheck]:
        return [check for check in self.checks if not check.exact]

    @property
    def ok(self) -> bool:
        return not (self.mismatches or self.wrongly_disabled or self.not_disabled)


def _canonical(payload: Any) -> str:
    # JSON columns may come back with other number types or key order.
    return json.dumps(payload, sort_keys=True, default=str)


async def stored_orders(settings: Settings, shop_id: int) -> dict[str, dict[str, str]]:
    """The shop's stored orders: feed -> external id -> canonical payload."""
    rows: dict[str, dict[str, str]] = defaultdict(dict)
    async with session_scope(settings) as session:
        result = await session.execute(
            select(Order.feed, Order.external_id, Order.payload).where(
                Order.shop_id == shop_id
            )
        )
        for feed, external_id, payload in result:
            rows[feed][external_id] = _canonical(payload)
    return rows


async def order_counts(settings: Settings) -> dict[int, int]:
    """Stored orders per shop."""
    async with session_scope(settings) as session:
        result = await session.execute(
            select(Order.shop_id, func.count()).group_by(Order.shop_id)
        )
        return {shop_id: count for shop_id, count in result}


async def shop_statuses(settings: Settings) -> dict[int, tuple[str, str | None]]:
    """Each shop's status and its reason."""
    async with session_scope(settings) as session:
        result = await session.execute(select(Shop.id, Shop.status, Shop.status_reason))
        return {shop_id: (status, reason) for shop_id, status, reason in result}


async def check(
    settings: Settings,
    shops: list[DemoShop],
    truth: dict[str, dict[str, list[dict[str, Any]]]],
    stats: dict[str, Any],
) -> Verdict:
    """Compare every healthy shop's feeds with ``truth`` (seller -> feed -> rows)."""
    verdict = Verdict()
    statuses = await shop_statuses(settings)
    for shop in shops:
        status, reason = statuses.get(shop.shop_id, (ShopStatus.ACTIVE, None))
        disabled = status != ShopStatus.ACTIVE
        if disabled:
            verdict.disabled[shop.shop_id] = reason or status
        if shop.expect_disabled:
            if not disabled:
                verdict.not_disabled.append(shop)
            continue
        if disabled:
            verdict.wrongly_disabled.append(shop)
            continue
        stored = await stored_orders(settings, shop.shop_id)
        for feed, rows in truth[shop.seller].items():
            if feed in shop.skip_feeds:
                continue
            expected = {str(row[FEED_KEYS[feed]]): _canonical(row) for row in rows}
            have = stored.get(feed, {})
            verdict.checks.append(
                FeedCheck(
                    shop=shop,
                    feed=feed,
                    expected=len(expected),
                    stored=len(have),
                    missing=len(expected.keys() - have.keys()),
                    extra=len(have.keys() - expected.keys()),
                    stale=sum(
                        1
                        for key in expected.keys() & have.keys()
                        if expected[key] != have[key]
                    ),
                )
            )
    for seller_stats in stats.get("sellers", {}).values():
        for key in ("requests", "429", "403", "401", "404", "5xx", "bans"):
            verdict.counts[key] += int(seller_stats.get(key, 0))
    for address_stats in stats.get("addresses", {}).values():
        verdict.counts["address_bans"] += int(address_stats.get("bans", 0))
    return verdict
