"""mpshield: a safe door to the Wildberries and Ozon seller APIs."""

from mpshield.client import (
    MarketplaceClient,
    reset_shop_circuit,
    update_shop_credentials,
)
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
    "MarketplaceClient",
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
    "reset_shop_circuit",
    "update_shop_credentials",
]
