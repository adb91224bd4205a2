"""Alembic environment for mpshield's migrations.

``mpshield.db.engine.upgrade`` hands over an open connection in
``config.attributes["connection"]``. Run from the ``alembic`` command instead,
the environment opens the database of the mpshield settings (``MPSHIELD_*``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from mpshield.db.models import Base, UtcDateTime

config = context.config
target_metadata = Base.metadata


def render_item(
    kind: str, item: Any, autogen_context: AutogenContext
) -> str | Literal[False]:
    """Render UtcDateTime as the column type it stores, so revisions import nothing."""
    if kind == "type" and isinstance(item, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_item=render_item,
        # SQLite cannot ALTER most things; batch mode rebuilds the table.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_with_settings() -> None:
    from mpshield.db.engine import dispose_engines, get_engine

    try:
        async with get_engine().begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await dispose_engines()


def run_offline() -> None:
    from mpshield.db.engine import resolve_database_url
    from mpshield.settings import get_settings

    context.configure(
        url=config.get_main_option("sqlalchemy.url")
        or resolve_database_url(get_settings()),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
elif (given := config.attributes.get("connection")) is not None:
    run_migrations(given)
else:
    asyncio.run(run_with_settings())
