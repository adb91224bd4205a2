"""WB FBS assembly orders: ``GET /api/v3/orders`` walked in windows of 30 days.

The method lists the assembly orders created between ``dateFrom`` and
``dateTo`` (Unix seconds, at most 30 days apart), ``limit`` at a time. Paging
is by ``next``: 0 for the first page, then whatever the previous answer said.
The value is opaque (it is not the last order id and not monotonic), so it is
echoed, never computed; an empty page ends the window.

The cursor holds the window (``window_start``, ``window_end``) and the ``next``
to send. A window in progress is resumed with the same bounds, since ``next``
belongs to the query it came from. Once the walk reaches the present, the next
run starts a new window ``overlap`` before where this one ended, which re-reads
orders that became visible late; upserts make the repeat harmless.

The list carries no status (WB answers it through another method), so stored
orders have none.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
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
)

PATH = "/api/v3/orders"
MAX_LIMIT = 1000
MAX_WINDOW = dt.timedelta(days=30)
# WB lists only orders created within the last three months.
MAX_AGE = dt.timedelta(days=90)

# ISO 4217 numeric codes WB uses, by letters; unknown codes are kept as digits.
CURRENCIES = {
    643: "RUB",
    933: "BYN",
    398: "KZT",
    417: "KGS",
    51: "AMD",
    860: "UZS",
    972: "TJS",
    944: "AZN",
    156: "CNY",
    840: "USD",
    978: "EUR",
}


def currency_letters(code: Any) -> str | None:
    """WB's numeric currency code as letters (``643`` -> ``RUB``)."""
    if isinstance(code, bool) or not isinstance(code, int):
        return None
    return CURRENCIES.get(code, str(code))


class WbFbsFeed(Feed):
    """WB FBS assembly orders; see the module docstring.

    Args:
        page_size: ``limit`` per request, 1 to 1000.
        lookback: How far back the first run starts (at most 90 days).
        overlap: How much of the last window each later run reads again.
    """

    name: ClassVar[str] = "wb_fbs"
    marketplace: ClassVar[str] = "wb"
    category: ClassVar[str] = "marketplace"

    def __init__(
        self,
        *,
        page_size: int = MAX_LIMIT,
        lookback: dt.timedelta = MAX_WINDOW,
        overlap: dt.timedelta = dt.timedelta(hours=1),
    ) -> None:
        if not 1 <= page_size <= MAX_LIMIT:
            raise ValueError(f"page_size must lie between 1 and {MAX_LIMIT}")
        self.page_size = page_size
        self.lookback = min(lookback, MAX_AGE)
        self.overlap = overlap

    def begin(self, stored: Mapping[str, Any] | None, now: dt.datetime) -> Cursor:
        now_s = int(now.timestamp())
        oldest = now_s - int(MAX_AGE.total_seconds())
        if not stored:
            start = now_s - int(self.lookback.total_seconds())
            return self._window(start, now_s)
        start = min(max(int(stored["window_start"]), oldest), now_s)
        end = stored.get("window_end")
        if end is not None and int(stored.get("next", 0)) != 0:
            # A window in progress: its ``next`` only makes sense with its bounds.
            return {
                "window_start": start,
                "window_end": int(end),
                "next": stored["next"],
            }
        return self._window(start, now_s)

    def request(self, cursor: Mapping[str, Any]) -> FeedRequest:
        return FeedRequest(
            "GET",
            PATH,
            params={
                "limit": self.page_size,
                "next": cursor["next"],
                "dateFrom": cursor["window_start"],
                "dateTo": cursor["window_end"],
            },
        )

    def read(self, body: Any, cursor: Mapping[str, Any], now: dt.datetime) -> Page:
        data = require_object(self.name, body, "orders")
        rows = require_rows(self.name, data["orders"], "id")
        if rows:
            following = data.get("next")
            if isinstance(following, bool) or not isinstance(following, int):
                raise malformed(self.name, "a page without a numeric next", data)
            orders = list({str(row["id"]): self.record(row) for row in rows}.values())
            return Page(orders, {**cursor, "next": following}, more=True)

        end = int(cursor["window_end"])
        now_s = int(now.timestamp())
        if end >= now_s:
            start = end - int(self.overlap.total_seconds())
            # Resting state between runs: where the next run's window starts.
            return Page(
                [], {"window_start": start, "window_end": None, "next": 0}, False
            )
        return Page([], self._window(end, now_s), more=True)

    @staticmethod
    def _window(start: int, now_s: int) -> Cursor:
        end = min(start + int(MAX_WINDOW.total_seconds()), now_s)
        return {"window_start": start, "window_end": end, "next": 0}

    @staticmethod
    def record(row: dict[str, Any]) -> OrderRecord:
        """One assembly order as stored."""
        cents = decimal(row.get("price"))
        return OrderRecord(
            external_id=str(row["id"]),
            status=None,
            order_created_at=parse_time(row.get("createdAt")),
            # WB sends the price multiplied by 100.
            price=None if cents is None else cents / 100,
            currency=currency_letters(row.get("currencyCode")),
            payload=row,
        )
