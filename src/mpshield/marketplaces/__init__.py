"""Marketplace knowledge: one module per marketplace, chosen by name."""

from __future__ import annotations

from mpshield.exceptions import ConfigurationError
from mpshield.marketplaces.base import MarketplaceApi
from mpshield.marketplaces.ozon import OzonApi
from mpshield.marketplaces.wb import WildberriesApi
from mpshield.settings import Settings

__all__ = ["MarketplaceApi", "OzonApi", "WildberriesApi", "get_api"]

_APIS: dict[str, type[WildberriesApi] | type[OzonApi]] = {
    WildberriesApi.name: WildberriesApi,
    OzonApi.name: OzonApi,
}


def get_api(marketplace: str, settings: Settings) -> WildberriesApi | OzonApi:
    """The module for ``marketplace`` (``wb`` or ``ozon``).

    Raises:
        ConfigurationError: No such marketplace.
    """
    try:
        api = _APIS[marketplace]
    except KeyError:
        raise ConfigurationError(f"unknown marketplace {marketplace!r}") from None
    return api(settings)
