"""Shared fixtures: every test body runs against real services and the embedded defaults.

``backend`` is ``services`` (Redis on 127.0.0.1:6379, PostgreSQL on
127.0.0.1:5432) or ``embedded`` (the packaged Redis and a SQLite file). Each test
gets its own key prefix, so tests never see each other's keys and nothing is
flushed. The database is private to the test run (a fresh PostgreSQL database,
or the SQLite file in the run's embedded home); tests that use it through
``db_ready`` or ``db`` leave it empty behind them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from mpshield.db.engine import (
    dispose_engines,
    ensure_schema,
    get_engine,
    get_sessionmaker,
    upgrade,
)
from mpshield.db.models import Base
from mpshield.sandbox.runner import SandboxConfig, SandboxThread
from mpshield.sandbox.testing import running_sandbox, suite_config
from mpshield.settings import Settings, load_settings
from mpshield.state.store import StateStore, get_store

SERVICES_REDIS_URL = "redis://127.0.0.1:6379/0"
SERVICES_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
BACKENDS = ["services", "embedded"]


@pytest.fixture(scope="session")
def embedded_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedded home per test run: starting its Redis once keeps tests fast."""
    return tmp_path_factory.mktemp("mpshield-home")


async def _admin_execute(statement: str) -> None:
    admin = await asyncpg.connect(SERVICES_POSTGRES_URL.replace("+asyncpg", ""))
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


async def _migrate(settings: Settings) -> None:
    try:
        await upgrade(settings)
    finally:
        await dispose_engines()


@pytest.fixture(scope="session")
def services_database_url() -> Iterator[str]:
    """A PostgreSQL database of this test run, migrated to head, dropped at the end."""
    name = f"mpshield_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin_execute(f'CREATE DATABASE "{name}"'))
    url = SERVICES_POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        asyncio.run(_migrate(load_settings(database_url=url)))
        yield url
    finally:
        asyncio.run(_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def key_prefix() -> str:
    return f"mmstest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(
    backend: str,
    embedded_home: Path,
    key_prefix: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Settings]:
    """Settings for one test on one backend, with a private key prefix."""
    if backend == "services":
        yield load_settings(
            home=tmp_path / "home",
            redis_url=SERVICES_REDIS_URL,
            database_url=request.getfixturevalue("services_database_url"),
            key_prefix=key_prefix,
        )
    else:
        yield load_settings(home=embedded_home, key_prefix=key_prefix)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[StateStore]:
    """The state store of ``settings``; the test's keys are deleted afterwards."""
    state = get_store(settings)
    yield state
    async for key in state.redis.scan_iter(match=f"{settings.key_prefix}:*", count=500):
        await state.redis.delete(key)
    await state.aclose()


@pytest.fixture
async def db_ready(settings: Settings) -> AsyncIterator[Settings]:
    """The run's database at head; afterwards every row is deleted and pools closed."""
    await ensure_schema(settings)
    try:
        yield settings
    finally:
        async with get_engine(settings).begin() as connection:
            for table in reversed(Base.metadata.sorted_tables):
                await connection.execute(table.delete())
        await dispose_engines()


@pytest.fixture
async def db(db_ready: Settings) -> AsyncIterator[AsyncSession]:
    """A session on the run's database, emptied after the test."""
    async with get_sessionmaker(db_ready)() as session:
        yield session


@pytest.fixture(scope="session")
def sandbox_config() -> SandboxConfig:
    """The shared sandbox: 4 proxies, scaled time, the fingerprint gate everywhere."""
    return suite_config(seed=11)


@pytest.fixture(scope="session")
def sandbox(sandbox_config: SandboxConfig) -> Iterator[SandboxThread]:
    """One running sandbox for the whole test run, on its own loop thread."""
    with running_sandbox(sandbox_config) as running:
        yield running
