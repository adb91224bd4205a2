"""Ozon: the host, routes, limits, auth headers and the answer classifier.

Ozon counts 50 requests a second per Client-Id over all methods, with method
limits on top (MARKETPLACES.md 2.2). Every request takes the overall window
and a window of its own method: the method's documented limit, or the overall
number where none is documented. A method's own window is what a
``Circle is open`` answer (Ozon's per-method breaker) cools down, so one
overloaded method does not stall the others.

Almost every method is a POST, so whether a request only reads comes from the
path: list, get, info and similar methods, ``/v1/roles`` and the analytics
reads. Everything else is a write and is sent once.

How answers are read, and why:

- 429 with ``code`` 8: the Client-Id's budget is spent; ``retry-after`` is the hint.
  A 429 without it did not come from Ozon's limiter: a per-address limit.
- ``Circle is open`` in any error: the method is overloaded for a few minutes.
- 404 with ``code`` 5 whose message is about the Api-Key or Client-Id (invalid
  or deactivated key), and any 401 (code 16, missing or unknown credentials):
  an auth failure. The client always sends both headers, so a 401 means Ozon
  does not accept them. Code 5 is gRPC's NOT_FOUND, so a 404 code 5 about
  anything else (a posting that does not exist) is a plain client error and
  must never count against the key.
- 403 as an HTML page, or a JSON one saying access from this address is
  restricted: the address is banned. A 403 JSON naming a missing role is a
  scope failure for the category. Other 403 JSON bodies are client errors that
  no proxy causes: a key bound to other networks is the key's configuration
  (quarantining the proxy would punish every other shop on it), and a
  Client-Id restricted for erroneous requests or an unsigned offer is the
  account's.
- 5xx and HTML gateway pages: server errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Final

from mpshield.exceptions import ConfigurationError
from mpshield.marketplaces.base import (
    Account,
    Credentials,
    HostClass,
    MarketplaceApi,
    Outcome,
    Route,
    Verdict,
    body_field,
    header_float,
    header_int,
    is_html,
    parse_body,
    split_path,
)
from mpshield.protection.limiter import Bucket, Rule

NAME: Final = "ozon"
HOST: Final = "https://api-seller.ozon.ru"

MINUTE: Final = 60.0
HOUR: Final = 3600.0
DAY: Final = 86400.0


def window(limit: int, period: float) -> Rule:
    return Rule(kind="window", limit=limit, period=period)


OVERALL: Final = window(50, 1.0)

# path -> [(group, rule)]; a path may have several windows.
METHOD_LIMITS: Final[dict[str, tuple[tuple[str, Rule], ...]]] = {
    "/v2/products/stocks": (("products_stocks", window(80, MINUTE)),),
    "/v1/analytics/data": (("analytics_data", window(1, MINUTE)),),
    "/v1/analytics/turnover/stocks": (("analytics_turnover", window(1, MINUTE)),),
    "/v1/barcode/add": (("barcode_add", window(20, MINUTE)),),
    "/v1/barcode/generate": (("barcode_generate", window(20, MINUTE)),),
    "/v1/report/discounted/create": (("report_discounted", window(1, MINUTE)),),
    "/v1/report/placement/by-products/create": (
        ("report_placement_products", window(5, DAY)),
    ),
    "/v1/report/placement/by-supplies/create": (
        ("report_placement_supplies", window(5, DAY)),
    ),
    "/v1/draft/create": (
        ("draft_create", window(2, MINUTE)),
        ("draft_create_hourly", window(50, HOUR)),
    ),
}

# POST methods that only read, beyond the list/get/info naming pattern.
READ_PATHS: Final = frozenset(
    {
        "/v1/roles",
        "/v1/analytics/data",
        "/v1/analytics/turnover/stocks",
        "/v1/analytics/stock_on_warehouses",
        "/v4/product/info/stocks",
        "/v5/product/info/prices",
        "/v3/posting/fbs/get",
        "/v2/posting/fbo/get",
        "/v1/report/info",
        "/v1/warehouse/list",
        "/v3/finance/transaction/totals",
    }
)
READ_SUFFIX: Final = re.compile(
    r".*/(list|get|info|tree|count|search|totals|attribute/values|attributes)"
)

EXIT_RULES: Final[dict[HostClass, Rule]] = {
    # Ozon documents no per-address limit; this cap keeps one address from
    # looking like a flood (several Client-Ids may share it).
    HostClass.SELLER: Rule(kind="gcra", limit=200, period=1.0, burst=50),
}

CATEGORY_ALIASES: Final = {"products": "product", "postings": "posting"}
VERSION = re.compile(r"/v[0-9]+/")


class OzonApi(MarketplaceApi):
    """Ozon's routes, limits and answers; see the module docstring."""

    name = NAME

    def base_url(self) -> str:
        return self.settings.ozon_base_url or HOST

    def route(self, method: str, path: str, category: str | None = None) -> Route:
        method = method.upper()
        clean = split_path(path)
        if category is None:
            category = self.category(clean)
        return Route(
            marketplace=self.name,
            method=method,
            path=clean,
            category=category,
            group=clean,
            base_url=self.base_url(),
            read=self.is_read(method, clean),
        )

    @staticmethod
    def category(path: str) -> str:
        """The API area of a path: ``/v4/posting/fbs/list`` -> ``posting``.

        Raises:
            ConfigurationError: The path has no ``/v<N>/<area>`` shape.
        """
        if VERSION.match(path) is None:
            raise ConfigurationError(
                f"ozon: {path} is not a /v<N>/ method path; pass category="
            )
        area = path.split("/")[2]
        return CATEGORY_ALIASES.get(area, area)

    @staticmethod
    def is_read(method: str, path: str) -> bool:
        if method in ("GET", "HEAD"):
            return True
        return path in READ_PATHS or READ_SUFFIX.fullmatch(path) is not None

    def account(self, credentials: Credentials) -> Account:
        if not credentials.client_id:
            raise ConfigurationError("ozon: the shop has no Client-Id")
        return Account(self.name, credentials.client_id)

    def auth_headers(self, credentials: Credentials, route: Route) -> dict[str, str]:
        return {
            "Client-Id": credentials.client_id or "",
            "Api-Key": credentials.api_key,
        }

    def account_buckets(self, route: Route, account: Account) -> list[Bucket]:
        prefix = f"{self.name}:{account.key}"
        buckets = [Bucket(f"{prefix}:all", self.rule("all", OVERALL))]
        documented = METHOD_LIMITS.get(route.path)
        if documented is None:
            rule = self.rule("method", OVERALL)
            buckets.append(Bucket(f"{prefix}:method:{route.path}", rule))
        else:
            for group, default in documented:
                rule = self.rule(group, default)
                buckets.append(Bucket(f"{prefix}:method:{route.path}:{group}", rule))
        return buckets

    def cool_bucket(self, route: Route, account: Account, verdict: Verdict) -> Bucket:
        buckets = self.account_buckets(route, account)
        return buckets[1] if verdict.method_scoped else buckets[0]

    def exit_rules(self) -> Mapping[HostClass, Rule]:
        return EXIT_RULES

    def classify(
        self, route: Route, status: int, headers: Mapping[str, str], content: bytes
    ) -> Verdict:
        remaining = header_int(headers, "ratelimit-remaining", "X-Ratelimit-Remaining")
        if status < 400:
            return Verdict(Outcome.OK, status, remaining=remaining)
        body = parse_body(content)
        code = body_field(body, "code")
        message = body_field(body, "message", "error")
        text = str(message or "").lower()
        error = Verdict(
            Outcome.CLIENT_ERROR,
            status,
            remaining=remaining,
            code=code if isinstance(code, str | int) else None,
            detail=str(message) if message is not None else None,
            body=body,
        )
        hint = header_float(headers, "retry-after", "X-Ratelimit-Retry")

        if "circle is open" in text:
            return replace(
                error,
                outcome=Outcome.ACCOUNT_RATE_LIMIT,
                retry_after=hint if hint is not None else MINUTE,
                method_scoped=True,
            )
        if status >= 500:
            return replace(error, outcome=Outcome.SERVER_ERROR)
        if status == 429:
            outcome = Outcome.ACCOUNT_RATE_LIMIT if code == 8 else Outcome.IP_RATE_LIMIT
            return replace(error, outcome=outcome, retry_after=hint)
        if status == 401 or (status == 404 and code == 5 and _about_key(text)):
            return replace(error, outcome=Outcome.AUTH_FAILURE)
        if status == 403:
            if is_html(headers, content) or (
                "address" in text and not _about_key(text)
            ):
                return replace(error, outcome=Outcome.IP_BAN)
            if "role" in text:
                return replace(error, outcome=Outcome.SCOPE_FAILURE)
        return error


KEY_WORDS: Final = (
    "api-key",
    "api key",
    "apikey",
    "client-id",
    "client id",
    "clientid",
)


def _about_key(text: str) -> bool:
    return any(word in text for word in KEY_WORDS)
