"""The sandbox's WB storefront: product cards, per-address limits and bans."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from mpshield.protection.timing import ManualClock
from mpshield.sandbox.limits import Rule
from mpshield.sandbox.storefront import create_storefront_app
from mpshield.sandbox.world import World, WorldSettings

SCALE = 0.01


async def test_cards_of_seller_goods_keep_their_names() -> None:
    """Cards come back for every requested nm; sellers' goods keep their names."""
    world = World(time_scale=SCALE, seed=4)
    sid = world.wb_create_seller(orders=1)
    item = world.wb_sellers[sid].factory.catalogue.items[0]
    async with TestClient(TestServer(create_storefront_app(world))) as client:
        response = await client.get(
            "/cards/v4/detail", params={"nm": f"{item['nmId']};12345"}
        )
        body = await response.json()

    assert response.status == 200
    assert [card["id"] for card in body["products"]] == [item["nmId"], 12345]
    assert body["products"][0]["name"] == item["name"]
    assert body["products"][0]["sizes"][0]["price"]["basic"] == item["price"] * 100


async def test_hammering_address_gets_429_then_a_403_page_for_thirty_minutes() -> None:
    """Past the per-address limit come 429s; hammering on earns a scaled 30-minute ban."""
    clock = ManualClock()
    settings = WorldSettings(
        storefront_rule=Rule(60.0, 10, 5), storefront_ban_after_429=3
    )
    world = World(time_scale=SCALE, clock=clock, settings=settings)
    async with TestClient(TestServer(create_storefront_app(world))) as client:
        statuses = [
            (await client.get("/cards/v4/detail", params={"nm": "1"})).status
            for _ in range(9)
        ]
        page = await client.get("/cards/v4/detail", params={"nm": "1"})
        text = await page.text()
        clock.advance(29 * 60 * SCALE)
        still = await client.get("/cards/v4/detail", params={"nm": "1"})
        clock.advance(2 * 60 * SCALE)
        after = await client.get("/cards/v4/detail", params={"nm": "1"})

    assert statuses[:5] == [200] * 5
    assert statuses[5:8] == [429] * 3
    assert statuses[8] == 403
    assert page.status == 403
    assert page.content_type == "text/html"
    assert "403 Forbidden" in text
    assert still.status == 403
    assert after.status == 200
    assert world.stats()["addresses"]["127.0.0.1"]["bans"] == 1


async def test_blocked_networks_always_get_the_403_page() -> None:
    """Addresses inside a blocked network are refused from the first request."""
    settings = WorldSettings(storefront_blocked_networks=["127.0.0.0/8"])
    world = World(time_scale=SCALE, settings=settings)
    async with TestClient(TestServer(create_storefront_app(world))) as client:
        response = await client.get("/cards/v4/detail", params={"nm": "1"})

    assert response.status == 403


async def test_missing_nm_is_400() -> None:
    """A request without ``nm`` ids is refused."""
    world = World(time_scale=SCALE)
    async with TestClient(TestServer(create_storefront_app(world))) as client:
        response = await client.get("/cards/v4/detail")

    assert response.status == 400
