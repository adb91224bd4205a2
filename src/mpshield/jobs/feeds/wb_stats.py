"""WB statistics orders: ``GET /api/v1/supplier/orders`` paged by ``lastChangeDate``.

With ``flag=0`` the method returns every row whose ``lastChangeDate`` is at or
after ``dateFrom`` (Moscow time, written without an offset), up to about
80,000 rows. The next page is asked for with ``dateFrom`` set to the last
row's ``lastChangeDate``, verbatim; ``[]`` means there is nothing more.

Because the bound is inclusive, the rows that share the last timestamp come
back at the top of the next page. The cursor remembers their ``srid``s, so a
page holding nothing but those repeats ends the run as ``[]`` does. A row is
re-delivered with a newer ``lastChangeDate`` when the order changes (a
cancellation, say); its ``srid`` stays, so the stored order is updated, and an
older copy never replaces a newer one (``version_field``).

WB refreshes these data every 30 minutes, so a row may appear with a
``lastChangeDate`` behind a cursor that already passed it. Each run that
follows a complete one therefore starts ``overlap`` (an hour by default)
before the stored cursor; a run cut short is resumed exactly where it stopped.

The method allows one request a minute per seller. The client's limiter holds
to that; when it would make the run wait longer than allowed it raises
``RateLimitedError`` and the run ends with every page so far stored.

Limitation: rows that share one ``lastChangeDate`` beyond what fits in a page
cannot be reached by this paging at all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, ClassVar

from mpshield.jobs.feeds.base import (
    MSK,
    Cursor,
    Feed,
    FeedRequest,
    OrderRecord,
    Page,
    decimal,
    parse_time,
    require_rows,
)

PATH = "/api/v1/supplier/orders"
# WB keeps these data for at least 90 days.
MAX_AGE = dt.timedelta(days=90)


def moscow_text(value: dt.datetime) -> str:
    """``value`` as WB's statistics write it: Moscow time without an offset."""
    return value.astimezone(MSK).strftime("%Y-%m-%dT%H:%M:%S")


def moscow_time(text: Any) -> dt.datetime | None:
    """A statistics time (Moscow when it has no offset) as an aware datetime."""
    return parse_time(text, naive_zone=MSK)


def same_time(left: Any, right: Any) -> bool:
    """Whether two statistics times name the same instant."""
    left_time, right_time = moscow_time(left), moscow_time(right)
    if left_time is None or right_time is None:
        return bool(left == right)
    return left_time == right_time


class WbStatsFeed(Feed):
    """WB statistics orders; see the module docstring.

    Args:
        lookback: How far back the first run starts (at most 90 days).
        overlap: How far before the stored cursor each run starts.
    """

    name: ClassVar[str] = "wb_stats"
    marketplace: ClassVar[str] = "wb"
    category: ClassVar[str] = "statistics"
    version_field: ClassVar[str | None] = "lastChangeDate"

    def __init__(
        self,
        *,
        lookback: dt.timedelta = dt.timedelta(days=30),
        overlap: dt.timedelta = dt.timedelta(hours=1),
    ) -> None:
        self.lookback = min(lookback, MAX_AGE)
        self.overlap = overlap

    def begin(self, stored: Mapping[str, Any] | None, now: dt.datetime) -> Cursor:
        start = moscow_time(stored.get("date_from")) if stored else None
        if start is None:
            return {"date_from": moscow_text(now - self.lookback), "boundary": []}
        if stored and not stored.get("complete"):
            # A run cut short (by the limit, most often) goes on where it
            # stopped; starting back would spend the one request it may have
            # on rows already stored.
            return {
                "date_from": stored["date_from"],
                "boundary": stored.get("boundary", []),
            }
        start = max(start - self.overlap, now - MAX_AGE)
        return {"date_from": moscow_text(min(start, now)), "boundary": []}

    def version(self, value: Any) -> dt.datetime | None:
        return moscow_time(value)

    def request(self, cursor: Mapping[str, Any]) -> FeedRequest:
        return FeedRequest(
            "GET", PATH, params={"dateFrom": cursor["date_from"], "flag": 0}
        )

    def read(self, body: Any, cursor: Mapping[str, Any], now: dt.datetime) -> Page:
        rows = require_rows(self.name, body, "srid")
        require_rows(self.name, rows, "lastChangeDate")
        date_from = cursor["date_from"]
        boundary = set(cursor.get("boundary", []))
        fresh = [
            row
            for row in rows
            if not (
                row["srid"] in boundary and same_time(row["lastChangeDate"], date_from)
            )
        ]
        if not fresh:
            return Page([], {**cursor, "complete": True}, more=False)

        last = rows[-1]["lastChangeDate"]
        at_last = {
            row["srid"] for row in rows if same_time(row["lastChangeDate"], last)
        }
        if same_time(last, date_from):
            at_last |= boundary
        following = {"date_from": last, "boundary": sorted(at_last)}
        return Page(self.newest(fresh), following, more=True)

    @staticmethod
    def newest(rows: list[dict[str, Any]]) -> list[OrderRecord]:
        """One record per ``srid``: the row with the latest ``lastChangeDate``."""
        chosen: dict[str, dict[str, Any]] = {}
        for row in rows:
            held = chosen.get(row["srid"])
            if held is None or not _older(row, held):
                chosen[row["srid"]] = row
        return [WbStatsFeed.record(row) for row in chosen.values()]

    @staticmethod
    def record(row: dict[str, Any]) -> OrderRecord:
        """One statistics order row as stored."""
        return OrderRecord(
            external_id=str(row["srid"]),
            status="cancelled" if row.get("isCancel") else "ordered",
            order_created_at=moscow_time(row.get("date")),
            price=decimal(row.get("priceWithDisc")),
            # The statistics report in roubles.
            currency="RUB",
            payload=row,
        )


def _older(row: dict[str, Any], other: dict[str, Any]) -> bool:
    mine, theirs = (
        moscow_time(row["lastChangeDate"]),
        moscow_time(other["lastChangeDate"]),
    )
    return mine is not None and theirs is not None and mine < theirs
