"""The order feeds: which list methods a shop's orders come from.

A WB shop has ``wb_fbs`` (assembly orders) and ``wb_stats`` (the statistics
order report, which also holds orders from WB's own warehouses); an Ozon shop
has ``ozon_fbs`` and ``ozon_fbo``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mpshield.exceptions import ConfigurationError
from mpshield.jobs.feeds.base import Feed, FeedRequest, OrderRecord, Page
from mpshield.jobs.feeds.ozon_postings import OzonFboFeed, OzonFbsFeed
from mpshield.jobs.feeds.wb_fbs import WbFbsFeed
from mpshield.jobs.feeds.wb_stats import WbStatsFeed

FEEDS: dict[str, Callable[[], Feed]] = {
    "wb_fbs": WbFbsFeed,
    "wb_stats": WbStatsFeed,
    "ozon_fbs": OzonFbsFeed,
    "ozon_fbo": OzonFboFeed,
}
MARKETPLACE_FEEDS: dict[str, tuple[str, ...]] = {
    "wb": ("wb_fbs", "wb_stats"),
    "ozon": ("ozon_fbs", "ozon_fbo"),
}


def feeds_for(marketplace: str, names: Sequence[str] | None = None) -> list[Feed]:
    """The feeds of a marketplace, all or those named, in their usual order.

    Names of the other marketplace's feeds are ignored, so one ``--feed`` list
    can serve WB and Ozon shops alike.

    Raises:
        ConfigurationError: A name is no feed at all.
    """
    unknown = sorted(set(names or ()) - set(FEEDS))
    if unknown:
        raise ConfigurationError(
            f"unknown feed {', '.join(unknown)}; known: {', '.join(FEEDS)}"
        )
    own = MARKETPLACE_FEEDS.get(marketplace)
    if own is None:
        raise ConfigurationError(f"no order feeds for marketplace {marketplace!r}")
    chosen = own if names is None else [name for name in own if name in names]
    return [FEEDS[name]() for name in chosen]


__all__ = [
    "FEEDS",
    "MARKETPLACE_FEEDS",
    "Feed",
    "FeedRequest",
    "OrderRecord",
    "OzonFboFeed",
    "OzonFbsFeed",
    "Page",
    "WbFbsFeed",
    "WbStatsFeed",
    "feeds_for",
]
