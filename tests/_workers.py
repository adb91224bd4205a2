"""Worker processes for the tests that need several OS processes at once.

A test calls :func:`run_workers`, which starts ``python _workers.py <job> ...``
``count`` times. Each worker connects to the test's Redis, reports ready on
``<prefix>:test:ready``, then blocks on ``<prefix>:test:go``; the test pushes
one token per worker in a single command once all are ready, so every worker
starts at the same moment. Each prints its result as one line of JSON.

Jobs:

- ``probe URL PREFIX SHOP CALLERS``: ``CALLERS`` concurrent
  ``before_request`` calls; prints ``[[allowed, probe_token], ...]``.
- ``hammer URL PREFIX SECONDS SPEC...``: for ``SECONDS``, takes each bucket
  (``name|kind|limit|period|burst``) as fast as it grants, all buckets at
  once; prints per bucket the server times of its grants in integer
  microseconds (exact, unlike float seconds since the epoch).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from mpshield.protection.breaker import CircuitBreaker
from mpshield.protection.limiter import Bucket, RateLimiter, Rule
from mpshield.settings import load_settings
from mpshield.state.store import StateStore

START_TIMEOUT_SECONDS = 60


def _ready_key(prefix: str) -> str:
    return f"{prefix}:test:ready"


def _go_key(prefix: str) -> str:
    return f"{prefix}:test:go"


async def _wait_for_start(store: StateStore) -> None:
    await store.redis.rpush(_ready_key(store.prefix), "1")
    if not await store.redis.blpop([_go_key(store.prefix)], START_TIMEOUT_SECONDS):
        raise TimeoutError("no start signal")


async def _probe(url: str, prefix: str, shop_id: int, callers: int) -> object:
    client = aioredis.Redis.from_url(url, max_connections=callers + 1)
    store = StateStore(client, prefix, url)
    breaker = CircuitBreaker(store, load_settings(redis_url=url, key_prefix=prefix))
    try:
        # Open every connection first, so that the calls race each other and
        # not the connection setup.
        await asyncio.gather(*(client.ping() for _ in range(callers)))
        await _wait_for_start(store)
        permits = await asyncio.gather(
            *(breaker.before_request(shop_id) for _ in range(callers))
        )
        return [[permit.allowed, permit.probe_token] for permit in permits]
    finally:
        await store.aclose()


def _bucket(spec: str) -> Bucket:
    name, kind, limit, period, burst = spec.split("|")
    rule = Rule(kind, int(limit), float(period), int(burst))  # type: ignore[arg-type]
    return Bucket(name, rule)


async def _take_until(
    limiter: RateLimiter, bucket: Bucket, deadline: float
) -> list[int]:
    grants = []
    while (left := deadline - time.monotonic()) > 0:
        decision = await limiter.try_acquire([bucket])
        if decision.granted:
            grants.append(round(decision.server_time * 1_000_000))
        else:
            await asyncio.sleep(min(decision.wait, left))
    return grants


async def _hammer(url: str, prefix: str, seconds: float, specs: list[str]) -> object:
    buckets = [_bucket(spec) for spec in specs]
    client = aioredis.Redis.from_url(url, max_connections=len(buckets) + 1)
    store = StateStore(client, prefix, url)
    limiter = RateLimiter(store, load_settings(redis_url=url, key_prefix=prefix))
    try:
        await asyncio.gather(*(client.ping() for _ in buckets))
        await _wait_for_start(store)
        deadline = time.monotonic() + seconds
        return await asyncio.gather(
            *(_take_until(limiter, bucket, deadline) for bucket in buckets)
        )
    finally:
        await store.aclose()


async def run_workers(
    store: StateStore, job: str, args: list[str], count: int, timeout: float = 60
) -> list[Any]:
    """Run ``count`` workers of ``job`` against ``store``, started together.

    Returns:
        Each worker's JSON result, in start order.
    """
    command = [sys.executable, __file__, job, store.url, store.prefix, *args]
    workers = [
        await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            # Away from the project root, so that no .env there is read.
            cwd=Path(__file__).parent,
        )
        for _ in range(count)
    ]
    try:
        for _ in range(count):
            ready = await store.redis.blpop([_ready_key(store.prefix)], timeout)
            assert ready is not None, "a worker never became ready"
        await store.redis.rpush(_go_key(store.prefix), *["go"] * count)
        outputs = [
            (await asyncio.wait_for(worker.communicate(), timeout))[0]
            for worker in workers
        ]
        assert all(worker.returncode == 0 for worker in workers)
        return [json.loads(out) for out in outputs]
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()


def main(argv: list[str]) -> None:
    job, url, prefix, *rest = argv
    if job == "probe":
        result = asyncio.run(_probe(url, prefix, int(rest[0]), int(rest[1])))
    elif job == "hammer":
        result = asyncio.run(_hammer(url, prefix, float(rest[0]), rest[1:]))
    else:
        raise SystemExit(f"unknown job {job!r}")
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
