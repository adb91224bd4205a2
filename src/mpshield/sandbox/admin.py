"""The sandbox's admin API: the Python admin API of ``World`` over JSON.

Every endpoint needs ``Authorization: Bearer <admin_token>``.

| method | path | body | answer |
| --- | --- | --- | --- |
| POST | /wb/sellers | name, orders, faults | 201 ``{"sid"}`` |
| POST | /wb/sellers/{sid}/tokens | token_type, scopes, expires_in, read_only | 201 ``{"token"}`` |
| POST | /wb/tokens/revoke | token | ``{"revoked": true}`` |
| POST | /ozon/sellers | name, orders, faults | 201 ``{"client_id", "api_key"}`` |
| POST | /ozon/sellers/{client_id}/keys/rotate | | ``{"api_key"}`` |
| POST | /ozon/sellers/{client_id}/keys/deactivate | api_key | ``{"deactivated": true}`` |
| PUT | /ozon/sellers/{client_id}/networks | networks | ``{"networks"}`` |
| PUT | /sellers/{seller}/faults | FaultConfig fields | the config |
| POST | /sellers/{seller}/orders | count | ``{"added"}`` |
| POST | /sellers/{seller}/status-changes | count | ``{"changed"}`` |
| GET | /sellers/{seller}/truth | | ``World.truth`` |
| GET | /stats | | ``World.stats`` merged with ``extra_stats()`` |
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from mpshield.exceptions import ConfigurationError
from mpshield.sandbox.faults import FaultConfig
from mpshield.sandbox.world import WORLD_KEY, World

View = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_admin_app(
    world: World,
    *,
    admin_token: str,
    extra_stats: Callable[[], dict[str, Any]] | None = None,
) -> web.Application:
    """The admin API over ``world``; see the module docstring."""
    if not admin_token:
        raise ConfigurationError("the sandbox admin API needs a token")

    @web.middleware
    async def guard(request: web.Request, handler: View) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {admin_token}".encode()):
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            return await handler(request)
        except ConfigurationError as exc:
            status = 404 if str(exc).startswith("no ") else 400
            return web.json_response({"error": str(exc)}, status=status)
        except (ValueError, TypeError, KeyError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)

    async def body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        data = await request.json()
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        return data

    async def wb_seller(request: web.Request) -> web.Response:
        data = await body(request)
        sid = world.wb_create_seller(
            name=str(data.get("name", "")),
            orders=int(data.get("orders", 50)),
            faults=FaultConfig.from_dict(data.get("faults")),
        )
        return web.json_response({"sid": sid}, status=201)

    async def wb_token(request: web.Request) -> web.Response:
        data = await body(request)
        options: dict[str, Any] = {}
        if "token_type" in data:
            options["token_type"] = str(data["token_type"])
        if "scopes" in data:
            options["scopes"] = [str(scope) for scope in data["scopes"]]
        if "expires_in" in data:
            options["expires_in"] = float(data["expires_in"])
        if "read_only" in data:
            options["read_only"] = bool(data["read_only"])
        token = world.wb_issue_token(request.match_info["sid"], **options)
        return web.json_response({"token": token}, status=201)

    async def wb_revoke(request: web.Request) -> web.Response:
        world.wb_revoke_token(str((await body(request))["token"]))
        return web.json_response({"revoked": True})

    async def ozon_seller(request: web.Request) -> web.Response:
        data = await body(request)
        client_id, api_key = world.ozon_create_seller(
            name=str(data.get("name", "")),
            orders=int(data.get("orders", 50)),
            faults=FaultConfig.from_dict(data.get("faults")),
        )
        return web.json_response(
            {"client_id": client_id, "api_key": api_key}, status=201
        )

    async def ozon_rotate(request: web.Request) -> web.Response:
        return web.json_response(
            {"api_key": world.ozon_rotate_key(request.match_info["client_id"])}
        )

    async def ozon_deactivate(request: web.Request) -> web.Response:
        data = await body(request)
        world.ozon_deactivate_key(request.match_info["client_id"], str(data["api_key"]))
        return web.json_response({"deactivated": True})

    async def ozon_networks(request: web.Request) -> web.Response:
        networks = [str(net) for net in (await body(request)).get("networks", [])]
        world.ozon_restrict_key(request.match_info["client_id"], networks)
        return web.json_response({"networks": networks})

    async def faults(request: web.Request) -> web.Response:
        config = FaultConfig.from_dict(await body(request))
        world.set_faults(request.match_info["seller"], config)
        return web.json_response(config.to_dict())

    async def orders(request: web.Request) -> web.Response:
        count = int((await body(request)).get("count", 1))
        world.add_orders(request.match_info["seller"], count)
        return web.json_response({"added": count})

    async def changes(request: web.Request) -> web.Response:
        count = int((await body(request)).get("count", 1))
        world.change_statuses(request.match_info["seller"], count)
        return web.json_response({"changed": count})

    async def truth(request: web.Request) -> web.Response:
        return web.json_response(world.truth(request.match_info["seller"]))

    async def stats(request: web.Request) -> web.Response:
        merged = world.stats()
        if extra_stats is not None:
            merged.update(extra_stats())
        return web.json_response(merged)

    app = web.Application(middlewares=[guard])
    app[WORLD_KEY] = world
    app.router.add_post("/wb/sellers", wb_seller)
    app.router.add_post("/wb/sellers/{sid}/tokens", wb_token)
    app.router.add_post("/wb/tokens/revoke", wb_revoke)
    app.router.add_post("/ozon/sellers", ozon_seller)
    app.router.add_post("/ozon/sellers/{client_id}/keys/rotate", ozon_rotate)
    app.router.add_post("/ozon/sellers/{client_id}/keys/deactivate", ozon_deactivate)
    app.router.add_put("/ozon/sellers/{client_id}/networks", ozon_networks)
    app.router.add_put("/sellers/{seller}/faults", faults)
    app.router.add_post("/sellers/{seller}/orders", orders)
    app.router.add_post("/sellers/{seller}/status-changes", changes)
    app.router.add_get("/sellers/{seller}/truth", truth)
    app.router.add_get("/stats", stats)
    return app
