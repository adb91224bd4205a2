"""The state store on both backends."""

from __future__ import annotations

import pytest

from mpshield.exceptions import StateStoreUnavailableError
from mpshield.settings import Settings, load_settings
from mpshield.state.store import StateStore, get_store


async def test_store_answers_and_prefixes_keys(store: StateStore) -> None:
    """A store pings, and builds keys under its prefix."""
    await store.ping()

    assert store.key("circuit", 7, "state") == f"{store.prefix}:circuit:7:state"


async def test_same_loop_shares_one_store(
    store: StateStore, settings: Settings
) -> None:
    """Asking twice on one loop gives the same pool."""
    assert get_store(settings) is store


async def test_refused_connection_is_our_error() -> None:
    """A Redis that refuses connections raises StateStoreUnavailableError."""
    settings = load_settings(redis_url="redis://127.0.0.1:1/0")
    dead = get_store(settings)

    with pytest.raises(StateStoreUnavailableError):
        await dead.ping()
    await dead.aclose()
