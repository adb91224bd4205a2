"""Every sandbox answer validates against the marketplaces' own OpenAPI documents.

Answers are checked with openapi-core's response validation. The WB documents
in ``specs/`` are snapshots cut at a nesting depth: some response schemas read
``"[MaxDepth]"``. Those cuts are completed from the documents' own components
(``Order``, ``OrderNew``, ``Next``, ``OrdersItem``...) or, where no component
exists, from the method's description; every other cut becomes an open schema.
An answer whose status a method does not declare (Ozon documents no 401 and
no 429) is checked against the service's general error schema. Besides
validity, success bodies may only use field names the schema lists.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_core import Config, OpenAPI
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_core.testing import MockRequest, MockResponse
from openapi_schema_validator import OAS30Validator

from mpshield.sandbox.orders import ozon_time
from mpshield.sandbox.ozon import create_ozon_app
from mpshield.sandbox.wb import create_wb_app
from mpshield.sandbox.world import World, WorldSettings

SPECS = Path(__file__).resolve().parents[1] / "specs"
HOST = "http://sandbox"
CUT = "[MaxDepth]"
WB_SUPPLIER = ["new", "confirm", "complete", "cancel", "cancel_carrier"]
WB_STATUS = [
    "waiting",
    "sorted",
    "sold",
    "canceled",
    "canceled_by_client",
    "declined_by_client",
    "defect",
    "ready_for_pickup",
    "postponed_delivery",
    "accepted_by_carrier",
    "sent_to_carrier",
    "canceled_by_carrier",
]


def _problem_json(body: bytes) -> Any:
    return json.loads(body)


PROBLEM_JSON: dict[str, Callable[[bytes], Any]] = {
    "application/problem+json": _problem_json
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


# Completions of depth-cut WB response schemas: (document, path, method, status).
COMPLETIONS: dict[tuple[str, str, str, str], dict[str, Any]] = {
    ("wb-orders-fbs.json", "/api/v3/orders", "get", "200"): _object(
        {"next": _ref("Next"), "orders": _array(_ref("Order"))}, ["next", "orders"]
    ),
    ("wb-orders-fbs.json", "/api/v3/orders/new", "get", "200"): _object(
        {"orders": _array(_ref("OrderNew"))}, ["orders"]
    ),
    ("wb-orders-fbs.json", "/api/v3/orders/status", "post", "200"): _object(
        {
            "orders": _array(
                _object(
                    {
                        "id": {"type": "integer", "format": "int64"},
                        "supplierStatus": {"type": "string", "enum": WB_SUPPLIER},
                        "wbStatus": {"type": "string", "enum": WB_STATUS},
                    },
                    ["id", "supplierStatus", "wbStatus"],
                )
            )
        },
        ["orders"],
    ),
    ("wb-reports.json", "/api/v1/supplier/orders", "get", "200"): _array(
        _ref("OrdersItem")
    ),
    ("wb-reports.json", "/api/v1/supplier/orders", "get", "400"): {
        "oneOf": [_ref("responseErrorStatistics"), _ref("responseErrorStatistics2")]
    },
    ("wb-api-information.json", "/ping", "get", "200"): _object(
        {"TS": {"type": "string", "format": "date-time"}, "Status": {"type": "string"}},
        ["TS", "Status"],
    ),
    ("wb-api-information.json", "/api/v1/seller-info", "get", "200"): _object(
        {key: {"type": "string"} for key in ("name", "sid", "tin", "tradeMark")},
        ["name", "sid", "tradeMark"],
    ),
}


def _open_cuts(node: Any) -> Any:
    """Replace every depth cut left after the completions with an open schema."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if value == CUT or value == [CUT]:
                if key in ("example", "examples"):
                    continue
                value = [{}] if key in ("oneOf", "anyOf", "allOf") else {}
            out[key] = _open_cuts(value)
        return out
    if isinstance(node, list):
        return [_open_cuts(item) for item in node if item != CUT]
    return node


@functools.cache
def document(name: str) -> dict[str, Any]:
    """An API document, completed and served from one test host."""
    data = json.loads((SPECS / name).read_text(encoding="utf-8"))
    for (doc, path, method, status), schema in COMPLETIONS.items():
        if doc == name:
            content = data["paths"][path][method]["responses"][status]["content"]
            next(iter(content.values()))["schema"] = schema
    data = dict(_open_cuts(data))
    data["servers"] = [{"url": HOST}]
    for item in data["paths"].values():
        item.pop("servers", None)
    return data


@functools.cache
def openapi(name: str) -> OpenAPI:
    config = Config(
        spec_validator_cls=None, extra_media_type_deserializers=PROBLEM_JSON
    )
    return OpenAPI.from_dict(copy.deepcopy(document(name)), config=config)


def resolve(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = document(name)
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def unknown_fields(
    name: str, value: Any, schema: dict[str, Any], where: str = ""
) -> list[str]:
    """Keys of ``value`` that ``schema`` does not list, as dotted paths."""
    schema = resolve(name, schema)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        found = []
        for item in value:
            found += unknown_fields(name, item, schema["items"], f"{where}[]")
        return found
    variants = schema.get("oneOf") or schema.get("anyOf")
    if variants:
        return min((unknown_fields(name, value, v, where) for v in variants), key=len)
    properties = schema.get("properties")
    if (
        not isinstance(value, dict)
        or not isinstance(properties, dict)
        or not properties
    ):
        return []
    found = []
    for key, item in value.items():
        if key not in properties:
            found.append(f"{where}.{key}")
        else:
            found += unknown_fields(name, item, properties[key], f"{where}.{key}")
    return found


@dataclass
class Answer:
    method: str
    pattern: str
    status: int
    content_type: str
    body: bytes


async def fetch(
    client: TestClient[Any, Any], method: str, pattern: str, **kw: Any
) -> Answer:
    path = kw.pop("path", pattern)
    response = await client.request(method, path, **kw)
    body = await response.read()
    return Answer(method.lower(), pattern, response.status, response.content_type, body)


def validate(name: str, answer: Answer, fallback: dict[str, Any]) -> None:
    """Validate an answer; undeclared statuses against the service's error schema."""
    request = MockRequest(
        HOST, answer.method, answer.pattern, path_pattern=answer.pattern
    )
    response = MockResponse(
        answer.body, answer.status, content_type=answer.content_type
    )
    try:
        openapi(name).validate_response(request, response)
    except ResponseNotFound:
        OAS30Validator(fallback).validate(json.loads(answer.body))
        return
    if answer.status == 200:
        operation = document(name)["paths"][answer.pattern][answer.method]
        content = operation["responses"]["200"]["content"]
        schema = next(iter(content.values()))["schema"]
        assert unknown_fields(name, json.loads(answer.body), schema) == []


# --------------------------------------------------------------------- WB


@pytest.fixture
async def wb() -> AsyncIterator[tuple[World, TestClient[Any, Any], str, str]]:
    world = World(time_scale=0.01, seed=21, clock=lambda: 1000.0)
    sid = world.wb_create_seller(orders=30)
    async with TestClient(TestServer(create_wb_app(world))) as client:
        yield world, client, sid, world.wb_issue_token(sid)


async def test_wb_marketplace_answers_match_the_document(
    wb: tuple[World, TestClient[Any, Any], str, str],
) -> None:
    """Marketplace orders, statuses, cancels and refusals validate."""
    world, client, sid, token = wb
    auth = {"Authorization": token}
    doc = "wb-orders-fbs.json"
    fallback = document(doc)["components"]["responses"]["401"]["content"][
        "application/json"
    ]["schema"]
    new = await fetch(client, "GET", "/api/v3/orders/new", headers=auth)
    ident = json.loads(new.body)["orders"][0]["id"]
    done = next(o["id"] for o in world.truth(sid)["wb_fbs"] if o["id"] != ident)
    world.wb_cancel(world.wb_sellers[sid], done)
    cancel = "/api/v3/orders/{orderId}/cancel"
    answers = [
        new,
        await fetch(
            client,
            "GET",
            "/api/v3/orders",
            headers=auth,
            params={"limit": 5, "next": 0},
        ),
        await fetch(
            client,
            "GET",
            "/api/v3/orders",
            headers=auth,
            params={"limit": 0, "next": 0},
        ),
        await fetch(
            client,
            "POST",
            "/api/v3/orders/status",
            headers=auth,
            json={"orders": [ident]},
        ),
        await fetch(
            client, "POST", "/api/v3/orders/status", headers=auth, json={"x": 1}
        ),
        await fetch(
            client, "PATCH", cancel, path=f"/api/v3/orders/{ident}/cancel", headers=auth
        ),
        await fetch(
            client, "PATCH", cancel, path=f"/api/v3/orders/{done}/cancel", headers=auth
        ),
        await fetch(
            client, "PATCH", cancel, path="/api/v3/orders/1/cancel", headers=auth
        ),
        await fetch(client, "GET", "/api/v3/orders/new"),
        await fetch(
            client, "GET", "/api/v3/orders/new", headers={"Authorization": "x"}
        ),
    ]
    for _ in range(3):
        answers.append(await fetch(client, "GET", "/api/v3/orders/new", headers=auth))
    world.ban("wb-token", world.tokens.check(token).token_id, 60)
    answers.append(await fetch(client, "GET", "/api/v3/orders/new", headers=auth))

    statuses = {answer.status for answer in answers}
    assert statuses == {200, 204, 400, 401, 403, 404, 409, 429}
    for answer in answers:
        validate(doc, answer, fallback)


async def test_wb_statistics_and_common_answers_match_the_documents(
    wb: tuple[World, TestClient[Any, Any], str, str],
) -> None:
    """Statistics rows, their errors, ``/ping`` and seller info validate."""
    _, client, _, token = wb
    auth = {"Authorization": token}
    stats = "/api/v1/supplier/orders"
    answers = [
        await fetch(
            client, "GET", stats, headers=auth, params={"dateFrom": "2020-01-01"}
        ),
        await fetch(client, "GET", stats, headers=auth),
        await fetch(client, "GET", stats, headers=auth, params={"dateFrom": "never"}),
        await fetch(client, "GET", stats, params={"dateFrom": "2020-01-01"}),
    ]
    for _ in range(10):
        answers.append(
            await fetch(
                client, "GET", stats, headers=auth, params={"dateFrom": "2020-01-01"}
            )
        )
    info = [await fetch(client, "GET", "/ping", headers=auth) for _ in range(4)]
    info.append(await fetch(client, "GET", "/api/v1/seller-info", headers=auth))

    reports = document("wb-reports.json")
    fallback = reports["components"]["responses"]["401"]["content"][
        "application/problem+json"
    ]["schema"]
    assert {answer.status for answer in answers} == {200, 400, 401, 429}
    assert {
        answer.content_type for answer in answers if answer.status in (401, 429)
    } == {"application/problem+json"}
    for answer in answers:
        validate("wb-reports.json", answer, fallback)
    assert [answer.status for answer in info] == [200, 200, 200, 429, 200]
    for answer in info:
        validate("wb-api-information.json", answer, fallback)


def test_wb_truth_uses_only_documented_fields() -> None:
    """Every generated order and statistics row fits its component schema exactly."""
    world = World(seed=5)
    sid = world.wb_create_seller(orders=40)
    world.change_statuses(sid, 20)
    truth = world.truth(sid)
    doc = "wb-orders-fbs.json"
    orders_schema = _array(resolve(doc, _ref("Order")))
    rows_schema = _array(resolve("wb-reports.json", _ref("OrdersItem")))

    OAS30Validator(orders_schema).validate(truth["wb_fbs"])
    OAS30Validator(rows_schema).validate(truth["wb_stats"])
    assert unknown_fields(doc, truth["wb_fbs"], orders_schema) == []
    assert unknown_fields("wb-reports.json", truth["wb_stats"], rows_schema) == []
    assert any(row["isCancel"] for row in truth["wb_stats"])


# ------------------------------------------------------------------- Ozon


@pytest.fixture
async def ozon() -> AsyncIterator[tuple[World, TestClient[Any, Any], dict[str, str]]]:
    settings = WorldSettings(ozon_rps=10)
    world = World(time_scale=0.01, seed=22, clock=lambda: 1000.0, settings=settings)
    client_id, api_key = world.ozon_create_seller(orders=40)
    world.change_statuses(client_id, 25)
    async with TestClient(TestServer(create_ozon_app(world))) as client:
        yield world, client, {"Client-Id": client_id, "Api-Key": api_key}


async def test_ozon_answers_match_the_document(
    ozon: tuple[World, TestClient[Any, Any], dict[str, str]],
) -> None:
    """Posting lists, roles, stocks and every refusal validate against the swagger."""
    world, client, auth = ozon
    doc = "ozon-seller-swagger.json"
    window = {
        "since": ozon_time(world.now() - 100 * 86400),
        "to": ozon_time(world.now()),
    }
    every = {
        "analytics_data": True,
        "financial_data": True,
        "barcodes": True,
        "legal_info": True,
    }
    fbs, fbo = "/v4/posting/fbs/list", "/v3/posting/fbo/list"
    stock = {
        "stocks": [{"offer_id": "A", "product_id": 1, "stock": 3, "warehouse_id": 2}]
    }
    answers = [
        await fetch(
            client,
            "POST",
            fbs,
            headers=auth,
            json={"limit": 50, "filter": window, "with": every},
        ),
        await fetch(
            client, "POST", fbs, headers=auth, json={"limit": 3, "filter": window}
        ),
        await fetch(
            client,
            "POST",
            fbo,
            headers=auth,
            json={"limit": 50, "filter": window, "with": every},
        ),
        await fetch(client, "POST", "/v1/roles", headers=auth, json={}),
        await fetch(client, "POST", "/v2/products/stocks", headers=auth, json=stock),
        await fetch(client, "POST", "/v2/products/stocks", headers=auth, json=stock),
        await fetch(
            client, "POST", fbs, headers=auth, json={"limit": 500, "filter": window}
        ),
        await fetch(client, "POST", fbs, headers={**auth, "Api-Key": "nope"}, json={}),
        await fetch(client, "POST", fbs, json={}),
    ]
    world.ozon_restrict_key(auth["Client-Id"], ["10.0.0.0/8"])
    answers.append(await fetch(client, "POST", fbs, headers=auth, json={}))
    world.ozon_restrict_key(auth["Client-Id"], [])
    for _ in range(5):
        answers.append(await fetch(client, "POST", "/v1/roles", headers=auth, json={}))
    world.ban("ozon-circle", f"{auth['Client-Id']}:{fbo}", 60)
    answers.append(await fetch(client, "POST", fbo, headers=auth, json={}))

    assert {answer.status for answer in answers} == {200, 400, 401, 403, 404, 429, 503}
    stocks = json.loads(answers[5].body)["result"][0]
    assert stocks["errors"][0]["code"] == "TOO_MANY_REQUESTS"
    fallback = resolve(doc, _ref("rpcStatus"))
    for answer in answers:
        validate(doc, answer, fallback)
