"""Database engines, sessions and migrations.

One engine per process and event loop: an asyncpg connection belongs to the
loop that opened it and must never cross a fork, which is what Celery's
prefork workers would otherwise do. With no ``MPSHIELD_DATABASE_URL`` the
database is a SQLite file under ``MPSHIELD_HOME`` that migrates itself on first
use; a configured database is migrated only by ``mpshield db upgrade``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, make_url, text
from sqlalchemy.engine import URL, Connection, Dialect
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from mpshield.exceptions import ConfigurationError, DatabaseUnavailableError
from mpshield.redaction import get_logger, mask_url, register_secret
from mpshield.settings import Settings, get_settings

logger = get_logger(__name__)

EMBEDDED_FILENAME = "mpshield.db"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
CONNECT_TIMEOUT_SECONDS = 10.0
# Celery workers write the embedded file at the same time; a writer waits this
# long for the lock instead of failing at once.
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Serialises concurrent `db upgrade` runs against one PostgreSQL database.
_PG_MIGRATION_LOCK_ID = 0x6D7073686C64

# Bare schemes name sync drivers; the package only speaks asyncio.
_ASYNC_SCHEMES = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def resolve_database_url(settings: Settings) -> str:
    """The configured database URL, or the embedded SQLite file's.

    A bare ``postgresql://`` or ``sqlite://`` URL gets its asyncio driver
    (asyncpg, aiosqlite).
    """
    if not settings.database_url:
        path = (settings.home / EMBEDDED_FILENAME).absolute()
        return f"sqlite+aiosqlite:///{path}"
    scheme, sep, rest = settings.database_url.partition("://")
    if sep and scheme in _ASYNC_SCHEMES:
        return f"{_ASYNC_SCHEMES[scheme]}://{rest}"
    return settings.database_url


def _parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError(
            f"MPSHIELD_DATABASE_URL is not a database URL: {mask_url(url)}"
        ) from None
    register_secret(parsed.password)
    return parsed


def _create_engine(url: str) -> AsyncEngine:
    parsed = _parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = _create_sqlite_engine(parsed)
    else:
        connect_args: dict[str, Any] = {}
        if parsed.get_driver_name() == "asyncpg":
            connect_args["timeout"] = CONNECT_TIMEOUT_SECONDS
        try:
            engine = create_async_engine(
                parsed, pool_pre_ping=True, connect_args=connect_args
            )
        except (ArgumentError, ImportError) as exc:
            raise ConfigurationError(
                f"cannot use the database {mask_url(url)}: {exc}"
            ) from None
    _translate_connect_failures(engine, url)
    return engine


def _create_sqlite_engine(url: URL) -> AsyncEngine:
    if url.database and url.database != ":memory:":
        directory = Path(url.database).parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create the database directory {directory}: {exc.strerror}"
            ) from None
    engine = create_async_engine(
        url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _set_pragmas(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        # busy_timeout first: switching to WAL itself needs the lock.
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _translate_connect_failures(engine: AsyncEngine, url: str) -> None:
    """Make every failed connect raise DatabaseUnavailableError.

    asyncpg reports a refused port as a bare OSError that never reaches
    SQLAlchemy's error events, so the connect call itself is wrapped.
    """

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(
        dialect: Dialect,
        record: ConnectionPoolEntry,
        cargs: tuple[Any, ...],
        cparams: dict[str, Any],
    ) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as exc:
            raise DatabaseUnavailableError(
                f"database unavailable at {mask_url(url)}: {exc}"
            ) from exc


# Keyed weakly by loop so that a closed loop's pool goes with it, and checked
# against the pid so that a forked child never inherits its parent's sockets.
_engines: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[int, str], AsyncEngine]
] = weakref.WeakKeyDictionary()
# Databases this process has found (or brought) at head.
_schema_ready: set[tuple[int, str]] = set()


def get_engine(settings: Settings | None = None) -> AsyncEngine:
    """The engine for this process, event loop and database (created on first use).

    Raises:
        ConfigurationError: The URL is not one SQLAlchemy can use.
    """
    settings = settings or get_settings()
    url = resolve_database_url(settings)
    per_loop = _engines.setdefault(asyncio.get_running_loop(), {})
    cache_key = (os.getpid(), url)
    engine = per_loop.get(cache_key)
    if engine is None:
        engine = _create_engine(url)
        per_loop[cache_key] = engine
        logger.debug("database engine for %s", mask_url(url))
    return engine


def get_sessionmaker(
    settings: Settings | None = None,
) -> async_sessionmaker[AsyncSession]:
    """Sessions on this loop's engine; objects stay readable after a commit."""
    return async_sessionmaker(get_engine(settings), expire_on_commit=False)


async def dispose_engines() -> None:
    """Close the pools this process opened on the running loop.

    Call it before the loop ends (the CLI does, and so do short-lived jobs);
    a later ``get_engine`` on the same loop opens a new pool.
    """
    per_loop = _engines.pop(asyncio.get_running_loop(), {})
    for (pid, _url), engine in per_loop.items():
        # A parent's pool seen from a forked child is dropped, never closed:
        # its sockets still serve the parent.
        await engine.dispose(close=pid == os.getpid())


def alembic_config() -> Config:
    """An Alembic configuration for the package's migrations; no ini file needed."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The newest migration shipped with the package."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise ConfigurationError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def _read_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(settings: Settings | None = None) -> str | None:
    """The revision the database is at, None when it was never migrated.

    Raises:
        DatabaseUnavailableError: The database cannot be reached.
    """
    async with get_engine(settings).connect() as connection:
        return await connection.run_sync(_read_revision)


def _run_upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade(settings: Settings | None = None, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` on the configured or embedded database.

    Safe to run from several processes at once: they take turns, and the later
    ones find nothing left to do.

    Raises:
        DatabaseUnavailableError: The database cannot be reached.
    """
    settings = settings or get_settings()
    engine = get_engine(settings)
    url = resolve_database_url(settings)
    async with _migration_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:id)"),
                {"id": _PG_MIGRATION_LOCK_ID},
            )
        await connection.run_sync(_run_upgrade, revision)
    logger.info("database %s upgraded to %s", mask_url(url), revision)


@contextlib.asynccontextmanager
async def _migration_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """On a SQLite file, hold an exclusive lock file while migrating.

    SQLite runs Alembic's DDL outside a transaction, so two workers starting
    together on a fresh file would both try to create the tables.
    """
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    lock_path = Path(database).with_name(Path(database).name + ".migrate-lock")
    handle = await asyncio.to_thread(_acquire_file_lock, lock_path)
    try:
        yield
    finally:
        handle.close()


def _acquire_file_lock(path: Path) -> TextIO:
    import fcntl  # POSIX only; the embedded default targets Linux and macOS

    handle = path.open("a")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


async def ensure_schema(settings: Settings | None = None) -> None:
    """Make sure the database is at the package's head revision.

    The embedded default migrates itself; a configured database is only
    checked, since migrating production is the operator's decision. The result
    is remembered for the rest of the process.

    Raises:
        ConfigurationError: A configured database is not at head.
        DatabaseUnavailableError: The database cannot be reached.
    """
    settings = settings or get_settings()
    url = resolve_database_url(settings)
    cache_key = (os.getpid(), url)
    if cache_key in _schema_ready:
        return
    if settings.database_url is None:
        await upgrade(settings)
    else:
        current, head = await current_revision(settings), head_revision()
        if current != head:
            raise ConfigurationError(
                f"the database {mask_url(url)} is at revision {current or 'none'}, "
                f"the package needs {head}: run `mpshield db upgrade`"
            )
    _schema_ready.add(cache_key)


@contextlib.asynccontextmanager
async def session_scope(
    settings: Settings | None = None,
) -> AsyncIterator[AsyncSession]:
    """A session that commits when the block ends and rolls back on an error.

    The schema is checked (the embedded default: migrated) on first use.

    Raises:
        ConfigurationError: A configured database is not at head.
        DatabaseUnavailableError: The database cannot be reached.
    """
    settings = settings or get_settings()
    await ensure_schema(settings)
    async with get_sessionmaker(settings).begin() as session:
        yield session
