"""Ozon postings: ``POST /v4/posting/fbs/list`` and ``POST /v3/posting/fbo/list``.

Both methods list the postings of a period (``filter.since`` to ``filter.to``,
at most a year apart), ``limit`` (at most 100) at a time, paged by an opaque
``cursor`` while ``has_next`` is true. A posting's status changes in place and
the list always shows the current one, so any difference replaces the stored
row.

The period filters on when a posting was created, so a run that read only
the postings created since the last run would never see an old posting
change. Each later run therefore lists from ``refresh`` (30 days by default)
before now, or from ``overlap`` before where the last run stopped when that
is earlier. A posting older than ``refresh`` whose status changes is picked up
only if it falls inside that span; a seller whose postings change for longer
sets a longer ``refresh``.

The FBS method can also filter on when a posting's status last changed (a new
posting's first status counts as a change). With ``changed_filter``, the FBS
default, later runs list the whole year instead and ask only for postings
whose status changed since the last run (less ``overlap``): new postings and
changed ones, in a handful of pages, at any age. The FBO method documents no
such filter, so FBO uses the ``refresh`` span.

The cursor holds the period in progress and Ozon's cursor within it; a period
in progress is resumed with the same filter, since the cursor belongs to it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar

from mpshield.jobs.feeds.base import (
    Cursor,
    Feed,
    FeedRequest,
    OrderRecord,
    Page,
    decimal,
    malformed,
    parse_time,
    require_object,
    require_rows,
    rfc3339,
)

MAX_LIMIT = 100
# Ozon refuses periods longer than a year; a minute short keeps clear of the edge.
MAX_PERIOD = dt.timedelta(days=365) - dt.timedelta(minutes=1)


class OzonPostingsFeed(Feed):
    """A posting list method of Ozon; see the module docstring.

    Args:
        page_size: ``limit`` per request, 1 to 100.
        lookback: How far back the first run starts.
        refresh: How far back each later run lists again, for status changes.
        overlap: How far before the last run's end each later run starts.
        changed_filter: Use the status-change filter on later runs (the
            default where the method documents it: FBS).
    """

    marketplace: ClassVar[str] = "ozon"
    category: ClassVar[str] = "posting"
    path: ClassVar[str]
    created_field: ClassVar[str]
    supports_changed_filter: ClassVar[bool] = False
    with_blocks: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        *,
        page_size: int = MAX_LIMIT,
        lookback: dt.timedelta = dt.timedelta(days=30),
        refresh: dt.timedelta = dt.timedelta(days=30),
        overlap: dt.timedelta = dt.timedelta(minutes=10),
        changed_filter: bool | None = None,
    ) -> None:
        if not 1 <= page_size <= MAX_LIMIT:
            raise ValueError(f"page_size must lie between 1 and {MAX_LIMIT}")
        if changed_filter is None:
            changed_filter = self.supports_changed_filter
        if changed_filter and not self.supports_changed_filter:
            raise ValueError(f"{self.name} has no status-change filter")
        self.page_size = page_size
        self.lookback = min(lookback, MAX_PERIOD)
        self.refresh = min(refresh, MAX_PERIOD)
        self.overlap = overlap
        self.changed_filter = changed_filter

    def begin(self, stored: Mapping[str, Any] | None, now: dt.datetime) -> Cursor:
        stored = stored or {}
        if stored.get("window_end") and stored.get("cursor"):
            # A period in progress: Ozon's cursor belongs to its filter.
            return dict(stored)
        since = parse_time(stored.get("since"))
        if since is not None:
            # Between two periods of a walk longer than a year.
            changed_from = parse_time(stored.get("changed_from"))
            return self._period(since, now, changed_from=changed_from)
        synced_to = parse_time(stored.get("synced_to"))
        if synced_to is None:
            return self._period(now - self.lookback, now, changed_from=None)
        since = min(synced_to - self.overlap, now)
        if self.changed_filter:
            return self._period(now - MAX_PERIOD, now, changed_from=since)
        return self._period(min(since, now - self.refresh), now, changed_from=None)

    def request(self, cursor: Mapping[str, Any]) -> FeedRequest:
        period: dict[str, Any] = {"since": cursor["since"], "to": cursor["window_end"]}
        if cursor.get("changed_from"):
            period["last_changed_status_date"] = {
                "from": cursor["changed_from"],
                "to": cursor["window_end"],
            }
        body: dict[str, Any] = {
            "cursor": cursor.get("cursor", ""),
            "filter": period,
            "limit": self.page_size,
            "sort_dir": "ASC",
            # Every optional block, so the stored row is the whole posting.
            "with": dict.fromkeys(self.with_blocks, True),
        }
        return FeedRequest("POST", self.path, json=body)

    def read(self, body: Any, cursor: Mapping[str, Any], now: dt.datetime) -> Page:
        data = require_object(self.name, body)
        if "postings" not in data and isinstance(data.get("result"), dict):
            data = data["result"]
        data = require_object(self.name, data, "postings", "has_next")
        rows = require_rows(self.name, data["postings"], "posting_number")
        orders = list(
            {str(row["posting_number"]): self.record(row) for row in rows}.values()
        )

        if data["has_next"] is True:
            following = data.get("cursor")
            if not isinstance(following, str) or not following:
                raise malformed(
                    self.name, "has_next without a cursor", data.get("cursor")
                )
            return Page(orders, {**cursor, "cursor": following}, more=True)

        end = parse_time(cursor["window_end"])
        # Periods are written to the millisecond; ``now`` has microseconds.
        if end is None or end >= _milliseconds(now):
            return Page(orders, {"synced_to": cursor["window_end"]}, more=False)
        changed_from = parse_time(cursor.get("changed_from"))
        return Page(
            orders, self._period(end, now, changed_from=changed_from), more=True
        )

    @staticmethod
    def _period(
        since: dt.datetime, now: dt.datetime, *, changed_from: dt.datetime | None
    ) -> Cursor:
        since = min(since, now)
        end = min(since + MAX_PERIOD, now)
        return {
            "since": rfc3339(since),
            "window_end": rfc3339(end),
            "cursor": "",
            "changed_from": None if changed_from is None else rfc3339(changed_from),
        }

    @classmethod
    def record(cls, row: dict[str, Any]) -> OrderRecord:
        """One posting as stored."""
        price, currency = _total(row.get("products"))
        status = row.get("status")
        return OrderRecord(
            external_id=str(row["posting_number"]),
            status=status if isinstance(status, str) else None,
            order_created_at=parse_time(row.get(cls.created_field)),
            price=price,
            currency=currency,
            payload=row,
        )


def _milliseconds(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _total(products: Any) -> tuple[Decimal | None, str | None]:
    """The sum of price times quantity over a posting's products, and its currency."""
    if not isinstance(products, list) or not products:
        return None, None
    total = Decimal(0)
    currency: str | None = None
    for product in products:
        if not isinstance(product, dict):
            return None, None
        price = product.get("price")
        # The documented money object, or the older bare amount beside a code.
        if isinstance(price, dict):
            amount = decimal(price.get("amount"))
            currency = currency or price.get("currency")
        else:
            amount = decimal(price)
            currency = currency or product.get("currency_code")
        quantity = decimal(product.get("quantity", 1))
        if amount is None or quantity is None:
            return None, None
        total += amount * quantity
    return total, currency if isinstance(currency, str) else None


class OzonFbsFeed(OzonPostingsFeed):
    """Ozon FBS postings (``POST /v4/posting/fbs/list``)."""

    name: ClassVar[str] = "ozon_fbs"
    path: ClassVar[str] = "/v4/posting/fbs/list"
    # FBS postings carry no creation time; processing starts when one is placed.
    created_field: ClassVar[str] = "in_process_at"
    supports_changed_filter: ClassVar[bool] = True
    with_blocks: ClassVar[tuple[str, ...]] = (
        "analytics_data",
        "barcodes",
        "financial_data",
        "legal_info",
    )


class OzonFboFeed(OzonPostingsFeed):
    """Ozon FBO postings (``POST /v3/posting/fbo/list``)."""

    name: ClassVar[str] = "ozon_fbo"
    path: ClassVar[str] = "/v3/posting/fbo/list"
    created_field: ClassVar[str] = "created_at"
    with_blocks: ClassVar[tuple[str, ...]] = (
        "analytics_data",
        "financial_data",
        "legal_info",
    )
