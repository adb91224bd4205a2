"""Marketplace knowledge: routes, limits, bucket identity, auth headers, token
decoding and the classifier, on answers shaped like WB's and Ozon's own."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import pytest

from mpshield.exceptions import ConfigurationError
from mpshield.marketplaces import get_api
from mpshield.marketplaces.base import (
    Credentials,
    HostClass,
    Outcome,
    is_html,
)
from mpshield.marketplaces.ozon import OzonApi
from mpshield.marketplaces.tokens import SCOPE_BITS, decode_wb_token
from mpshield.marketplaces.wb import WildberriesApi
from mpshield.protection.limiter import Rule
from mpshield.settings import LimitOverride, Settings, load_settings
from mpshield.transport.session import Headers

GATEWAY_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


def wb_token(
    sid: str | None = None,
    *,
    scopes: tuple[str, ...] = ("marketplace", "statistics"),
    acc: int = 3,
    exp: float | None = None,
    read_only: bool = False,
) -> str:
    """A WB-shaped JWT signed with a throwaway key (we never check signatures)."""
    mask = sum(1 << SCOPE_BITS[name] for name in scopes) | (read_only << 30)
    claims: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "s": mask,
        "sid": sid or str(uuid.uuid4()),
        "exp": int(exp if exp is not None else time.time() + 86400),
        "acc": acc,
        "t": acc == 2,
    }
    return jwt.encode(claims, "not-the-real-key-" * 3, algorithm="HS256")


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


@pytest.fixture(name="plain")
def fixture_plain() -> Settings:
    return load_settings()


@pytest.fixture(name="wb")
def fixture_wb(plain: Settings) -> WildberriesApi:
    return WildberriesApi(plain)


@pytest.fixture(name="ozon")
def fixture_ozon(plain: Settings) -> OzonApi:
    return OzonApi(plain)


class TestTokens:
    def test_claims_are_read_without_the_signing_key(self) -> None:
        """Seller, scopes, type and expiry come from the payload alone."""
        token = decode_wb_token(wb_token("seller-1", scopes=("content",), acc=4))
        assert token.sid == "seller-1"
        assert token.scopes == frozenset({"content"})
        assert token.token_type == "service"
        assert token.readable and not token.read_only
        assert token.allows("content") and not token.allows("marketplace")
        assert token.allows("common")

    def test_expiry(self) -> None:
        """A token whose exp has passed is expired; a fresh one is not."""
        assert decode_wb_token(wb_token(exp=time.time() - 5)).expired()
        assert not decode_wb_token(wb_token()).expired()

    def test_read_only_and_test_types(self) -> None:
        """Bit 30 marks a read-only token; acc=2 / t=true a test token."""
        token = decode_wb_token(wb_token(read_only=True, acc=2))
        assert token.read_only
        assert token.token_type == "test"

    def test_opaque_token(self) -> None:
        """A value that is not a JWT still gets a stable identity and no checks."""
        first = decode_wb_token("definitely-not-a-jwt")
        assert not first.readable
        assert first.sid == decode_wb_token("definitely-not-a-jwt").sid
        assert first.allows("marketplace")
        assert "definitely" not in repr(first)


class TestWbRoutes:
    @pytest.mark.parametrize(
        ("method", "path", "category", "group", "read"),
        [
            ("GET", "/api/v3/orders", "marketplace", "fbs", True),
            ("GET", "/api/v3/orders/new", "marketplace", "fbs", True),
            ("POST", "/api/v3/orders/status", "marketplace", "fbs", True),
            ("POST", "/api/v3/supplies", "marketplace", "fbs", False),
            ("PATCH", "/api/v3/orders/123/cancel", "marketplace", "fbs_cancel", False),
            (
                "PUT",
                "/api/v3/orders/5/meta/sgtin",
                "marketplace",
                "fbs_meta_add",
                False,
            ),
            ("DELETE", "/api/v3/stocks/7", "marketplace", "stocks_delete", False),
            ("GET", "/api/v1/supplier/orders", "statistics", "supplier_orders", True),
            ("GET", "/api/v1/supplier/sales", "statistics", "supplier_sales", True),
            ("GET", "/api/v1/supplier/stocks", "statistics", "statistics", True),
            ("POST", "/content/v2/get/cards/list", "content", "content", False),
            ("GET", "/api/v1/seller-info", "common", "common", True),
            ("GET", "/api/v1/feedbacks", "feedbacks", "feedbacks", True),
            ("GET", "/cards/v4/detail", "storefront", "storefront", True),
        ],
    )
    def test_table(
        self,
        wb: WildberriesApi,
        method: str,
        path: str,
        category: str,
        group: str,
        read: bool,
    ) -> None:
        """Each path lands in its category and limit group; GETs and read POSTs are reads."""
        route = wb.route(method, path)
        assert (route.category, route.group, route.read) == (category, group, read)

    def test_real_hosts_by_default(self, wb: WildberriesApi) -> None:
        """Without overrides every category goes to WB's own host."""
        assert wb.route("GET", "/api/v3/orders").url == (
            "https://marketplace-api.wildberries.ru/api/v3/orders"
        )
        assert wb.route("GET", "/api/v1/supplier/orders").base_url == (
            "https://statistics-api.wildberries.ru"
        )
        assert wb.route("GET", "/cards/v4/detail").host_class is HostClass.STOREFRONT

    def test_override_replaces_every_seller_host(self) -> None:
        """wb_base_url sends all seller categories to one gateway; the storefront has its own."""
        api = WildberriesApi(
            load_settings(
                wb_base_url="https://127.0.0.1:8443",
                wb_storefront_base_url="https://127.0.0.1:8444",
            )
        )
        assert api.route("GET", "/api/v3/orders?x=1").url == (
            "https://127.0.0.1:8443/api/v3/orders"
        )
        assert api.route("GET", "/content/v2/x").base_url == "https://127.0.0.1:8443"
        assert api.route("GET", "/cards/v4/detail").base_url == "https://127.0.0.1:8444"

    def test_ping_counts_per_host(self, wb: WildberriesApi) -> None:
        """/ping is its own group, on the host of the category asked for."""
        route = wb.route("GET", "/ping", category="marketplace")
        assert route.group == "ping"
        assert route.base_url == "https://marketplace-api.wildberries.ru"
        account = wb.account(Credentials(wb_token("s")))
        [bucket] = wb.account_buckets(route, account)
        assert bucket.name.endswith("ping:marketplace")

    def test_unknown_path_needs_a_category(self, wb: WildberriesApi) -> None:
        """An unknown path is refused before any request; a category makes it routable."""
        with pytest.raises(ConfigurationError):
            wb.route("GET", "/api/v9/nothing")
        assert wb.route("GET", "/api/v9/nothing", category="finance").group == "finance"
        with pytest.raises(ConfigurationError):
            wb.route("GET", "/api/v9/nothing", category="no-such-category")


class TestWbLimits:
    def test_documented_rules(self, wb: WildberriesApi) -> None:
        """Personal tokens get the main table, plain base tokens their own rows."""
        orders = wb.route("GET", "/api/v1/supplier/orders")
        personal = wb.account(Credentials(wb_token("s", acc=3)))
        base = wb.account(Credentials(wb_token("s", acc=1)))
        assert wb.account_buckets(orders, personal)[0].rule == Rule("gcra", 1, 60.0, 10)
        assert wb.account_buckets(orders, base)[0].rule == Rule("gcra", 1, 10800.0, 1)
        fbs = wb.route("GET", "/api/v3/orders")
        assert wb.account_buckets(fbs, personal)[0].rule == Rule("gcra", 300, 60.0, 20)

    def test_base_token_with_secret_uses_the_main_table(
        self, wb: WildberriesApi
    ) -> None:
        """A service secret restores normal limits and gets a bucket of its own."""
        token = wb_token("s", acc=1)
        plain = wb.account(Credentials(token))
        secret = wb.account(Credentials(token, client_secret="secret-value-1"))
        orders = wb.route("GET", "/api/v1/supplier/orders")
        assert wb.account_buckets(orders, secret)[0].rule.period == 60.0
        assert wb.account_buckets(orders, secret)[0].name != (
            wb.account_buckets(orders, plain)[0].name
        )

    def test_settings_override(self) -> None:
        """settings.limits replaces a group's rule, keeping its algorithm."""
        api = WildberriesApi(
            load_settings(
                limits={"wb.fbs": LimitOverride(limit=5, period=1.0, burst=2)}
            )
        )
        account = api.account(Credentials(wb_token("s")))
        [bucket] = api.account_buckets(api.route("GET", "/api/v3/orders"), account)
        assert bucket.rule == Rule("gcra", 5, 1.0, 2)

    def test_exit_buckets_per_host_class(self, wb: WildberriesApi) -> None:
        """Each exit has one bucket per host class; storefronts are stricter."""
        seller = wb.exit_bucket(wb.route("GET", "/api/v3/orders"), "proxy-1")
        front = wb.exit_bucket(wb.route("GET", "/cards/v4/detail"), "proxy-1")
        assert seller.name != front.name
        assert (
            front.rule.limit / front.rule.period
            < seller.rule.limit / seller.rule.period
        )


class TestBucketIdentity:
    def test_two_shops_of_one_wb_seller_share(self, wb: WildberriesApi) -> None:
        """Two tokens of one seller and type draw on one bucket."""
        route = wb.route("GET", "/api/v3/orders")
        sid = str(uuid.uuid4())
        first = wb.account_buckets(route, wb.account(Credentials(wb_token(sid))))
        second = wb.account_buckets(route, wb.account(Credentials(wb_token(sid))))
        assert [b.name for b in first] == [b.name for b in second]

    def test_token_types_have_independent_budgets(self, wb: WildberriesApi) -> None:
        """A personal and a service token of one seller do not share."""
        route = wb.route("GET", "/api/v3/orders")
        sid = str(uuid.uuid4())
        personal = wb.account_buckets(route, wb.account(Credentials(wb_token(sid))))
        service = wb.account_buckets(
            route, wb.account(Credentials(wb_token(sid, acc=4)))
        )
        assert personal[0].name != service[0].name

    def test_ten_wb_sellers_never_share(self, wb: WildberriesApi) -> None:
        """Ten sellers get ten buckets."""
        route = wb.route("GET", "/api/v3/orders")
        names = {
            wb.account_buckets(route, wb.account(Credentials(wb_token())))[0].name
            for _ in range(10)
        }
        assert len(names) == 10

    def test_ozon_by_client_id(self, ozon: OzonApi) -> None:
        """Ozon buckets follow the Client-Id: same id shares, ten ids don't."""
        route = ozon.route("POST", "/v4/posting/fbs/list")
        first = ozon.account(Credentials("key-aaaaaa", client_id="111"))
        second = ozon.account(Credentials("key-bbbbbb", client_id="111"))
        assert ozon.account_buckets(route, first) == ozon.account_buckets(route, second)
        names = {
            ozon.account_buckets(
                route, ozon.account(Credentials("k" * 8, client_id=str(n)))
            )[0].name
            for n in range(10)
        }
        assert len(names) == 10

    def test_secrets_never_in_bucket_names(
        self, wb: WildberriesApi, ozon: OzonApi
    ) -> None:
        """Bucket names carry seller ids, never a key."""
        token = wb_token("seller-x")
        route = wb.route("GET", "/api/v3/orders")
        for bucket in wb.account_buckets(route, wb.account(Credentials(token))):
            assert token not in bucket.name
        oroute = ozon.route("POST", "/v4/posting/fbs/list")
        for bucket in ozon.account_buckets(
            oroute, ozon.account(Credentials("secret-api-key", client_id="9"))
        ):
            assert "secret-api-key" not in bucket.name


class TestOzonRoutesAndLimits:
    @pytest.mark.parametrize(
        ("path", "read"),
        [
            ("/v4/posting/fbs/list", True),
            ("/v3/posting/fbo/list", True),
            ("/v4/posting/fbs/unfulfilled/list", True),
            ("/v1/roles", True),
            ("/v3/posting/fbs/get", True),
            ("/v2/products/stocks", False),
            ("/v1/product/import/prices", False),
            ("/v2/posting/fbs/ship", False),
        ],
    )
    def test_reads(self, ozon: OzonApi, path: str, read: bool) -> None:
        """Ozon POSTs that only read are marked as reads; the rest are writes."""
        assert ozon.route("POST", path).read is read

    def test_category_and_host(self, ozon: OzonApi) -> None:
        """The category is the method's area; the host is Ozon's unless overridden."""
        route = ozon.route("POST", "/v4/posting/fbs/list")
        assert route.category == "posting"
        assert route.url == "https://api-seller.ozon.ru/v4/posting/fbs/list"
        other = OzonApi(load_settings(ozon_base_url="https://127.0.0.1:9443"))
        assert other.route("POST", "/v1/roles").url == "https://127.0.0.1:9443/v1/roles"
        with pytest.raises(ConfigurationError):
            ozon.route("POST", "/not-versioned")

    def test_overall_and_method_windows(self, ozon: OzonApi) -> None:
        """Every request takes the 50/s window and its method's own window."""
        account = ozon.account(Credentials("k" * 8, client_id="42"))
        plain = ozon.account_buckets(
            ozon.route("POST", "/v4/posting/fbs/list"), account
        )
        assert plain[0].rule == Rule("window", 50, 1.0)
        assert len(plain) == 2
        stocks = ozon.account_buckets(
            ozon.route("POST", "/v2/products/stocks"), account
        )
        assert stocks[1].rule == Rule("window", 80, 60.0)
        drafts = ozon.account_buckets(ozon.route("POST", "/v1/draft/create"), account)
        assert [b.rule.limit for b in drafts] == [50, 2, 50]

    def test_override(self) -> None:
        """settings.limits replaces Ozon's overall window too."""
        api = OzonApi(
            load_settings(limits={"ozon.all": LimitOverride(limit=5, period=1.0)})
        )
        account = api.account(Credentials("k" * 8, client_id="42"))
        buckets = api.account_buckets(api.route("POST", "/v1/roles"), account)
        assert buckets[0].rule == Rule("window", 5, 1.0, 1)

    def test_client_id_required(self, ozon: OzonApi) -> None:
        """An Ozon shop without a Client-Id is a configuration error."""
        with pytest.raises(ConfigurationError):
            ozon.account(Credentials("k" * 8))


class TestAuthHeaders:
    def test_wb(self, wb: WildberriesApi) -> None:
        """WB gets a Bearer token, plus X-Client-Secret when the shop has one."""
        creds = Credentials("tok", client_secret="sec")
        route = wb.route("GET", "/api/v3/orders")
        assert wb.auth_headers(creds, route) == {
            "Authorization": "Bearer tok",
            "X-Client-Secret": "sec",
        }
        assert wb.auth_headers(Credentials("tok"), route) == {
            "Authorization": "Bearer tok"
        }

    def test_wb_storefront_gets_no_seller_token(self, wb: WildberriesApi) -> None:
        """A seller token is never sent to a public storefront host."""
        route = wb.route("GET", "/cards/v4/detail")
        assert wb.auth_headers(Credentials("tok"), route) == {}

    def test_ozon(self, ozon: OzonApi) -> None:
        """Ozon gets Client-Id and Api-Key."""
        route = ozon.route("POST", "/v1/roles")
        assert ozon.auth_headers(Credentials("key", client_id="7"), route) == {
            "Client-Id": "7",
            "Api-Key": "key",
        }

    def test_credentials_repr_hides_the_key(self) -> None:
        """Credentials print without their key material."""
        assert "super-secret" not in repr(
            Credentials("super-secret", client_secret="x" * 9)
        )


def wb_gateway(
    status: int, title: str, detail: str, service: str = "marketplace"
) -> bytes:
    return body(
        {
            "title": title,
            "detail": detail,
            "code": "a1b2c3 d4e5f6",
            "requestId": "00112233445566778899aabbccddeeff",
            "origin": f"s2s-api-auth-{service}",
            "status": status,
            "statusText": "Unauthorized" if status == 401 else "Too Many Requests",
            "timestamp": "2026-01-10T08:00:00Z",
        }
    )


JSON = Headers([("Content-Type", "application/json")])
HTML = Headers([("Content-Type", "text/html")])


class TestWbClassifier:
    def test_ok_with_remaining(self, wb: WildberriesApi) -> None:
        """A 200 is OK and carries X-Ratelimit-Remaining."""
        route = wb.route("GET", "/api/v3/orders")
        headers = Headers([("X-Ratelimit-Remaining", "17")])
        verdict = wb.classify(route, 200, headers, body({"next": 0, "orders": []}))
        assert verdict.outcome is Outcome.OK
        assert verdict.remaining == 17

    @pytest.mark.parametrize(
        "detail",
        [
            "token expired",
            "token problem; token signature is invalid",
            "token problem; token is malformed: could not decode token",
            "token revoked",
        ],
    )
    def test_401_dead_key(self, wb: WildberriesApi, detail: str) -> None:
        """A 401 for a wrong, revoked or expired token is an auth failure."""
        route = wb.route("GET", "/api/v3/orders")
        verdict = wb.classify(route, 401, JSON, wb_gateway(401, "unauthorized", detail))
        assert verdict.outcome is Outcome.AUTH_FAILURE
        assert verdict.extra_cost == 0

    def test_401_scope(self, wb: WildberriesApi) -> None:
        """A 401 naming the token's scope is a scope failure, not a dead key."""
        route = wb.route("GET", "/api/v3/orders/new")
        verdict = wb.classify(
            route, 401, JSON, wb_gateway(401, "unauthorized", "token scope not allowed")
        )
        assert verdict.outcome is Outcome.SCOPE_FAILURE

    def test_429_from_wb_limiter(self, wb: WildberriesApi) -> None:
        """A 429 with WB's headers is the account's limit, with X-Ratelimit-Retry as hint."""
        route = wb.route("GET", "/api/v3/orders")
        headers = Headers(
            [
                ("Content-Type", "application/json"),
                ("X-Ratelimit-Retry", "2"),
                ("X-Ratelimit-Limit", "10"),
                ("X-Ratelimit-Reset", "29"),
            ]
        )
        verdict = wb.classify(
            route, 429, headers, wb_gateway(429, "too many requests", "limited by 5f1c")
        )
        assert verdict.outcome is Outcome.ACCOUNT_RATE_LIMIT
        assert verdict.retry_after == 2.0
        assert verdict.extra_cost == 0

    def test_429_statistics_problem_json(self, wb: WildberriesApi) -> None:
        """A statistics 429 (problem+json) with a 3-hour retry is still the account's."""
        route = wb.route("GET", "/api/v1/supplier/orders")
        headers = Headers(
            [
                ("Content-Type", "application/problem+json"),
                ("X-Ratelimit-Retry", "10800"),
            ]
        )
        verdict = wb.classify(
            route, 429, headers, wb_gateway(429, "too many requests", "x", "statistics")
        )
        assert verdict.outcome is Outcome.ACCOUNT_RATE_LIMIT
        assert verdict.retry_after == 10800.0

    def test_429_without_wb_headers_is_per_address(self, wb: WildberriesApi) -> None:
        """A bare 429 (no WB headers, no gateway body) blames the exit address."""
        route = wb.route("GET", "/api/v3/orders")
        verdict = wb.classify(route, 429, HTML, b"<html><body>Too many</body></html>")
        assert verdict.outcome is Outcome.IP_RATE_LIMIT

    def test_403_html_is_a_ban(self, wb: WildberriesApi) -> None:
        """A 403 HTML page is an address ban."""
        route = wb.route("GET", "/api/v3/orders")
        page = b"<!DOCTYPE html><html><body><h1>403 Forbidden</h1></body></html>"
        assert wb.classify(route, 403, HTML, page).outcome is Outcome.IP_BAN

    def test_403_json_is_a_client_error(self, wb: WildberriesApi) -> None:
        """A 403 JSON about the method or token is the request's fault, not the address's."""
        route = wb.route("GET", "/api/v3/orders")
        fbs = body({"code": "AccessDenied", "message": "Access denied", "data": {}})
        assert wb.classify(route, 403, JSON, fbs).outcome is Outcome.CLIENT_ERROR
        gateway = body(
            {
                "title": "forbidden",
                "detail": "base token is not allowed for this path",
                "origin": "s2s-api-auth-marketplace",
                "requestId": "x",
            }
        )
        assert wb.classify(route, 403, JSON, gateway).outcome is Outcome.CLIENT_ERROR

    def test_403_blaming_the_address_is_a_ban(self, wb: WildberriesApi) -> None:
        """A 403 whose text blames the source address is a ban, JSON or not."""
        route = wb.route("GET", "/api/v3/orders")
        payload = body(
            {
                "code": "AccessDenied",
                "message": "access denied: too many failed requests from this address",
            }
        )
        assert wb.classify(route, 403, JSON, payload).outcome is Outcome.IP_BAN
        token = body(
            {
                "code": "AccessDenied",
                "message": "access to the method is blocked for this token",
            }
        )
        assert wb.classify(route, 403, JSON, token).outcome is Outcome.CLIENT_ERROR

    def test_storefront_403_is_a_ban(self, wb: WildberriesApi) -> None:
        """Any 403 from a storefront host is an address ban."""
        route = wb.route("GET", "/cards/v4/detail")
        verdict = wb.classify(route, 403, JSON, body({"error": "forbidden"}))
        assert verdict.outcome is Outcome.IP_BAN

    @pytest.mark.parametrize("status", [500, 502, 503])
    def test_5xx(self, wb: WildberriesApi, status: int) -> None:
        """5xx answers, HTML gateway pages included, are server errors."""
        route = wb.route("GET", "/api/v3/orders")
        assert (
            wb.classify(route, status, HTML, GATEWAY_502).outcome
            is Outcome.SERVER_ERROR
        )
        assert wb.classify(route, status, JSON, b"{}").outcome is Outcome.SERVER_ERROR

    def test_marketplace_4xx_costs_ten(self, wb: WildberriesApi) -> None:
        """A Marketplace 4XX is charged 9 extra; other categories' are not."""
        cancel = wb.route("PATCH", "/api/v3/orders/1/cancel")
        verdict = wb.classify(
            cancel, 409, JSON, body({"code": "StatusMismatch", "message": "conflict"})
        )
        assert verdict.outcome is Outcome.CLIENT_ERROR
        assert verdict.extra_cost == 9
        assert verdict.code == "StatusMismatch"
        stats = wb.route("GET", "/api/v1/supplier/orders")
        assert wb.classify(stats, 400, JSON, b"{}").extra_cost == 0


class TestOzonClassifier:
    def test_ok_with_remaining(self, ozon: OzonApi) -> None:
        """A 200 is OK and reads lowercase ratelimit-remaining."""
        route = ozon.route("POST", "/v4/posting/fbs/list")
        headers = Headers([("ratelimit-remaining", "48")])
        verdict = ozon.classify(route, 200, headers, b'{"postings": []}')
        assert verdict.outcome is Outcome.OK
        assert verdict.remaining == 48

    def test_429_code_8_is_the_account(self, ozon: OzonApi) -> None:
        """A 429 with code 8 is the Client-Id's limit; retry-after is the hint."""
        route = ozon.route("POST", "/v4/posting/fbs/list")
        headers = Headers([("retry-after", "1")])
        payload = body(
            {
                "code": 8,
                "message": "You have reached request rate limit per second",
                "details": [],
            }
        )
        verdict = ozon.classify(route, 429, headers, payload)
        assert verdict.outcome is Outcome.ACCOUNT_RATE_LIMIT
        assert verdict.retry_after == 1.0
        assert not verdict.method_scoped

    def test_429_without_code_is_per_address(self, ozon: OzonApi) -> None:
        """A 429 that Ozon's limiter did not write blames the exit."""
        route = ozon.route("POST", "/v4/posting/fbs/list")
        verdict = ozon.classify(route, 429, HTML, b"<html>slow down</html>")
        assert verdict.outcome is Outcome.IP_RATE_LIMIT

    def test_circle_is_open(self, ozon: OzonApi) -> None:
        """'Circle is open' cools the method's own window, not the account's."""
        route = ozon.route("POST", "/v4/posting/fbs/list")
        verdict = ozon.classify(
            route,
            503,
            JSON,
            body({"code": 14, "message": "Circle is open", "details": []}),
        )
        assert verdict.outcome is Outcome.ACCOUNT_RATE_LIMIT
        assert verdict.method_scoped
        account = ozon.account(Credentials("k" * 8, client_id="5"))
        assert ":method:" in ozon.cool_bucket(route, account, verdict).name

    @pytest.mark.parametrize(
        ("status", "payload"),
        [
            (
                404,
                {
                    "code": 5,
                    "message": "Invalid Api-Key, please contact support",
                    "details": [],
                },
            ),
            (404, {"code": 5, "message": "Api-key is deactivated", "details": []}),
            (
                401,
                {
                    "code": 16,
                    "message": "Client-Id and Api-Key headers are required",
                    "details": [],
                },
            ),
        ],
    )
    def test_auth_failures(
        self, ozon: OzonApi, status: int, payload: dict[str, Any]
    ) -> None:
        """Ozon's invalid or deactivated key (404 code 5) and 401 are auth failures."""
        route = ozon.route("POST", "/v4/posting/fbs/list")
        assert (
            ozon.classify(route, status, JSON, body(payload)).outcome
            is Outcome.AUTH_FAILURE
        )

    def test_not_found_is_not_a_dead_key(self, ozon: OzonApi) -> None:
        """A 404 code 5 about a missing posting never counts against the key."""
        route = ozon.route("POST", "/v3/posting/fbs/get")
        payload = body({"code": 5, "message": "posting not found", "details": []})
        assert ozon.classify(route, 404, JSON, payload).outcome is Outcome.CLIENT_ERROR

    def test_403(self, ozon: OzonApi) -> None:
        """403: HTML is a ban, a missing role a scope failure, anything else a client error."""
        route = ozon.route("POST", "/v2/products/stocks")
        assert ozon.classify(route, 403, HTML, GATEWAY_502).outcome is Outcome.IP_BAN
        role = body(
            {"code": 7, "message": "Api-Key is missing a required role", "details": []}
        )
        assert ozon.classify(route, 403, JSON, role).outcome is Outcome.SCOPE_FAILURE
        offer = body({"code": 7, "message": "Offer not signed", "details": []})
        assert ozon.classify(route, 403, JSON, offer).outcome is Outcome.CLIENT_ERROR
        banned = body(
            {
                "code": 7,
                "message": "Access from this IP address is restricted",
                "details": [],
            }
        )
        assert ozon.classify(route, 403, JSON, banned).outcome is Outcome.IP_BAN
        bound = body(
            {
                "code": 7,
                "message": "Api-Key is restricted to specific IP addresses",
                "details": [],
            }
        )
        assert ozon.classify(route, 403, JSON, bound).outcome is Outcome.CLIENT_ERROR

    def test_5xx(self, ozon: OzonApi) -> None:
        """500 code 13 and gateway pages are server errors."""
        route = ozon.route("POST", "/v4/posting/fbs/list")
        internal = body({"code": 13, "message": "Internal error", "details": []})
        assert ozon.classify(route, 500, JSON, internal).outcome is Outcome.SERVER_ERROR
        assert (
            ozon.classify(route, 502, HTML, GATEWAY_502).outcome is Outcome.SERVER_ERROR
        )

    def test_400(self, ozon: OzonApi) -> None:
        """A 400 is a client error carrying Ozon's code and message."""
        route = ozon.route("POST", "/v3/posting/fbo/list")
        payload = body({"code": 3, "message": "PERIOD_IS_TOO_LONG", "details": []})
        verdict = ozon.classify(route, 400, JSON, payload)
        assert verdict.outcome is Outcome.CLIENT_ERROR
        assert (verdict.code, verdict.detail) == (3, "PERIOD_IS_TOO_LONG")


def test_html_detection() -> None:
    """HTML is recognised by content type or by the body's first tag."""
    assert is_html(Headers([("Content-Type", "text/html; charset=utf-8")]), b"")
    assert is_html(Headers(), b"  <!DOCTYPE html><html>")
    assert not is_html(JSON, b'{"a": "<html>"}')


def test_registry(plain: Settings) -> None:
    """get_api returns the module by marketplace name and refuses others."""
    assert isinstance(get_api("wb", plain), WildberriesApi)
    assert isinstance(get_api("ozon", plain), OzonApi)
    with pytest.raises(ConfigurationError):
        get_api("amazon", plain)
