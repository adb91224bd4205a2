"""The database layer on PostgreSQL and SQLite: migrations, engines and shops."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import secrets
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, delete, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mpshield.db.engine import (
    current_revision,
    dispose_engines,
    ensure_schema,
    get_engine,
    get_sessionmaker,
    head_revision,
    resolve_database_url,
    session_scope,
    upgrade,
)
from mpshield.db.models import Base, Order, Shop, ShopStatus, SyncState
from mpshield.db.shops import (
    add_shop,
    get_shop,
    list_shops,
    mark_category_unauthorized,
    set_browser_profile,
    set_shop_status,
    update_credentials,
)
from mpshield.exceptions import (
    ConfigurationError,
    DatabaseUnavailableError,
    ShopNotFoundError,
)
from mpshield.redaction import MASK, redact
from mpshield.settings import Settings, load_settings

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
OZON_KEY = "6f1c1e2a-7d55-4f0e-9d6a-3b1f2c4d5e6f"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_wb_token(**claims: Any) -> str:
    """A token shaped like WB's (an ES256 JWT); the signature is random bytes."""
    header = _b64(json.dumps({"alg": "ES256", "kid": "test", "typ": "JWT"}).encode())
    payload = {"sid": str(uuid.uuid4()), "s": 1 << 4, "exp": 4102444800, **claims}
    body = _b64(json.dumps(payload).encode())
    return f"{header}.{body}.{_b64(secrets.token_bytes(64))}"


def _schema_diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


# -- engines and migrations ----------------------------------------------------


def test_embedded_url_lives_under_home(tmp_path: Path) -> None:
    """Without a database URL the database is a SQLite file under the home."""
    settings = load_settings(home=tmp_path)

    url = resolve_database_url(settings)

    assert url == f"sqlite+aiosqlite:///{tmp_path.absolute()}/mpshield.db"


@pytest.mark.parametrize(
    ("given", "resolved"),
    [
        ("postgresql://u@127.0.0.1/x", "postgresql+asyncpg://u@127.0.0.1/x"),
        ("postgres://u@127.0.0.1/x", "postgresql+asyncpg://u@127.0.0.1/x"),
        ("sqlite:////tmp/a.db", "sqlite+aiosqlite:////tmp/a.db"),
        ("postgresql+asyncpg://u@127.0.0.1/x", "postgresql+asyncpg://u@127.0.0.1/x"),
    ],
)
def test_configured_url_gets_an_async_driver(given: str, resolved: str) -> None:
    """A bare postgresql:// or sqlite:// URL is given its asyncio driver."""
    assert resolve_database_url(load_settings(database_url=given)) == resolved


async def test_migrated_schema_matches_models(db_ready: Settings) -> None:
    """After the migrations the database is at head and matches the models."""
    await upgrade(db_ready)  # a second run finds nothing to do

    async with get_engine(db_ready).connect() as connection:
        diff = await connection.run_sync(_schema_diff)
        tables = await connection.run_sync(
            lambda sync: set(inspect(sync).get_table_names())
        )

    assert diff == []
    assert tables >= {"shops", "proxies", "orders", "sync_state", "alembic_version"}
    assert await current_revision(db_ready) == head_revision()


async def test_embedded_default_migrates_itself(tmp_path: Path) -> None:
    """The first session on a fresh embedded home creates and migrates the file."""
    settings = load_settings(home=tmp_path / "fresh")
    try:
        async with session_scope(settings) as session:
            assert await list_shops(session) == []
            journal = (await session.execute(text("PRAGMA journal_mode"))).scalar()
            foreign_keys = (await session.execute(text("PRAGMA foreign_keys"))).scalar()
        revision = await current_revision(settings)
    finally:
        await dispose_engines()

    assert (tmp_path / "fresh" / "mpshield.db").is_file()
    assert revision == head_revision()
    assert (journal, foreign_keys) == ("wal", 1)


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
async def test_configured_database_behind_head_is_refused(
    kind: str, tmp_path: Path
) -> None:
    """A configured database is never migrated behind the operator's back."""
    name = f"mpshield_test_{uuid.uuid4().hex[:12]}"
    if kind == "postgresql":
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'CREATE DATABASE "{name}"')
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / name}.db"
    settings = load_settings(home=tmp_path, database_url=url)
    try:
        with pytest.raises(ConfigurationError, match="run `mpshield db upgrade`"):
            await ensure_schema(settings)
        assert await current_revision(settings) is None

        await upgrade(settings)
        await ensure_schema(settings)
        assert await current_revision(settings) == head_revision()
    finally:
        await dispose_engines()
        if kind == "postgresql":
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


async def test_refused_port_is_database_unavailable() -> None:
    """A PostgreSQL that refuses connections raises DatabaseUnavailableError, password masked."""
    password = "refused-port-password"
    settings = load_settings(
        database_url=f"postgresql+asyncpg://postgres:{password}@127.0.0.1:1/x"
    )
    try:
        with pytest.raises(DatabaseUnavailableError) as raised:
            await ensure_schema(settings)
        with pytest.raises(DatabaseUnavailableError):
            async with get_sessionmaker(settings)() as session:
                await session.execute(text("SELECT 1"))
    finally:
        await dispose_engines()

    assert "127.0.0.1:1" in str(raised.value)
    assert password not in str(raised.value)
    assert password not in repr(raised.value.args)


async def test_impossible_sqlite_path_is_a_configuration_error(tmp_path: Path) -> None:
    """A SQLite file whose directory cannot be created is a ConfigurationError."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    settings = load_settings(database_url=f"sqlite+aiosqlite:///{blocker}/x/y.db")

    try:
        with pytest.raises(ConfigurationError, match="cannot create"):
            await ensure_schema(settings)
    finally:
        await dispose_engines()


async def test_one_engine_per_loop_and_database(settings: Settings) -> None:
    """Asking twice on one loop gives the same engine; another database another."""
    other = load_settings(home=settings.home / "other")
    try:
        assert get_engine(settings) is get_engine(settings)
        assert get_engine(other) is not get_engine(settings)
    finally:
        await dispose_engines()


async def test_garbage_url_is_a_configuration_error() -> None:
    """A database URL SQLAlchemy cannot parse is a ConfigurationError."""
    settings = load_settings(database_url="not a url at all")

    with pytest.raises(ConfigurationError, match="MPSHIELD_DATABASE_URL"):
        get_engine(settings)


# -- shops --------------------------------------------------------------------


async def test_add_wb_shop(db: AsyncSession) -> None:
    """A WB shop is stored active with its token, and the token is masked in text."""
    token = make_wb_token()

    shop = await add_shop(db, marketplace="wb", api_key=token, name="  Main  ")
    await db.commit()

    stored = await get_shop(db, shop.id)
    assert (stored.marketplace, stored.name, stored.status) == ("wb", "Main", "active")
    assert stored.api_key == token
    assert stored.client_id is None
    assert stored.unauthorized_categories == []
    assert token not in repr(stored)
    assert redact(f"key={token}") == f"key={MASK}"


async def test_add_ozon_shop(db: AsyncSession) -> None:
    """An Ozon shop keeps its Client-Id and Api-Key."""
    shop = await add_shop(
        db, marketplace="OZON", api_key=OZON_KEY, client_id=" 123456 "
    )
    await db.commit()

    stored = await get_shop(db, shop.id)
    assert (stored.marketplace, stored.client_id, stored.api_key) == (
        "ozon",
        "123456",
        OZON_KEY,
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"marketplace": "amazon", "api_key": OZON_KEY}, "unknown marketplace"),
        ({"marketplace": "wb", "api_key": OZON_KEY}, "JWT"),
        ({"marketplace": "wb", "api_key": "aaaaaa.bbbbbb.cccccc"}, "JWT"),
        ({"marketplace": "wb", "api_key": "secretpart.two"}, "JWT"),
        ({"marketplace": "wb", "api_key": ""}, "empty"),
        ({"marketplace": "wb", "api_key": "has space.in.it"}, "spaces"),
        ({"marketplace": "ozon", "api_key": OZON_KEY}, "Client-Id"),
        ({"marketplace": "ozon", "api_key": OZON_KEY, "client_id": "12ab"}, "positive"),
        ({"marketplace": "ozon", "api_key": OZON_KEY, "client_id": "0"}, "positive"),
        ({"marketplace": "ozon", "api_key": OZON_KEY, "client_id": "-5"}, "positive"),
        ({"marketplace": "ozon", "api_key": OZON_KEY, "client_id": "١٢٣"}, "positive"),
        (
            {"marketplace": "wb", "api_key": make_wb_token(), "client_id": "123"},
            "no Client-Id",
        ),
        (
            {"marketplace": "ozon", "api_key": OZON_KEY, "client_id": OZON_KEY},
            "positive",
        ),
    ],
)
async def test_bad_shop_is_refused_without_echoing_the_key(
    db: AsyncSession, fields: dict[str, str], message: str
) -> None:
    """Malformed input raises ConfigurationError naming the problem, never the key."""
    with pytest.raises(ConfigurationError, match=message) as raised:
        await add_shop(db, **fields)

    text_ = str(raised.value)
    assert "\n" not in text_
    if len(fields["api_key"]) >= 6:
        assert fields["api_key"] not in text_
        assert fields["api_key"] not in repr(raised.value.args)
    assert await list_shops(db) == []


async def test_unknown_shop_is_not_found(db: AsyncSession) -> None:
    """Loading a missing shop raises ShopNotFoundError carrying the id."""
    with pytest.raises(ShopNotFoundError) as raised:
        await get_shop(db, 987654)

    assert raised.value.shop_id == 987654


async def test_list_shops_filters(db: AsyncSession) -> None:
    """Shops list in id order, filtered by marketplace and by status."""
    wb = await add_shop(db, marketplace="wb", api_key=make_wb_token())
    ozon = await add_shop(db, marketplace="ozon", api_key=OZON_KEY, client_id="7")
    await set_shop_status(db, ozon.id, ShopStatus.AUTH_ERROR, "401 x10")
    await db.commit()

    everything = [shop.id for shop in await list_shops(db)]
    only_wb = [shop.id for shop in await list_shops(db, marketplace="wb")]
    broken = [shop.id for shop in await list_shops(db, status=ShopStatus.AUTH_ERROR)]

    assert everything == sorted([wb.id, ozon.id])
    assert only_wb == [wb.id]
    assert broken == [ozon.id]
    with pytest.raises(ConfigurationError, match="unknown shop status"):
        await list_shops(db, status="sleeping")


async def test_set_shop_status_stamps_utc(db: AsyncSession, db_ready: Settings) -> None:
    """A status change stores the reason and an aware UTC time, read back as such."""
    shop = await add_shop(db, marketplace="wb", api_key=make_wb_token())
    before = dt.datetime.now(dt.UTC)

    await set_shop_status(db, shop.id, ShopStatus.AUTH_ERROR, "circuit opened")
    await db.commit()

    async with get_sessionmaker(db_ready)() as fresh:
        stored = await get_shop(fresh, shop.id)
    assert (stored.status, stored.status_reason) == ("auth_error", "circuit opened")
    assert stored.status_changed_at is not None
    assert stored.status_changed_at.utcoffset() == dt.timedelta(0)
    assert before - dt.timedelta(seconds=1) <= stored.status_changed_at
    assert stored.status_changed_at <= dt.datetime.now(dt.UTC)


async def test_mark_category_unauthorized_is_idempotent(
    db: AsyncSession, db_ready: Settings
) -> None:
    """Marking a category twice records it once, and it survives a commit."""
    shop = await add_shop(db, marketplace="wb", api_key=make_wb_token())
    await db.commit()

    await mark_category_unauthorized(db, shop.id, "statistics")
    await mark_category_unauthorized(db, shop.id, "content")
    await mark_category_unauthorized(db, shop.id, "statistics")
    await db.commit()

    async with get_sessionmaker(db_ready)() as fresh:
        stored = await get_shop(fresh, shop.id)
    assert stored.unauthorized_categories == ["content", "statistics"]


async def test_update_credentials_clears_unauthorized(
    db: AsyncSession, db_ready: Settings
) -> None:
    """A new key replaces the old one and clears the unauthorized categories."""
    shop = await add_shop(db, marketplace="ozon", api_key=OZON_KEY, client_id="42")
    await mark_category_unauthorized(db, shop.id, "finance")
    await set_shop_status(db, shop.id, ShopStatus.AUTH_ERROR, "dead key")
    new_key = str(uuid.uuid4())

    await update_credentials(db, shop.id, api_key=new_key)
    await db.commit()

    async with get_sessionmaker(db_ready)() as fresh:
        stored = await get_shop(fresh, shop.id)
    assert (stored.api_key, stored.client_id) == (new_key, "42")
    assert stored.unauthorized_categories == []
    assert stored.status == "auth_error"  # reopening is reset_shop_circuit's job
    assert redact(new_key) == MASK


async def test_update_credentials_checks_the_new_key(db: AsyncSession) -> None:
    """A malformed replacement key is refused and the stored one kept."""
    token = make_wb_token()
    shop = await add_shop(db, marketplace="wb", api_key=token)

    with pytest.raises(ConfigurationError, match="JWT"):
        await update_credentials(db, shop.id, api_key="not-a-token")
    with pytest.raises(ShopNotFoundError):
        await update_credentials(db, 424242, api_key=make_wb_token())


async def test_set_browser_profile(db: AsyncSession) -> None:
    """The chosen impersonation profile is stored on the shop."""
    shop = await add_shop(db, marketplace="wb", api_key=make_wb_token())

    await set_browser_profile(db, shop.id, "chrome131")
    await db.commit()

    assert (await get_shop(db, shop.id)).browser_profile == "chrome131"
    with pytest.raises(ConfigurationError):
        await set_browser_profile(db, shop.id, "")


# -- orders and constraints ----------------------------------------------------


def _order(shop_id: int, feed: str, external_id: str) -> Order:
    return Order(
        shop_id=shop_id,
        marketplace="wb",
        feed=feed,
        external_id=external_id,
        payload={"id": external_id},
    )


async def test_order_unique_per_shop_feed_and_id(db: AsyncSession) -> None:
    """The same (shop, feed, external id) cannot be stored twice; another feed can."""
    shop_id = (await add_shop(db, marketplace="wb", api_key=make_wb_token())).id
    db.add_all([_order(shop_id, "wb_fbs", "1001"), _order(shop_id, "wb_stats", "1001")])
    await db.commit()

    db.add(_order(shop_id, "wb_fbs", "1001"))
    with pytest.raises(IntegrityError):
        await db.commit()
    await db.rollback()

    rows = (await db.scalars(select(Order).where(Order.shop_id == shop_id))).all()
    assert sorted(row.feed for row in rows) == ["wb_fbs", "wb_stats"]


async def test_foreign_keys_are_enforced(db: AsyncSession) -> None:
    """An order for a shop that does not exist is refused on both backends."""
    db.add(_order(999_999, "wb_fbs", "1"))

    with pytest.raises(IntegrityError):
        await db.commit()
    await db.rollback()


async def test_deleting_a_shop_cascades(db: AsyncSession) -> None:
    """Deleting a shop deletes its orders and sync state in the database."""
    shop = await add_shop(db, marketplace="wb", api_key=make_wb_token())
    db.add(_order(shop.id, "wb_fbs", "1"))
    db.add(SyncState(shop_id=shop.id, feed="wb_fbs", cursor={"next": 5}))
    await db.commit()

    await db.execute(delete(Shop).where(Shop.id == shop.id))
    await db.commit()

    assert (await db.scalars(select(Order))).all() == []
    assert (await db.scalars(select(SyncState))).all() == []


_UPGRADE_SCRIPT = """
import asyncio, sys
from mpshield.db.engine import dispose_engines, upgrade
from mpshield.settings import load_settings

async def run():
    try:
        await upgrade(load_settings(home=sys.argv[1], database_url=sys.argv[2] or None))
    finally:
        await dispose_engines()

asyncio.run(run())
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
async def test_concurrent_upgrades_take_turns(kind: str, tmp_path: Path) -> None:
    """Three processes migrating one fresh database at once all succeed, once."""
    name = f"mpshield_test_{uuid.uuid4().hex[:12]}"
    url = ""
    if kind == "postgresql":
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'CREATE DATABASE "{name}"')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPSHIELD_")}
    settings = load_settings(home=tmp_path, database_url=url or None)
    try:
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", _UPGRADE_SCRIPT, str(tmp_path), url, env=env
            )
            for _ in range(3)
        ]
        codes = [await asyncio.wait_for(worker.wait(), 60) for worker in workers]
        async with get_engine(settings).connect() as connection:
            versions = (
                await connection.execute(
                    text("SELECT version_num FROM alembic_version")
                )
            ).all()
    finally:
        await dispose_engines()
        if kind == "postgresql":
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()

    assert codes == [0, 0, 0]
    assert [row[0] for row in versions] == [head_revision()]
