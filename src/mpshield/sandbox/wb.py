"""The WB seller API of the sandbox: every category served by path on one host.

A request passes the gateway the way WB describes it: source-address bans,
then the token (``Authorization``, raw or ``Bearer``), then the category's
scope bit, then the token bucket of the seller account, token type and method
group. Refusals carry WB's gateway bodies (``title``, ``detail``, ``code``,
``requestId``, ``origin``, ``status``, ``statusText``, ``timestamp``), as
``application/problem+json`` outside Marketplace. Every answer that passed
authentication carries ``X-Ratelimit-Remaining`` except a 429, which carries
``X-Ratelimit-Retry``, ``-Limit`` and ``-Reset`` in this world's (scaled)
seconds, so a client waits exactly what it is told. In Marketplace a 4XX costs
``wb_4xx_cost`` requests.

``/ping`` checks the category of the host it is called on (the ``Host``
header: ``marketplace-api...``, ``statistics-api...``); on any other host it
is the common category, which every token opens.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from mpshield.sandbox import faults as fault_kit
from mpshield.sandbox import orders as gen
from mpshield.sandbox.limits import Decision, Rule
from mpshield.sandbox.wbtokens import TokenProblem, WbToken
from mpshield.sandbox.world import SELLER, WORLD_KEY, WbSeller, World

Handler = Callable[[web.Request, "Admission"], Awaitable[web.StreamResponse]]
Middleware = Callable[..., Any]

JSON = "application/json"
PROBLEM = "application/problem+json"
THIRTY_DAYS = 30 * 86400
NINETY_DAYS = 90 * 86400

HOST_CATEGORIES = {
    "content-api": "content",
    "seller-analytics-api": "analytics",
    "discounts-prices-api": "prices",
    "dp-calendar-api": "prices",
    "marketplace-api": "marketplace",
    "statistics-api": "statistics",
    "advert-api": "promotion",
    "advert-media-api": "promotion",
    "feedbacks-api": "feedbacks",
    "buyer-chat-api": "chat",
    "supplies-api": "supplies",
    "returns-api": "returns",
    "documents-api": "documents",
    "finance-api": "finance",
    "common-api": "common",
    "user-management-api": "users",
}
INCORRECT_PARAMETER = {
    "code": "IncorrectParameter",
    "message": "Передан некорректный параметр",
}
INCORRECT_BODY = {"code": "IncorrectRequestBody", "message": "Incorrect request body"}


@dataclass
class Admission:
    """A request the gateway let through."""

    seller: WbSeller
    token: WbToken
    category: str
    group: str
    bucket: tuple[tuple[str, ...], Rule] | None


class WbApi:
    """Gateway and handlers over one ``World``."""

    def __init__(self, world: World) -> None:
        self.world = world

    # ------------------------------------------------------------ bodies

    def gateway_body(
        self, status: int, title: str, detail: str, category: str
    ) -> dict[str, Any]:
        """WB's gateway error body."""
        rng = self.world._rng
        code = f"{rng.getrandbits(32):08x}-{rng.getrandbits(48):012x}-[UK-{rng.getrandbits(40):010x}]"
        return {
            "title": title,
            "detail": detail,
            "code": code,
            "requestId": self.world.random_id(),
            "origin": f"s2s-api-auth-{category}",
            "status": status,
            "statusText": _STATUS_TEXT[status],
            "timestamp": gen.wb_time(self.world.now()),
        }

    def gateway(
        self, status: int, title: str, detail: str, category: str
    ) -> web.Response:
        """A gateway refusal in the category's content type."""
        body = self.gateway_body(status, title, detail, category)
        kind = JSON if category == "marketplace" else PROBLEM
        return web.Response(status=status, text=json.dumps(body), content_type=kind)

    def seconds(self, value: float) -> str:
        """A header value in seconds: whole at full scale, to the millisecond when scaled."""
        if self.world.time_scale >= 1:
            return str(max(1, math.ceil(value)))
        return f"{max(0.001, math.ceil(value * 1000) / 1000):g}"

    def too_many(
        self, decision: Decision, detail: str, category: str, sid: str
    ) -> web.Response:
        """WB's 429 with its three headers."""
        response = self.gateway(429, "too many requests", detail, category)
        response[SELLER] = sid
        response.headers["X-Ratelimit-Retry"] = self.seconds(decision.retry_after)
        response.headers["X-Ratelimit-Limit"] = str(decision.limit)
        response.headers["X-Ratelimit-Reset"] = self.seconds(decision.reset_after)
        return response

    def forbidden(
        self, detail: str, category: str, sid: str | None = None
    ) -> web.Response:
        """A 403 in the style of the service that refuses."""
        if category == "marketplace":
            body = {"code": "AccessDenied", "message": detail}
            response = web.json_response(body, status=403)
        else:
            response = self.gateway(403, "forbidden", detail, category)
        response[SELLER] = sid
        return response

    # ------------------------------------------------------------ gateway

    def admit(
        self, request: web.Request, category: str, group: str, write: bool
    ) -> Admission | web.Response:
        """Decide whether a request reaches the service; see the module docstring."""
        world, settings = self.world, self.world.settings
        address = request.remote or "unknown"
        if world.banned("wb-address", address):
            return self.forbidden(
                "access denied: too many failed requests from this address", category
            )
        raw = request.headers.get("Authorization", "").strip()
        if raw[:7].lower() == "bearer ":
            raw = raw[7:].strip()
        if not raw:
            return self.unauthorized(
                address, None, "token problem; empty token", category
            )
        try:
            token = world.tokens.check(raw)
        except TokenProblem as problem:
            return self.unauthorized(address, None, problem.detail, category)
        refusal = world.wb_token_state(token)
        if refusal is not None:
            return self.unauthorized(address, token, refusal, category)
        if world.banned("wb-token", token.token_id):
            return self.forbidden(
                "access to the method is blocked for this token", category, token.sid
            )
        if not token.allows(category):
            return self.unauthorized(
                address, token, "token scope not allowed", category
            )
        if write and token.read_only:
            return self.unauthorized(
                address, token, "read-only token scope not allowed", category
            )
        seller = world.wb_sellers[token.sid]
        if group == "ping":
            return self.admit_ping(seller, token, category)
        rule = _rule(settings.wb_limits, f"{category}.{group}", token.budget)
        if rule is None:
            return Admission(seller, token, category, group, None)
        key = (token.sid, token.budget, category, group)
        pairs: list[tuple[Any, Rule]] = [(key, rule)]
        if token.test and category == "marketplace":
            pairs.append(
                ((token.sid, "test", "marketplace-all"), settings.wb_sandbox_rule)
            )
        decision = world.buckets.take_all(pairs)
        if not decision.allowed:
            if settings.wb_charge_429:
                world.buckets.charge(key, rule, 1)
            self.failed(token)
            return self.too_many(
                decision, f"limited by {token.sid}", category, token.sid
            )
        return Admission(seller, token, category, group, (key, rule))

    def admit_ping(
        self, seller: WbSeller, token: WbToken, category: str
    ) -> Admission | web.Response:
        """``/ping``: 3 calls per 30 s per host, and a block for scheduled use."""
        world, settings = self.world, self.world.settings
        subject = f"{token.sid}:{category}"
        left = world.banned("wb-ping", subject)
        rule = settings.wb_ping_rule
        if left:
            blocked = Decision(False, 0, rule.burst, left, left)
            detail = (
                "method is temporarily blocked: /ping is not meant for scheduled checks"
            )
            return self.too_many(blocked, detail, category, token.sid)
        times = world.ping_times[(token.sid, category)]
        times.append(world.clock())
        del times[: -max(2, settings.wb_ping_schedule_calls)]
        if _steady(
            times, settings.wb_ping_schedule_calls, settings.wb_ping_schedule_tolerance
        ):
            world.ban(
                "wb-ping", subject, settings.wb_ping_block_seconds, seller=token.sid
            )
            times.clear()
        key = (token.sid, token.budget, category, "ping")
        decision = world.buckets.take_all([(key, rule)])
        if not decision.allowed:
            denials = world.count(
                ("wb-ping-429", subject), settings.wb_ping_block_window
            )
            if (
                settings.wb_ping_block_after_429
                and denials >= settings.wb_ping_block_after_429
            ):
                world.ban(
                    "wb-ping", subject, settings.wb_ping_block_seconds, seller=token.sid
                )
                world.reset_count(("wb-ping-429", subject))
            return self.too_many(
                decision, f"limited by {token.sid}", category, token.sid
            )
        return Admission(seller, token, category, "ping", (key, rule))

    def unauthorized(
        self, address: str, token: WbToken | None, detail: str, category: str
    ) -> web.Response:
        """A 401, counted against the address (and the token) for flood bans."""
        world, settings = self.world, self.world.settings
        if (
            world.count(("wb-401", address), settings.flood_window)
            >= settings.wb_address_401_threshold
        ):
            world.ban("wb-address", address, settings.flood_ban_seconds)
            world.reset_count(("wb-401", address))
        response = self.gateway(401, "unauthorized", detail, category)
        response[SELLER] = None
        if token is not None:
            self.failed(token)
            response[SELLER] = token.sid
        return response

    def failed(self, token: WbToken) -> None:
        """Count a failing answer to a token; a flood restricts the token."""
        world, settings = self.world, self.world.settings
        if (
            world.count(("wb-4xx", token.token_id), settings.flood_window)
            >= settings.wb_token_4xx_threshold
        ):
            world.ban(
                "wb-token", token.token_id, settings.flood_ban_seconds, seller=token.sid
            )
            world.reset_count(("wb-4xx", token.token_id))

    # ------------------------------------------------------------ wrapper

    def route(
        self, category: str | None, group: str, handler: Handler, write: bool = False
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Wrap a handler in the gateway, the faults and the accounting."""

        async def serve(request: web.Request) -> web.StreamResponse:
            world = self.world
            address = request.remote or "unknown"
            kind = category or _host_category(request.host)
            with world.lock:
                admitted = self.admit(request, kind, group, write)
            if isinstance(admitted, web.Response):
                world.record(admitted.get(SELLER), address, admitted.status)
                return admitted
            seller = admitted.seller
            fault = seller.faults.draw(seller.rng)
            if fault == "drop":
                world.record(seller.sid, address, "drop")
                return await fault_kit.drop(request)
            if fault == "error":
                body = {
                    "title": "internal server error",
                    "detail": "service unavailable, retry later",
                }
                response: web.StreamResponse = fault_kit.error_response(
                    seller.rng, seller.faults, body
                )
            else:
                if fault == "slow":
                    await fault_kit.slow(seller.faults)
                response = await handler(request, admitted)
            self.finish(admitted, response)
            if (
                fault == "malformed"
                and isinstance(response, web.Response)
                and response.status == 200
                and response.body
            ):
                response.body = fault_kit.malform(bytes(response.body), seller.rng)  # type: ignore[arg-type]
            world.record(seller.sid, address, response.status)
            return response

        return serve

    def finish(self, admitted: Admission, response: web.StreamResponse) -> None:
        """Charge a Marketplace 4XX and set ``X-Ratelimit-Remaining``."""
        world = self.world
        if admitted.bucket is None:
            return
        key, rule = admitted.bucket
        with world.lock:
            if 400 <= response.status < 500:
                self.failed(admitted.token)
                if admitted.category == "marketplace":
                    world.buckets.charge(key, rule, world.settings.wb_4xx_cost - 1)
            state = world.buckets.bucket(key, rule).peek(world.clock())
        response.headers["X-Ratelimit-Remaining"] = str(state.remaining)

    # ------------------------------------------------------------ handlers

    async def ping(self, request: web.Request, admitted: Admission) -> web.Response:
        stamp = datetime.fromtimestamp(self.world.now(), gen.MSK).isoformat(
            timespec="seconds"
        )
        return web.json_response({"TS": stamp, "Status": "OK"})

    async def orders_new(
        self, request: web.Request, admitted: Admission
    ) -> web.Response:
        seller = admitted.seller
        fields = gen.wb_order_fields("OrderNew")
        with self.world.lock:
            found = [
                {
                    key: value
                    for key, value in seller.fbs[ident].items()
                    if key in fields
                }
                for ident in sorted(seller.fbs)
                if seller.status[ident] == gen.WB_FLOW[0]
            ]
        return web.json_response({"orders": found})

    async def orders(self, request: web.Request, admitted: Admission) -> web.Response:
        seller, query, now = admitted.seller, request.query, self.world.now()
        limit = _int(query.get("limit"))
        cursor = _int(query.get("next"))
        date_from = _int(query.get("dateFrom", str(int(now) - THIRTY_DAYS)))
        date_to = _int(query.get("dateTo", str(int(now))))
        if (
            limit is None
            or not 1 <= limit <= 1000
            or cursor is None
            or cursor < 0
            or date_from is None
            or date_to is None
            or date_from > date_to
            or date_to - date_from > THIRTY_DAYS
        ):
            return web.json_response(INCORRECT_PARAMETER, status=400)
        after = _unscramble(cursor, seller.cursor_key) if cursor else 0
        oldest = max(date_from, int(now) - NINETY_DAYS)
        fields = gen.wb_order_fields("Order")
        with self.world.lock:
            page = [
                {
                    key: value
                    for key, value in seller.fbs[ident].items()
                    if key in fields
                }
                for ident in sorted(seller.fbs)
                if ident > after and oldest <= int(seller.fbs_created[ident]) <= date_to
            ][:limit]
        following = _scramble(page[-1]["id"], seller.cursor_key) if page else cursor
        return web.json_response({"next": following, "orders": page})

    async def orders_status(
        self, request: web.Request, admitted: Admission
    ) -> web.Response:
        seller = admitted.seller
        try:
            body = await request.json()
            wanted = body["orders"]
            if not isinstance(wanted, list) or not 1 <= len(wanted) <= 1000:
                raise ValueError("orders must list 1..1000 ids")
            idents = [int(item) for item in wanted if not isinstance(item, bool)]
        except (ValueError, KeyError, TypeError):
            return web.json_response(INCORRECT_BODY, status=400)
        with self.world.lock:
            found = [
                {
                    "id": ident,
                    "supplierStatus": seller.status[ident][0],
                    "wbStatus": seller.status[ident][1],
                }
                for ident in idents
                if ident in seller.status
            ]
        return web.json_response({"orders": found})

    async def cancel(self, request: web.Request, admitted: Admission) -> web.Response:
        seller = admitted.seller
        ident = _int(request.match_info["orderId"])
        if ident is None or ident <= 0:
            return web.json_response(INCORRECT_PARAMETER, status=400)
        with self.world.lock:
            if ident not in seller.fbs:
                return web.json_response(
                    {"code": "NotFound", "message": "Not found"}, status=404
                )
            if seller.status[ident][0] not in ("new", "confirm"):
                body = {
                    "code": "StatusMismatch",
                    "message": "Status change is not allowed for the assembly order.",
                }
                return web.json_response(body, status=409)
            self.world.wb_cancel(seller, ident)
        return web.Response(status=204)

    async def supplier_orders(
        self, request: web.Request, admitted: Admission
    ) -> web.Response:
        seller, settings = admitted.seller, self.world.settings
        raw = request.query.get("dateFrom")
        if not raw:
            return web.json_response(
                {"errors": ["dateFrom: field required"]}, status=400
            )
        start = _msk_moment(raw)
        flag = _int(request.query.get("flag", "0"))
        if start is None or flag not in (0, 1):
            return web.json_response(
                {"errors": "dateFrom: Value not validated"}, status=400
            )
        with self.world.lock:
            if flag == 1:
                day = datetime.fromtimestamp(start, gen.MSK).strftime("%Y-%m-%d")
                rows = [
                    dict(row) for row in seller.rows.values() if row["date"][:10] == day
                ]
                rows.sort(key=lambda row: row["date"])
            else:
                changed = seller.row_changed
                found = sorted(
                    (key for key in seller.rows if changed[key][0] >= int(start)),
                    key=changed.__getitem__,
                )
                rows = [
                    dict(seller.rows[key])
                    for key in found[: settings.wb_stats_page_size]
                ]
        return web.json_response(rows)

    async def supplier_sales(
        self, request: web.Request, admitted: Admission
    ) -> web.Response:
        if not request.query.get("dateFrom"):
            return web.json_response(
                {"errors": ["dateFrom: field required"]}, status=400
            )
        return web.json_response([])

    async def seller_info(
        self, request: web.Request, admitted: Admission
    ) -> web.Response:
        seller = admitted.seller
        tin = str(seller.rng.randrange(10**9, 10**10))
        return web.json_response(
            {
                "name": seller.name,
                "sid": seller.sid,
                "tin": tin,
                "tradeMark": seller.name,
            }
        )

    async def not_found(self, request: web.Request) -> web.Response:
        self.world.record(None, request.remote or "unknown", 404)
        body = {
            "title": "not found",
            "detail": f"{request.method} {request.path} not found",
            "status": 404,
            "statusText": "Not Found",
            "timestamp": gen.wb_time(self.world.now()),
        }
        return web.json_response(body, status=404)


def create_wb_app(
    world: World, *, middlewares: Iterable[Middleware] = ()
) -> web.Application:
    """The WB seller API over ``world``: all categories by path on one host."""
    api = WbApi(world)
    app = web.Application(middlewares=list(middlewares))
    app[WORLD_KEY] = world
    routes: list[tuple[str, str, str | None, str, Handler, bool]] = [
        ("GET", "/ping", None, "ping", api.ping, False),
        ("GET", "/api/v3/orders/new", "marketplace", "fbs", api.orders_new, False),
        ("GET", "/api/v3/orders", "marketplace", "fbs", api.orders, False),
        (
            "POST",
            "/api/v3/orders/status",
            "marketplace",
            "fbs",
            api.orders_status,
            False,
        ),
        (
            "PATCH",
            "/api/v3/orders/{orderId}/cancel",
            "marketplace",
            "fbs_cancel",
            api.cancel,
            True,
        ),
        (
            "GET",
            "/api/v1/supplier/orders",
            "statistics",
            "orders",
            api.supplier_orders,
            False,
        ),
        (
            "GET",
            "/api/v1/supplier/sales",
            "statistics",
            "sales",
            api.supplier_sales,
            False,
        ),
        ("GET", "/api/v1/seller-info", "common", "seller_info", api.seller_info, False),
    ]
    for method, path, category, group, handler, write in routes:
        app.router.add_route(method, path, api.route(category, group, handler, write))
    app.router.add_route("*", "/{tail:.*}", api.not_found)
    return app


_STATUS_TEXT = {
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
}


def _rule(table: dict[str, dict[str, Rule]], group: str, budget: str) -> Rule | None:
    rules = table.get(group)
    if not rules:
        return None
    kind = "service" if budget.startswith("service:") else budget
    return rules.get(kind) or rules.get("*")


def _steady(times: list[float], calls: int, tolerance: float) -> bool:
    """Whether the last ``calls`` pings came at a steady cadence (a scheduler)."""
    if calls < 3 or len(times) < calls:
        return False
    recent = times[-calls:]
    gaps = [later - earlier for earlier, later in itertools.pairwise(recent)]
    mean = sum(gaps) / len(gaps)
    return mean > 0 and all(abs(gap - mean) <= tolerance * mean for gap in gaps)


def _host_category(host: str) -> str:
    name = host.split(":")[0].split(".")[0].removesuffix("-sandbox")
    return HOST_CATEGORIES.get(name, "common")


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _msk_moment(raw: str) -> float | None:
    """A statistics ``dateFrom`` (RFC3339 date or date-time, Moscow time unless zoned)."""
    try:
        moment = datetime.fromisoformat(raw.replace(" ", "+"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=gen.MSK)
    return moment.timestamp()


# ``next`` is opaque and non-monotonic, as WB's is: a keyed permutation of the
# last order id over 62 bits (four Feistel rounds).
_HALF = 31
_MASK = (1 << _HALF) - 1


def _round(value: int, key: int, step: int) -> int:
    mixed = (value * 0x9E3779B1 + (key >> (step * 8)) + step) & 0xFFFFFFFF
    mixed ^= mixed >> 15
    mixed = (mixed * 0x2C1B3C6D) & 0xFFFFFFFF
    return (mixed ^ (mixed >> 12)) & _MASK


def _scramble(value: int, key: int) -> int:
    left, right = value >> _HALF & _MASK, value & _MASK
    for step in range(4):
        left, right = right, left ^ _round(right, key, step)
    return left << _HALF | right


def _unscramble(value: int, key: int) -> int:
    left, right = value >> _HALF & _MASK, value & _MASK
    for step in reversed(range(4)):
        left, right = right ^ _round(left, key, step), left
    return left << _HALF | right
