"""The shared state store: Redis through redis-py asyncio, with our Lua scripts.

One connection pool per process and event loop: a pool made before a fork or
on another loop is never reused, which is what breaks async clients in Celery's
prefork workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mpshield.exceptions import StateStoreUnavailableError
from mpshield.redaction import get_logger, mask_url
from mpshield.settings import Settings, get_settings
from mpshield.state.embedded import embedded_url

logger = get_logger(__name__)

KeyPart = str | int


@contextlib.asynccontextmanager
async def translate_redis_errors() -> AsyncIterator[None]:
    """Turn redis-py's connection failures into StateStoreUnavailableError."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise StateStoreUnavailableError(f"state store unavailable: {exc}") from exc


class StateStore:
    """A Redis client, the key prefix, and the package's Lua scripts."""

    def __init__(self, client: aioredis.Redis, prefix: str, url: str) -> None:
        self.redis = client
        self.prefix = prefix
        self.url = url
        self._scripts: dict[str, AsyncScript] = {}

    def __repr__(self) -> str:
        return f"StateStore({mask_url(self.url)!r}, prefix={self.prefix!r})"

    def key(self, *parts: KeyPart) -> str:
        """Build ``<prefix>:<part>:<part>...``."""
        return ":".join([self.prefix, *(str(part) for part in parts)])

    def script(self, name: str) -> AsyncScript:
        """The script in ``state/lua/<name>.lua``, registered once per store."""
        script = self._scripts.get(name)
        if script is None:
            source = resources.files("mpshield.state").joinpath(f"lua/{name}.lua")
            script = self.redis.register_script(source.read_text(encoding="utf-8"))
            self._scripts[name] = script
        return script

    async def run(
        self, name: str, keys: Sequence[str], args: Sequence[Any] = ()
    ) -> Any:
        """Run a Lua script atomically; connection failures become our error.

        This is every protection step's one round trip, so it calls EVALSHA
        directly and falls back to loading the script only when the server
        does not know it (a restarted or flushed Redis).
        """
        script = self.script(name)
        try:
            return await self.redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            async with translate_redis_errors():
                return await script(keys=list(keys), args=list(args))
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StateStoreUnavailableError(f"state store unavailable: {exc}") from exc

    async def ping(self) -> None:
        async with translate_redis_errors():
            await self.redis.ping()

    async def aclose(self) -> None:
        await self.redis.aclose()


def resolve_redis_url(settings: Settings) -> str:
    """The configured Redis URL, or the embedded server's when none is set."""
    if settings.redis_url:
        return settings.redis_url
    return embedded_url(settings.home)


# Keyed weakly by loop so that a closed loop's pool goes with it, and checked
# against the pid so that a forked child never inherits its parent's sockets.
_stores: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[int, str, str], StateStore]
] = weakref.WeakKeyDictionary()


def get_store(settings: Settings | None = None) -> StateStore:
    """The store for this process, event loop and settings (created on first use)."""
    settings = settings or get_settings()
    url = resolve_redis_url(settings)
    per_loop = _stores.setdefault(asyncio.get_running_loop(), {})
    cache_key = (os.getpid(), url, settings.key_prefix)
    store = per_loop.get(cache_key)
    if store is None:
        client = aioredis.Redis.from_url(
            url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30
        )
        store = StateStore(client, settings.key_prefix, url)
        per_loop[cache_key] = store
        logger.debug("state store %r", store)
    return store
