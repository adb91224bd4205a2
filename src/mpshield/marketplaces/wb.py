"""Wildberries: hosts, routes, limits, auth headers and the answer classifier.

Limits follow WB's own model (MARKETPLACES.md 1.3-1.4): a token bucket per
seller account, per token type, per method group. Personal, service and
base-with-secret tokens share the numbers of the main table; plain base
tokens have their own, much smaller ones.

How answers are read, and why:

- 401 whose detail names the token's scope or category: the token is valid but
  lacks this category. A configuration error, not a dead key.
- Any other 401: the token is wrong, revoked or expired (an auth failure).
- 429 carrying WB's ``X-Ratelimit-*`` headers (or a gateway body): the seller's
  budget is spent. A 429 without them did not come from WB's limiter; it is
  read as a per-address limit.
- 403 as an HTML page, any 403 from a storefront host, or a 403 whose text
  blames the source address: the address is banned. Every other 403 JSON body
  from a seller API names the method, the token, its type or a subscription
  (MARKETPLACES.md 1.6): another address would get the same answer, so it is
  a client error and no proxy is blamed for it.
- 5xx and HTML gateway pages: server errors.
- In the Marketplace category any 4XX that passed the gateway (all but 401
  and 429) is charged as 10 requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Final

from mpshield.marketplaces.base import (
    Account,
    Credentials,
    HostClass,
    MarketplaceApi,
    Outcome,
    PathRule,
    Route,
    Verdict,
    body_field,
    header,
    header_float,
    header_int,
    is_html,
    parse_body,
    rule_table,
    split_path,
    unknown_path,
)
from mpshield.marketplaces.tokens import decode_wb_token
from mpshield.protection.limiter import Bucket, Rule

NAME: Final = "wb"

HOSTS: Final[dict[str, str]] = {
    "content": "https://content-api.wildberries.ru",
    "analytics": "https://seller-analytics-api.wildberries.ru",
    "prices": "https://discounts-prices-api.wildberries.ru",
    "calendar": "https://dp-calendar-api.wildberries.ru",
    "marketplace": "https://marketplace-api.wildberries.ru",
    "statistics": "https://statistics-api.wildberries.ru",
    "promotion": "https://advert-api.wildberries.ru",
    "feedbacks": "https://feedbacks-api.wildberries.ru",
    "chat": "https://buyer-chat-api.wildberries.ru",
    "supplies": "https://supplies-api.wildberries.ru",
    "returns": "https://returns-api.wildberries.ru",
    "documents": "https://documents-api.wildberries.ru",
    "finance": "https://finance-api.wildberries.ru",
    "common": "https://common-api.wildberries.ru",
    "users": "https://user-management-api.wildberries.ru",
    "storefront": "https://card.wb.ru",
}

# The token scope each category's host checks; categories missing here take
# any token.
CATEGORY_SCOPE: Final[dict[str, str]] = {
    "content": "content",
    "analytics": "analytics",
    "prices": "prices",
    "calendar": "prices",
    "marketplace": "marketplace",
    "statistics": "statistics",
    "promotion": "promotion",
    "feedbacks": "feedbacks",
    "chat": "chat",
    "supplies": "supplies",
    "returns": "returns",
    "documents": "documents",
    "finance": "finance",
    "users": "users",
}

MINUTE: Final = 60.0
HOUR: Final = 3600.0
DAY: Final = 86400.0


def gcra(limit: int, period: float, burst: int) -> Rule:
    return Rule(kind="gcra", limit=limit, period=period, burst=burst)


# group -> (personal / service / base-with-secret rule, plain base rule)
LIMITS: Final[dict[str, tuple[Rule, Rule]]] = {
    # The intro example's 150/min burst 10 stands in for base tokens; WB's
    # table has no base split for the FBS group.
    "fbs": (gcra(300, MINUTE, 20), gcra(150, MINUTE, 10)),
    "fbs_cancel": (gcra(100, MINUTE, 20), gcra(100, MINUTE, 20)),
    "fbs_meta_add": (gcra(1000, MINUTE, 20), gcra(1000, MINUTE, 20)),
    "stocks_delete": (gcra(10, MINUTE, 2), gcra(10, MINUTE, 2)),
    "passes_create": (gcra(1, 10 * MINUTE, 1), gcra(1, 10 * MINUTE, 1)),
    "supplier_orders": (gcra(1, MINUTE, 10), gcra(1, 3 * HOUR, 1)),
    "supplier_sales": (gcra(1, MINUTE, 1), gcra(1, 2 * HOUR, 1)),
    "statistics": (gcra(1, MINUTE, 1), gcra(1, 3 * HOUR, 1)),
    "content": (gcra(100, MINUTE, 5), gcra(2, HOUR, 1)),
    "prices": (gcra(10, 6.0, 5), gcra(4, HOUR, 1)),
    "calendar": (gcra(10, 6.0, 5), gcra(4, HOUR, 1)),
    "feedbacks": (gcra(3, 1.0, 6), gcra(5, HOUR, 1)),
    # Promotion methods range from 1/min to 10/s; one request a second with a
    # burst of 5 sits inside most of them. Tighter methods: settings.limits.
    "promotion": (gcra(1, 1.0, 5), gcra(1, HOUR, 1)),
    "analytics": (gcra(3, MINUTE, 3), gcra(1, HOUR, 1)),
    "supplies": (gcra(30, MINUTE, 10), gcra(1, HOUR, 1)),
    "returns": (gcra(20, MINUTE, 10), gcra(1, HOUR, 1)),
    "documents": (gcra(1, 10.0, 5), gcra(1, HOUR, 1)),
    "finance": (gcra(1, MINUTE, 1), gcra(1, DAY, 1)),
    "common": (gcra(1, MINUTE, 10), gcra(1, DAY, 1)),
    "users": (gcra(1, 1.0, 5), gcra(1, 1.0, 5)),
    "chat": (gcra(1, 1.0, 10), gcra(1, HOUR, 1)),
    # 3 per 30 s per host, and a scheduler polling it gets it blocked.
    "ping": (gcra(3, 30.0, 3), gcra(3, 30.0, 3)),
}

EXIT_RULES: Final[dict[HostClass, Rule]] = {
    # Nothing documents per-address limits on seller APIs; this cap only keeps
    # one address from looking like a flood.
    HostClass.SELLER: gcra(1200, MINUTE, 100),
    # Storefronts count per address and check fingerprints (problem P11).
    HostClass.STOREFRONT: gcra(60, MINUTE, 10),
}

READ_METHODS: Final = frozenset({"GET", "HEAD"})
POST = frozenset({"POST"})

ROUTES: Final = rule_table(
    PathRule(r"/api/v3/orders/[^/]+/cancel", "marketplace", "fbs_cancel"),
    PathRule(
        r"/api/(marketplace/)?v3/orders/[^/]+/meta/.+",
        "marketplace",
        "fbs_meta_add",
        methods=frozenset({"PUT"}),
    ),
    PathRule(
        r"/api/v3/stocks/[^/]+",
        "marketplace",
        "stocks_delete",
        methods=frozenset({"DELETE"}),
    ),
    PathRule(r"/api/v3/passes", "marketplace", "passes_create", methods=POST),
    # POSTs of the FBS group that only read (statuses, stickers, label ids).
    PathRule(
        r"/api/v3/orders/(status|status/history|client|stickers"
        r"|stickers/cross-border)|/api/marketplace/v3/orders/meta",
        "marketplace",
        "fbs",
        methods=POST,
        read=True,
    ),
    PathRule(r"/api/v3/.+|/api/marketplace/.+", "marketplace", "fbs"),
    PathRule(r"/api/v1/supplier/orders", "statistics", "supplier_orders"),
    PathRule(r"/api/v1/supplier/sales", "statistics", "supplier_sales"),
    PathRule(r"/api/v[0-9]+/supplier/.+", "statistics", "statistics"),
    PathRule(r"/content/.+", "content", "content"),
    PathRule(r"/api/v2/(list|upload|buffer|history|quarantine)/.+", "prices", "prices"),
    PathRule(r"/api/v1/calendar/.+", "calendar", "calendar"),
    PathRule(r"/adv/.+|/api/advert/.+", "promotion", "promotion"),
    PathRule(
        r"/api/v1/(feedbacks|questions|new-feedbacks-questions)(/.*)?",
        "feedbacks",
        "feedbacks",
    ),
    PathRule(r"/api/v1/seller/(chats|events|message|download)(/.*)?", "chat", "chat"),
    PathRule(
        r"/api/v1/(supplies|acceptance|transit-tariffs)(/.*)?", "supplies", "supplies"
    ),
    PathRule(r"/api/v1/claims?(/.*)?", "returns", "returns"),
    PathRule(r"/api/v1/documents/.+", "documents", "documents"),
    PathRule(r"/api/v1/account/balance|/api/finance/.+", "finance", "finance"),
    PathRule(r"/api/v1/(users|user|invite)(/.*)?", "users", "users"),
    PathRule(
        r"/api/v2/nm-report/.+|/api/analytics/.+|/api/v1/analytics/.+"
        r"|/api/v1/(paid_storage|warehouse_remains|acceptance_report)(/.*)?"
        r"|/api/v2/stocks-report/.+",
        "analytics",
        "analytics",
    ),
    PathRule(
        r"/api/v1/seller-info|/api/communications/.+|/api/common/.+"
        r"|/api/v1/tariffs/.*",
        "common",
        "common",
    ),
    PathRule(r"/ping", "common", "ping"),
    PathRule(r"/cards/.+|/exactmatch/.+|/catalog/.+", "storefront", "storefront"),
)

# Words in a 401 detail that mean "this token lacks the category".
SCOPE_WORDS: Final = ("scope", "category", "categories")


class WildberriesApi(MarketplaceApi):
    """WB's routes, limits and answers; see the module docstring."""

    name = NAME

    def base_url(self, category: str) -> str:
        """The host of ``category``; the settings' override replaces all of them."""
        if category == "storefront":
            return self.settings.wb_storefront_base_url or HOSTS["storefront"]
        if self.settings.wb_base_url:
            return self.settings.wb_base_url
        return HOSTS[category]

    def route(self, method: str, path: str, category: str | None = None) -> Route:
        method = method.upper()
        clean = split_path(path)
        line = self.match(ROUTES, method, clean)
        if category is not None and category not in HOSTS:
            raise unknown_path(self.name, method, f"{clean} (category {category!r})")
        if line is None and category is None:
            raise unknown_path(self.name, method, clean)
        chosen = category or (line.category if line else "common")
        if line is not None and line.group == "ping":
            group = "ping"
        elif line is not None and line.category == chosen:
            group = line.group
        else:
            group = chosen
        read = method in READ_METHODS
        if line is not None and line.read is not None and line.category == chosen:
            read = line.read
        host_class = (
            HostClass.STOREFRONT if chosen == "storefront" else HostClass.SELLER
        )
        return Route(
            marketplace=self.name,
            method=method,
            path=clean,
            category=chosen,
            group=group,
            base_url=self.base_url(chosen),
            read=read,
            host_class=host_class,
        )

    def scope(self, route: Route) -> str | None:
        """The token scope ``route``'s host checks (None: any token)."""
        return CATEGORY_SCOPE.get(route.category)

    def account(self, credentials: Credentials) -> Account:
        token = decode_wb_token(credentials.api_key)
        token_class = token.token_type
        if token_class == "base" and credentials.client_secret:
            token_class = "base+secret"
        return Account(self.name, f"{token.sid}:{token_class}", token)

    def auth_headers(self, credentials: Credentials, route: Route) -> dict[str, str]:
        # A seller's token has no business on a public storefront host.
        if route.host_class is HostClass.STOREFRONT:
            return {}
        headers = {"Authorization": f"Bearer {credentials.api_key}"}
        if credentials.client_secret:
            headers["X-Client-Secret"] = credentials.client_secret
        return headers

    def account_buckets(self, route: Route, account: Account) -> list[Bucket]:
        if route.host_class is HostClass.STOREFRONT:
            return []
        normal, base = LIMITS.get(route.group, LIMITS["common"])
        default = base if account.key.endswith(":base") else normal
        rule = self.rule(route.group, default)
        group = route.group
        if group == "ping":
            # WB counts /ping per host.
            group = f"ping:{route.category}"
        return [Bucket(f"{self.name}:{account.key}:{group}", rule)]

    def exit_rules(self) -> Mapping[HostClass, Rule]:
        return EXIT_RULES

    def classify(
        self, route: Route, status: int, headers: Mapping[str, str], content: bytes
    ) -> Verdict:
        remaining = header_int(headers, "X-Ratelimit-Remaining")
        if status < 400:
            return Verdict(Outcome.OK, status, remaining=remaining)
        html = is_html(headers, content)
        body = parse_body(content)
        detail = body_field(body, "detail", "message", "title", "errorText")
        code = body_field(body, "code")
        # A 401 never passed the gateway, so it draws nothing from the bucket.
        costed = route.category == "marketplace" and status not in (401, 429)
        extra = 9 if costed and status < 500 else 0

        error = Verdict(
            Outcome.CLIENT_ERROR,
            status,
            remaining=remaining,
            code=code if isinstance(code, str | int) else None,
            detail=str(detail) if detail is not None else None,
            body=body,
            extra_cost=extra,
        )

        if status >= 500:
            return replace(error, outcome=Outcome.SERVER_ERROR)
        if status == 401:
            text = str(detail or "").lower()
            if any(word in text for word in SCOPE_WORDS):
                return replace(error, outcome=Outcome.SCOPE_FAILURE)
            return replace(error, outcome=Outcome.AUTH_FAILURE)
        if status == 429:
            hint = header_float(headers, "X-Ratelimit-Retry", "Retry-After")
            if self._from_wb_limiter(headers, body):
                return replace(
                    error, outcome=Outcome.ACCOUNT_RATE_LIMIT, retry_after=hint
                )
            return replace(error, outcome=Outcome.IP_RATE_LIMIT, retry_after=hint)
        if status == 403 and (
            html
            or route.host_class is HostClass.STOREFRONT
            or _blames_address(error.detail)
        ):
            return replace(error, outcome=Outcome.IP_BAN)
        return error

    @staticmethod
    def _from_wb_limiter(headers: Mapping[str, str], body: object) -> bool:
        for name in ("X-Ratelimit-Retry", "X-Ratelimit-Limit", "X-Ratelimit-Reset"):
            if header(headers, name) is not None:
                return True
        origin = body_field(body, "origin")
        return isinstance(origin, str) and origin.startswith("s2s-api-auth")


ADDRESS_WORDS: Final = ("address", " ip ", "ip-address", "ip address")


def _blames_address(detail: str | None) -> bool:
    text = f" {detail or ''} ".lower()
    return any(word in text for word in ADDRESS_WORDS)
