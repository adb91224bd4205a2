"""Order generation: WB assembly orders and statistics rows, Ozon FBS and FBO postings.

Every order starts from the example objects of the marketplaces' own API
documents in ``specs/`` (fitted to the documented schema: keys the schema does
not list are dropped, numeric strings become numbers where the schema says so),
then gets this seller's ids, dates, goods and prices. Everything is drawn from
a ``random.Random`` seeded per seller, so one seed gives one world.

Times: WB assembly orders carry UTC (``2026-01-10T08:00:00Z``); WB statistics
rows carry Moscow time without a zone (``2026-01-10T11:00:00``), as WB does;
Ozon carries UTC with milliseconds.
"""

from __future__ import annotations

import copy
import functools
import json
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from mpshield.redaction import get_logger

logger = get_logger(__name__)

MSK = timezone(timedelta(hours=3))
SPECS_DIR = Path(__file__).resolve().parents[3] / "specs"

# Supplier / WB status pairs an assembly order moves through.
WB_FLOW = [
    ("new", "waiting"),
    ("confirm", "waiting"),
    ("complete", "sorted"),
    ("complete", "sold"),
]
WB_CANCELS = [("cancel", "canceled"), ("new", "declined_by_client")]
OZON_FLOW = ["awaiting_packaging", "awaiting_deliver", "delivering", "delivered"]
OZON_FBS_SUBSTATUS = {
    "awaiting_packaging": "posting_created",
    "awaiting_deliver": "posting_transferring_to_delivery",
    "delivering": "posting_in_courier_service",
    "delivered": "posting_delivered",
    "cancelled": "posting_canceled",
}
OZON_FBO_SUBSTATUS = {
    "awaiting_packaging": "Awaiting packaging",
    "awaiting_deliver": "Awaiting shipping",
    "delivering": "Delivering",
    "delivered": "Delivered",
    "cancelled": "Cancelled",
}
OZON_WITH_BLOCKS = ("analytics_data", "financial_data", "barcodes", "legal_info")

_GOODS = [
    ("Сумка спортивная кожаная", "Flax Store", "Сумки", "Аксессуары", 1200),
    ("Футболка хлопковая", "Nord Line", "Футболки", "Одежда", 990),
    ("Кружка керамическая 350 мл", "Домик", "Кружки", "Дом", 450),
    ("Наушники беспроводные", "Soundy", "Наушники", "Электроника", 3490),
    ("Рюкзак городской", "Flax Store", "Рюкзаки", "Аксессуары", 2790),
    ("Чехол для смартфона", "Caseroom", "Чехлы", "Электроника", 590),
]
_WB_WAREHOUSES = [
    ("Коледино", "Склад WB"),
    ("Казань", "Склад WB"),
    ("Подольск", "Склад WB"),
]
_REGIONS = [
    ("Россия", "Центральный федеральный округ", "Москва"),
    ("Россия", "Приволжский федеральный округ", "Республика Татарстан"),
    ("Россия", "Северо-Западный федеральный округ", "Санкт-Петербург"),
]
_CITIES = ["Москва", "Казань", "Санкт-Петербург", "Екатеринбург"]


def wb_time(moment: float) -> str:
    """UTC RFC3339 with seconds, as WB's Marketplace API writes it."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def msk_time(moment: float) -> str:
    """Moscow time without a zone, as WB's statistics API writes it."""
    return datetime.fromtimestamp(moment, MSK).strftime("%Y-%m-%dT%H:%M:%S")


def ozon_time(moment: float) -> str:
    """UTC with milliseconds, as Ozon writes it."""
    stamp = datetime.fromtimestamp(moment, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


# --------------------------------------------------------------------------
# Templates from the API documents


@functools.cache
def load_spec(name: str) -> dict[str, Any]:
    """One API document from ``specs/``, or an empty one when it is not shipped."""
    path = SPECS_DIR / name
    try:
        with path.open(encoding="utf-8") as handle:
            data: dict[str, Any] = json.load(handle)
    except OSError:
        logger.warning("API document %s not found; using built-in templates", name)
        return {}
    return data


class _Drop:
    """Marks a value that does not fit its schema."""


_DROP = _Drop()


def fit(value: Any, schema: dict[str, Any], spec: dict[str, Any]) -> Any:
    """``value`` reduced to what ``schema`` allows, or ``_DROP``."""
    while "$ref" in schema:
        schema = spec_ref(spec, schema["$ref"])
    if value is None:
        return None if schema.get("nullable") else _DROP
    if "enum" in schema and value not in schema["enum"]:
        return _DROP
    kind = schema.get("type") or (
        "object" if "properties" in schema else "array" if "items" in schema else None
    )
    if kind == "object":
        return _fit_object(value, schema, spec)
    if kind == "array":
        if not isinstance(value, list):
            return _DROP
        fitted = [fit(item, schema.get("items", {}), spec) for item in value]
        return [item for item in fitted if item is not _DROP]
    return _fit_scalar(value, kind)


def _fit_object(value: Any, schema: dict[str, Any], spec: dict[str, Any]) -> Any:
    if not isinstance(value, dict):
        return _DROP
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        return _DROP
    out = {}
    for key, item in value.items():
        if key in properties:
            fitted = fit(item, properties[key], spec)
            if fitted is not _DROP:
                out[key] = fitted
    return out


def _fit_scalar(value: Any, kind: str | None) -> Any:
    if isinstance(value, bool):
        return value if kind in ("boolean", None) else _DROP
    if kind == "integer":
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
        return _DROP
    if kind == "number":
        if isinstance(value, int | float):
            return value
        try:
            return float(value)
        except (TypeError, ValueError):
            return _DROP
    if kind == "string":
        return value if isinstance(value, str) else _DROP
    if kind == "boolean":
        return _DROP
    return value


def spec_ref(spec: dict[str, Any], ref: str) -> dict[str, Any]:
    """Resolve a local ``#/components/...`` reference."""
    node: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return dict(node)


def _schema_example(schema: dict[str, Any], spec: dict[str, Any]) -> Any:
    """An object built from the ``example`` of each property."""
    while "$ref" in schema:
        schema = spec_ref(spec, schema["$ref"])
    if "example" in schema:
        return schema["example"]
    if isinstance(schema.get("properties"), dict):
        built = {
            key: _schema_example(sub, spec) for key, sub in schema["properties"].items()
        }
        return {key: value for key, value in built.items() if value is not None}
    if isinstance(schema.get("items"), dict):
        item = _schema_example(schema["items"], spec)
        return None if item is None else [item]
    return None


@functools.cache
def wb_order_template(schema_name: str) -> dict[str, Any]:
    """An assembly order from the examples of the ``Order`` / ``OrderNew`` schema."""
    spec = load_spec("wb-orders-fbs.json")
    schema = spec.get("components", {}).get("schemas", {}).get(schema_name)
    if not schema:
        return {}
    example = _schema_example(schema, spec)
    fitted = fit(example, schema, spec)
    return dict(fitted) if isinstance(fitted, dict) else {}


@functools.cache
def wb_order_fields(schema_name: str) -> frozenset[str]:
    """The property names of a WB order schema (which fields each method returns)."""
    spec = load_spec("wb-orders-fbs.json")
    schema = spec.get("components", {}).get("schemas", {}).get(schema_name, {})
    return frozenset(schema.get("properties", {})) or frozenset(_WB_FALLBACK_FIELDS)


_WB_FALLBACK_FIELDS = [
    *("address", "article", "cargoType", "chrtId", "colorCode", "comment"),
    *("convertedCurrencyCode", "convertedPrice", "createdAt", "crossBorderType"),
    *("currencyCode", "deliveryType", "id", "isZeroOrder", "nmId", "officeId"),
    *("offices", "options", "orderUid", "price", "rid", "scanPrice", "skus"),
    *("supplyId", "warehouseId"),
]


@functools.cache
def ozon_posting_template(path: str, schema_name: str) -> dict[str, Any]:
    """A posting from the example answer of an Ozon list method, fitted to its schema."""
    spec = load_spec("ozon-seller-swagger.json")
    try:
        content = spec["paths"][path]["post"]["responses"]["200"]["content"]
        example = content["application/json"]["example"]
        schema = spec["components"]["schemas"][schema_name]
    except KeyError:
        return {}
    # One of the examples still wears the old ``result`` wrapper.
    postings = example.get("postings") or example.get("result", {}).get("postings", [])
    if not postings:
        return {}
    fitted = fit(postings[0], schema, spec)
    return dict(fitted) if isinstance(fitted, dict) else {}


# --------------------------------------------------------------------------
# Generators


class Catalogue:
    """A seller's goods: the same few products keep being ordered."""

    def __init__(self, rng: random.Random, size: int = 6) -> None:
        self.items: list[dict[str, Any]] = []
        for index in range(size):
            name, brand, subject, category, price = _GOODS[index % len(_GOODS)]
            nm_id = rng.randrange(10_000_000, 400_000_000)
            self.items.append(
                {
                    "nmId": nm_id,
                    "chrtId": rng.randrange(100_000_000, 999_999_999),
                    "article": f"{brand[:3].lower()}-{nm_id % 100000:05d}",
                    "barcode": str(rng.randrange(2_000_000_000_000, 2_999_999_999_999)),
                    "name": name,
                    "brand": brand,
                    "subject": subject,
                    "category": category,
                    "price": price * (1 + index // len(_GOODS)),
                    "sku": rng.randrange(100_000_000, 3_000_000_000),
                    "size": rng.choice(["0", "S", "M", "L", "42"]),
                }
            )

    def pick(self, rng: random.Random) -> dict[str, Any]:
        return rng.choice(self.items)


class WbOrderFactory:
    """WB assembly orders and the statistics rows that describe them."""

    def __init__(self, rng: random.Random, next_id: Callable[[], int]) -> None:
        self._rng = rng
        self._next_id = next_id
        self.catalogue = Catalogue(rng)
        self.warehouse_id = rng.randrange(100_000, 999_999)
        self.office_id = rng.randrange(100, 999)
        self._template = wb_order_template("OrderNew") or wb_order_template("Order")

    def assembly_order(self, created: float) -> dict[str, Any]:
        """A new FBS assembly order with every field either list method may show."""
        rng = self._rng
        item = self.catalogue.pick(rng)
        price = int(item["price"] * rng.uniform(0.6, 1.0)) * 100
        order = dict(self._template)
        order.update(
            {
                "address": None,
                "article": item["article"],
                "cargoType": 1,
                "chrtId": item["chrtId"],
                "colorCode": "",
                "comment": "",
                "convertedCurrencyCode": 643,
                "convertedPrice": price,
                "convertedFinalPrice": price,
                "createdAt": wb_time(created),
                "crossBorderType": 0,
                "currencyCode": 643,
                "deliveryType": "fbs",
                "finalPrice": price,
                "id": self._next_id(),
                "isPickupPointShipmentAllowed": rng.random() < 0.5,
                "isZeroOrder": False,
                "nmId": item["nmId"],
                "officeId": self.office_id,
                "offices": [rng.choice(_CITIES)],
                "optionalMeta": [],
                "options": {"isB2B": rng.random() < 0.05},
                "orderUid": f"{rng.randrange(10**8, 10**9)}_{uuid.UUID(int=rng.getrandbits(128)).hex}",
                "price": price,
                "requiredMeta": [],
                "rid": uuid.UUID(int=rng.getrandbits(128)).hex,
                "salePrice": price,
                "scanPrice": None,
                "skus": [item["barcode"]],
                "warehouseId": self.warehouse_id,
            }
        )
        order.pop("ddate", None)
        order.pop("sellerDate", None)
        order.pop("supplyId", None)
        return order

    def stats_row(
        self, order: dict[str, Any] | None, created: float, changed: float
    ) -> dict[str, Any]:
        """The statistics row of an order; ``order`` None makes a WB-warehouse order."""
        rng = self._rng
        if order is None:
            item = self.catalogue.pick(rng)
            srid = uuid.UUID(int=rng.getrandbits(128)).hex
            warehouse, kind = rng.choice(_WB_WAREHOUSES)
            g_number = str(rng.randrange(10**18, 10**19))
        else:
            item = next(
                (
                    entry
                    for entry in self.catalogue.items
                    if entry["nmId"] == order["nmId"]
                ),
                self.catalogue.items[0],
            )
            srid = order["rid"]
            warehouse, kind = "Склад продавца", "Склад продавца"
            g_number = order["orderUid"].split("_")[0]
        total = float(item["price"])
        discount = rng.choice([0, 10, 20, 30])
        with_disc = round(total * (100 - discount) / 100, 2)
        spp = float(rng.choice([0, 5, 10]))
        country, okrug, region = rng.choice(_REGIONS)
        return {
            "date": msk_time(created),
            "lastChangeDate": msk_time(changed),
            "warehouseName": warehouse,
            "warehouseType": kind,
            "countryName": country,
            "oblastOkrugName": okrug,
            "regionName": region,
            "supplierArticle": item["article"],
            "nmId": item["nmId"],
            "barcode": item["barcode"],
            "category": item["category"],
            "subject": item["subject"],
            "brand": item["brand"],
            "techSize": item["size"],
            "incomeID": rng.randrange(10**6, 10**8) if order is None else 0,
            "isSupply": False,
            "isRealization": True,
            "totalPrice": total,
            "discountPercent": discount,
            "spp": spp,
            "finishedPrice": round(with_disc * (100 - spp) / 100, 2),
            "priceWithDisc": with_disc,
            "isCancel": False,
            "cancelDate": "0001-01-01T00:00:00",
            "sticker": "" if order is None else str(rng.randrange(10**9, 10**10)),
            "gNumber": g_number,
            "srid": srid,
        }


class OzonPostingFactory:
    """Ozon postings for one seller, FBS and FBO."""

    def __init__(self, rng: random.Random, next_id: Callable[[], int]) -> None:
        self._rng = rng
        self._next_id = next_id
        self.catalogue = Catalogue(rng)
        self.warehouse_id = rng.randrange(10**13, 10**14)
        self._fbs = ozon_posting_template(
            "/v4/posting/fbs/list", "posting.v4.PostingFbsListResponse.Postings"
        )
        self._fbo = ozon_posting_template(
            "/v3/posting/fbo/list", "posting.v3.PostingFboListResponse.Postings"
        )

    def _numbers(self) -> tuple[int, str, str]:
        order_id = self._next_id()
        order_number = (
            f"{self._rng.randrange(10**7, 10**8):08d}-{self._rng.randrange(10**4):04d}"
        )
        return order_id, order_number, f"{order_number}-1"

    def fbs(self, created: float) -> dict[str, Any]:
        """A new FBS posting, with every optional block filled."""
        rng = self._rng
        item = self.catalogue.pick(rng)
        quantity = rng.choice([1, 1, 1, 2])
        order_id, order_number, posting_number = self._numbers()
        price = f"{item['price']:.4f}"
        posting: dict[str, Any] = copy.deepcopy(self._fbs)
        posting.update(
            {
                "posting_number": posting_number,
                "order_id": order_id,
                "order_number": order_number,
                "status": "awaiting_packaging",
                "substatus": OZON_FBS_SUBSTATUS["awaiting_packaging"],
                "delivery_method": {
                    "id": self.warehouse_id + 1,
                    "name": "Ozon самостоятельно, Софьино",
                    "tpl_provider": "Ozon Логистика",
                    "tpl_provider_id": 24,
                    "warehouse": "Основной склад",
                    "warehouse_id": self.warehouse_id,
                },
                "delivery_schema": "fbs",
                "tracking_number": "",
                "tpl_integration_type": "ozon",
                "in_process_at": ozon_time(created),
                "shipment_date": ozon_time(created + 86400),
                "cancellation": _no_cancellation(),
                "products": [
                    {
                        "sku": item["sku"],
                        "name": item["name"],
                        "offer_id": item["article"],
                        "price": {"amount": price, "currency": "RUB"},
                        "quantity": quantity,
                        "imei": [],
                        "is_blr_traceable": False,
                        "is_marketplace_buyout": False,
                    }
                ],
                "analytics_data": {
                    "city": rng.choice(_CITIES),
                    "delivery_type": "PVZ",
                    "is_legal": False,
                    "is_premium": rng.random() < 0.2,
                    "payment_type_group_name": "Карты оплаты",
                    "region": "",
                    "tpl_provider": "Ozon Логистика",
                    "tpl_provider_id": 24,
                    "warehouse": "Основной склад",
                    "warehouse_id": self.warehouse_id,
                },
                "financial_data": _financial(item, quantity, "", rng.choice(_CITIES)),
                "barcodes": {
                    "upper_barcode": str(rng.randrange(10**14, 10**15)),
                    "lower_barcode": str(rng.randrange(10**14, 10**15)),
                },
                "legal_info": {"company_name": "", "inn": "", "kpp": ""},
            }
        )
        posting.pop("delivering_date", None)
        posting.pop("pickup_code_verified_at", None)
        return posting

    def fbo(self, created: float) -> dict[str, Any]:
        """A new FBO posting, with every optional block filled."""
        rng = self._rng
        item = self.catalogue.pick(rng)
        quantity = rng.choice([1, 1, 2])
        order_id, order_number, posting_number = self._numbers()
        posting: dict[str, Any] = copy.deepcopy(self._fbo)
        posting.update(
            {
                "order_id": order_id,
                "order_number": order_number,
                "posting_number": posting_number,
                "status": "awaiting_packaging",
                "substatus": OZON_FBO_SUBSTATUS["awaiting_packaging"],
                "cancel_reason_id": 0,
                "created_at": ozon_time(created),
                "in_process_at": ozon_time(created),
                "products": [
                    {
                        "sku": item["sku"],
                        "name": item["name"],
                        "quantity": quantity,
                        "offer_id": item["article"],
                        "price": {"amount": f"{item['price']:.2f}", "currency": "RUB"},
                        "digital_codes": [],
                        "is_marketplace_buyout": False,
                    }
                ],
                "analytics_data": {
                    "city": rng.choice(_CITIES),
                    "delivery_type": "PVZ",
                    "is_legal": False,
                    "is_premium": False,
                    "payment_type_group_name": "Карты оплаты",
                    "warehouse_id": self.warehouse_id + 7,
                    "warehouse_name": "Хоругвино",
                },
                "financial_data": _financial(
                    item, quantity, "MOW", rng.choice(_CITIES)
                ),
                "legal_info": {"company_name": "", "inn": "", "kpp": ""},
                "cancellation": {
                    "cancel_reason": "",
                    "cancellation_type": "",
                    "cancellation_initiator": "",
                },
                "additional_data": [],
            }
        )
        for product in posting["financial_data"]["products"]:
            product.pop("quantity", None)
            product.pop("customer_price", None)
        return posting


def _no_cancellation() -> dict[str, Any]:
    return {
        "affect_cancellation_rating": False,
        "cancel_reason": "",
        "cancel_reason_id": 0,
        "cancellation_initiator": "",
        "cancellation_type": "",
        "cancelled_after_ship": False,
    }


def _financial(
    item: dict[str, Any], quantity: int, origin: str, target: str
) -> dict[str, Any]:
    price = float(item["price"])
    return {
        "cluster_from": origin,
        "cluster_to": target,
        "products": [
            {
                "actions": [],
                "commission": {
                    "amount": round(price * 0.15, 2),
                    "currency": "RUB",
                    "percent": 15,
                },
                "old_price": price,
                "payout": round(price * 0.85, 2),
                "price": price,
                "product_id": item["sku"],
                "quantity": quantity,
                "total_discount_percent": 0.0,
                "total_discount_value": 0.0,
            }
        ],
    }


def ozon_cancel(posting: dict[str, Any], fbo: bool, initiator: str = "Client") -> None:
    """Mark a posting cancelled the way Ozon shows it."""
    posting["status"] = "cancelled"
    posting["substatus"] = (OZON_FBO_SUBSTATUS if fbo else OZON_FBS_SUBSTATUS)[
        "cancelled"
    ]
    if fbo:
        posting["cancel_reason_id"] = 352
        posting["cancellation"] = {
            "cancel_reason": "Покупатель отменил заказ",
            "cancellation_type": "client",
            "cancellation_initiator": initiator,
        }
    else:
        posting["cancellation"] = {
            "affect_cancellation_rating": False,
            "cancel_reason": "Покупатель отменил заказ",
            "cancel_reason_id": 352,
            "cancellation_initiator": initiator,
            "cancellation_type": "client",
            "cancelled_after_ship": False,
        }


def ozon_advance(posting: dict[str, Any], fbo: bool) -> bool:
    """Move a posting one step along its flow; False when it has nowhere to go."""
    status = posting["status"]
    if status not in OZON_FLOW or status == OZON_FLOW[-1]:
        return False
    posting["status"] = OZON_FLOW[OZON_FLOW.index(status) + 1]
    posting["substatus"] = (OZON_FBO_SUBSTATUS if fbo else OZON_FBS_SUBSTATUS)[
        posting["status"]
    ]
    return True
