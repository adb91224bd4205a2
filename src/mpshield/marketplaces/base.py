"""What every marketplace module provides: routes, limits, auth and a classifier.

A marketplace module is knowledge held as data: which host serves a path,
which limit group the path counts against, whether it only reads, which
headers carry the credentials, which rate-limit buckets a request takes, and
what an answer means. ``MarketplaceClient`` acts on that knowledge; the
modules themselves never touch the network or the state store.
"""

from __future__ import annotations

import enum
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mpshield.exceptions import ConfigurationError
from mpshield.marketplaces.tokens import WbToken
from mpshield.protection.limiter import Bucket, Rule
from mpshield.redaction import MASK
from mpshield.settings import Settings


class Outcome(enum.StrEnum):
    """What an answer means for the client."""

    OK = "ok"
    AUTH_FAILURE = "auth_failure"  # the key is wrong, revoked or expired
    SCOPE_FAILURE = "scope_failure"  # the key lacks this category
    ACCOUNT_RATE_LIMIT = "account_rate_limit"  # the seller's budget is spent
    IP_RATE_LIMIT = "ip_rate_limit"  # the exit address is throttled
    IP_BAN = "ip_ban"  # the exit address is blocked
    SERVER_ERROR = "server_error"  # 5xx or a gateway page
    CLIENT_ERROR = "client_error"  # any other 4xx: the request itself is wrong


class HostClass(enum.StrEnum):
    """Hosts that count differently: seller APIs per seller, storefronts per IP."""

    SELLER = "seller"
    STOREFRONT = "storefront"


@dataclass(frozen=True)
class Route:
    """Where a request goes and what it counts against.

    Attributes:
        marketplace: ``wb`` or ``ozon``.
        method: The HTTP method, upper case.
        path: The path as the caller gave it.
        category: The API category (WB: the token scope the host checks).
        group: The limit group, the key of ``settings.limits`` after the dot.
        base_url: Scheme and host (and any prefix) the path is appended to.
        read: The request only reads, so sending it twice is harmless.
        host_class: Seller API or public storefront.
    """

    marketplace: str
    method: str
    path: str
    category: str
    group: str
    base_url: str
    read: bool
    host_class: HostClass = HostClass.SELLER

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + self.path


@dataclass(frozen=True)
class Verdict:
    """The classifier's reading of one answer.

    Attributes:
        outcome: What the answer means.
        status: The HTTP status.
        retry_after: The marketplace's retry hint in seconds, when it gave one.
        remaining: The marketplace's count of requests left, when it gave one.
        code: The marketplace's own error code, when the body has one.
        detail: The marketplace's error text, when the body has one.
        body: The parsed body (JSON value or text) of an error answer.
        method_scoped: A rate limit on one method only (Ozon's ``Circle is
            open``) rather than on the whole account.
        extra_cost: Requests the marketplace charges beyond this one.
    """

    outcome: Outcome
    status: int
    retry_after: float | None = None
    remaining: int | None = None
    code: str | int | None = None
    detail: str | None = None
    body: Any = None
    method_scoped: bool = False
    extra_cost: int = 0


@dataclass(frozen=True, repr=False)
class Credentials:
    """A shop's key material; its repr shows none of it."""

    api_key: str
    client_id: str | None = None
    client_secret: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(api_key={MASK!r}, client_id={self.client_id!r})"


@dataclass(frozen=True)
class Account:
    """Whom the marketplace counts a shop's requests against.

    Attributes:
        marketplace: ``wb`` or ``ozon``.
        key: The bucket identity: WB seller id and token type, Ozon Client-Id.
        token: The decoded WB token (None for Ozon).
    """

    marketplace: str
    key: str
    token: WbToken | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PathRule:
    """One line of a routing table: a path pattern and what it counts against."""

    pattern: str
    category: str
    group: str
    methods: frozenset[str] = frozenset()
    read: bool | None = None  # None: reads are GET and HEAD

    def matches(self, method: str, path: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        return re.fullmatch(self.pattern, path) is not None


def rule_table(*rules: PathRule) -> tuple[PathRule, ...]:
    return tuple(rules)


class MarketplaceApi(ABC):
    """The knowledge about one marketplace, bound to the settings."""

    name: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abstractmethod
    def route(self, method: str, path: str, category: str | None = None) -> Route:
        """Where ``method path`` goes; ``category`` overrides the table's guess.

        Raises:
            ConfigurationError: The path is unknown and no category was given.
        """

    @abstractmethod
    def account(self, credentials: Credentials) -> Account:
        """The identity the marketplace counts this shop's requests against."""

    @abstractmethod
    def auth_headers(self, credentials: Credentials, route: Route) -> dict[str, str]:
        """The headers that carry the credentials for ``route``."""

    @abstractmethod
    def account_buckets(self, route: Route, account: Account) -> list[Bucket]:
        """The account's buckets ``route`` takes; the first is the one WB or
        Ozon reports ``remaining`` for and the one a 429 cools down."""

    @abstractmethod
    def classify(
        self, route: Route, status: int, headers: Mapping[str, str], content: bytes
    ) -> Verdict:
        """Read an answer."""

    def cool_bucket(self, route: Route, account: Account, verdict: Verdict) -> Bucket:
        """The bucket a rate-limit answer cools down for every worker."""
        return self.account_buckets(route, account)[0]

    def exit_bucket(self, route: Route, exit_id: str) -> Bucket:
        """The per-address bucket for the exit ``exit_id`` on this host class."""
        group = f"exit_{route.host_class.value}"
        rule = self.rule(group, self.exit_rules()[route.host_class])
        return Bucket(f"{self.name}:exit:{route.host_class.value}:{exit_id}", rule)

    @abstractmethod
    def exit_rules(self) -> Mapping[HostClass, Rule]:
        """Per-address rules by host class."""

    def rule(self, group: str, default: Rule) -> Rule:
        """``default``, unless ``settings.limits`` overrides ``<name>.<group>``.

        The built-in tables follow ``settings.time_scale`` (a scaled sandbox);
        an override is taken as written.
        """
        override = self.settings.limits.get(f"{self.name}.{group}")
        if override is None:
            if self.settings.time_scale != 1.0:
                return default.scaled(self.settings.time_scale)
            return default
        return Rule(
            kind=default.kind,
            limit=override.limit,
            period=override.period,
            burst=override.burst,
        )

    def match(
        self, table: Sequence[PathRule], method: str, path: str
    ) -> PathRule | None:
        for line in table:
            if line.matches(method, path):
                return line
        return None


def unknown_path(marketplace: str, method: str, path: str) -> ConfigurationError:
    return ConfigurationError(
        f"{marketplace}: no route for {method} {path}; pass category= to name "
        "the API category"
    )


def split_path(path: str) -> str:
    """The path without its query string, always starting with a slash."""
    path = path.split("?", 1)[0]
    return path if path.startswith("/") else "/" + path


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup over any mapping."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def header_float(headers: Mapping[str, str], *names: str) -> float | None:
    """The first of ``names`` that holds a non-negative number of seconds."""
    for name in names:
        value = header(headers, name)
        if value is None:
            continue
        try:
            number = float(value.strip())
        except ValueError:
            continue
        if number >= 0:
            return number
    return None


def header_int(headers: Mapping[str, str], *names: str) -> int | None:
    number = header_float(headers, *names)
    return None if number is None else int(number)


def is_html(headers: Mapping[str, str], content: bytes) -> bool:
    """Whether the answer is an HTML page (a ban or gateway page, not the API)."""
    content_type = (header(headers, "content-type") or "").lower()
    if "html" in content_type:
        return True
    start = content.lstrip()[:15].lower()
    return start.startswith((b"<!doctype", b"<html", b"<head", b"<body"))


def parse_body(content: bytes) -> Any:
    """The body as JSON when it is JSON, else as text (None when empty)."""
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", errors="replace")


def body_field(body: Any, *names: str) -> Any:
    """The first of ``names`` present in a JSON object body."""
    if isinstance(body, dict):
        for name in names:
            if name in body:
                return body[name]
    return None
