"""The demo run: sandbox, shops, two Celery workers, three rounds, one verdict.

1. The sandbox starts in this process with scaled time (a marketplace minute
   lasts ``60 * time_scale`` real seconds), a pool of proxies with one dead.
2. Sellers and shops are created in the sandbox and in the database.
3. Two ``mpshield worker`` processes start with the same environment.
4. Round 1 backfills every shop, round 2 syncs what arrived meanwhile; the
   sandbox then stops taking orders, and round 3 catches up to the frozen
   state. Each round queues the due shops spread over the sync period, the
   way ``sync_all`` does on a beat tick.
5. Every healthy shop's feeds are compared with the sandbox's truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery
from celery.result import AsyncResult
from rich.console import Console, RenderableType
from rich.live import Live

from mpshield.db.engine import dispose_engines
from mpshield.demo import report, scenario
from mpshield.demo.scaling import scaled_env
from mpshield.demo.view import Snapshot, final_view, live_view, outcome_of
from mpshield.demo.workers import running_workers
from mpshield.jobs.celery_app import SYNC_SHOP, create_app
from mpshield.jobs.tasks import plan_fanout
from mpshield.redaction import get_logger
from mpshield.sandbox.runner import SandboxConfig, SandboxThread
from mpshield.settings import Settings, get_settings, load_settings
from mpshield.state.store import get_store

logger = get_logger(__name__)

REFRESH_SECONDS = 0.4


@dataclass
class DemoConfig:
    """The demo's size and pace."""

    cast: scenario.Cast = field(default_factory=scenario.Cast)
    time_scale: float = 1 / 120
    proxies: int = 8
    workers: int = 2
    concurrency: int = 3
    # Real seconds a round's syncs are spread over (the scaled sync period).
    period: float = 6.0
    # Real seconds orders keep arriving between rounds 1 and 2.
    live_seconds: float = 6.0
    round_timeout: float = 240.0
    seed: int = 7
    home: Path | None = None
    # Extra MPSHIELD_* variables (a test's Redis, database and key prefix).
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass
class DemoResult:
    """What the demo found; ``ok`` is its exit status."""

    verdict: report.Verdict
    outcomes: Counter[str]
    wall: float

    @property
    def ok(self) -> bool:
        return (
            self.verdict.ok
            and not self.outcomes.get("failed")
            and not self.outcomes.get("unfinished")
        )


def run_demo(config: DemoConfig, console: Console | None = None) -> DemoResult:
    """Run the whole demo; prints live progress and the report to ``console``."""
    console = console or Console()
    home = config.home or Path(tempfile.mkdtemp(prefix="mpshield-demo-"))
    sandbox = SandboxThread(
        SandboxConfig(
            proxies=config.proxies,
            time_scale=config.time_scale,
            seed=config.seed,
            dead_proxies=1,
        )
    ).start()
    try:
        env = _environment(config, home, sandbox)
        with _process_env(env):
            settings = load_settings()
            return asyncio.run(_run(config, settings, sandbox, env, console))
    finally:
        sandbox.stop()


@contextlib.contextmanager
def _process_env(env: Mapping[str, str]) -> Iterator[None]:
    """This process's environment (hence its settings) as the workers', for a while."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def _environment(
    config: DemoConfig, home: Path, sandbox: SandboxThread
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(sandbox.env())
    env.update(scaled_env(config.time_scale))
    env["MPSHIELD_HOME"] = str(home.absolute())
    env["MPSHIELD_SYNC_PERIOD_SECONDS"] = repr(config.period)
    env.update(config.extra_env)
    return env


async def _run(
    config: DemoConfig,
    settings: Settings,
    sandbox: SandboxThread,
    env: Mapping[str, str],
    console: Console,
) -> DemoResult:
    started = time.monotonic()
    shops = scenario.build_sellers(sandbox.world, config.cast, config.seed)
    await scenario.store_shops(settings, shops)
    console.print(
        f"[bold]mpshield demo[/]: {len(shops)} shops, {config.proxies} proxies "
        f"(1 dead), {config.workers} workers, a marketplace minute = "
        f"{60 * config.time_scale:.2f}s; state in {settings.home}"
    )
    app = create_app(settings)
    outcomes: Counter[str] = Counter()
    try:
        with running_workers(
            env,
            count=config.workers,
            concurrency=config.concurrency,
            logdir=settings.home / "logs",
        ):
            watch = _Watcher(settings, shops, sandbox, started)
            for phase in ("round 1: backfill", "round 2: live"):
                outcomes = await _round(app, settings, config, watch, phase, console)
                if phase.startswith("round 1"):
                    await watch.wait(config.live_seconds, "orders arriving", console)
            # Freeze the marketplace so that the final state is the truth.
            sandbox.call(sandbox.world.stop)
            outcomes = await _round(
                app, settings, config, watch, "round 3: final", console
            )
        truth = {shop.seller: sandbox.world.truth(shop.seller) for shop in shops}
        verdict = await report.check(settings, shops, truth, sandbox.world.stats())
        proxies = sandbox.call(sandbox.proxy_pool.stats)
    finally:
        await get_store(settings).aclose()
        await dispose_engines()
    wall = time.monotonic() - started
    result = DemoResult(verdict, outcomes, wall)
    console.print(final_view(shops, verdict, wall, outcomes, proxies))
    return result


async def _round(
    app: Celery,
    settings: Settings,
    config: DemoConfig,
    watch: _Watcher,
    phase: str,
    console: Console,
) -> Counter[str]:
    """Queue the due shops the way ``sync_all`` does and wait for all of them."""
    plan = await plan_fanout(settings)
    results = {
        shop_id: app.send_task(SYNC_SHOP, args=[shop_id], countdown=countdown)
        for shop_id, countdown in plan
    }
    deadline = time.monotonic() + config.round_timeout

    def finished() -> bool:
        return all(result.ready() for result in results.values())

    await watch.run(phase, results, console, until=finished, deadline=deadline)
    outcomes = Counter(
        outcome_of(result) if result.ready() else "unfinished"
        for result in results.values()
    )
    console.print(
        f"{phase}: {len(results)} shops queued; {dict(sorted(outcomes.items()))}"
    )
    return outcomes


class _Watcher:
    """Polls the database, Redis and the sandbox for the live table."""

    def __init__(
        self,
        settings: Settings,
        shops: list[scenario.DemoShop],
        sandbox: SandboxThread,
        started: float,
    ) -> None:
        self.settings = settings
        self.shops = shops
        self.sandbox = sandbox
        self.started = started
        self.tasks: dict[int, str] = {}

    async def snapshot(
        self, phase: str, results: Mapping[int, AsyncResult[Any]]
    ) -> Snapshot:
        for shop_id, result in results.items():
            self.tasks[shop_id] = result.state
        store = get_store(self.settings)
        keys = [store.key("circuit", shop.shop_id, "state") for shop in self.shops]
        states = await store.redis.mget(keys)
        # The proxy each shop last leased (its sticky choice).
        sticky = [store.key("shop", shop.shop_id, "proxy") for shop in self.shops]
        proxies = await store.redis.mget(sticky)
        stats = self.sandbox.world.stats()
        statuses = await report.shop_statuses(self.settings)
        return Snapshot(
            phase=phase,
            elapsed=time.monotonic() - self.started,
            orders=await report.order_counts(self.settings),
            tasks=dict(self.tasks),
            circuits={
                shop.shop_id: state.decode() if isinstance(state, bytes) else "CLOSED"
                for shop, state in zip(self.shops, states, strict=True)
            },
            proxies={
                shop.shop_id: f"proxy-{proxy.decode()}"
                for shop, proxy in zip(self.shops, proxies, strict=True)
                if isinstance(proxy, bytes)
            },
            statuses={shop_id: status for shop_id, (status, _) in statuses.items()},
            seller_stats=stats.get("sellers", {}),
            bans=sum(int(s.get("bans", 0)) for s in stats.get("addresses", {}).values())
            + sum(int(s.get("bans", 0)) for s in stats.get("sellers", {}).values()),
        )

    async def run(
        self,
        phase: str,
        results: Mapping[int, AsyncResult[Any]],
        console: Console,
        *,
        until: Callable[[], bool],
        deadline: float,
    ) -> None:
        with Live(console=console, auto_refresh=False, transient=True) as live:
            while True:
                done = until() or time.monotonic() > deadline
                view: RenderableType = live_view(
                    self.shops, await self.snapshot(phase, results)
                )
                live.update(view, refresh=True)
                if done:
                    break
                await asyncio.sleep(REFRESH_SECONDS)
        console.print(live_view(self.shops, await self.snapshot(phase, results)))

    async def wait(self, seconds: float, phase: str, console: Console) -> None:
        deadline = time.monotonic() + seconds
        await self.run(
            phase,
            {},
            console,
            until=lambda: time.monotonic() > deadline,
            deadline=deadline,
        )
