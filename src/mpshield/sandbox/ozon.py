"""The Ozon Seller API of the sandbox.

Requests pass the checks in the order Ozon's answers suggest: address bans,
the ``Client-Id`` and ``Api-Key`` headers (missing: 401 code 16; Client-Id not
a positive integer: 400 code 3; unknown, deactivated or expired key: **404
code 5**), the key's allowed networks (403 code 7), an access restriction after
floods of erroneous requests (403 code 7), the per-method ``Circle is open``
breaker, then 50 requests per second per Client-Id plus method limits (429
code 8 with ``retry-after``). Normal answers carry ``ratelimit-remaining`` while
``WorldSettings.ozon_rate_headers`` is on. Error bodies are ``rpcStatus``:
``{"code", "message", "details"}``.

Only the cursor list methods exist: ``/v3/posting/fbs/list`` and
``/v2/posting/fbo/list`` were switched off and answer 404 like any unknown path.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from mpshield.sandbox import faults as fault_kit
from mpshield.sandbox import orders as gen
from mpshield.sandbox.world import SELLER, WORLD_KEY, OzonKey, OzonSeller, World

Handler = Callable[[web.Request, "Admission"], Awaitable[web.Response]]
Middleware = Callable[..., Any]

YEAR = 366 * 86400.0
RATE_MESSAGE = "You have reached request rate limit per second"
ADMIN_METHODS = [
    "/v1/roles",
    "/v4/posting/fbs/list",
    "/v3/posting/fbo/list",
    "/v2/products/stocks",
]


class BadRequest(Exception):
    """A request body Ozon would refuse with 400 code 3."""


@dataclass
class Admission:
    """A request that passed the checks."""

    seller: OzonSeller
    key: OzonKey
    remaining: int


def rpc(status: int, code: int, message: str, sid: str | None = None) -> web.Response:
    """Ozon's ``rpcStatus`` error answer."""
    response = web.json_response(
        {"code": code, "message": message, "details": []}, status=status
    )
    response[SELLER] = sid
    return response


class OzonApi:
    """Checks and handlers over one ``World``."""

    def __init__(self, world: World) -> None:
        self.world = world

    def seconds(self, value: float) -> str:
        """``retry-after`` in whole seconds at full scale, to the millisecond when scaled."""
        if self.world.time_scale >= 1:
            return str(max(1, math.ceil(value)))
        return f"{max(0.001, math.ceil(value * 1000) / 1000):g}"

    def admit(self, request: web.Request, path: str) -> Admission | web.Response:
        """Decide whether a request reaches the method; see the module docstring."""
        world, settings = self.world, self.world.settings
        address = request.remote or "unknown"
        if world.banned("ozon-address", address):
            return rpc(403, 7, "Access from this IP address is restricted")
        client_id = request.headers.get("Client-Id", "").strip()
        api_key = request.headers.get("Api-Key", "").strip()
        if not client_id or not api_key:
            self.auth_failed(address)
            return rpc(401, 16, "Client-Id and Api-Key headers are required")
        if not client_id.isdigit() or int(client_id) <= 0:
            self.auth_failed(address)
            return rpc(400, 3, "Invalid Client-Id: must be a positive integer")
        seller = world.ozon_sellers.get(str(int(client_id)))
        key = seller.keys.get(api_key) if seller else None
        if seller is None or key is None:
            self.auth_failed(address)
            return rpc(404, 5, "Invalid Api-Key, please contact support")
        sid = seller.client_id
        if not key.active:
            self.auth_failed(address)
            return rpc(404, 5, "Api-key is deactivated, please contact support", sid)
        if key.expires_at <= world.now():
            self.auth_failed(address)
            return rpc(404, 5, "Api-key is expired, please create a new one", sid)
        if seller.networks and not _inside(address, seller):
            return rpc(403, 7, "Api-Key is restricted to specific IP addresses", sid)
        if world.banned("ozon-client", sid):
            message = "Seller API access is restricted due to a large number of erroneous requests"
            return rpc(403, 7, message, sid)
        if world.banned("ozon-circle", f"{sid}:{path}"):
            return rpc(settings.ozon_circle_status, 14, "Circle is open", sid)
        return self.take(seller, key, path)

    def take(
        self, seller: OzonSeller, key: OzonKey, path: str
    ) -> Admission | web.Response:
        """Pass the per-Client-Id cap and the method's own limit."""
        world, settings = self.world, self.world.settings
        now = world.clock()
        windows = [
            world.buckets.window((seller.client_id, "all"), settings.ozon_rps, 1.0)
        ]
        if path in settings.ozon_method_limits:
            limit, period = settings.ozon_method_limits[path]
            windows.append(
                world.buckets.window((seller.client_id, path), limit, period)
            )
        for window in windows:
            probe = window.peek(now)
            if not probe.allowed:
                return self.too_many(seller, path, probe.retry_after)
        decisions = [window.take(now) for window in windows]
        return Admission(seller, key, min(decision.remaining for decision in decisions))

    def too_many(self, seller: OzonSeller, path: str, wait: float) -> web.Response:
        """429 code 8; a flood of them opens the method's breaker."""
        world, settings = self.world, self.world.settings
        subject = f"{seller.client_id}:{path}"
        if (
            world.count(("ozon-429", subject), settings.ozon_circle_window)
            >= settings.ozon_circle_threshold
        ):
            world.ban(
                "ozon-circle",
                subject,
                settings.ozon_circle_seconds,
                seller=seller.client_id,
            )
            world.reset_count(("ozon-429", subject))
        response = rpc(429, 8, RATE_MESSAGE, seller.client_id)
        if settings.ozon_rate_headers:
            response.headers["retry-after"] = self.seconds(wait)
        return response

    def auth_failed(self, address: str) -> None:
        """Count a refused key per address; a flood bans the address."""
        world, settings = self.world, self.world.settings
        if (
            world.count(("ozon-auth", address), settings.flood_window)
            >= settings.ozon_address_auth_threshold
        ):
            world.ban("ozon-address", address, settings.flood_ban_seconds)
            world.reset_count(("ozon-auth", address))

    def erred(self, seller: OzonSeller) -> None:
        """Count an erroneous request; a flood restricts the Client-Id."""
        world, settings = self.world, self.world.settings
        key = ("ozon-4xx", seller.client_id)
        if (
            world.count(key, settings.flood_window)
            >= settings.ozon_client_error_threshold
        ):
            world.ban(
                "ozon-client",
                seller.client_id,
                settings.flood_ban_seconds,
                seller=seller.client_id,
            )
            world.reset_count(key)

    def route(
        self, path: str, handler: Handler
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Wrap a handler in the checks, the faults and the accounting."""

        async def serve(request: web.Request) -> web.StreamResponse:
            world = self.world
            address = request.remote or "unknown"
            with world.lock:
                admitted = self.admit(request, path)
            if isinstance(admitted, web.Response):
                world.record(admitted.get(SELLER), address, admitted.status)
                return admitted
            seller = admitted.seller
            fault = seller.faults.draw(seller.rng)
            if fault == "drop":
                world.record(seller.client_id, address, "drop")
                return await fault_kit.drop(request)
            if fault == "error":
                body = {"code": 13, "message": "Internal error", "details": []}
                response = fault_kit.error_response(seller.rng, seller.faults, body)
            else:
                if fault == "slow":
                    await fault_kit.slow(seller.faults)
                try:
                    response = await handler(request, admitted)
                except BadRequest as problem:
                    response = rpc(400, 3, str(problem), seller.client_id)
            if 400 <= response.status < 500:
                with world.lock:
                    self.erred(seller)
            if world.settings.ozon_rate_headers:
                response.headers["ratelimit-remaining"] = str(admitted.remaining)
            if fault == "malformed" and response.status == 200 and response.body:
                response.body = fault_kit.malform(bytes(response.body), seller.rng)  # type: ignore[arg-type]
            world.record(seller.client_id, address, response.status)
            return response

        return serve

    # ------------------------------------------------------------ handlers

    async def fbs_list(self, request: web.Request, admitted: Admission) -> web.Response:
        return await self.postings(request, admitted, fbo=False)

    async def fbo_list(self, request: web.Request, admitted: Admission) -> web.Response:
        return await self.postings(request, admitted, fbo=True)

    async def postings(
        self, request: web.Request, admitted: Admission, fbo: bool
    ) -> web.Response:
        """The cursor list methods: filter, keyset order, ``with`` blocks."""
        body = await _json_body(request)
        limit = body.get("limit")
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= 100
        ):
            raise BadRequest("limit must be between 1 and 100")
        query = _Filter(body.get("filter"), fbo)
        descending = str(body.get("sort_dir", "ASC")).upper() == "DESC"
        after = _read_cursor(body.get("cursor") or "")
        wanted = body.get("with") or {}
        if not isinstance(wanted, dict):
            raise BadRequest("with must be an object")
        seller = admitted.seller
        with self.world.lock:
            book = seller.fbo if fbo else seller.fbs
            keys = sorted(
                (seller.sort_key[number], number)
                for number, posting in book.items()
                if query.matches(posting, seller)
            )
            if descending:
                keys.reverse()
            if after is not None:
                keys = [
                    item
                    for item in keys
                    if (item[0] < after if descending else item[0] > after)
                ]
            page = keys[:limit]
            postings = [_shape(book[number], wanted) for _, number in page]
        has_next = len(keys) > limit
        cursor = (
            _write_cursor(page[-1][0], fbo, descending) if page and has_next else ""
        )
        return web.json_response(
            {"cursor": cursor, "has_next": has_next, "postings": postings}
        )

    async def roles(self, request: web.Request, admitted: Admission) -> web.Response:
        expires = gen.ozon_time(admitted.key.expires_at)
        return web.json_response(
            {
                "expires_at": expires,
                "roles": [{"name": "Admin", "methods": ADMIN_METHODS}],
            }
        )

    async def stocks(self, request: web.Request, admitted: Admission) -> web.Response:
        """Stock updates: too frequent for one product and warehouse fails inside a 200."""
        body = await _json_body(request)
        items = body.get("stocks")
        if not isinstance(items, list) or not 1 <= len(items) <= 100:
            raise BadRequest("stocks must list 1..100 items")
        seller, world = admitted.seller, self.world
        interval = world.scaled(world.settings.ozon_stock_interval)
        result = []
        with world.lock:
            for item in items:
                if not isinstance(item, dict) or not isinstance(
                    item.get("warehouse_id"), int
                ):
                    raise BadRequest(
                        "each stock needs warehouse_id and product_id or offer_id"
                    )
                product = str(item.get("product_id") or item.get("offer_id") or "")
                pair = (product, item["warehouse_id"])
                last = seller.stock_updates.get(pair)
                fresh = last is None or world.clock() - last >= interval
                errors = []
                if fresh:
                    seller.stock_updates[pair] = world.clock()
                else:
                    errors.append(
                        {
                            "code": "TOO_MANY_REQUESTS",
                            "message": "too many requests for this product and warehouse",
                        }
                    )
                result.append(
                    {
                        "warehouse_id": item["warehouse_id"],
                        "product_id": int(item.get("product_id") or 0),
                        "offer_id": str(item.get("offer_id") or ""),
                        "updated": fresh,
                        "errors": errors,
                    }
                )
        return web.json_response({"result": result})

    async def not_found(self, request: web.Request) -> web.Response:
        self.world.record(None, request.remote or "unknown", 404)
        return rpc(404, 5, "Not Found")


def create_ozon_app(
    world: World, *, middlewares: Iterable[Middleware] = ()
) -> web.Application:
    """The Ozon Seller API over ``world``."""
    api = OzonApi(world)
    app = web.Application(middlewares=list(middlewares))
    app[WORLD_KEY] = world
    routes: list[tuple[str, Handler]] = [
        ("/v4/posting/fbs/list", api.fbs_list),
        ("/v3/posting/fbo/list", api.fbo_list),
        ("/v1/roles", api.roles),
        ("/v2/products/stocks", api.stocks),
    ]
    for path, handler in routes:
        app.router.add_post(path, api.route(path, handler))
    app.router.add_route("*", "/{tail:.*}", api.not_found)
    return app


class _Filter:
    """The ``filter`` object of a list request."""

    def __init__(self, raw: Any, fbo: bool) -> None:
        if not isinstance(raw, dict):
            raise BadRequest("filter is required")
        self.fbo = fbo
        self.since = _moment(raw.get("since"), "filter.since")
        self.to = _moment(raw.get("to"), "filter.to")
        if self.to < self.since:
            raise BadRequest("filter.to must not be before filter.since")
        if self.to - self.since > YEAR:
            raise BadRequest("PERIOD_IS_TOO_LONG")
        statuses = raw.get("statuses") or raw.get("status") or []
        self.statuses = {statuses} if isinstance(statuses, str) else set(statuses)
        self.numbers = set(raw.get("posting_numbers") or [])
        self.orders = set(raw.get("order_numbers") or [])
        changed = raw.get("last_changed_status_date") or {}
        self.changed_from = (
            _moment(changed["from"], "from") if changed.get("from") else None
        )
        self.changed_to = _moment(changed["to"], "to") if changed.get("to") else None

    def matches(self, posting: dict[str, Any], seller: OzonSeller) -> bool:
        stamp = _moment(posting["created_at" if self.fbo else "in_process_at"], "")
        if not self.since <= stamp <= self.to:
            return False
        if self.statuses and posting["status"] not in self.statuses:
            return False
        if self.numbers and posting["posting_number"] not in self.numbers:
            return False
        if self.orders and posting["order_number"] not in self.orders:
            return False
        changed = seller.status_changed[posting["posting_number"]]
        if self.changed_from is not None and changed < self.changed_from:
            return False
        return self.changed_to is None or changed <= self.changed_to


def _shape(posting: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """A posting with the optional blocks the request asked for."""
    return {
        key: value
        for key, value in posting.items()
        if key not in gen.OZON_WITH_BLOCKS or wanted.get(key) is True
    }


def _moment(raw: Any, name: str) -> float:
    if not isinstance(raw, str) or not raw:
        raise BadRequest(f"{name} is required")
    try:
        stamp = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an RFC3339 date-time") from None
    if stamp.tzinfo is None:
        raise BadRequest(f"{name} must carry a time zone")
    return stamp.timestamp()


def _write_cursor(key: tuple[int, int], fbo: bool, descending: bool) -> str:
    direction = "desc" if descending else "asc"
    whole = datetime.fromtimestamp(key[0] // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    stamp = f"{whole}.{key[0] % 1000:03d}Z"
    field = "osp.created_at" if fbo else "osp.in_process_at"
    fields = [
        {"name": field, "dir": direction, "val": stamp},
        {"name": "osp.id", "dir": direction, "val": str(key[1])},
    ]
    raw = json.dumps({"fields": fields}, separators=(",", ":")).encode()
    return base64.b64encode(raw).decode()


def _read_cursor(cursor: Any) -> tuple[int, int] | None:
    if not cursor:
        return None
    try:
        fields = json.loads(base64.b64decode(str(cursor), validate=True))["fields"]
        stamp = datetime.fromisoformat(fields[0]["val"].replace("Z", "+00:00"))
        return (round(stamp.timestamp() * 1000), int(fields[1]["val"]))
    except (binascii.Error, ValueError, KeyError, IndexError, TypeError):
        raise BadRequest("invalid cursor") from None


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def _inside(address: str, seller: OzonSeller) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in seller.networks)
