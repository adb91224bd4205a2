"""The WB public storefront of the sandbox: product cards, limited per source address.

``GET /cards/v4/detail?nm=1;2;3`` answers ``{"products": [...]}`` in the shape of
WB's public card API. Unlike the seller API, the storefront counts per source
address: past ``WorldSettings.storefront_rule`` it answers 429, and an address
that keeps hammering through its 429s is banned with an HTML 403 page for
``storefront_ban_seconds`` (30 min, scaled). Addresses inside
``storefront_blocked_networks`` always get the 403 page.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from mpshield.sandbox.world import WORLD_KEY, World

Middleware = Callable[..., Any]

FORBIDDEN_PAGE = (
    "<html>\r\n<head><title>403 Forbidden</title></head>\r\n<body>\r\n"
    "<center><h1>403 Forbidden</h1></center>\r\n<center>Forbidden IP</center>\r\n"
    "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
MAX_CARDS = 512


class Storefront:
    """Cards and the per-address gate over one ``World``."""

    def __init__(self, world: World) -> None:
        self.world = world

    def gate(self, address: str) -> web.Response | None:
        """A refusal for this source address, or None."""
        world, settings = self.world, self.world.settings
        if world.banned("storefront", address) or _blocked(
            address, settings.storefront_blocked_networks
        ):
            return web.Response(
                status=403, text=FORBIDDEN_PAGE, content_type="text/html"
            )
        decision = world.buckets.take_all(
            [(("storefront", address), settings.storefront_rule)]
        )
        if decision.allowed:
            return None
        denials = world.count(
            ("storefront-429", address), settings.storefront_ban_window
        )
        if denials >= settings.storefront_ban_after_429:
            world.ban("storefront", address, settings.storefront_ban_seconds)
            world.reset_count(("storefront-429", address))
        return web.Response(
            status=429, text="Too Many Requests", content_type="text/plain"
        )

    async def detail(self, request: web.Request) -> web.Response:
        """``GET /cards/v4/detail``: the cards of the ``nm`` ids (``;`` or ``,`` separated)."""
        address = request.remote or "unknown"
        with self.world.lock:
            refusal = self.gate(address)
            known = self._catalogue() if refusal is None else {}
        if refusal is not None:
            self.world.record(None, address, refusal.status)
            return refusal
        raw = request.query.get("nm", "").replace(",", ";")
        ids = [int(part) for part in raw.split(";") if part.strip().isdigit()][
            :MAX_CARDS
        ]
        if not ids:
            self.world.record(None, address, 400)
            return web.json_response({"error": "nm is required"}, status=400)
        products = [_card(nm, known.get(nm)) for nm in ids if nm > 0]
        self.world.record(None, address, 200)
        return web.json_response({"products": products})

    def _catalogue(self) -> dict[int, dict[str, Any]]:
        found = {}
        for seller in self.world.wb_sellers.values():
            for item in seller.factory.catalogue.items:
                found[item["nmId"]] = {**item, "supplier": seller.name}
        return found


def create_storefront_app(
    world: World, *, middlewares: Iterable[Middleware] = ()
) -> web.Application:
    """WB-style public product cards over ``world``."""
    front = Storefront(world)
    app = web.Application(middlewares=list(middlewares))
    app[WORLD_KEY] = world
    app.router.add_get("/cards/v4/detail", front.detail)
    return app


def _blocked(address: str, networks: list[str]) -> bool:
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)


def _card(nm: int, item: dict[str, Any] | None) -> dict[str, Any]:
    """A product card; sellers' own goods keep their names and prices."""
    rng = random.Random(f"card:{nm}")
    name = item["name"] if item else f"Товар {nm}"
    brand = item["brand"] if item else rng.choice(["Flax Store", "Nord Line", "Домик"])
    price = int(item["price"] if item else rng.randrange(300, 9000)) * 100
    sale = int(price * rng.uniform(0.5, 0.95))
    stock = rng.randrange(0, 200)
    return {
        "id": nm,
        "root": nm // 10 * 7 + 11,
        "kindId": 0,
        "brand": brand,
        "brandId": rng.randrange(1, 10**6),
        "name": name,
        "entity": (item or {}).get("subject", "товар"),
        "supplier": (item or {}).get("supplier", "ИП Продавец"),
        "supplierId": rng.randrange(1, 10**7),
        "supplierRating": round(rng.uniform(3.5, 5.0), 1),
        "pics": rng.randrange(1, 15),
        "reviewRating": round(rng.uniform(3.0, 5.0), 1),
        "nmReviewRating": round(rng.uniform(3.0, 5.0), 1),
        "feedbacks": rng.randrange(0, 5000),
        "nmFeedbacks": rng.randrange(0, 2000),
        "colors": [],
        "sizes": [
            {
                "name": (item or {}).get("size", ""),
                "origName": (item or {}).get("size", "0"),
                "rank": 0,
                "optionId": rng.randrange(10**8, 10**9),
                "stocks": [
                    {"wh": 507, "dtype": 4, "qty": stock, "time1": 2, "time2": 30}
                ]
                if stock
                else [],
                "price": {"basic": price, "product": sale, "logistics": 0, "return": 0},
            }
        ],
        "totalQuantity": stock,
    }
