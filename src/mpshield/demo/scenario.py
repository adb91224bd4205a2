"""The demo's cast: sandbox sellers and the shops a platform keeps for them.

Most shops are healthy. The rest are the cases mpshield exists for, each with
what the demo expects of it:

| kind | setup | expected |
| --- | --- | --- |
| revoked | WB token withdrawn | disabled by the circuit breaker |
| deactivated | Ozon Api-Key deactivated | disabled by the circuit breaker |
| expired | WB token past its expiry | disabled before any request |
| no-scope | WB token without the Marketplace scope | FBS feed skipped, rest synced |
| twin | two shops of one WB seller (two tokens) | both synced, sharing one budget |
| storm | a WB seller answering 25% of requests with 5xx | synced despite the errors |
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

from mpshield.db.engine import session_scope
from mpshield.db.shops import add_shop
from mpshield.sandbox.faults import FaultConfig
from mpshield.settings import Settings

Kind = Literal[
    "healthy", "revoked", "deactivated", "expired", "no-scope", "twin", "storm"
]
# What makes each feed's orders one row, as the feeds store them.
FEED_KEYS = {
    "wb_fbs": "id",
    "wb_stats": "srid",
    "ozon_fbs": "posting_number",
    "ozon_fbo": "posting_number",
}
EXPECT_DISABLED: frozenset[str] = frozenset({"revoked", "deactivated", "expired"})


@dataclass(frozen=True)
class Cast:
    """How many shops of each kind the demo creates."""

    wb: int = 28
    ozon: int = 22
    revoked: int = 3
    deactivated: int = 2
    expired: int = 1
    no_scope: int = 1
    twins: int = 1
    storms: int = 1
    min_orders: int = 20
    max_orders: int = 160

    @classmethod
    def small(cls) -> Cast:
        """One of each special case and a handful of healthy shops."""
        return cls(wb=3, ozon=3, revoked=1, deactivated=1, min_orders=5, max_orders=40)


@dataclass
class DemoShop:
    """One shop of the demo: where it lives in the sandbox and in the database."""

    name: str
    marketplace: str
    seller: str
    kind: Kind
    api_key: str = field(repr=False)
    client_id: str | None = None
    shop_id: int = 0
    skip_feeds: frozenset[str] = frozenset()

    @property
    def expect_disabled(self) -> bool:
        return self.kind in EXPECT_DISABLED


def build_sellers(world: Any, cast: Cast, seed: int) -> list[DemoShop]:
    """Create the sellers in the sandbox world and return the shops to store."""
    rng = random.Random(seed)

    def orders() -> int:
        return rng.randint(cast.min_orders, cast.max_orders)

    shops: list[DemoShop] = []

    def wb(kind: Kind, **token: Any) -> tuple[str, str]:
        sid = world.wb_create_seller(
            name=f"wb-{kind}-{len(shops) + 1}", orders=orders()
        )
        return sid, world.wb_issue_token(sid, **token)

    for _ in range(cast.wb):
        sid, token = wb("healthy")
        shops.append(DemoShop(f"WB shop {len(shops) + 1}", "wb", sid, "healthy", token))
    for _ in range(cast.ozon):
        client_id, key = world.ozon_create_seller(orders=orders())
        shops.append(
            DemoShop(
                f"Ozon shop {len(shops) + 1}",
                "ozon",
                client_id,
                "healthy",
                key,
                client_id,
            )
        )
    for _ in range(cast.twins):
        sid, token = wb("twin")
        second = world.wb_issue_token(sid)
        shops.append(DemoShop(f"WB twin {len(shops) + 1}a", "wb", sid, "twin", token))
        shops.append(DemoShop(f"WB twin {len(shops)}b", "wb", sid, "twin", second))
    for _ in range(cast.storms):
        sid, token = wb("storm")
        world.set_faults(sid, FaultConfig(error_rate=0.25))
        shops.append(DemoShop(f"WB storm {len(shops) + 1}", "wb", sid, "storm", token))
    for _ in range(cast.no_scope):
        sid, token = wb("no-scope", scopes=("statistics", "content"))
        shops.append(
            DemoShop(
                f"WB no-scope {len(shops) + 1}",
                "wb",
                sid,
                "no-scope",
                token,
                skip_feeds=frozenset({"wb_fbs"}),
            )
        )
    for _ in range(cast.expired):
        # Issued already expired: mpshield must refuse it without a request.
        sid, token = wb("expired", expires_in=-86400.0)
        shops.append(
            DemoShop(f"WB expired {len(shops) + 1}", "wb", sid, "expired", token)
        )
    for _ in range(cast.revoked):
        sid, token = wb("revoked")
        world.wb_revoke_token(token)
        shops.append(
            DemoShop(f"WB revoked {len(shops) + 1}", "wb", sid, "revoked", token)
        )
    for _ in range(cast.deactivated):
        client_id, key = world.ozon_create_seller(orders=orders())
        world.ozon_deactivate_key(client_id, key)
        shops.append(
            DemoShop(
                f"Ozon dead key {len(shops) + 1}",
                "ozon",
                client_id,
                "deactivated",
                key,
                client_id,
            )
        )
    return shops


async def store_shops(settings: Settings, shops: list[DemoShop]) -> None:
    """Add the shops to the database, filling in their ids."""
    async with session_scope(settings) as session:
        for shop in shops:
            stored = await add_shop(
                session,
                marketplace=shop.marketplace,
                api_key=shop.api_key,
                client_id=shop.client_id,
                name=shop.name,
            )
            shop.shop_id = stored.id
