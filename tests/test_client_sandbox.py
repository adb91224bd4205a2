"""MarketplaceClient through the real sandbox: HTTPS with its CA, the gate, proxies.

Most tests use the session's sandbox (4 proxies leaving from 127.0.0.11-14,
scaled time, the fingerprint gate on everywhere) with a fresh seller each.
Tests that ban or break an exit start their own sandbox on the test's loop,
so a banned address never reaches another test. Every test runs on both
backends through the ``settings``, ``store`` and ``db`` fixtures.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from curl_cffi.requests import AsyncSession
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from mpshield import (
    MarketplaceClient,
    MarketplaceError,
    NoProxyAvailableError,
    RateLimitedError,
    ShopDisabledError,
)
from mpshield.db import shops as shop_db
from mpshield.protection.proxies import ProxyProvider
from mpshield.protection.timing import RecordingSleep
from mpshield.sandbox.runner import Sandbox, SandboxConfig, SandboxThread
from mpshield.sandbox.world import World
from mpshield.settings import Settings
from mpshield.state.store import StateStore

PROXY_ADDRESSES = [f"127.0.0.{10 + index}" for index in range(1, 5)]


def sandbox_settings(settings: Settings, env: dict[str, str], **extra: Any) -> Settings:
    """``settings`` pointed at a sandbox through the values of its ``env()``."""
    return settings.model_copy(
        update={
            "wb_base_url": env["MPSHIELD_WB_BASE_URL"],
            "ozon_base_url": env["MPSHIELD_OZON_BASE_URL"],
            "wb_storefront_base_url": env["MPSHIELD_WB_STOREFRONT_BASE_URL"],
            "ca_bundle": Path(env["MPSHIELD_CA_BUNDLE"]),
            "proxies": json.loads(env["MPSHIELD_PROXIES"]),
            "time_scale": float(env["MPSHIELD_TIME_SCALE"]),
            **extra,
        }
    )


@pytest.fixture
def shared(settings: Settings, store: StateStore, sandbox: SandboxThread) -> Settings:
    """Settings for the session's sandbox; ``store`` removes the test's keys after."""
    return sandbox_settings(
        settings,
        sandbox.env(),
        breaker_failure_threshold=4,
        breaker_distinct_proxies=2,
    )


def month_ago() -> int:
    return int((dt.datetime.now(dt.UTC) - dt.timedelta(days=20)).timestamp())


def address_counts(world: World, key: str) -> dict[str, int]:
    """``key`` (``requests``, ``2xx``, ``401``...) per source address that has any."""
    return {
        address: counts[key]
        for address, counts in world.stats()["addresses"].items()
        if counts.get(key, 0)
    }


def grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The addresses whose count grew, and by how much."""
    return {
        address: count - before.get(address, 0)
        for address, count in after.items()
        if count > before.get(address, 0)
    }


async def add_wb_shop(db: DbSession, token: str) -> int:
    shop = await shop_db.add_shop(db, marketplace="wb", api_key=token)
    await db.commit()
    return shop.id


def seller_requests(world: World, seller: str) -> int:
    return int(world.stats()["sellers"].get(seller, {}).get("requests", 0))


# -- the session's sandbox ---------------------------------------------------


async def test_wb_seed_usage(
    shared: Settings, db: DbSession, sandbox: SandboxThread
) -> None:
    """The design's seed usage reads WB orders over verified TLS through a proxy."""
    s = shared
    sid = sandbox.call(lambda: sandbox.world.wb_create_seller(orders=5))
    token = sandbox.call(lambda: sandbox.world.wb_issue_token(sid))
    shop = await shop_db.add_shop(db, marketplace="wb", api_key=token)
    await db.commit()
    before = sandbox.call(lambda: address_counts(sandbox.world, "2xx"))

    async with MarketplaceClient(db, shop_id=shop.id, settings=s) as client:
        response = await client.get(
            "/api/v3/orders", params={"limit": 100, "next": 0, "dateFrom": month_ago()}
        )

    assert response.status == 200
    assert isinstance(response.json()["orders"], list)
    assert response.json()["orders"]
    after = sandbox.call(lambda: address_counts(sandbox.world, "2xx"))
    assert list(grown(before, after).values()) == [1]
    assert set(grown(before, after)) <= set(PROXY_ADDRESSES)


async def test_ozon_seed_usage(
    shared: Settings, db: DbSession, sandbox: SandboxThread
) -> None:
    """The seed usage lists Ozon FBS postings through a proxy."""
    s = shared
    client_id, api_key = sandbox.call(
        lambda: sandbox.world.ozon_create_seller(orders=10)
    )
    shop = await shop_db.add_shop(
        db, marketplace="ozon", api_key=api_key, client_id=client_id
    )
    await db.commit()
    now = dt.datetime.now(dt.UTC)

    async with MarketplaceClient(db, shop_id=shop.id, settings=s) as client:
        response = await client.post(
            "/v4/posting/fbs/list",
            json={
                "filter": {
                    "since": (now - dt.timedelta(days=30)).isoformat(),
                    "to": now.isoformat(),
                },
                "limit": 100,
            },
        )

    assert response.status == 200
    assert response.json()["postings"]


async def test_only_browser_fingerprints_leave_the_proxies(
    shared: Settings, db: DbSession, sandbox: SandboxThread
) -> None:
    """Every handshake the client makes is a browser's, from 127.0.0.11-14 only."""
    sid = sandbox.call(lambda: sandbox.world.wb_create_seller(orders=2))
    token = sandbox.call(lambda: sandbox.world.wb_issue_token(sid))
    client_id, api_key = sandbox.call(
        lambda: sandbox.world.ozon_create_seller(orders=2)
    )
    wb_id = await add_wb_shop(db, token)
    ozon = await shop_db.add_shop(
        db, marketplace="ozon", api_key=api_key, client_id=client_id
    )
    await db.commit()
    before = sandbox.fingerprints.by_address()
    requests_before = sandbox.call(lambda: address_counts(sandbox.world, "requests"))

    async with MarketplaceClient(db, shop_id=wb_id, settings=shared) as client:
        assert (await client.get("/api/v3/orders/new")).status == 200
        storefront = await client.get("/cards/v4/detail", params={"nm": "1;2"})
        assert storefront.status == 200
    async with MarketplaceClient(db, shop_id=ozon.id, settings=shared) as client:
        assert (await client.post("/v1/roles", json={})).status == 200

    after = sandbox.fingerprints.by_address()
    connections = {
        address: sum(entry["connections"] for entry in entries)
        for address, entries in after.items()
    }
    earlier = {
        address: sum(entry["connections"] for entry in entries)
        for address, entries in before.items()
    }
    new = grown(earlier, connections)
    assert new
    assert set(new) <= set(PROXY_ADDRESSES)
    for address in new:
        assert all(entry["browser"] for entry in after[address]), after[address]
    requests_after = sandbox.call(lambda: address_counts(sandbox.world, "requests"))
    assert set(grown(requests_before, requests_after)) <= set(PROXY_ADDRESSES)
    assert sum(grown(requests_before, requests_after).values()) == 3


async def test_revoked_token_disables_the_shop(
    shared: Settings, store: StateStore, db: DbSession, sandbox: SandboxThread
) -> None:
    """401s seen through two exits open the circuit; afterwards nothing is sent."""
    sid = sandbox.call(lambda: sandbox.world.wb_create_seller(orders=1))
    token = sandbox.call(lambda: sandbox.world.wb_issue_token(sid))
    shop_id = await add_wb_shop(db, token)
    sandbox.call(lambda: sandbox.world.wb_revoke_token(token))
    before = sandbox.call(lambda: address_counts(sandbox.world, "401"))
    failures = 0

    async with MarketplaceClient(db, shop_id=shop_id, settings=shared) as client:
        with pytest.raises(ShopDisabledError):
            for _ in range(shared.breaker_failure_threshold + 1):
                try:
                    await client.get("/api/v3/orders/new")
                except MarketplaceError as exc:
                    assert exc.status == 401
                    failures += 1

    assert failures == shared.breaker_failure_threshold - 1
    shop = await shop_db.get_shop(db, shop_id)
    await db.refresh(shop)
    assert shop.status == "auth_error"
    state = await store.redis.get(f"{shared.key_prefix}:circuit:{shop_id}:state")
    assert state == b"OPEN"
    after = sandbox.call(lambda: address_counts(sandbox.world, "401"))
    exits = grown(before, after)
    assert set(exits) <= set(PROXY_ADDRESSES)
    assert len(exits) >= 2
    assert sum(exits.values()) == shared.breaker_failure_threshold

    sent = sandbox.call(lambda: seller_requests(sandbox.world, sid))
    assert sent == shared.breaker_failure_threshold
    with pytest.raises(ShopDisabledError):
        async with MarketplaceClient(db, shop_id=shop_id, settings=shared):
            pass
    assert sandbox.call(lambda: seller_requests(sandbox.world, sid)) == sent


# -- a private sandbox per test ----------------------------------------------


@pytest.fixture
async def private(store: StateStore) -> AsyncIterator[Sandbox]:
    """A sandbox of 3 proxies on the test's loop, time scaled by 0.1, gate on."""
    config = SandboxConfig(proxies=3, time_scale=0.1, gate_seller_apis=True, seed=5)
    async with Sandbox(config) as running:
        yield running


def proxy_by_address(sandbox: Sandbox, address: str) -> str:
    """The URL of the sandbox proxy that leaves from ``address``."""
    for proxy in sandbox.proxy_pool.proxies:
        if proxy.source_address == address:
            return proxy.url
    raise AssertionError(f"no proxy leaves from {address}")


async def quarantined(
    db: DbSession, store: StateStore, settings: Settings, marketplace: str
) -> dict[str, float]:
    """Proxy URL -> seconds of quarantine left for ``marketplace``."""
    provider = await ProxyProvider.from_db(db, store, settings)
    return {
        entry.proxy.url: entry.quarantined_for
        for entry in await provider.health(marketplace)
    }


async def test_storefront_ban_quarantines_the_exit_for_wb_only(
    settings: Settings, store: StateStore, db: DbSession, private: Sandbox
) -> None:
    """A banned exit is quarantined for WB alone; the shop moves and gets its cards."""
    s = sandbox_settings(settings, private.env())
    world = private.world
    sid = world.wb_create_seller(orders=2)
    shop_id = await add_wb_shop(db, world.wb_issue_token(sid))
    params = {"nm": "11;12"}

    async with MarketplaceClient(db, shop_id=shop_id, settings=s) as client:
        assert (await client.get("/cards/v4/detail", params=params)).status == 200
    (first,) = address_counts(world, "2xx")
    world.ban("storefront", first, 600)
    sleep = RecordingSleep()

    async with MarketplaceClient(
        db, shop_id=shop_id, settings=s, sleep=sleep
    ) as client:
        response = await client.get("/cards/v4/detail", params=params)

    assert response.status == 200
    assert [p["id"] for p in response.json()["products"]] == [11, 12]
    assert address_counts(world, "403") == {first: 1}
    served = grown({first: 1}, address_counts(world, "2xx"))
    assert len(served) == 1 and first not in served
    banned = proxy_by_address(private, first)
    wb = await quarantined(db, store, s, "wb")
    assert wb[banned] > 0
    assert [url for url, left in wb.items() if left > 0] == [banned]
    assert all(left == 0 for left in (await quarantined(db, store, s, "ozon")).values())
    assert len(sleep.calls) == 1  # one backoff before the retry


async def test_broken_exit_is_left_for_another(
    settings: Settings, store: StateStore, db: DbSession, private: Sandbox
) -> None:
    """A proxy answering 502 is quarantined for WB and the request succeeds elsewhere."""
    s = sandbox_settings(settings, private.env())
    world = private.world
    sid = world.wb_create_seller(orders=2)
    shop_id = await add_wb_shop(db, world.wb_issue_token(sid))

    async with MarketplaceClient(db, shop_id=shop_id, settings=s) as client:
        assert (await client.get("/api/v3/orders/new")).status == 200
    (first,) = address_counts(world, "2xx")
    broken = next(p for p in private.proxy_pool.proxies if p.source_address == first)
    # Only a new connection meets the mode: an open tunnel keeps working.
    broken.mode = "502"
    sleep = RecordingSleep()

    async with MarketplaceClient(
        db, shop_id=shop_id, settings=s, sleep=sleep
    ) as client:
        response = await client.get("/api/v3/orders/new")

    assert response.status == 200
    assert seller_requests(world, sid) == 2
    wb = await quarantined(db, store, s, "wb")
    assert [url for url, left in wb.items() if left > 0] == [broken.url]
    assert broken.stats.tunnels == 1  # the first block's; the second met the 502
    assert len(address_counts(world, "2xx")) == 2
    assert len(sleep.calls) == 1


async def test_account_429_cools_the_bucket_not_the_proxy(
    settings: Settings, store: StateStore, db: DbSession, private: Sandbox
) -> None:
    """WB's account 429 cools the statistics bucket; no proxy is quarantined."""
    s = sandbox_settings(settings, private.env())
    world = private.world
    sid = world.wb_create_seller(orders=3)
    token = world.wb_issue_token(sid)
    shop_id = await add_wb_shop(db, token)
    params = {"dateFrom": "2026-01-01"}
    # Another integration of the same seller spends the burst of 10 first.
    async with AsyncSession(
        impersonate="chrome", verify=ca_path(private.ca_file)
    ) as other:
        for _ in range(10):
            answer = await other.get(
                f"{private.wb_url}/api/v1/supplier/orders",
                params=params,
                headers={"Authorization": token},
                timeout=10,
            )
            assert answer.status_code == 200
    sleep = RecordingSleep()

    async with MarketplaceClient(
        db, shop_id=shop_id, settings=s, sleep=sleep, max_wait=1.0
    ) as client:
        with pytest.raises(RateLimitedError) as caught:
            await client.get("/api/v1/supplier/orders", params=params)
        sent = seller_requests(world, sid)
        with pytest.raises(RateLimitedError):
            await client.get("/api/v1/supplier/orders", params=params)

    assert sent == 11
    assert seller_requests(world, sid) == sent
    assert world.stats()["sellers"][sid]["429"] == 1
    assert caught.value.retry_after >= s.retry_jitter_min_seconds
    assert sleep.calls == []
    for marketplace in ("wb", "ozon"):
        health = await quarantined(db, store, s, marketplace)
        assert all(left == 0 for left in health.values())


def ca_path(ca_file: Path) -> Any:
    """The CA file for curl_cffi's ``verify``, which takes a path though typed bool."""
    return str(ca_file)


async def test_authenticated_proxies_keep_their_password_secret(
    settings: Settings,
    store: StateStore,
    db: DbSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through basic-auth proxies the client succeeds, and the password is never logged."""
    caplog.set_level(logging.DEBUG, logger="mpshield")
    password = "proxy-secret-7f3a"
    config = SandboxConfig(
        proxies=2, proxy_auth=("mps", password), gate_seller_apis=True, time_scale=0.1
    )
    async with Sandbox(config) as running:
        s = sandbox_settings(settings, running.env())
        assert all(password in url for url in s.proxies)
        sid = running.world.wb_create_seller(orders=2)
        shop_id = await add_wb_shop(db, running.world.wb_issue_token(sid))
        texts: list[str] = []

        async with MarketplaceClient(db, shop_id=shop_id, settings=s) as client:
            assert (await client.get("/api/v3/orders/new")).status == 200
            texts.append(repr(client))
        # Every exit now fails on a new connection: the shop runs out of proxies.
        for proxy in running.proxy_pool.proxies:
            proxy.mode = "502"
        async with MarketplaceClient(
            db, shop_id=shop_id, settings=s, sleep=RecordingSleep()
        ) as client:
            with pytest.raises(NoProxyAvailableError) as caught:
                await client.get("/api/v3/orders/new")
        texts += [str(caught.value), repr(caught.value)]
        provider = await ProxyProvider.from_db(db, store, s)
        texts += [repr(entry) for entry in await provider.health("wb")]
        stats = running.proxy_pool.stats()

    assert [p["auth_failures"] for p in stats] == [0, 0]
    assert seller_requests(running.world, sid) == 1
    logged = [record.getMessage() for record in caplog.records]
    assert any("quarantined" in line for line in logged)
    assert not any(password in text for text in logged + texts)
