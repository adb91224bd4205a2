"""Shared fixtures: every test body runs against real services and the embedded defaults.

``backend`` is ``services`` (Redis on 127.0.0.1:6379, PostgreSQL on
127.0.0.1:5432) or ``embedded`` (the packaged Redis and a SQLite file). Each test
gets its own key prefix, so tests never see each other's keys and nothing is
flushed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mpshield.settings import Settings, load_settings
from mpshield.state.store import StateStore, get_store

SERVICES_REDIS_URL = "redis://127.0.0.1:6379/0"
SERVICES_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
BACKENDS = ["services", "embedded"]


@pytest.fixture(scope="session")
def embedded_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedded home per test run: starting its Redis once keeps tests fast."""
    return tmp_path_factory.mktemp("mpshield-home")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def key_prefix() -> str:
    return f"mmstest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(
    backend: str, embedded_home: Path, key_prefix: str, tmp_path: Path
) -> Iterator[Settings]:
    """Settings for one test on one backend, with a private key prefix."""
    if backend == "services":
        yield load_settings(
            home=tmp_path / "home",
            redis_url=SERVICES_REDIS_URL,
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
