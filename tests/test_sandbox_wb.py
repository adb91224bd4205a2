"""The sandbox's WB seller API: auth, limits and headers, bans, orders, faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mpshield.protection.timing import ManualClock
from mpshield.sandbox.admin import create_admin_app
from mpshield.sandbox.faults import FaultConfig
from mpshield.sandbox.limits import Rule
from mpshield.sandbox.wb import create_wb_app
from mpshield.sandbox.world import World, WorldSettings

SCALE = 0.01
GATEWAY_FIELDS = {
    "title",
    "detail",
    "code",
    "requestId",
    "origin",
    "status",
    "statusText",
    "timestamp",
}


@dataclass
class Sandbox:
    world: World
    clock: ManualClock
    client: TestClient[Any, Any]
    sid: str
    token: str

    async def get(self, path: str, token: str | None = None, **params: Any) -> Any:
        headers = {"Authorization": token if token is not None else self.token}
        return await self.client.get(path, params=params, headers=headers)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    clock = ManualClock()
    world = World(time_scale=SCALE, seed=7, clock=clock)
    sid = world.wb_create_seller(name="Flax", orders=40)
    token = world.wb_issue_token(sid)
    async with TestClient(TestServer(create_wb_app(world))) as client:
        yield Sandbox(world, clock, client, sid, token)


async def test_bearer_and_raw_tokens_are_both_accepted(sandbox: Sandbox) -> None:
    """The token works raw and with a ``Bearer`` prefix."""
    raw = await sandbox.get("/api/v3/orders/new")
    bearer = await sandbox.get("/api/v3/orders/new", token=f"Bearer {sandbox.token}")

    assert raw.status == bearer.status == 200
    assert "orders" in await raw.json()


@pytest.mark.parametrize(
    "problem", ["missing", "malformed", "foreign", "revoked", "expired"]
)
async def test_bad_tokens_get_gateway_401(sandbox: Sandbox, problem: str) -> None:
    """Missing, malformed, foreign, revoked and expired tokens get WB's gateway 401."""
    world = sandbox.world
    token = {
        "missing": "",
        "malformed": "not-a-jwt",
        "foreign": _foreign_token(),
        "revoked": world.wb_issue_token(sandbox.sid),
        "expired": world.wb_issue_token(sandbox.sid, expires_in=-60),
    }[problem]
    if problem == "revoked":
        world.wb_revoke_token(token)

    response = await sandbox.get("/api/v3/orders/new", token=token)
    body = await response.json()

    assert response.status == 401
    assert set(body) == GATEWAY_FIELDS
    assert body["origin"] == "s2s-api-auth-marketplace"
    assert "X-Ratelimit-Remaining" not in response.headers
    expected = {
        "missing": "empty",
        "malformed": "malformed",
        "foreign": "signature",
        "revoked": "withdrawn",
        "expired": "expired",
    }
    assert expected[problem] in body["detail"]


def _foreign_token() -> str:
    other = World()
    return other.wb_issue_token(other.wb_create_seller(orders=0))


async def test_token_without_category_scope_gets_401_scope_not_allowed(
    sandbox: Sandbox,
) -> None:
    """P5: a Content-only token on Marketplace gets 401 "scope not allowed" every time."""
    token = sandbox.world.wb_issue_token(sandbox.sid, scopes=["content"])

    for _ in range(2):
        response = await sandbox.get("/api/v3/orders/new", token=token)
        body = await response.json()
        assert response.status == 401
        assert body["detail"] == "token scope not allowed"
        assert body["origin"] == "s2s-api-auth-marketplace"


async def test_statistics_refusals_are_problem_json(sandbox: Sandbox) -> None:
    """Statistics answers its 401 as ``application/problem+json``."""
    response = await sandbox.get(
        "/api/v1/supplier/orders", token="", dateFrom="2026-01-01"
    )

    assert response.status == 401
    assert response.content_type == "application/problem+json"


async def test_marketplace_bucket_allows_burst_then_429_with_headers(
    sandbox: Sandbox,
) -> None:
    """Burst 20 passes with Remaining counting down; then 429 with scaled headers."""
    remaining = []
    for _ in range(20):
        response = await sandbox.get("/api/v3/orders/new")
        assert response.status == 200
        remaining.append(int(response.headers["X-Ratelimit-Remaining"]))

    refused = await sandbox.get("/api/v3/orders/new")
    body = await refused.json()

    assert remaining == list(range(19, -1, -1))
    assert refused.status == 429
    assert "X-Ratelimit-Remaining" not in refused.headers
    assert body["title"] == "too many requests"
    assert float(refused.headers["X-Ratelimit-Retry"]) == pytest.approx(0.2 * SCALE)
    assert refused.headers["X-Ratelimit-Limit"] == "20"
    assert float(refused.headers["X-Ratelimit-Reset"]) == pytest.approx(
        20 * 0.2 * SCALE
    )

    sandbox.clock.advance(float(refused.headers["X-Ratelimit-Retry"]))
    assert (await sandbox.get("/api/v3/orders/new")).status == 200


async def test_marketplace_4xx_costs_ten_requests(sandbox: Sandbox) -> None:
    """P4: two invalid cancels drain Remaining 20 -> 10 -> 0, the third gets 429."""
    headers = {"Authorization": sandbox.token}

    first = await sandbox.client.patch("/api/v3/orders/abc/cancel", headers=headers)
    second = await sandbox.client.patch("/api/v3/orders/abc/cancel", headers=headers)
    third = await sandbox.client.patch("/api/v3/orders/abc/cancel", headers=headers)

    assert (first.status, first.headers["X-Ratelimit-Remaining"]) == (400, "10")
    assert (second.status, second.headers["X-Ratelimit-Remaining"]) == (400, "0")
    assert third.status == 429


async def test_cancel_changes_status_and_statistics_row(sandbox: Sandbox) -> None:
    """A valid cancel answers 204 and shows in the status and the statistics row."""
    order = (await (await sandbox.get("/api/v3/orders/new")).json())["orders"][0]
    headers = {"Authorization": sandbox.token}

    cancel = await sandbox.client.patch(
        f"/api/v3/orders/{order['id']}/cancel", headers=headers
    )
    again = await sandbox.client.patch(
        f"/api/v3/orders/{order['id']}/cancel", headers=headers
    )
    status = await sandbox.client.post(
        "/api/v3/orders/status", json={"orders": [order["id"]]}, headers=headers
    )
    rows = {row["srid"]: row for row in sandbox.world.truth(sandbox.sid)["wb_stats"]}

    assert cancel.status == 204
    assert again.status == 409
    assert (await status.json())["orders"] == [
        {"id": order["id"], "supplierStatus": "cancel", "wbStatus": "canceled"}
    ]
    assert rows[order["rid"]]["isCancel"] is True


async def test_base_token_statistics_orders_allow_one_call_per_three_hours(
    sandbox: Sandbox,
) -> None:
    """P1: a base token gets one statistics call, then 429 for ~3 h (scaled)."""
    base = sandbox.world.wb_issue_token(sandbox.sid, token_type="base")

    first = await sandbox.get(
        "/api/v1/supplier/orders", token=base, dateFrom="2020-01-01"
    )
    sandbox.clock.advance(600 * SCALE)
    second = await sandbox.get(
        "/api/v1/supplier/orders", token=base, dateFrom="2020-01-01"
    )
    personal = await sandbox.get("/api/v1/supplier/orders", dateFrom="2020-01-01")

    assert first.status == 200
    assert second.status == 429
    retry = float(second.headers["X-Ratelimit-Retry"])
    assert retry == pytest.approx((10800 - 600) * SCALE, rel=0.01)
    assert personal.status == 200


async def test_sellers_never_share_buckets_but_tokens_of_one_seller_do(
    sandbox: Sandbox,
) -> None:
    """P16: another seller keeps its own bucket; a second token of the same seller shares."""
    world = sandbox.world
    other = world.wb_issue_token(world.wb_create_seller(orders=1))
    same_seller = world.wb_issue_token(sandbox.sid)
    for _ in range(20):
        await sandbox.get("/api/v3/orders/new")

    assert (await sandbox.get("/api/v3/orders/new", token=other)).status == 200
    assert (await sandbox.get("/api/v3/orders/new", token=same_seller)).status == 429


async def test_ping_allows_three_per_thirty_seconds_then_blocks(
    sandbox: Sandbox,
) -> None:
    """P7: /ping passes 3 times per 30 s; hammering it blocks it for the block period."""
    statuses = [(await sandbox.get("/ping")).status for _ in range(6)]
    sandbox.clock.advance(31 * SCALE)
    blocked = await sandbox.get("/ping")
    block = sandbox.world.settings.wb_ping_block_seconds * SCALE

    assert statuses == [200, 200, 200, 429, 429, 429]
    assert blocked.status == 429
    assert "blocked" in (await blocked.json())["detail"]
    assert float(blocked.headers["X-Ratelimit-Retry"]) <= block

    sandbox.clock.advance(block)
    assert (await sandbox.get("/ping")).status == 200


async def test_ping_on_a_steady_schedule_gets_blocked(sandbox: Sandbox) -> None:
    """P7: a health check every 15 s never exceeds the limit but is blocked as scheduled."""
    statuses = []
    for _ in range(7):
        statuses.append((await sandbox.get("/ping")).status)
        sandbox.clock.advance(15 * SCALE)

    assert statuses[:5] == [200] * 5
    assert statuses[-1] == 429


async def test_ping_checks_the_category_of_the_host(sandbox: Sandbox) -> None:
    """/ping on a statistics host refuses a Content-only token."""
    token = sandbox.world.wb_issue_token(sandbox.sid, scopes=["content"])
    headers = {"Authorization": token, "Host": "statistics-api.wildberries.ru"}

    response = await sandbox.client.get("/ping", headers=headers)

    assert response.status == 401
    assert (await response.json())["origin"] == "s2s-api-auth-statistics"


async def test_orders_paging_with_opaque_next_returns_truth(sandbox: Sandbox) -> None:
    """P9: paging ``/api/v3/orders`` by echoing ``next`` yields exactly the truth."""
    seen, cursors, cursor = [], [], 0
    while True:
        response = await sandbox.get("/api/v3/orders", limit=7, next=cursor)
        page = await response.json()
        sandbox.clock.advance(1)
        if not page["orders"]:
            break
        seen.extend(page["orders"])
        cursor = page["next"]
        cursors.append(cursor)

    truth = sandbox.world.truth(sandbox.sid)["wb_fbs"]
    assert seen == truth
    assert len(truth) > 14
    assert cursors != sorted(cursors)
    assert all(cursor not in {order["id"] for order in truth} for cursor in cursors)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0, "next": 0},
        {"limit": 1001, "next": 0},
        {"limit": 10},
        {"limit": 10, "next": 0, "dateFrom": 0, "dateTo": 31 * 86400},
    ],
)
async def test_orders_rejects_bad_parameters(
    sandbox: Sandbox, params: dict[str, int]
) -> None:
    """Limit outside 1..1000, a missing ``next`` or a window over 30 days get 400."""
    headers = {"Authorization": sandbox.token}
    response = await sandbox.client.get(
        "/api/v3/orders", params=params, headers=headers
    )

    assert response.status == 400
    assert (await response.json())["code"] == "IncorrectParameter"


async def test_statistics_paging_repeats_boundary_rows_and_dedupes_to_truth(
    sandbox: Sandbox,
) -> None:
    """P8: paging by ``lastChangeDate`` repeats boundary rows; dedupe by srid is the truth."""
    world = sandbox.world
    world.settings.wb_stats_page_size = 10
    world.add_orders(sandbox.sid, 5)
    collected: dict[str, dict[str, Any]] = {}
    total_rows, date_from, pages = 0, "2020-01-01", 0
    while pages < 50:
        response = await sandbox.get("/api/v1/supplier/orders", dateFrom=date_from)
        rows = await response.json()
        sandbox.clock.advance(60 * SCALE)
        if pages == 1:
            world.change_statuses(sandbox.sid, 3)
        pages += 1
        if date_from == rows[-1]["lastChangeDate"] and len(rows) == 1:
            break
        total_rows += len(rows)
        collected.update({row["srid"]: row for row in rows})
        date_from = rows[-1]["lastChangeDate"]

    truth = world.truth(sandbox.sid)["wb_stats"]
    assert sorted(collected.values(), key=lambda row: row["srid"]) == truth
    assert total_rows > len(truth)


async def test_statistics_flag_one_returns_one_calendar_date(sandbox: Sandbox) -> None:
    """``flag=1`` returns every row whose order date is the given Moscow date."""
    rows = sandbox.world.truth(sandbox.sid)["wb_stats"]
    day = rows[0]["date"][:10]

    response = await sandbox.get("/api/v1/supplier/orders", dateFrom=day, flag=1)
    found = await response.json()

    assert {row["srid"] for row in found} == {
        row["srid"] for row in rows if row["date"].startswith(day)
    }


async def test_statistics_without_date_from_is_400(sandbox: Sandbox) -> None:
    """A missing ``dateFrom`` gets WB's ``errors`` body."""
    response = await sandbox.get("/api/v1/supplier/orders")

    assert response.status == 400
    assert await response.json() == {"errors": ["dateFrom: field required"]}


async def test_401_flood_from_one_address_bans_it_for_a_while() -> None:
    """Many 401s from one address restrict it (403), and the ban ends after its period."""
    clock = ManualClock()
    settings = WorldSettings(wb_address_401_threshold=5, flood_ban_seconds=600)
    world = World(time_scale=SCALE, clock=clock, settings=settings)
    token = world.wb_issue_token(world.wb_create_seller(orders=1))
    async with TestClient(TestServer(create_wb_app(world))) as client:
        for _ in range(5):
            await client.get("/api/v3/orders/new", headers={"Authorization": "bad"})
        banned = await client.get(
            "/api/v3/orders/new", headers={"Authorization": token}
        )
        clock.advance(600 * SCALE)
        later = await client.get("/api/v3/orders/new", headers={"Authorization": token})

    assert banned.status == 403
    assert later.status == 200
    assert world.stats()["addresses"]["127.0.0.1"]["bans"] == 1


async def test_failing_token_flood_restricts_the_token() -> None:
    """Many 4XX answers to one token restrict that token with a 403."""
    clock = ManualClock()
    settings = WorldSettings(wb_token_4xx_threshold=5)
    world = World(time_scale=SCALE, clock=clock, settings=settings)
    token = world.wb_issue_token(world.wb_create_seller(orders=1))
    headers = {"Authorization": token}
    async with TestClient(TestServer(create_wb_app(world))) as client:
        for _ in range(5):
            await client.get("/api/v3/orders", headers=headers)
        refused = await client.get("/api/v3/orders/new", headers=headers)
        body = await refused.json()

    assert refused.status == 403
    assert body["code"] == "AccessDenied"


async def test_test_tokens_get_one_request_per_second_on_marketplace(
    sandbox: Sandbox,
) -> None:
    """Test tokens: at most one Marketplace request per (scaled) second."""
    token = sandbox.world.wb_issue_token(sandbox.sid, token_type="test")

    first = await sandbox.get("/api/v3/orders/new", token=token)
    second = await sandbox.get("/api/v3/orders/new", token=token)
    sandbox.clock.advance(1 * SCALE)
    third = await sandbox.get("/api/v3/orders/new", token=token)

    assert [first.status, second.status, third.status] == [200, 429, 200]


async def test_read_only_token_cannot_cancel(sandbox: Sandbox) -> None:
    """A read-only token reads orders but gets 401 on a write method."""
    token = sandbox.world.wb_issue_token(sandbox.sid, read_only=True)

    read = await sandbox.get("/api/v3/orders/new", token=token)
    write = await sandbox.client.patch(
        "/api/v3/orders/1/cancel", headers={"Authorization": token}
    )

    assert read.status == 200
    assert write.status == 401


async def test_faults_appear_at_the_configured_rates() -> None:
    """Errors and broken JSON appear near their rates; drops close the connection."""
    settings = WorldSettings(
        wb_limits={"marketplace.fbs": {"*": Rule(1.0, 10**6, 10**6)}}
    )
    world = World(time_scale=SCALE, seed=3, settings=settings)
    faults = FaultConfig(error_rate=0.2, malformed_rate=0.2, drop_rate=0.1)
    sid = world.wb_create_seller(orders=3, faults=faults)
    headers = {"Authorization": world.wb_issue_token(sid)}
    counts = {"error": 0, "html": 0, "malformed": 0, "drop": 0, "ok": 0}
    async with TestClient(TestServer(create_wb_app(world))) as client:
        for _ in range(300):
            try:
                response = await client.get("/api/v3/orders/new", headers=headers)
                text = await response.text()
            except aiohttp.ClientError:
                counts["drop"] += 1
                continue
            if response.status >= 500:
                counts["error"] += 1
                counts["html"] += response.content_type == "text/html"
                continue
            try:
                await response.json()
                counts["ok"] += 1
            except ValueError:
                counts["malformed"] += 1
                assert text

    assert 30 <= counts["error"] <= 90
    assert 0 < counts["html"] < counts["error"]
    assert 30 <= counts["malformed"] <= 90
    assert 10 <= counts["drop"] <= 55
    assert world.stats()["sellers"][sid]["drops"] == counts["drop"]


async def test_world_keeps_orders_arriving_and_changing() -> None:
    """The background task adds orders and statistics rows while it runs."""
    world = World(time_scale=0.0005, seed=5)
    world.settings.order_rate_per_hour = 120
    sid = world.wb_create_seller(orders=2)
    before = world.truth(sid)

    await world.start()
    await asyncio.sleep(0.3)
    await world.stop()

    after = world.truth(sid)
    assert len(after["wb_stats"]) > len(before["wb_stats"])


async def test_same_seed_gives_the_same_world() -> None:
    """Two worlds with one seed hold the same orders."""
    first, second = World(seed=11), World(seed=11)

    sid_one = first.wb_create_seller(orders=5)
    sid_two = second.wb_create_seller(orders=5)

    assert sid_one == sid_two
    strip = [{**order, "createdAt": ""} for order in first.truth(sid_one)["wb_fbs"]]
    assert strip == [
        {**order, "createdAt": ""} for order in second.truth(sid_two)["wb_fbs"]
    ]


async def test_stats_count_per_seller_and_address(sandbox: Sandbox) -> None:
    """Stats count requests and outcomes per seller and per source address."""
    await sandbox.get("/api/v3/orders/new")
    await sandbox.get("/api/v3/orders/new", token="bad")
    await sandbox.get("/nowhere")

    stats = sandbox.world.stats()

    assert stats["sellers"][sandbox.sid] == {"requests": 1, "2xx": 1}
    assert stats["addresses"]["127.0.0.1"] == {
        "requests": 3,
        "2xx": 1,
        "401": 1,
        "404": 1,
    }


async def test_admin_api_creates_sellers_and_tokens() -> None:
    """The admin API needs its token and drives the world like the Python API."""
    world = World(time_scale=SCALE)
    app = create_admin_app(
        world, admin_token="s3cret-admin", extra_stats=lambda: {"proxies": 2}
    )
    auth = {"Authorization": "Bearer s3cret-admin"}
    async with (
        TestClient(TestServer(app)) as admin,
        TestClient(TestServer(create_wb_app(world))) as wb,
    ):
        refused = await admin.post("/wb/sellers", json={})
        created = await (
            await admin.post("/wb/sellers", json={"orders": 3}, headers=auth)
        ).json()
        issued = await admin.post(
            f"/wb/sellers/{created['sid']}/tokens",
            json={"scopes": ["marketplace"]},
            headers=auth,
        )
        token = (await issued.json())["token"]
        answer = await wb.get("/api/v3/orders/new", headers={"Authorization": token})
        await admin.post("/wb/tokens/revoke", json={"token": token}, headers=auth)
        revoked = await wb.get("/api/v3/orders/new", headers={"Authorization": token})
        truth = await (
            await admin.get(f"/sellers/{created['sid']}/truth", headers=auth)
        ).json()
        stats = await (await admin.get("/stats", headers=auth)).json()
        missing = await admin.get("/sellers/nobody/truth", headers=auth)

    assert refused.status == 401
    assert answer.status == 200
    assert revoked.status == 401
    assert truth == world.truth(created["sid"])
    assert stats["proxies"] == 2
    assert created["sid"] in stats["sellers"]
    assert missing.status == 404
