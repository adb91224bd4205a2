"""Every error mpshield raises, grouped by what the caller does next.

::

    MpShieldError
    ├── ConfigurationError            fix the settings; nothing was sent
    ├── StateStoreUnavailableError    Redis is down; nothing was sent
    ├── DatabaseUnavailableError      the database is down; nothing was sent
    ├── ShopError                     about one shop (carries shop_id, marketplace)
    │   ├── ShopNotFoundError         no such shop in the database
    │   ├── ShopDisabledError         dead key or open circuit: ask the user for a key
    │   └── CategoryUnauthorizedError the token lacks this API category's scope
    ├── RetryLaterError               back off for ``retry_after`` seconds, then retry
    │   ├── RateLimitedError          a bucket (ours or the marketplace's) is empty
    │   ├── NoProxyAvailableError     every proxy is quarantined for this marketplace
    │   └── MarketplaceUnavailableError  5xx, resets or timeouts outlived the retries
    └── MarketplaceError              the marketplace refused the request (4xx)
        └── MalformedResponseError    the answer could not be read as documented

Messages never contain API keys, tokens or proxy passwords.
"""

from __future__ import annotations

from typing import Any

from mpshield.redaction import redact


class MpShieldError(Exception):
    """Root of every mpshield error."""

    def __str__(self) -> str:
        return redact(super().__str__())


class ConfigurationError(MpShieldError):
    """A setting is missing or impossible."""


class StateStoreUnavailableError(MpShieldError):
    """The shared state store (Redis) cannot be reached; no request was sent."""


class DatabaseUnavailableError(MpShieldError):
    """The database cannot be reached; no request was sent."""


class ShopError(MpShieldError):
    """An error about one shop."""

    def __init__(
        self,
        message: str,
        *,
        shop_id: int,
        marketplace: str | None = None,
        category: str | None = None,
    ) -> None:
        super().__init__(message)
        self.shop_id = shop_id
        self.marketplace = marketplace
        self.category = category


class ShopNotFoundError(ShopError):
    """No shop with this id exists."""


class ShopDisabledError(ShopError):
    """The shop must not call the marketplace until its key is replaced or reset."""

    def __init__(
        self,
        message: str,
        *,
        shop_id: int,
        marketplace: str | None = None,
        reason: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, shop_id=shop_id, marketplace=marketplace)
        self.reason = reason
        # Set when the circuit will let a probe through on its own, None when
        # only a new key (``reset_shop_circuit``) brings the shop back.
        self.retry_after = retry_after


class CategoryUnauthorizedError(ShopError):
    """The shop's token has no scope for this API category (a configuration error)."""


class RetryLaterError(MpShieldError):
    """Nothing is wrong with the request; try again after ``retry_after`` seconds."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        shop_id: int | None = None,
        marketplace: str | None = None,
        category: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.shop_id = shop_id
        self.marketplace = marketplace
        self.category = category


class RateLimitedError(RetryLaterError):
    """A rate-limit bucket is empty for longer than the caller agreed to wait."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        bucket: str | None = None,
        shop_id: int | None = None,
        marketplace: str | None = None,
        category: str | None = None,
    ) -> None:
        super().__init__(
            message,
            retry_after=retry_after,
            shop_id=shop_id,
            marketplace=marketplace,
            category=category,
        )
        self.bucket = bucket


class NoProxyAvailableError(RetryLaterError):
    """Every configured proxy is quarantined for this marketplace."""


class MarketplaceUnavailableError(RetryLaterError):
    """Server errors, resets or timeouts outlasted the allowed retries."""


class MarketplaceError(MpShieldError):
    """The marketplace answered with an error that retrying will not fix."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        body: Any = None,
        code: str | int | None = None,
        shop_id: int | None = None,
        marketplace: str | None = None,
        category: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.code = code
        self.shop_id = shop_id
        self.marketplace = marketplace
        self.category = category


class MalformedResponseError(MarketplaceError):
    """The answer is not what the marketplace documents (HTML, truncated JSON...)."""
