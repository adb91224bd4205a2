"""Helpers for the job tests: a private database per test, and shops in it."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from sqlalchemy import select

from mpshield.db.engine import dispose_engines, session_scope, upgrade
from mpshield.db.models import Shop, ShopStatus, SyncState
from mpshield.settings import Settings

POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def create_private_database(
    settings: Settings, backend: str, workdir: Path
) -> Settings:
    """``settings`` pointing at a fresh, migrated database of its own.

    ``services`` gets a uniquely named PostgreSQL database, ``embedded`` a
    SQLite file in ``workdir``; :func:`drop_private_database` removes it.
    """
    name = f"mpshield_jobs_{uuid.uuid4().hex[:12]}"
    if backend == "services":
        admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    else:
        url = f"sqlite+aiosqlite:///{workdir / (name + '.db')}"
    private = settings.model_copy(update={"database_url": url})
    await upgrade(private)
    await dispose_engines()
    return private


async def drop_private_database(settings: Settings) -> None:
    """Drop a database made by :func:`create_private_database` (PostgreSQL only)."""
    await dispose_engines()
    url = settings.database_url or ""
    if url.startswith("postgresql"):
        name = url.rsplit("/", 1)[1]
        admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def private_database(
    settings: Settings, backend: str, workdir: Path
) -> AsyncIterator[Settings]:
    """A fresh database for the block, dropped afterwards."""
    private = await create_private_database(settings, backend, workdir)
    try:
        yield private
    finally:
        await drop_private_database(private)


async def add_test_shop(
    settings: Settings,
    *,
    status: str = ShopStatus.ACTIVE,
    feeds: dict[str, dt.datetime | None] | None = None,
) -> int:
    """Insert a shop (and a sync_state row per feed with its next_attempt_at)."""
    async with session_scope(settings) as session:
        shop = Shop(marketplace="wb", name="test", api_key="test-token", status=status)
        session.add(shop)
        await session.flush()
        for feed, next_attempt_at in (feeds or {}).items():
            session.add(
                SyncState(
                    shop_id=shop.id,
                    feed=feed,
                    cursor={},
                    next_attempt_at=next_attempt_at,
                )
            )
        return shop.id


async def next_attempts(settings: Settings, shop_id: int) -> list[dt.datetime | None]:
    """The shop's sync_state.next_attempt_at values, by feed name."""
    async with session_scope(settings) as session:
        rows = await session.scalars(
            select(SyncState.next_attempt_at)
            .where(SyncState.shop_id == shop_id)
            .order_by(SyncState.feed)
        )
        return list(rows.all())
