"""When the shared state is gone: nothing is sent, and disabled shops stay disabled."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mpshield import MarketplaceClient, ShopDisabledError, StateStoreUnavailableError
from mpshield.db import shops as shop_db
from mpshield.db.engine import get_sessionmaker
from mpshield.db.models import Proxy, ShopStatus
from mpshield.sandbox.runner import SandboxThread
from mpshield.settings import Settings
from mpshield.state.store import StateStore
from test_client_sandbox import sandbox_settings


def seller_requests(sandbox: SandboxThread, seller: str) -> int:
    stats = sandbox.call(sandbox.world.stats)
    return int(stats["sellers"].get(seller, {}).get("requests", 0))


def new_wb_token(sandbox: SandboxThread) -> str:
    sid = sandbox.call(lambda: sandbox.world.wb_create_seller(orders=1))
    return sandbox.call(lambda: sandbox.world.wb_issue_token(sid))


async def test_redis_down_sends_nothing(
    settings: Settings, db: AsyncSession, sandbox: SandboxThread
) -> None:
    """With Redis refusing connections, the client raises and the sandbox sees nothing."""
    sid = sandbox.call(lambda: sandbox.world.wb_create_seller(orders=2))
    token = sandbox.call(lambda: sandbox.world.wb_issue_token(sid))
    shop = await shop_db.add_shop(db, marketplace="wb", api_key=token)
    await db.commit()
    dead_redis = sandbox_settings(
        settings, sandbox.env(), redis_url="redis://127.0.0.1:1/0"
    )

    with pytest.raises(StateStoreUnavailableError) as caught:
        async with MarketplaceClient(db, shop_id=shop.id, settings=dead_redis) as c:
            await c.get("/api/v3/orders/new")

    assert seller_requests(sandbox, sid) == 0
    assert token not in str(caught.value)


async def test_disabled_shop_survives_lost_redis_state(
    settings: Settings, store: StateStore, db: AsyncSession, sandbox: SandboxThread
) -> None:
    """A shop in auth_error stays disabled when Redis lost its circuit keys."""
    sid = sandbox.call(lambda: sandbox.world.wb_create_seller(orders=2))
    token = sandbox.call(lambda: sandbox.world.wb_issue_token(sid))
    shop = await shop_db.add_shop(db, marketplace="wb", api_key=token)
    await shop_db.set_shop_status(db, shop.id, ShopStatus.AUTH_ERROR, "key revoked")
    await db.commit()
    async for key in store.redis.scan_iter(match=store.key("circuit", shop.id, "*")):
        await store.redis.delete(key)
    current = sandbox_settings(settings, sandbox.env())

    with pytest.raises(ShopDisabledError):
        async with MarketplaceClient(db, shop_id=shop.id, settings=current):
            pass

    assert seller_requests(sandbox, sid) == 0
    assert await store.redis.get(store.key("circuit", shop.id, "state")) == b"OPEN"


async def test_concurrent_first_clients_seed_proxies_once(
    settings: Settings, db_ready: Settings, sandbox: SandboxThread
) -> None:
    """Shops entering at once on an empty proxy table all get in; it is seeded once."""
    current = sandbox_settings(db_ready, sandbox.env())
    maker = get_sessionmaker(current)
    shop_ids = []
    async with maker() as session:
        for _ in range(6):
            token = new_wb_token(sandbox)
            shop = await shop_db.add_shop(session, marketplace="wb", api_key=token)
            shop_ids.append(shop.id)
        await session.commit()

    async def enter(shop_id: int) -> str:
        async with (
            maker() as session,
            MarketplaceClient(session, shop_id=shop_id, settings=current) as c,
        ):
            return repr(c)

    entered = await asyncio.gather(*(enter(shop_id) for shop_id in shop_ids))

    assert len(entered) == len(shop_ids)
    async with maker() as session:
        urls = (await session.scalars(select(Proxy.url))).all()
    assert sorted(urls) == sorted(current.proxies)
