"""What each protection mechanism costs per request, next to a bare Redis PING.

Run with ``python -m benchmarks.protection [-n ITERATIONS] [--embedded]``.

One Redis serves every row: ``MPSHIELD_REDIS_URL`` when set, else the local
server on 127.0.0.1:6379 when it answers, else the embedded store (which
``--embedded`` forces). Each row times ``-n`` sequential calls on one
connection after a short warm-up, so the numbers are round trips plus the
script's own work. All keys live under a private prefix and are deleted at
the end. The benchmark only reports; it never fails on slow numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mpshield.exceptions import MpShieldError
from mpshield.protection.breaker import CircuitBreaker
from mpshield.protection.limiter import Bucket, RateLimiter, Rule
from mpshield.protection.proxies import ProxyInfo, ProxyProvider
from mpshield.redaction import mask_url
from mpshield.settings import Settings, load_settings
from mpshield.state.store import StateStore, get_store

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
WARMUP = 50
PROXIES = 8
SHOP = 1

# Rules far above what one connection can reach, so every call is a grant and
# the row measures the cost of a free bucket, not of a refusal.
ACCOUNT_RULE = Rule.gcra(limit=1_000_000, period=1.0, burst=1_000)
EXIT_RULE = Rule.window(limit=1_000_000, period=1.0)

Call = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Row:
    """Timings of one operation, in microseconds."""

    name: str
    samples: list[float]
    refused: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def _local_redis_answers() -> bool:
    client = aioredis.Redis.from_url(LOCAL_REDIS_URL, socket_connect_timeout=0.5)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


async def _choose_redis(embedded: bool) -> tuple[str | None, str]:
    """The Redis URL to use (None: the embedded store) and a word saying which."""
    if embedded:
        return None, "embedded"
    configured = os.environ.get("MPSHIELD_REDIS_URL")
    if configured:
        return configured, "MPSHIELD_REDIS_URL"
    if await _local_redis_answers():
        return LOCAL_REDIS_URL, "local server"
    return None, "embedded (no local server answered)"


async def _time(call: Call, iterations: int) -> list[float]:
    for _ in range(WARMUP):
        await call()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        await call()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


async def _time_limiter(
    limiter: RateLimiter, buckets: list[Bucket], iterations: int, name: str
) -> Row:
    refused = 0

    async def call() -> None:
        nonlocal refused
        refused += not (await limiter.try_acquire(buckets)).granted

    samples = await _time(call, iterations)
    return Row(name, samples, refused)


async def _time_lease(provider: ProxyProvider, iterations: int) -> Row:
    """The lease alone: each lease is released outside the timed part."""
    for _ in range(WARMUP):
        await provider.release(await provider.lease(SHOP, "wb"))
    samples = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        lease = await provider.lease(SHOP, "wb")
        samples.append((time.perf_counter_ns() - start) / 1000)
        await provider.release(lease)
    return Row(f"proxy lease ({PROXIES} proxies)", samples)


async def _measure(store: StateStore, settings: Settings, iterations: int) -> list[Row]:
    limiter = RateLimiter(store, settings)
    breaker = CircuitBreaker(store, settings)
    pool = [
        ProxyInfo(id=index, url=f"http://127.0.0.{index + 1}:3128", label=f"p{index}")
        for index in range(1, PROXIES + 1)
    ]
    provider = ProxyProvider(store, settings, pool)
    account = Bucket("bench:account", ACCOUNT_RULE)
    exit_ip = Bucket("bench:exit", EXIT_RULE)

    async def lease_and_release() -> None:
        await provider.release(await provider.lease(SHOP, "wb"))

    return [
        Row("PING", await _time(store.redis.ping, iterations)),
        await _time_limiter(limiter, [account], iterations, "try_acquire, 1 bucket"),
        await _time_limiter(
            limiter, [account, exit_ip], iterations, "try_acquire, 2 buckets"
        ),
        Row(
            "breaker before_request (CLOSED)",
            await _time(lambda: breaker.before_request(SHOP), iterations),
        ),
        Row(
            f"proxy lease + release ({PROXIES} proxies)",
            await _time(lease_and_release, iterations),
        ),
        await _time_lease(provider, iterations),
    ]


def _table(rows: list[Row]) -> str:
    ping = rows[0].median
    width = max(len(row.name) for row in rows)
    lines = [
        f"{'operation':<{width}}  {'median µs':>10}  {'p99 µs':>10}  {'× PING':>7}",
        "-" * (width + 33),
    ]
    for row in rows:
        lines.append(
            f"{row.name:<{width}}  {row.median:>10.1f}  {row.p99:>10.1f}  "
            f"{row.median / ping:>7.2f}"
        )
    refusals = [f"{row.name}: {row.refused}" for row in rows if row.refused]
    if refusals:
        lines.append("refused (the bucket was not free): " + ", ".join(refusals))
    return "\n".join(lines)


async def _delete_keys(store: StateStore, prefix: str) -> None:
    async for key in store.redis.scan_iter(match=f"{prefix}:*", count=500):
        await store.redis.delete(key)


async def run(iterations: int, embedded: bool) -> int:
    """Measure every row against one Redis and print the table; returns 0."""
    url, source = await _choose_redis(embedded)
    prefix = f"mpsbench-{uuid.uuid4().hex[:12]}"
    home = Path(tempfile.mkdtemp(prefix="mpshield-bench-"))
    # Registered before the embedded server starts, so it runs after the
    # server's own exit handler has shut it down and saved into ``home``.
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    settings = load_settings(redis_url=url, key_prefix=prefix, home=home)
    try:
        store = get_store(settings)
        await store.ping()
    except MpShieldError as exc:
        print(f"no state store to measure: {exc}")
        return 0
    try:
        rows = await _measure(store, settings, iterations)
    finally:
        await _delete_keys(store, prefix)
        await store.aclose()
    print(f"state store: {mask_url(store.url)} ({source}); {iterations} iterations")
    print(_table(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.protection", description=__doc__.splitlines()[0]
    )
    parser.add_argument("-n", "--iterations", type=int, default=2000)
    parser.add_argument(
        "--embedded", action="store_true", help="use the embedded store"
    )
    args = parser.parse_args(argv)
    return asyncio.run(run(max(args.iterations, 1), args.embedded))


if __name__ == "__main__":
    sys.exit(main())
