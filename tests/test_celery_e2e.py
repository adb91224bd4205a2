"""Real Celery workers on the real Redis broker and PostgreSQL, against the sandbox.

Workers are ``mpshield worker`` subprocesses; the broker keys live under the
test's own prefix (kombu's ``global_keyprefix``), the database is private to
the test. The crash tests SIGKILL a worker's pool process in the middle of a
sync and between its last commit and the broker ack; the redelivered task
must still leave the database exactly at the sandbox's truth.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult

from jobhelpers import create_private_database, drop_private_database
from mpshield.db.engine import dispose_engines
from mpshield.demo import report
from mpshield.demo.run import DemoConfig, run_demo
from mpshield.demo.scaling import scaled_env
from mpshield.demo.scenario import Cast, DemoShop, build_sellers, store_shops
from mpshield.demo.workers import running_workers
from mpshield.jobs.celery_app import SYNC_SHOP, create_app
from mpshield.jobs.tasks import PAUSE_BEFORE_ACK_ENV
from mpshield.sandbox.faults import FaultConfig
from mpshield.sandbox.runner import SandboxConfig, SandboxThread
from mpshield.settings import Settings, load_settings
from mpshield.state.store import get_store

pytestmark = pytest.mark.slow

SERVICES_REDIS_URL = "redis://127.0.0.1:6379/0"
TIME_SCALE = 1 / 60
HEALTHY_ONLY = Cast(
    wb=10, ozon=10, revoked=0, deactivated=0, expired=0, no_scope=0, twins=0,
    storms=0, min_orders=5, max_orders=60,
)  # fmt: skip
TASK_TIMEOUT = 90.0


@pytest.fixture
def services_settings(tmp_path: Path, key_prefix: str) -> Iterator[Settings]:
    """Real Redis (test prefix) and a private PostgreSQL database."""
    base = load_settings(
        home=tmp_path / "home", redis_url=SERVICES_REDIS_URL, key_prefix=key_prefix
    )
    # Two plain calls, not a context manager: asyncio.run would close the
    # manager's generator (and drop the database) as soon as it returned.
    settings = asyncio.run(create_private_database(base, "services", tmp_path))
    try:
        yield settings
    finally:
        asyncio.run(_clean(settings))
        asyncio.run(drop_private_database(settings))


async def _clean(settings: Settings) -> None:
    store = get_store(settings)
    async for key in store.redis.scan_iter(match=f"{settings.key_prefix}:*", count=500):
        await store.redis.delete(key)
    await store.aclose()


def service_env(settings: Settings) -> dict[str, str]:
    return {
        "MPSHIELD_HOME": str(settings.home),
        "MPSHIELD_REDIS_URL": settings.redis_url or "",
        "MPSHIELD_DATABASE_URL": settings.database_url or "",
        "MPSHIELD_KEY_PREFIX": settings.key_prefix,
    }


def test_twenty_shops_sync_to_exact_truth(services_settings: Settings) -> None:
    """Two workers sync twenty sandbox shops; every feed matches the sandbox."""
    config = DemoConfig(
        cast=HEALTHY_ONLY,
        time_scale=TIME_SCALE,
        proxies=3,
        workers=2,
        concurrency=2,
        period=1.0,
        live_seconds=1.0,
        home=services_settings.home,
        extra_env=service_env(services_settings),
    )

    result = run_demo(config)

    assert len(result.verdict.checks) == 20 * 2
    assert result.verdict.mismatches == []
    assert result.ok


class _Crash:
    """A sandbox, shops in the database, and one worker with one pool process."""

    def __init__(
        self, settings: Settings, sandbox: SandboxThread, extra: Mapping[str, str]
    ):
        self.settings = settings
        self.sandbox = sandbox
        self.env = {**os.environ, **sandbox.env(), **scaled_env(TIME_SCALE)}
        self.env.update(service_env(settings))
        self.env.update(extra)
        self.app: Celery = create_app(settings)
        self.shops: list[DemoShop] = build_sellers(
            sandbox.world, Cast(wb=2, ozon=1, revoked=0, deactivated=0, expired=0,
                                no_scope=0, twins=0, storms=0, min_orders=30,
                                max_orders=60), seed=3)  # fmt: skip
        asyncio.run(self._store())

    async def _store(self) -> None:
        await store_shops(self.settings, self.shops)
        await dispose_engines()

    def sync(self, shop: DemoShop) -> AsyncResult[Any]:
        return self.app.send_task(SYNC_SHOP, args=[shop.shop_id])

    def verdict(self) -> report.Verdict:
        truth = {s.seller: self.sandbox.world.truth(s.seller) for s in self.shops}

        async def check() -> report.Verdict:
            try:
                return await report.check(self.settings, self.shops, truth, {})
            finally:
                await dispose_engines()

        return asyncio.run(check())


@pytest.fixture
def sandbox() -> Iterator[SandboxThread]:
    """A sandbox with scaled time and a small proxy pool."""
    running = SandboxThread(
        SandboxConfig(proxies=2, time_scale=TIME_SCALE, seed=5)
    ).start()
    try:
        yield running
    finally:
        running.stop()


def wait_for(predicate: Any, timeout: float = TASK_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def action(result: AsyncResult[Any]) -> str:
    """What a finished sync task decided."""
    value = result.result
    assert isinstance(value, dict), value
    return str(value["action"])


def pool_pids(worker_pid: int) -> list[int]:
    """The worker's pool processes (its children), from /proc."""
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text()
    return [int(pid) for pid in children.split()]


def finish(crash: _Crash) -> report.Verdict:
    """Freeze the sandbox, run every shop once more, and compare with the truth."""
    crash.sandbox.call(crash.sandbox.world.stop)
    results = [crash.sync(shop) for shop in crash.shops]
    wait_for(lambda: all(r.ready() for r in results))
    assert {action(r) for r in results} == {"synced"}
    return crash.verdict()


def test_kill_between_commit_and_ack_loses_nothing(
    services_settings: Settings, sandbox: SandboxThread, tmp_path: Path
) -> None:
    """A worker killed after its commit, before the ack: redelivered, exact truth."""
    pause_dir = tmp_path / "pause"
    pause_dir.mkdir()
    crash = _Crash(services_settings, sandbox, {PAUSE_BEFORE_ACK_ENV: str(pause_dir)})
    shop = crash.shops[0]
    (pause_dir / f"{shop.shop_id}.pause").touch()
    with running_workers(crash.env, count=1, concurrency=1, logdir=tmp_path):
        result = crash.sync(shop)
        marker = pause_dir / f"{shop.shop_id}.paused"
        wait_for(lambda: marker.exists() and marker.read_text() != "")
        os.kill(int(marker.read_text()), signal.SIGKILL)

        wait_for(result.ready)
        assert action(result) == "synced"
        verdict = finish(crash)

    assert verdict.mismatches == []
    assert len(verdict.checks) == 2 * 2 + 2


def test_kill_in_the_middle_of_a_sync_loses_nothing(
    services_settings: Settings, sandbox: SandboxThread, tmp_path: Path
) -> None:
    """A worker killed while a page is in flight: redelivered, exact truth."""
    crash = _Crash(services_settings, sandbox, {})
    shop = crash.shops[0]
    sandbox.world.set_faults(shop.seller, FaultConfig(slow_rate=1.0, slow_seconds=1.5))
    lock = f"{services_settings.key_prefix}:job:lock:{shop.shop_id}"
    with running_workers(crash.env, count=1, concurrency=1, logdir=tmp_path) as workers:
        result = crash.sync(shop)
        peek = redis.Redis.from_url(SERVICES_REDIS_URL)
        wait_for(lambda: bool(peek.exists(lock)))
        time.sleep(0.5)
        for pid in pool_pids(workers[0].pid):
            os.kill(pid, signal.SIGKILL)
        sandbox.world.set_faults(shop.seller, FaultConfig())

        wait_for(result.ready)
        assert action(result) == "synced"
        verdict = finish(crash)

    assert verdict.mismatches == []
