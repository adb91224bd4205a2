"""The client: the one door to the marketplaces, and the calls that reopen it."""

from mpshield.client.admin import reset_shop_circuit, update_shop_credentials
from mpshield.client.client import MarketplaceClient
from mpshield.client.response import Response

__all__ = [
    "MarketplaceClient",
    "Response",
    "reset_shop_circuit",
    "update_shop_credentials",
]
