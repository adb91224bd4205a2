"""Writing a page of orders and the advanced cursor in one transaction.

This is what makes the sync lose and duplicate nothing: a page's orders and
the cursor that follows them commit together or not at all. A crash before
the commit leaves the old cursor, so the page is fetched again; a crash after
it leaves the new cursor beside the orders it covers. Orders are upserted by
(shop, feed, external id), so a page read twice stores each order once.

A stored order is replaced only by a row that differs from it and, for feeds
with a ``version_field`` (WB statistics' ``lastChangeDate``), is not older
than it: an old copy delivered again never undoes a newer one. Existing rows
are locked while the page is written (PostgreSQL ``FOR UPDATE``; SQLite
writes one transaction at a time anyway), so two runs of one feed cannot
interleave their checks.

PostgreSQL takes ``INSERT ... ON CONFLICT DO UPDATE``, SQLite its own
``ON CONFLICT`` clause; both answer with the rows they wrote (``RETURNING``),
which gives the counts of new and changed orders.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mpshield.db.models import Order, SyncState
from mpshield.exceptions import DatabaseUnavailableError
from mpshield.jobs.feeds.base import Feed, OrderRecord
from mpshield.redaction import get_logger

logger = get_logger(__name__)

SessionFactory = async_sessionmaker[AsyncSession]
# Rows per statement: 500 rows of 11 columns stay far below both drivers'
# limit of 32767 bound parameters.
CHUNK = 500


@dataclass(frozen=True)
class PageCounts:
    """What storing one page did.

    Attributes:
        new: Orders stored for the first time.
        updated: Stored orders replaced by a newer or different row.
    """

    new: int = 0
    updated: int = 0


async def save_page(
    sessions: SessionFactory,
    *,
    shop_id: int,
    feed: Feed,
    orders: Sequence[OrderRecord],
    cursor: Mapping[str, Any],
    finished: bool,
    now: dt.datetime,
) -> PageCounts:
    """Upsert a page's orders and store the cursor after it, in one transaction.

    Args:
        sessions: Makes the session the transaction runs in.
        shop_id: The shop the orders belong to.
        feed: The feed the page came from.
        orders: The page's orders.
        cursor: The cursor that follows the page.
        finished: This page ends the run: also record the success.
        now: The time to stamp.

    Returns:
        How many orders were new and how many changed.

    Raises:
        DatabaseUnavailableError: The database could not be reached; nothing
            was stored.
    """
    latest = _latest(feed, orders)
    try:
        async with sessions() as session, session.begin():
            counts = await _upsert_orders(session, shop_id, feed, latest, now)
            await _write_cursor(
                session, shop_id, feed.name, dict(cursor), finished, now
            )
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailableError(
            f"storing a page of {feed.name} failed: {exc}"
        ) from exc
    return counts


async def load_cursor(
    sessions: SessionFactory, shop_id: int, feed: str
) -> dict[str, Any] | None:
    """The stored cursor of a shop's feed, or None before its first page."""
    try:
        async with sessions() as session:
            state = await session.get(SyncState, (shop_id, feed))
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailableError(
            f"reading the cursor of {feed} failed: {exc}"
        ) from exc
    if state is None or not state.cursor:
        return None
    return dict(state.cursor)


async def record_failure(
    sessions: SessionFactory,
    shop_id: int,
    feed: str,
    *,
    error: str,
    next_attempt_at: dt.datetime | None,
    now: dt.datetime,
) -> None:
    """Note why a feed stopped and when to try again; the cursor stays as it is."""
    values: dict[str, Any] = {
        "shop_id": shop_id,
        "feed": feed,
        "cursor": {},
        "last_error": error[:2000],
        "next_attempt_at": next_attempt_at,
        "updated_at": now,
    }
    try:
        async with sessions() as session, session.begin():
            insert = _insert_for(session)
            statement = insert(SyncState).values(**values)
            statement = statement.on_conflict_do_update(
                index_elements=[SyncState.shop_id, SyncState.feed],
                set_={
                    "last_error": statement.excluded.last_error,
                    "next_attempt_at": statement.excluded.next_attempt_at,
                    "updated_at": statement.excluded.updated_at,
                },
            )
            await session.execute(statement)
    except (OperationalError, InterfaceError):
        # The run is failing already; losing the note costs only a status line.
        logger.warning("could not record the failure of %s for shop %s", feed, shop_id)


async def _upsert_orders(
    session: AsyncSession,
    shop_id: int,
    feed: Feed,
    orders: list[OrderRecord],
    now: dt.datetime,
) -> PageCounts:
    new = updated = 0
    for chunk in _chunks(orders, CHUNK):
        stored = await _stored_versions(session, shop_id, feed, chunk)
        writable = [
            order
            for order in chunk
            if order.external_id not in stored
            or not _is_older(feed, order, stored[order.external_id])
        ]
        if not writable:
            continue
        written = await _upsert(session, shop_id, feed, writable, now)
        fresh = sum(1 for ident in written if ident not in stored)
        new += fresh
        updated += len(written) - fresh
    return PageCounts(new=new, updated=updated)


async def _stored_versions(
    session: AsyncSession,
    shop_id: int,
    feed: Feed,
    chunk: list[OrderRecord],
) -> dict[str, str | None]:
    """The external ids of ``chunk`` already stored, with their version text."""
    ids = [order.external_id for order in chunk]
    query: Select[str, str | None]
    if feed.version_field is None:
        query = select(Order.external_id, Order.status)
    else:
        query = select(Order.external_id, Order.payload[feed.version_field].as_string())
    query = query.where(
        Order.shop_id == shop_id, Order.feed == feed.name, Order.external_id.in_(ids)
    ).with_for_update()
    result = await session.execute(query)
    return {ident: version for ident, version in result}


async def _upsert(
    session: AsyncSession,
    shop_id: int,
    feed: Feed,
    orders: list[OrderRecord],
    now: dt.datetime,
) -> list[str]:
    """Insert or replace ``orders``; returns the external ids actually written."""
    insert = _insert_for(session)
    statement = insert(Order).values(
        [
            {
                "shop_id": shop_id,
                "marketplace": feed.marketplace,
                "feed": feed.name,
                "external_id": order.external_id,
                "status": order.status,
                "order_created_at": order.order_created_at,
                "price": order.price,
                "currency": order.currency,
                "payload": order.payload,
                "first_seen_at": now,
                "updated_at": now,
            }
            for order in orders
        ]
    )
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=[Order.shop_id, Order.feed, Order.external_id],
        set_={
            "status": excluded.status,
            "order_created_at": excluded.order_created_at,
            "price": excluded.price,
            "currency": excluded.currency,
            "payload": excluded.payload,
            "updated_at": excluded.updated_at,
        },
        # An identical row is not a change: no write, no count.
        where=Order.payload.is_distinct_from(excluded.payload),
    ).returning(Order.external_id)
    result = await session.execute(statement)
    return list(result.scalars())


async def _write_cursor(
    session: AsyncSession,
    shop_id: int,
    feed: str,
    cursor: dict[str, Any],
    finished: bool,
    now: dt.datetime,
) -> None:
    values: dict[str, Any] = {
        "shop_id": shop_id,
        "feed": feed,
        "cursor": cursor,
        "updated_at": now,
    }
    if finished:
        values.update(last_success_at=now, last_error=None, next_attempt_at=None)
    insert = _insert_for(session)
    statement = insert(SyncState).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[SyncState.shop_id, SyncState.feed],
        set_={
            key: statement.excluded[key]
            for key in values
            if key not in ("shop_id", "feed")
        },
    )
    await session.execute(statement)


def _insert_for(session: AsyncSession) -> Callable[..., Any]:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise DatabaseUnavailableError(
        f"the order sync supports PostgreSQL and SQLite, not {dialect}"
    )


def _latest(feed: Feed, orders: Sequence[OrderRecord]) -> list[OrderRecord]:
    """One record per external id: the newest by the feed's version, else the last."""
    chosen: dict[str, OrderRecord] = {}
    for order in orders:
        held = chosen.get(order.external_id)
        if held is None or not _is_older(feed, order, _version(feed, held)):
            chosen[order.external_id] = order
    return list(chosen.values())


def _version(feed: Feed, order: OrderRecord) -> Any:
    return None if feed.version_field is None else order.payload.get(feed.version_field)


def _is_older(feed: Feed, order: OrderRecord, stored: Any) -> bool:
    """Whether ``order`` is older than a stored version (never, without versions)."""
    if feed.version_field is None:
        return False
    mine, theirs = feed.version(_version(feed, order)), feed.version(stored)
    return mine is not None and theirs is not None and mine < theirs


def _chunks(items: list[OrderRecord], size: int) -> Iterator[list[OrderRecord]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
