"""MarketplaceClient end to end against the sandbox's WB, Ozon and storefront apps.

The apps are served on loopback in the test's own event loop, at full time
scale, and the client reaches them directly (no proxies). Every test runs on
both backends through the ``settings`` and ``db`` fixtures.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncSession

from mpshield import (
    CategoryUnauthorizedError,
    MarketplaceClient,
    MarketplaceError,
    MarketplaceUnavailableError,
    NoProxyAvailableError,
    RateLimitedError,
    ShopDisabledError,
    reset_shop_circuit,
    update_shop_credentials,
)
from mpshield.db import shops as shop_db
from mpshield.protection.breaker import CircuitBreaker, CircuitState
from mpshield.protection.proxies import ProxyProvider
from mpshield.protection.timing import RecordingSleep
from mpshield.sandbox.faults import FaultConfig
from mpshield.sandbox.ozon import create_ozon_app
from mpshield.sandbox.storefront import create_storefront_app
from mpshield.sandbox.wb import create_wb_app
from mpshield.sandbox.world import World
from mpshield.settings import LimitOverride, Settings
from mpshield.state.store import get_store
from mpshield.transport.profiles import SUPPORTED


@dataclass
class Harness:
    world: World
    settings: Settings

    def requests(self, seller: str) -> int:
        return int(self.world.stats()["sellers"].get(seller, {}).get("requests", 0))

    def with_settings(self, **changes: Any) -> Settings:
        return self.settings.model_copy(update=changes)


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    """The sandbox apps on loopback and settings that point the client at them."""
    world = World(time_scale=1.0, seed=11)
    servers = [
        TestServer(create_wb_app(world), host="127.0.0.1"),
        TestServer(create_ozon_app(world), host="127.0.0.1"),
        TestServer(create_storefront_app(world), host="127.0.0.1"),
    ]
    for server in servers:
        await server.start_server()
    wb, ozon, front = (f"http://127.0.0.1:{server.port}" for server in servers)
    configured = settings.model_copy(
        update={
            "wb_base_url": wb,
            "ozon_base_url": ozon,
            "wb_storefront_base_url": front,
            "breaker_failure_threshold": 3,
            "max_attempts": 3,
            "max_wait_seconds": 0.0,
        }
    )
    try:
        yield Harness(world, configured)
    finally:
        for server in servers:
            await server.close()
        store = get_store(settings)
        async for key in store.redis.scan_iter(match=f"{settings.key_prefix}:*"):
            await store.redis.delete(key)


async def wb_shop(db: AsyncSession, token: str) -> int:
    shop = await shop_db.add_shop(db, marketplace="wb", api_key=token)
    await db.commit()
    return shop.id


def month_ago() -> int:
    return int((dt.datetime.now(dt.UTC) - dt.timedelta(days=20)).timestamp())


async def test_wb_happy_path(harness: Harness, db: AsyncSession) -> None:
    """The seed usage reads WB orders and keeps the shop's browser profile."""
    sid = harness.world.wb_create_seller(orders=5)
    shop_id = await wb_shop(db, harness.world.wb_issue_token(sid))

    async with MarketplaceClient(
        db, shop_id=shop_id, settings=harness.settings
    ) as client:
        response = await client.get(
            "/api/v3/orders", params={"limit": 100, "next": 0, "dateFrom": month_ago()}
        )

    assert response.status == 200
    assert "orders" in response.json()
    assert "X-Ratelimit-Remaining" in response.headers
    shop = await shop_db.get_shop(db, shop_id)
    assert shop.browser_profile in SUPPORTED
    assert "MarketplaceClient(shop_id=" in repr(client)


async def test_ozon_happy_path(harness: Harness, db: AsyncSession) -> None:
    """An Ozon shop lists its FBS postings with Client-Id and Api-Key."""
    client_id, api_key = harness.world.ozon_create_seller(orders=5)
    shop = await shop_db.add_shop(
        db, marketplace="ozon", api_key=api_key, client_id=client_id
    )
    await db.commit()
    now = dt.datetime.now(dt.UTC)
    body = {
        "filter": {
            "since": (now - dt.timedelta(days=30)).isoformat(),
            "to": now.isoformat(),
        },
        "limit": 50,
    }

    async with MarketplaceClient(
        db, shop_id=shop.id, settings=harness.settings
    ) as client:
        response = await client.post("/v4/posting/fbs/list", json=body)

    assert response.status == 200
    assert "postings" in response.json()


async def test_concurrent_requests_on_one_client(
    harness: Harness, db: AsyncSession
) -> None:
    """Requests gathered on one client all succeed."""
    sid = harness.world.wb_create_seller(orders=3)
    shop_id = await wb_shop(db, harness.world.wb_issue_token(sid))

    async with MarketplaceClient(
        db, shop_id=shop_id, settings=harness.settings
    ) as client:
        answers = await asyncio.gather(
            *(client.get("/api/v3/orders/new") for _ in range(5))
        )

    assert [answer.status for answer in answers] == [200] * 5
    assert harness.requests(sid) == 5


async def revoke_until_disabled(
    harness: Harness, db: AsyncSession, settings: Settings
) -> tuple[str, int, int]:
    """A shop whose token is revoked, driven until its circuit opens."""
    sid = harness.world.wb_create_seller(orders=1)
    token = harness.world.wb_issue_token(sid)
    shop_id = await wb_shop(db, token)
    harness.world.wb_revoke_token(token)
    failures = 0
    async with MarketplaceClient(db, shop_id=shop_id, settings=settings) as client:
        with pytest.raises(ShopDisabledError):
            for _ in range(settings.breaker_failure_threshold + 1):
                try:
                    await client.get("/api/v3/orders/new")
                except MarketplaceError as exc:
                    assert exc.status == 401
                    failures += 1
    return sid, shop_id, failures


async def test_revoked_key_disables_the_shop(
    harness: Harness, db: AsyncSession
) -> None:
    """After the threshold of 401s the shop is auth_error, OPEN, and sends nothing more."""
    settings = harness.settings
    sid, shop_id, failures = await revoke_until_disabled(harness, db, settings)

    assert failures == settings.breaker_failure_threshold - 1
    shop = await shop_db.get_shop(db, shop_id)
    await db.refresh(shop)
    assert shop.status == "auth_error"
    store = get_store(settings)
    state = await store.redis.get(f"{settings.key_prefix}:circuit:{shop_id}:state")
    assert state == b"OPEN"
    seen = harness.requests(sid)
    with pytest.raises(ShopDisabledError):
        async with MarketplaceClient(db, shop_id=shop_id, settings=settings):
            pass
    assert harness.requests(sid) == seen


async def test_lost_redis_state_keeps_the_shop_disabled(
    harness: Harness, db: AsyncSession
) -> None:
    """With the circuit gone from Redis, the database's auth_error still refuses."""
    settings = harness.settings
    _, shop_id, _ = await revoke_until_disabled(harness, db, settings)
    await CircuitBreaker(get_store(settings), settings).reset(shop_id)

    with pytest.raises(ShopDisabledError):
        async with MarketplaceClient(db, shop_id=shop_id, settings=settings):
            pass
    breaker = CircuitBreaker(get_store(settings), settings)
    assert await breaker.state(shop_id) is CircuitState.OPEN


async def test_probe_closes_with_a_valid_key(
    harness: Harness, db: AsyncSession
) -> None:
    """After the open period one probe goes out; a valid key closes the circuit."""
    settings = harness.with_settings(breaker_open_seconds=0.3)
    sid, shop_id, _ = await revoke_until_disabled(harness, db, settings)
    await shop_db.update_credentials(
        db, shop_id, api_key=harness.world.wb_issue_token(sid)
    )
    await db.commit()
    await asyncio.sleep(0.4)

    async with MarketplaceClient(db, shop_id=shop_id, settings=settings) as client:
        response = await client.get("/api/v3/orders/new")

    assert response.status == 200
    shop = await shop_db.get_shop(db, shop_id)
    await db.refresh(shop)
    assert shop.status == "active"
    breaker = CircuitBreaker(get_store(settings), settings)
    assert await breaker.state(shop_id) is CircuitState.CLOSED


async def test_probe_reopens_with_a_bad_key(harness: Harness, db: AsyncSession) -> None:
    """A probe answered 401 opens the circuit again at once."""
    settings = harness.with_settings(breaker_open_seconds=0.3)
    _, shop_id, _ = await revoke_until_disabled(harness, db, settings)
    await asyncio.sleep(0.4)

    async with MarketplaceClient(db, shop_id=shop_id, settings=settings) as client:
        with pytest.raises(ShopDisabledError):
            await client.get("/api/v3/orders/new")

    breaker = CircuitBreaker(get_store(settings), settings)
    assert await breaker.state(shop_id) is CircuitState.OPEN
    with pytest.raises(ShopDisabledError):
        async with MarketplaceClient(db, shop_id=shop_id, settings=settings):
            pass


async def test_update_credentials_reopens_the_shop(
    harness: Harness, db: AsyncSession
) -> None:
    """update_shop_credentials saves the key and closes the circuit; requests flow."""
    settings = harness.settings
    sid, shop_id, _ = await revoke_until_disabled(harness, db, settings)

    await update_shop_credentials(
        shop_id, db, api_key=harness.world.wb_issue_token(sid), settings=settings
    )

    async with MarketplaceClient(db, shop_id=shop_id, settings=settings) as client:
        assert (await client.get("/api/v3/orders/new")).status == 200
    shop = await shop_db.get_shop(db, shop_id)
    assert shop.status == "active"


async def test_reset_shop_circuit(harness: Harness, db: AsyncSession) -> None:
    """reset_shop_circuit closes the circuit, clears counts and marks the shop active."""
    settings = harness.settings
    _, shop_id, _ = await revoke_until_disabled(harness, db, settings)

    await reset_shop_circuit(shop_id, db, settings=settings)

    breaker = CircuitBreaker(get_store(settings), settings)
    assert await breaker.state(shop_id) is CircuitState.CLOSED
    assert await breaker.failures(shop_id) == 0
    shop = await shop_db.get_shop(db, shop_id)
    await db.refresh(shop)
    assert shop.status == "active"


async def test_expired_token_is_never_sent(harness: Harness, db: AsyncSession) -> None:
    """An expired WB token disables the shop without a single request."""
    sid = harness.world.wb_create_seller(orders=1)
    shop_id = await wb_shop(db, harness.world.wb_issue_token(sid, expires_in=-60))

    with pytest.raises(ShopDisabledError) as caught:
        async with MarketplaceClient(db, shop_id=shop_id, settings=harness.settings):
            pass

    assert caught.value.reason == "token_expired"
    assert harness.requests(sid) == 0
    shop = await shop_db.get_shop(db, shop_id)
    await db.refresh(shop)
    assert (shop.status, shop.status_reason) == ("auth_error", "token_expired")


async def test_missing_scope_is_never_sent(harness: Harness, db: AsyncSession) -> None:
    """A token without the statistics bit marks the category, sending nothing."""
    sid = harness.world.wb_create_seller(orders=1)
    token = harness.world.wb_issue_token(sid, scopes=("marketplace",))
    shop_id = await wb_shop(db, token)

    async with MarketplaceClient(
        db, shop_id=shop_id, settings=harness.settings
    ) as client:
        with pytest.raises(CategoryUnauthorizedError) as caught:
            await client.get(
                "/api/v1/supplier/orders", params={"dateFrom": "2026-01-01"}
            )
        assert (await client.get("/api/v3/orders/new")).status == 200

    assert caught.value.category == "statistics"
    assert harness.requests(sid) == 1
    shop = await shop_db.get_shop(db, shop_id)
    await db.refresh(shop)
    assert shop.unauthorized_categories == ["statistics"]
    assert shop.status == "active"


async def test_server_errors_are_retried(harness: Harness, db: AsyncSession) -> None:
    """5xx answers and HTML 502 pages are retried with backoff, then given up on."""
    sid = harness.world.wb_create_seller(orders=1)
    shop_id = await wb_shop(db, harness.world.wb_issue_token(sid))
    harness.world.set_faults(sid, FaultConfig(error_rate=1.0, html_share=1.0))
    sleep = RecordingSleep()

    async with MarketplaceClient(
        db, shop_id=shop_id, settings=harness.settings, sleep=sleep
    ) as client:
        with pytest.raises(MarketplaceUnavailableError):
            await client.get("/api/v3/orders/new")
        harness.world.set_faults(sid, FaultConfig())
        assert (await client.get("/api/v3/orders/new")).status == 200

    assert harness.requests(sid) == harness.settings.max_attempts + 1
    assert len(sleep.calls) == harness.settings.max_attempts - 1


async def test_writes_are_sent_once(harness: Harness, db: AsyncSession) -> None:
    """A write that meets a server error is not repeated."""
    sid = harness.world.wb_create_seller(orders=1)
    shop_id = await wb_shop(db, harness.world.wb_issue_token(sid))
    harness.world.set_faults(sid, FaultConfig(error_rate=1.0))

    async with MarketplaceClient(
        db, shop_id=shop_id, settings=harness.settings
    ) as client:
        with pytest.raises(MarketplaceUnavailableError):
            await client.request("PATCH", "/api/v3/orders/1/cancel")

    assert harness.requests(sid) == 1


async def test_account_429_cools_the_bucket(harness: Harness, db: AsyncSession) -> None:
    """WB's 429 cools the account bucket for every worker; the next call sends nothing."""
    sid = harness.world.wb_create_seller(orders=1)
    token = harness.world.wb_issue_token(sid)
    shop_id = await wb_shop(db, token)
    params = {"dateFrom": "2026-01-01"}
    # Another integration of the same seller spends the whole burst first.
    url = harness.settings.wb_base_url
    async with aiohttp.ClientSession() as other:
        for _ in range(10):
            async with other.get(
                f"{url}/api/v1/supplier/orders",
                params=params,
                headers={"Authorization": token},
            ) as answer:
                assert answer.status == 200
    sleep = RecordingSleep()

    async with MarketplaceClient(
        db, shop_id=shop_id, settings=harness.settings, sleep=sleep
    ) as client:
        with pytest.raises(RateLimitedError) as caught:
            await client.get("/api/v1/supplier/orders", params=params)
        sent = harness.requests(sid)
        with pytest.raises(RateLimitedError):
            await client.get("/api/v1/supplier/orders", params=params)

    assert sent == 11
    assert harness.requests(sid) == sent
    assert caught.value.retry_after >= harness.settings.retry_jitter_min_seconds
    assert sleep.calls == []


async def test_two_shops_of_one_seller_share_a_bucket(
    harness: Harness, db: AsyncSession
) -> None:
    """Two shops with tokens of one seller draw on one bucket; another seller does not."""
    tight = LimitOverride(limit=1, period=60.0, burst=2)
    settings = harness.with_settings(limits={"wb.fbs": tight})
    sid = harness.world.wb_create_seller(orders=1)
    first = await wb_shop(db, harness.world.wb_issue_token(sid))
    second = await wb_shop(db, harness.world.wb_issue_token(sid))
    other_sid = harness.world.wb_create_seller(orders=1)
    other = await wb_shop(db, harness.world.wb_issue_token(other_sid))

    async with MarketplaceClient(db, shop_id=first, settings=settings) as client:
        await client.get("/api/v3/orders/new")
        await client.get("/api/v3/orders/new")
    async with MarketplaceClient(db, shop_id=second, settings=settings) as client:
        with pytest.raises(RateLimitedError):
            await client.get("/api/v3/orders/new")
    async with MarketplaceClient(db, shop_id=other, settings=settings) as client:
        assert (await client.get("/api/v3/orders/new")).status == 200

    assert harness.requests(sid) == 2


async def test_client_errors_carry_status_and_body(
    harness: Harness, db: AsyncSession
) -> None:
    """A 4xx becomes MarketplaceError with the status, the body and its code."""
    sid = harness.world.wb_create_seller(orders=1)
    shop_id = await wb_shop(db, harness.world.wb_issue_token(sid))

    async with MarketplaceClient(
        db, shop_id=shop_id, settings=harness.settings
    ) as client:
        with pytest.raises(MarketplaceError) as caught:
            await client.get("/api/v3/orders", params={"limit": 0, "next": 0})

    assert caught.value.status == 400
    assert caught.value.shop_id == shop_id
    assert isinstance(caught.value.body, dict)


async def test_storefront_gets_no_seller_token(
    harness: Harness, db: AsyncSession
) -> None:
    """The storefront is reached through the same door, without the seller's token."""
    sid = harness.world.wb_create_seller(orders=1)
    shop_id = await wb_shop(db, harness.world.wb_issue_token(sid))

    async with MarketplaceClient(
        db, shop_id=shop_id, settings=harness.settings
    ) as client:
        response = await client.get("/cards/v4/detail", params={"nm": "1;2"})

    assert response.status == 200
    assert harness.requests(sid) == 0


async def test_no_secret_in_logs_or_errors(
    harness: Harness, db: AsyncSession, caplog: pytest.LogCaptureFixture
) -> None:
    """Tokens and keys appear in no log line and no exception text."""
    caplog.set_level(logging.DEBUG, logger="mpshield")
    sid = harness.world.wb_create_seller(orders=1)
    token = harness.world.wb_issue_token(sid)
    client_id, api_key = harness.world.ozon_create_seller(orders=1)
    wb_id = await wb_shop(db, token)
    ozon = await shop_db.add_shop(
        db, marketplace="ozon", api_key=api_key, client_id=client_id
    )
    await db.commit()
    texts: list[str] = []

    async with MarketplaceClient(
        db, shop_id=wb_id, settings=harness.settings
    ) as client:
        await client.get("/api/v3/orders/new")
        texts.append(repr(client))
    harness.world.ozon_deactivate_key(client_id, api_key)
    async with MarketplaceClient(
        db, shop_id=ozon.id, settings=harness.settings
    ) as client:
        try:
            await client.post("/v1/roles", json={})
        except MarketplaceError as exc:
            texts += [str(exc), repr(exc)]
    harness.world.wb_revoke_token(token)
    try:
        await revoke_until_disabled(harness, db, harness.settings)
    except Exception as exc:  # pragma: no cover - the helper asserts itself
        texts.append(str(exc))

    assert any("request shop=" in record.getMessage() for record in caplog.records)
    logged = "\n".join(record.getMessage() for record in caplog.records) + "\n".join(
        texts
    )
    assert token not in logged
    assert api_key not in logged


async def test_dead_proxies_are_quarantined_per_marketplace(
    harness: Harness, db: AsyncSession
) -> None:
    """Failing exits are quarantined for WB only, the shop moves, then no exit is left."""
    dead = [
        "http://user:proxy-pass-1@127.0.0.1:9",
        "http://user:proxy-pass-2@127.0.0.1:19",
    ]
    settings = harness.with_settings(proxies=dead, max_attempts=4)
    sid = harness.world.wb_create_seller(orders=1)
    shop_id = await wb_shop(db, harness.world.wb_issue_token(sid))
    sleep = RecordingSleep()

    async with MarketplaceClient(
        db, shop_id=shop_id, settings=settings, sleep=sleep
    ) as client:
        with pytest.raises(NoProxyAvailableError) as caught:
            await client.get("/api/v3/orders/new")

    assert "proxy-pass" not in str(caught.value)
    assert harness.requests(sid) == 0
    provider = await ProxyProvider.from_db(db, get_store(settings), settings)
    wb_health = await provider.health("wb")
    ozon_health = await provider.health("ozon")
    assert all(entry.quarantined_for > 0 for entry in wb_health)
    assert all(entry.quarantined_for == 0 for entry in ozon_health)
    assert len(sleep.calls) == 1
