"""Which shops a scheduler tick syncs, and waits too long for a countdown.

A wait longer than the broker's visibility timeout cannot be a Celery
countdown (Redis would deliver the task twice), so it is written to
``sync_state.next_attempt_at`` instead, and the next scheduler tick after that
time picks the shop up. A shop is due when it is active and at least one of its
feeds is due (no ``next_attempt_at``, or one in the past), or when it has never
been synced.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mpshield.db.models import Shop, ShopStatus, SyncState


async def due_shop_ids(session: AsyncSession, now: dt.datetime) -> list[int]:
    """Ids of the active shops with something to sync at ``now``, in id order."""
    feed_due = exists().where(
        SyncState.shop_id == Shop.id,
        or_(SyncState.next_attempt_at.is_(None), SyncState.next_attempt_at <= now),
    )
    never_synced = ~exists().where(SyncState.shop_id == Shop.id)
    query = (
        select(Shop.id)
        .where(Shop.status == ShopStatus.ACTIVE, or_(feed_due, never_synced))
        .order_by(Shop.id)
    )
    return list((await session.scalars(query)).all())


async def defer_shop(
    session: AsyncSession, shop_id: int, until: dt.datetime, reason: str
) -> int:
    """Hold every feed of a shop back until ``until``; returns the rows changed.

    A feed already held back for longer keeps its later time. The caller
    commits. A shop without any feed row yet has nothing to hold back; it is
    due again at the next tick, where the rate limiter refuses it cheaply.
    """
    statement = (
        update(SyncState)
        .where(
            SyncState.shop_id == shop_id,
            or_(SyncState.next_attempt_at.is_(None), SyncState.next_attempt_at < until),
        )
        .values(next_attempt_at=until, last_error=reason[:500])
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)
