"""When the shared state is gone: nothing is sent, and disabled shops stay disabled."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from mpshield import MarketplaceClient, ShopDisabledError, StateStoreUnavailableError
from mpshield.db import shops as shop_db
from mpshield.db.models import ShopStatus
from mpshield.sandbox.runner import SandboxThread
from mpshield.settings import Settings
from mpshield.state.store import StateStore
from test_client_sandbox import sandbox_settings


def seller_requests(sandbox: SandboxThread, seller: str) -> int:
    stats = sandbox.call(sandbox.world.stats)
    return int(stats["sellers"].get(seller, {}).get("requests", 0))


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
