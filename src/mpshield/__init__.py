"""mpshield: a safe door to the Wildberries and Ozon seller APIs."""

from mpshield.exceptions import (
    CategoryUnauthorizedError,
    ConfigurationError,
    MalformedResponseError,
    MarketplaceError,
    MarketplaceUnavailableError,
    MpShieldError,
    NoProxyAvailableError,
    RateLimitedError,
    RetryLaterError,
    ShopDisabledError,
    ShopError,
    ShopNotFoundError,
    StateStoreUnavailableError,
)

__all__ = [
    "CategoryUnauthorizedError",
    "ConfigurationError",
    "MalformedResponseError",
    "MarketplaceError",
    "MarketplaceUnavailableError",
    "MpShieldError",
    "NoProxyAvailableError",
    "RateLimitedError",
    "RetryLaterError",
    "ShopDisabledError",
    "ShopError",
    "ShopNotFoundError",
    "StateStoreUnavailableError",
]
