"""What an order feed is: a request, a page reader and a cursor that advances.

A feed is pure knowledge about one marketplace list method. It never touches
the network or the database: the sync asks it for the next request, hands it
the decoded answer, and stores the orders it read together with the cursor it
returned, in one transaction. A crash anywhere therefore resumes from the last
stored page, and since orders are upserted, reading a page twice is harmless.

A cursor is a JSON object. ``begin`` turns the stored cursor (or none) into
the cursor a run starts from; ``read`` returns the cursor that follows a page.
The clock is passed in, so tests drive time directly.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal

from mpshield.exceptions import MalformedResponseError

Cursor = dict[str, Any]
UTC = dt.UTC
MSK = dt.timezone(dt.timedelta(hours=3), "MSK")


@dataclass(frozen=True)
class FeedRequest:
    """One call to the marketplace, as ``MarketplaceClient`` takes it."""

    method: Literal["GET", "POST"]
    path: str
    params: dict[str, str | int] | None = None
    json: dict[str, Any] | None = None


@dataclass(frozen=True)
class OrderRecord:
    """One order as stored: the marketplace's row verbatim plus queryable columns.

    Attributes:
        external_id: The marketplace's key of the row within its feed.
        status: The order's status in the marketplace's words, if the feed has one.
        order_created_at: When the order was placed, in UTC.
        price: The order's price in ``currency`` units.
        currency: An ISO 4217 code (letters where known).
        payload: The row exactly as the marketplace sent it.
    """

    external_id: str
    status: str | None
    order_created_at: dt.datetime | None
    price: Decimal | None
    currency: str | None
    payload: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Page:
    """What one answer yields: its orders, the cursor after it, and whether to go on.

    Attributes:
        orders: The page's orders, at most one per external id.
        cursor: The cursor to store with these orders.
        more: Whether this run asks for another page.
    """

    orders: list[OrderRecord]
    cursor: Cursor
    more: bool


class Feed(ABC):
    """One marketplace list method read page by page into the orders table.

    Attributes:
        name: The feed's key in ``orders.feed`` and ``sync_state.feed``.
        marketplace: ``wb`` or ``ozon``.
        category: The API category the method belongs to (the token scope).
        version_field: A payload field that orders re-deliveries; a stored row
            is only replaced by a row whose field is not older. None when the
            marketplace answers with the current state (any change wins).
    """

    name: ClassVar[str]
    marketplace: ClassVar[str]
    category: ClassVar[str]
    version_field: ClassVar[str | None] = None

    @abstractmethod
    def begin(self, stored: Mapping[str, Any] | None, now: dt.datetime) -> Cursor:
        """The cursor a run starts from, given the stored one (None at first)."""

    @abstractmethod
    def request(self, cursor: Mapping[str, Any]) -> FeedRequest:
        """The call that fetches the page at ``cursor``."""

    def version(self, value: Any) -> dt.datetime | None:
        """A ``version_field`` value as a time, to order re-deliveries."""
        return parse_time(value)

    @abstractmethod
    def read(self, body: Any, cursor: Mapping[str, Any], now: dt.datetime) -> Page:
        """Read the decoded answer to ``request(cursor)``.

        Raises:
            MalformedResponseError: The answer does not have the documented shape.
        """


def malformed(feed: str, what: str, body: Any = None) -> MalformedResponseError:
    """The error for an answer that lacks the documented shape."""
    return MalformedResponseError(
        f"{feed}: {what}", status=200, body=_preview(body), code=None
    )


def _preview(body: Any) -> Any:
    # Error bodies travel into logs and reports; a full page would not.
    text = repr(body)
    return text if len(text) <= 200 else text[:200] + "..."


def as_utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC; naive values are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_time(value: Any, *, naive_zone: dt.tzinfo = UTC) -> dt.datetime | None:
    """An RFC 3339 time as an aware UTC datetime; None when absent or unreadable.

    Args:
        value: The marketplace's text.
        naive_zone: The zone of a time written without an offset (WB's
            statistics write Moscow time that way).
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=naive_zone)
    return parsed.astimezone(UTC)


def rfc3339(value: dt.datetime) -> str:
    """``value`` in UTC as ``YYYY-MM-DDThh:mm:ss.sssZ``."""
    return as_utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def decimal(value: Any) -> Decimal | None:
    """A number or numeric text as a Decimal; None when it is neither."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def require_object(feed: str, body: Any, *keys: str) -> dict[str, Any]:
    """``body`` as a JSON object that has ``keys``.

    Raises:
        MalformedResponseError: It is not an object or lacks a key.
    """
    if not isinstance(body, dict):
        raise malformed(feed, "expected a JSON object", body)
    missing = [key for key in keys if key not in body]
    if missing:
        raise malformed(feed, f"missing {', '.join(missing)}", body)
    return body


def require_rows(feed: str, value: Any, key: str) -> list[dict[str, Any]]:
    """``value`` as a list of JSON objects that all have ``key``.

    Raises:
        MalformedResponseError: It is not such a list.
    """
    if not isinstance(value, list):
        raise malformed(feed, "expected a list of rows", value)
    for row in value:
        if not isinstance(row, dict) or row.get(key) in (None, ""):
            raise malformed(feed, f"a row without {key}", row)
    return value
