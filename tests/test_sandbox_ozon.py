"""The sandbox's Ozon Seller API: keys, IP restriction, limits, breaker, cursor lists."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mpshield.protection.timing import ManualClock
from mpshield.sandbox.admin import create_admin_app
from mpshield.sandbox.ozon import create_ozon_app
from mpshield.sandbox.world import World, WorldSettings

SCALE = 0.01
EVERYTHING = {"since": "2020-01-01T00:00:00Z", "to": "2020-12-31T00:00:00Z"}
ALL_BLOCKS = {
    "analytics_data": True,
    "financial_data": True,
    "barcodes": True,
    "legal_info": True,
}


@dataclass
class Sandbox:
    world: World
    clock: ManualClock
    client: TestClient[Any, Any]
    client_id: str
    api_key: str

    async def post(
        self,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> Any:
        sent = {"Client-Id": self.client_id, "Api-Key": self.api_key, **(headers or {})}
        return await self.client.post(path, json=body or {}, headers=sent)


def _window(world: World) -> dict[str, str]:
    """A filter covering the whole order history up to now."""
    from mpshield.sandbox.orders import ozon_time

    now = world.now()
    return {"since": ozon_time(now - 300 * 86400), "to": ozon_time(now + 3600)}


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    clock = ManualClock()
    world = World(time_scale=SCALE, seed=9, clock=clock)
    client_id, api_key = world.ozon_create_seller(name="Ozon shop", orders=60)
    async with TestClient(TestServer(create_ozon_app(world))) as client:
        yield Sandbox(world, clock, client, client_id, api_key)


async def test_missing_headers_get_401_code_16(sandbox: Sandbox) -> None:
    """Without Client-Id and Api-Key the answer is 401 with code 16."""
    response = await sandbox.client.post("/v1/roles", json={})

    assert response.status == 401
    assert (await response.json())["code"] == 16


async def test_client_id_must_be_a_positive_integer(sandbox: Sandbox) -> None:
    """A Client-Id that is not a positive integer gets 400 with code 3."""
    response = await sandbox.post("/v1/roles", headers={"Client-Id": "abc"})

    assert response.status == 400
    assert (await response.json())["code"] == 3


async def test_invalid_key_is_404_code_5(sandbox: Sandbox) -> None:
    """P13: a wrong Api-Key gets HTTP 404 with code 5, not 401."""
    response = await sandbox.post("/v1/roles", headers={"Api-Key": "wrong-key"})
    body = await response.json()

    assert response.status == 404
    assert body["code"] == 5
    assert body["details"] == []


async def test_rotated_and_deactivated_keys_are_404_code_5(sandbox: Sandbox) -> None:
    """After rotation the old key gets 404 code 5; a deactivated key too."""
    world = sandbox.world
    new_key = world.ozon_rotate_key(sandbox.client_id)

    old = await sandbox.post("/v1/roles")
    new = await sandbox.post("/v1/roles", headers={"Api-Key": new_key})
    world.ozon_deactivate_key(sandbox.client_id, new_key)
    dead = await sandbox.post("/v1/roles", headers={"Api-Key": new_key})

    assert (old.status, (await old.json())["code"]) == (404, 5)
    assert new.status == 200
    assert "deactivated" in (await dead.json())["message"]


async def test_key_restricted_to_other_networks_gets_403_code_7(
    sandbox: Sandbox,
) -> None:
    """A key limited to 127.0.0.11/32 is refused from 127.0.0.1 and allowed again."""
    sandbox.world.ozon_restrict_key(sandbox.client_id, ["127.0.0.11/32"])
    refused = await sandbox.post("/v1/roles")
    sandbox.world.ozon_restrict_key(sandbox.client_id, ["127.0.0.0/24"])
    allowed = await sandbox.post("/v1/roles")

    assert (refused.status, (await refused.json())["code"]) == (403, 7)
    assert allowed.status == 200


async def test_roles_report_key_expiry(sandbox: Sandbox) -> None:
    """``/v1/roles`` returns ``expires_at`` and the roles of the key."""
    body = await (await sandbox.post("/v1/roles")).json()

    assert body["expires_at"].endswith("Z")
    assert body["roles"][0]["methods"]


async def test_fifty_requests_per_second_per_client_id(sandbox: Sandbox) -> None:
    """The 51st request within a (scaled) second gets 429 code 8 with ``retry-after``."""
    remaining = []
    for _ in range(50):
        response = await sandbox.post("/v1/roles")
        remaining.append(int(response.headers["ratelimit-remaining"]))
    refused = await sandbox.post("/v1/roles")
    sandbox.clock.advance(1 * SCALE)
    later = await sandbox.post("/v1/roles")

    assert remaining == list(range(49, -1, -1))
    assert refused.status == 429
    assert (await refused.json())["code"] == 8
    assert 0 < float(refused.headers["retry-after"]) <= SCALE
    assert later.status == 200


async def test_rate_headers_can_be_turned_off(sandbox: Sandbox) -> None:
    """With ``ozon_rate_headers`` off, answers carry no rate-limit headers."""
    sandbox.world.settings.ozon_rate_headers = False

    response = await sandbox.post("/v1/roles")

    assert "ratelimit-remaining" not in response.headers


async def test_circle_is_open_under_a_flood_and_recovers() -> None:
    """A flood of 429s opens the method's breaker; it recovers after its period."""
    clock = ManualClock()
    settings = WorldSettings(
        ozon_rps=2, ozon_circle_threshold=5, ozon_circle_seconds=180
    )
    world = World(time_scale=SCALE, clock=clock, settings=settings)
    client_id, api_key = world.ozon_create_seller(orders=0)
    headers = {"Client-Id": client_id, "Api-Key": api_key}
    async with TestClient(TestServer(create_ozon_app(world))) as client:
        statuses = [
            (await client.post("/v1/roles", json={}, headers=headers)).status
            for _ in range(8)
        ]
        clock.advance(5 * SCALE)
        open_circle = await client.post("/v1/roles", json={}, headers=headers)
        body = await open_circle.json()
        other_method = await client.post(
            "/v4/posting/fbs/list",
            json={"limit": 1, "filter": EVERYTHING},
            headers=headers,
        )
        clock.advance(180 * SCALE)
        recovered = await client.post("/v1/roles", json={}, headers=headers)

    assert statuses[:2] == [200, 200]
    assert statuses[2:7] == [429] * 5
    assert open_circle.status == 503
    assert body["message"] == "Circle is open"
    assert other_method.status == 200
    assert recovered.status == 200


async def test_fbs_cursor_paging_returns_truth(sandbox: Sandbox) -> None:
    """Following ``cursor`` while ``has_next`` yields every FBS posting exactly once."""
    seen, cursor = [], ""
    while True:
        body = {
            "limit": 7,
            "cursor": cursor,
            "filter": _window(sandbox.world),
            "with": ALL_BLOCKS,
        }
        page = await (await sandbox.post("/v4/posting/fbs/list", body)).json()
        seen.extend(page["postings"])
        if not page["has_next"]:
            break
        cursor = page["cursor"]

    truth = sandbox.world.truth(sandbox.client_id)["ozon_fbs"]
    assert sorted(seen, key=lambda posting: posting["posting_number"]) == truth
    assert len(seen) == len(truth) > 14


async def test_fbo_cursor_paging_descending_returns_truth(sandbox: Sandbox) -> None:
    """FBO lists page by cursor in descending order too."""
    seen, cursor = [], ""
    blocks = {"analytics_data": True, "financial_data": True, "legal_info": True}
    while True:
        body = {
            "limit": 5,
            "cursor": cursor,
            "sort_dir": "DESC",
            "filter": _window(sandbox.world),
            "with": blocks,
        }
        page = await (await sandbox.post("/v3/posting/fbo/list", body)).json()
        seen.extend(page["postings"])
        if not page["has_next"]:
            break
        cursor = page["cursor"]

    truth = sandbox.world.truth(sandbox.client_id)["ozon_fbo"]
    stamps = [posting["created_at"] for posting in seen]
    assert stamps == sorted(stamps, reverse=True)
    assert sorted(seen, key=lambda posting: posting["posting_number"]) == truth


async def test_optional_blocks_appear_only_when_asked(sandbox: Sandbox) -> None:
    """``with`` flags decide which optional blocks a posting carries."""
    body = {"limit": 1, "filter": _window(sandbox.world), "with": {"barcodes": True}}

    posting = (await (await sandbox.post("/v4/posting/fbs/list", body)).json())[
        "postings"
    ][0]

    assert "barcodes" in posting
    assert "analytics_data" not in posting
    assert "financial_data" not in posting


async def test_status_changes_show_in_lists_and_truth(sandbox: Sandbox) -> None:
    """Status changes update postings; the last-changed filter finds them."""
    world = sandbox.world
    before = {
        p["posting_number"]: p["status"]
        for p in world.truth(sandbox.client_id)["ozon_fbs"]
    }
    sandbox.clock.advance(100)
    from mpshield.sandbox.orders import ozon_time

    mark = ozon_time(world.now() - 1)
    world.change_statuses(sandbox.client_id, 10)
    body = {
        "limit": 100,
        "filter": {**_window(world), "last_changed_status_date": {"from": mark}},
    }

    changed = (await (await sandbox.post("/v4/posting/fbs/list", body)).json())[
        "postings"
    ]

    after = {
        p["posting_number"]: p["status"]
        for p in world.truth(sandbox.client_id)["ozon_fbs"]
    }
    moved = {number for number in after if after[number] != before[number]}
    assert moved
    assert moved == {posting["posting_number"] for posting in changed}


@pytest.mark.parametrize(
    "body",
    [
        {"limit": 0, "filter": EVERYTHING},
        {"limit": 101, "filter": EVERYTHING},
        {"limit": 10},
        {
            "limit": 10,
            "filter": {"since": "2020-01-01T00:00:00Z", "to": "2021-06-01T00:00:00Z"},
        },
        {"limit": 10, "filter": EVERYTHING, "cursor": "not a cursor"},
    ],
)
async def test_bad_list_requests_get_400_code_3(
    sandbox: Sandbox, body: dict[str, Any]
) -> None:
    """Limit outside 1..100, no filter, over a year or a broken cursor: 400 code 3."""
    response = await sandbox.post("/v4/posting/fbs/list", body)

    assert response.status == 400
    assert (await response.json())["code"] == 3


@pytest.mark.parametrize("path", ["/v3/posting/fbs/list", "/v2/posting/fbo/list"])
async def test_retired_list_methods_answer_404(sandbox: Sandbox, path: str) -> None:
    """P15: the offset-paged list methods were switched off."""
    response = await sandbox.post(path, {"limit": 10, "filter": EVERYTHING})

    assert response.status == 404
    assert (await response.json())["code"] == 5


async def test_stock_updates_too_often_fail_inside_a_200(sandbox: Sandbox) -> None:
    """P12: a second push within 30 s (scaled) fails per item inside HTTP 200."""
    stocks = {
        "stocks": [{"offer_id": "A1", "product_id": 11, "stock": 5, "warehouse_id": 7}]
    }

    first = await (await sandbox.post("/v2/products/stocks", stocks)).json()
    sandbox.clock.advance(5 * SCALE)
    second_response = await sandbox.post("/v2/products/stocks", stocks)
    second = await second_response.json()
    sandbox.clock.advance(30 * SCALE)
    third = await (await sandbox.post("/v2/products/stocks", stocks)).json()

    assert first["result"][0]["updated"] is True
    assert second_response.status == 200
    assert second["result"][0]["updated"] is False
    assert second["result"][0]["errors"][0]["code"] == "TOO_MANY_REQUESTS"
    assert third["result"][0]["updated"] is True


async def test_bad_key_flood_bans_the_address() -> None:
    """Many refused keys from one address get that address refused (403) for a while."""
    clock = ManualClock()
    settings = WorldSettings(ozon_address_auth_threshold=5, flood_ban_seconds=60)
    world = World(time_scale=SCALE, clock=clock, settings=settings)
    client_id, api_key = world.ozon_create_seller(orders=0)
    async with TestClient(TestServer(create_ozon_app(world))) as client:
        for _ in range(5):
            await client.post(
                "/v1/roles", json={}, headers={"Client-Id": "1", "Api-Key": "x"}
            )
        good = {"Client-Id": client_id, "Api-Key": api_key}
        banned = await client.post("/v1/roles", json={}, headers=good)
        clock.advance(60 * SCALE)
        later = await client.post("/v1/roles", json={}, headers=good)

    assert banned.status == 403
    assert later.status == 200


async def test_erroneous_request_flood_restricts_the_client() -> None:
    """Many 4XX answers to one Client-Id restrict its Seller API access."""
    settings = WorldSettings(ozon_client_error_threshold=5)
    world = World(time_scale=SCALE, clock=ManualClock(), settings=settings)
    client_id, api_key = world.ozon_create_seller(orders=0)
    headers = {"Client-Id": client_id, "Api-Key": api_key}
    async with TestClient(TestServer(create_ozon_app(world))) as client:
        for _ in range(5):
            await client.post(
                "/v4/posting/fbs/list", json={"limit": 0}, headers=headers
            )
        refused = await client.post("/v1/roles", json={}, headers=headers)
        body = await refused.json()

    assert refused.status == 403
    assert body["code"] == 7


async def test_admin_api_rotates_and_restricts_ozon_keys() -> None:
    """The admin API creates Ozon sellers, rotates keys and sets networks."""
    world = World(time_scale=SCALE)
    auth = {"Authorization": "Bearer adm1n-token"}
    app = create_admin_app(world, admin_token="adm1n-token")
    async with TestClient(TestServer(app)) as admin:
        created = await (
            await admin.post("/ozon/sellers", json={"orders": 2}, headers=auth)
        ).json()
        base = f"/ozon/sellers/{created['client_id']}"
        rotated = await (await admin.post(f"{base}/keys/rotate", headers=auth)).json()
        networks = await admin.put(
            f"{base}/networks", json={"networks": ["10.0.0.0/8"]}, headers=auth
        )
        faults = await admin.put(
            f"/sellers/{created['client_id']}/faults",
            json={"error_rate": 0.5},
            headers=auth,
        )
        bad = await admin.put(
            f"/sellers/{created['client_id']}/faults",
            json={"error_rate": 2},
            headers=auth,
        )

    seller = world.ozon_sellers[created["client_id"]]
    assert not seller.keys[created["api_key"]].active
    assert seller.keys[rotated["api_key"]].active
    assert networks.status == 200
    assert [str(net) for net in seller.networks] == ["10.0.0.0/8"]
    assert faults.status == 200
    assert seller.faults.error_rate == 0.5
    assert bad.status == 400
