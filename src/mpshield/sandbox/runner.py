"""Starting the whole sandbox: the marketplaces, the storefront, the proxies.

:class:`Sandbox` runs on the caller's event loop (``async with``);
:class:`SandboxThread` runs one on its own loop in a daemon thread, for
synchronous callers, session-wide test fixtures and the demo.

Besides the world's endpoints, the admin API sets a proxy's fault mode while
the sandbox runs: ``PUT /proxies/{index}`` with ``{"mode": "ok" | "refuse" |
"502" | "hang"}`` answers the proxy's stats (404 for no such proxy).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import secrets
import tempfile
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, overload

from aiohttp import web

from mpshield.exceptions import ConfigurationError
from mpshield.redaction import get_logger
from mpshield.sandbox.admin import create_admin_app
from mpshield.sandbox.certs import make_certificates
from mpshield.sandbox.fingerprint import FingerprintLog
from mpshield.sandbox.ozon import create_ozon_app
from mpshield.sandbox.proxies import ForbiddenUpstream, ProxyPool, check_loopback
from mpshield.sandbox.server import TlsSite, fingerprint_gate
from mpshield.sandbox.storefront import create_storefront_app
from mpshield.sandbox.wb import create_wb_app
from mpshield.sandbox.world import World, WorldSettings

logger = get_logger(__name__)

T = TypeVar("T")


@dataclass
class SandboxConfig:
    """What to start; the defaults make a quiet sandbox with no proxies."""

    proxies: int = 0
    # The last ``dead_proxies`` proxies start by refusing every connection.
    dead_proxies: int = 0
    proxy_auth: tuple[str, str] | None = field(default=None, repr=False)
    time_scale: float = 1.0
    seed: int = 0
    # The fingerprint gate is on for the storefront, as on the real one; the
    # seller APIs are not known to check fingerprints, so it is optional there.
    gate_seller_apis: bool = False
    gate_storefront: bool = True
    home: Path | None = None
    host: str = "127.0.0.1"
    # Fixed ports wb, ozon, storefront, admin = base .. base + 3; else ephemeral.
    port_base: int | None = None
    world_settings: WorldSettings | None = field(default=None)

    def __post_init__(self) -> None:
        if self.proxies < 0 or not 0 <= self.dead_proxies <= self.proxies:
            raise ConfigurationError("dead proxies must be between 0 and the proxies")
        if self.proxies > 200:
            raise ConfigurationError("at most 200 proxies (127.0.0.11 .. 127.0.0.210)")
        if self.time_scale <= 0:
            raise ConfigurationError("time_scale must be positive")
        try:
            check_loopback(self.host)
        except ForbiddenUpstream:
            raise ConfigurationError(
                f"the sandbox serves on loopback only, not on {self.host!r}"
            ) from None


class Sandbox:
    """The running sandbox; ``async with Sandbox(config) as sandbox``."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.world = World(
            time_scale=self.config.time_scale,
            seed=self.config.seed,
            settings=self.config.world_settings,
        )
        self.admin_token = secrets.token_urlsafe(24)
        self.fingerprints = FingerprintLog()
        self.proxy_pool = ProxyPool(
            self.config.proxies, auth=self.config.proxy_auth, host=self.config.host
        )
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._sites: dict[str, TlsSite] = {}
        self.ca_file = Path()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start everything; on failure, stop what had started and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        config = self.config
        home = config.home
        if home is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="mpshield-sandbox-")
            home = Path(self._tempdir.name)
        certs = make_certificates(home, [config.host, "localhost"])
        self.ca_file = certs.ca_file
        context = certs.server_context()

        seller_gate = [
            fingerprint_gate(self.fingerprints, enabled=config.gate_seller_apis)
        ]
        storefront_gate = [
            fingerprint_gate(self.fingerprints, enabled=config.gate_storefront)
        ]
        apps: dict[str, web.Application] = {
            "wb": create_wb_app(self.world, middlewares=seller_gate),
            "ozon": create_ozon_app(self.world, middlewares=seller_gate),
            "storefront": create_storefront_app(
                self.world, middlewares=storefront_gate
            ),
            "admin": create_admin_app(
                self.world, admin_token=self.admin_token, extra_stats=self.extra_stats
            ),
        }
        # The admin app's token guard covers this route like its own.
        apps["admin"].router.add_put("/proxies/{index}", self._set_proxy_mode)
        for offset, (name, app) in enumerate(apps.items()):
            port = config.port_base + offset if config.port_base else 0
            site = TlsSite(
                app, host=config.host, port=port, context=context, log=self.fingerprints
            )
            await site.start()
            self._sites[name] = site
        await self.proxy_pool.start()
        for index in range(
            config.proxies - config.dead_proxies + 1, config.proxies + 1
        ):
            self.proxy_pool.set_mode(index, "refuse")
        await self.world.start()
        logger.info("sandbox started: wb %s, ozon %s", self.wb_url, self.ozon_url)

    async def stop(self) -> None:
        await self.world.stop()
        await self.proxy_pool.stop()
        for site in self._sites.values():
            await site.stop()
        self._sites.clear()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    async def _set_proxy_mode(self, request: web.Request) -> web.Response:
        data = await request.json()
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        index = int(request.match_info["index"])
        proxy = self.proxy_pool.set_mode(index, str(data.get("mode", "")))
        return web.json_response(proxy.describe())

    def extra_stats(self) -> dict[str, Any]:
        return {
            "fingerprints": self.fingerprints.by_address(),
            "proxies": self.proxy_pool.stats(),
        }

    @property
    def wb_url(self) -> str:
        return self._sites["wb"].url

    @property
    def ozon_url(self) -> str:
        return self._sites["ozon"].url

    @property
    def storefront_url(self) -> str:
        return self._sites["storefront"].url

    @property
    def admin_url(self) -> str:
        return self._sites["admin"].url

    @property
    def proxy_urls(self) -> list[str]:
        return self.proxy_pool.urls

    def env(self) -> dict[str, str]:
        """``MPSHIELD_*`` settings that point mpshield at this sandbox."""
        return {
            "MPSHIELD_WB_BASE_URL": self.wb_url,
            "MPSHIELD_OZON_BASE_URL": self.ozon_url,
            "MPSHIELD_WB_STOREFRONT_BASE_URL": self.storefront_url,
            "MPSHIELD_CA_BUNDLE": str(self.ca_file),
            "MPSHIELD_PROXIES": json.dumps(self.proxy_urls),
            "MPSHIELD_TIME_SCALE": repr(self.config.time_scale),
        }


class SandboxThread:
    """A :class:`Sandbox` on its own event loop in a daemon thread."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.sandbox = Sandbox(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="mpshield-sandbox", daemon=True
        )

    def start(self) -> Self:
        """Start the sandbox and return once it accepts connections.

        A sandbox that fails to start is stopped again (its loop, its thread
        and whatever it had bound) before the error propagates.
        """
        self._thread.start()
        try:
            self._run(self.sandbox.start())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the sandbox and its loop; safe to call twice."""
        if not self._thread.is_alive():
            if not self._loop.is_closed():
                self._loop.close()  # never started
            return
        try:
            self._run(self.sandbox.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    @overload
    def call(self, fn: Callable[[], Awaitable[T]]) -> T: ...
    @overload
    def call(self, fn: Callable[[], T]) -> T: ...

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the sandbox's loop, awaiting it if async; return the result."""

        async def invoke() -> Any:
            result = fn()
            if inspect.isawaitable(result):
                return await result
            return result

        return self._run(invoke())

    def _run(self, coro: Awaitable[T]) -> T:
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(coro), self._loop)
        return future.result(timeout=60)

    @property
    def world(self) -> World:
        return self.sandbox.world

    @property
    def wb_url(self) -> str:
        return self.sandbox.wb_url

    @property
    def ozon_url(self) -> str:
        return self.sandbox.ozon_url

    @property
    def storefront_url(self) -> str:
        return self.sandbox.storefront_url

    @property
    def admin_url(self) -> str:
        return self.sandbox.admin_url

    @property
    def admin_token(self) -> str:
        return self.sandbox.admin_token

    @property
    def ca_file(self) -> Path:
        return self.sandbox.ca_file

    @property
    def proxy_urls(self) -> list[str]:
        return self.sandbox.proxy_urls

    @property
    def fingerprints(self) -> FingerprintLog:
        return self.sandbox.fingerprints

    @property
    def proxy_pool(self) -> ProxyPool:
        return self.sandbox.proxy_pool

    def env(self) -> dict[str, str]:
        return self.sandbox.env()


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable
