"""The rate limiter shared by every worker, modelled on the marketplaces' own.

Two kinds of rule:

- ``gcra``: WB's token bucket (limit per period, burst back to back), kept as
  a single number per bucket, the theoretical arrival time (GCRA);
- ``window``: a cap per sliding window, such as Ozon's 50 requests per second
  per Client-Id, kept as a log of at most ``limit`` timestamps.

A request takes all its buckets (the seller account's, the exit address's) in
one Lua call or none of them, on the Redis server's clock, so no two workers
can both take the last slot and skewed machines still agree. What the
marketplace says afterwards wins: a remaining-count header re-syncs a bucket,
a retry hint cools it down for every worker, and a costed error is charged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from mpshield.exceptions import RateLimitedError
from mpshield.protection.timing import Jitter, Sleep
from mpshield.redaction import get_logger
from mpshield.settings import Settings
from mpshield.state.store import StateStore

logger = get_logger(__name__)

RuleKind = Literal["gcra", "window"]
_KIND_CODE = {"gcra": 0, "window": 1}


@dataclass(frozen=True)
class Rule:
    """``limit`` requests per ``period`` seconds; ``burst`` back to back (GCRA only)."""

    kind: RuleKind
    limit: int
    period: float
    burst: int = 1

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period <= 0 or self.burst < 1:
            raise ValueError(f"impossible rate-limit rule: {self}")

    @classmethod
    def gcra(cls, limit: int, period: float, burst: int = 1) -> Rule:
        return cls("gcra", limit, period, burst)

    @classmethod
    def window(cls, limit: int, period: float) -> Rule:
        return cls("window", limit, period)

    @property
    def interval(self) -> float:
        """Seconds between requests at the sustained rate."""
        return self.period / self.limit

    def scaled(self, factor: float) -> Rule:
        """The same rule with its period multiplied by ``factor``."""
        return Rule(self.kind, self.limit, self.period * factor, self.burst)

    def _args(self, cost: int) -> list[float | int]:
        cost = min(cost, self.limit) if self.kind == "window" else cost
        return [_KIND_CODE[self.kind], self.limit, self.period * 1000, self.burst, cost]


@dataclass(frozen=True)
class Bucket:
    """One counter: ``name`` says whose (account, exit address), ``rule`` how much."""

    name: str
    rule: Rule
    cost: int = 1


@dataclass(frozen=True)
class Decision:
    """The answer of one check: granted, or how long until it would be."""

    granted: bool
    wait: float
    bucket: str | None = None
    server_time: float = 0.0


def gcra_step(
    tat: float, now: float, rule: Rule, cost: int = 1
) -> tuple[bool, float, float]:
    """The GCRA arithmetic of ``limiter_acquire.lua``, in Python.

    Times in any one unit. A request dearer than the burst is checked as a
    full burst and charged in full.

    Returns:
        ``(allowed, new_tat, wait)``: ``new_tat`` is the stored value after the
        call (unchanged when refused), ``wait`` the time until it would pass.
    """
    base = max(tat, now)
    new_tat = base + rule.interval * cost
    allow_at = base + rule.interval * (min(cost, rule.burst) - rule.burst)
    if allow_at > now:
        return False, tat, allow_at - now
    return True, new_tat, 0.0


def window_step(
    log: Sequence[float], now: float, rule: Rule, cost: int = 1
) -> tuple[bool, list[float], float]:
    """The sliding-window arithmetic of ``limiter_acquire.lua``, in Python.

    ``log`` holds grant times, newest first, at most ``rule.limit`` of them.

    Returns:
        ``(allowed, new_log, wait)`` like :func:`gcra_step`.
    """
    cost = min(cost, rule.limit)
    if len(log) > rule.limit - cost:
        until_free = log[rule.limit - cost] + rule.period - now
        if until_free > 0:
            return False, list(log), until_free
    return True, ([now] * cost + list(log))[: rule.limit], 0.0


def _merge(buckets: Sequence[Bucket]) -> list[Bucket]:
    """One entry per bucket name, costs added.

    The script plans every bucket from the state before the call, so a name
    given twice would be charged once.
    """
    merged: dict[str, Bucket] = {}
    for bucket in buckets:
        seen = merged.get(bucket.name)
        merged[bucket.name] = (
            bucket if seen is None else replace(seen, cost=seen.cost + bucket.cost)
        )
    return list(merged.values())


class RateLimiter:
    """Takes, waits for and adjusts rate-limit buckets in the shared store."""

    def __init__(
        self,
        store: StateStore,
        settings: Settings,
        *,
        jitter: Jitter | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Use ``store``; ``sleep`` and ``clock`` (seconds) are replaceable in tests."""
        self._store = store
        self._jitter = jitter or Jitter(settings)
        self._sleep = sleep
        self._clock = clock

    def _keys(self, bucket: Bucket) -> list[str]:
        state = self._store.key("rl", bucket.name)
        return [state, state + ":cool"]

    async def _check(self, buckets: Sequence[Bucket], *, take: bool) -> Decision:
        buckets = _merge(buckets)
        keys: list[str] = []
        args: list[float | int] = [1 if take else 0]
        for bucket in buckets:
            keys.extend(self._keys(bucket))
            args.extend(bucket.rule._args(bucket.cost))
        granted, wait_ms, index, now_ms = await self._store.run(
            "limiter_acquire", keys, args
        )
        name = buckets[int(index) - 1].name if int(index) else None
        return Decision(
            granted=bool(int(granted)),
            wait=float(wait_ms) / 1000,
            bucket=name,
            server_time=float(now_ms) / 1000,
        )

    async def try_acquire(self, buckets: Sequence[Bucket]) -> Decision:
        """Take every bucket at once, or none and say how long to wait."""
        if not buckets:
            return Decision(granted=True, wait=0.0)
        return await self._check(buckets, take=True)

    async def peek(self, bucket: Bucket) -> float:
        """Seconds until ``bucket`` would grant, without taking it."""
        return (await self._check([bucket], take=False)).wait

    async def acquire(self, buckets: Sequence[Bucket], *, max_wait: float) -> None:
        """Take the buckets, sleeping while the wait still fits in ``max_wait``.

        Raises:
            RateLimitedError: the wait is longer than what is left of ``max_wait``;
                ``retry_after`` says how long, ``bucket`` which one.
        """
        deadline = self._clock() + max_wait
        while True:
            decision = await self.try_acquire(buckets)
            if decision.granted:
                return
            left = deadline - self._clock()
            if decision.wait > left:
                raise RateLimitedError(
                    f"rate limit of {decision.bucket} reached; "
                    f"retry in {decision.wait:.2f}s",
                    retry_after=decision.wait,
                    bucket=decision.bucket,
                )
            pause = min(decision.wait + self._jitter.small(), max(left, 0.0))
            logger.debug("waiting %.3fs for bucket %s", pause, decision.bucket)
            await self._sleep(pause)

    async def _adjust(self, bucket: Bucket, op: str, amount: float) -> None:
        rule = bucket.rule
        args = [
            op,
            _KIND_CODE[rule.kind],
            rule.limit,
            rule.period * 1000,
            rule.burst,
            amount,
        ]
        await self._store.run("limiter_adjust", self._keys(bucket), args)

    async def sync_remaining(self, bucket: Bucket, remaining: int) -> None:
        """The marketplace says ``remaining`` requests may go now: never allow more."""
        await self._adjust(bucket, "sync", max(remaining, 0))

    async def cool_down(self, bucket: Bucket, seconds: float) -> None:
        """No worker takes ``bucket`` for ``seconds`` (a 429's retry hint)."""
        if seconds > 0:
            await self._adjust(bucket, "cool", seconds * 1000)

    async def charge(self, bucket: Bucket, extra: int) -> None:
        """Count ``extra`` more requests after the fact (WB's 4XX costs 10)."""
        if extra > 0:
            await self._adjust(bucket, "charge", extra)
