"""Sandbox-side rate limits: in-memory buckets whose periods follow the World's scale.

The sandbox enforces limits the way the marketplaces describe them, so that a
client is judged by the same rules it meets in production:

- ``TokenBucket`` is WB's model: ``limit`` requests per ``period`` refill a
  bucket that holds at most ``burst``. A request may cost more than one token
  (WB charges a Marketplace 4XX as 10); the level may then go below zero, and
  the debt is paid back by the refill before the next request passes.
- ``SlidingWindow`` is a count per window (Ozon's 50 requests per second).
- ``EventCounter`` counts events in a trailing window; bans and breakers use it.

All times are read from one injected clock; every period given here is in the
marketplace's own (unscaled) seconds and multiplied by ``time_scale`` inside.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

# Waiting exactly the advertised time must be enough despite float rounding.
_EPSILON = 1e-9


@dataclass(frozen=True)
class Rule:
    """``limit`` requests per ``period`` seconds, at most ``burst`` back to back."""

    period: float
    limit: int
    burst: int

    @property
    def interval(self) -> float:
        """Seconds (unscaled) to earn back one request."""
        return self.period / self.limit


@dataclass(frozen=True)
class Decision:
    """The outcome of one attempt to pass a bucket.

    ``remaining`` is what may be sent right now; ``retry_after`` (seconds, already
    scaled) is the wait until the next request passes, ``reset_after`` the wait
    until the full burst is back.
    """

    allowed: bool
    remaining: int
    limit: int
    retry_after: float
    reset_after: float


class TokenBucket:
    """One WB-style bucket; see the module docstring."""

    def __init__(self, rule: Rule, now: float, time_scale: float) -> None:
        self.rule = rule
        self._scale = time_scale
        self._level = float(rule.burst)
        self._updated = now

    def _refill(self, now: float) -> None:
        rate = self.rule.limit / (self.rule.period * self._scale)
        elapsed = max(0.0, now - self._updated)
        self._level = min(float(self.rule.burst), self._level + elapsed * rate)
        self._updated = now

    def _seconds_until(self, level: float) -> float:
        missing = level - self._level
        if missing <= _EPSILON:
            return 0.0
        return missing * self.rule.interval * self._scale

    def peek(self, now: float) -> Decision:
        """The bucket's state without taking anything."""
        self._refill(now)
        return self._decision(self._level >= 1.0 - _EPSILON)

    def take(self, now: float, cost: float = 1.0) -> Decision:
        """Take ``cost`` tokens if at least one is available."""
        self._refill(now)
        if self._level < 1.0 - _EPSILON:
            return self._decision(False)
        self._level -= cost
        return self._decision(True)

    def charge(self, now: float, cost: float) -> Decision:
        """Take ``cost`` more tokens after the fact (a costed 4XX), even into debt."""
        self._refill(now)
        self._level -= cost
        return self._decision(True)

    def _decision(self, allowed: bool) -> Decision:
        return Decision(
            allowed=allowed,
            remaining=max(0, math.floor(self._level)),
            limit=self.rule.burst,
            retry_after=self._seconds_until(1.0),
            reset_after=self._seconds_until(float(self.rule.burst)),
        )


class SlidingWindow:
    """At most ``limit`` requests in any trailing ``period`` (Ozon's per-second cap)."""

    def __init__(self, limit: int, period: float, time_scale: float) -> None:
        self.limit = limit
        self._window = period * time_scale
        self._times: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._times and self._times[0] <= now - self._window + _EPSILON:
            self._times.popleft()

    def peek(self, now: float) -> Decision:
        """Whether a request would pass now, without recording it."""
        self._expire(now)
        if len(self._times) >= self.limit:
            wait = self._times[0] + self._window - now
            return Decision(False, 0, self.limit, wait, self._window)
        remaining = self.limit - len(self._times)
        return Decision(True, remaining, self.limit, 0.0, self._window)

    def take(self, now: float) -> Decision:
        """Record a request if the window has room."""
        decision = self.peek(now)
        if not decision.allowed:
            return decision
        self._times.append(now)
        return Decision(True, decision.remaining - 1, self.limit, 0.0, self._window)


class EventCounter:
    """How many events happened in the trailing ``window`` seconds (already scaled)."""

    def __init__(self, window: float) -> None:
        self._window = window
        self._times: deque[float] = deque()

    def add(self, now: float) -> int:
        """Record an event and return the count inside the window."""
        self._times.append(now)
        while self._times and self._times[0] <= now - self._window:
            self._times.popleft()
        return len(self._times)

    def clear(self) -> None:
        """Forget every event (after the ban it led to)."""
        self._times.clear()


class BucketTable:
    """Buckets created on first use, keyed by whoever the marketplace counts against."""

    def __init__(self, clock: Callable[[], float], time_scale: float) -> None:
        self._clock = clock
        self._scale = time_scale
        self._buckets: dict[Hashable, TokenBucket] = {}
        self._windows: dict[Hashable, SlidingWindow] = {}

    def bucket(self, key: Hashable, rule: Rule) -> TokenBucket:
        """The token bucket of ``key``; a changed rule starts a fresh bucket."""
        found = self._buckets.get(key)
        if found is None or found.rule != rule:
            found = TokenBucket(rule, self._clock(), self._scale)
            self._buckets[key] = found
        return found

    def take_all(self, pairs: list[tuple[Hashable, Rule]]) -> Decision:
        """Pass every bucket or none; the first bucket's state is reported."""
        now = self._clock()
        buckets = [self.bucket(key, rule) for key, rule in pairs]
        states = [bucket.peek(now) for bucket in buckets]
        blocked = [state for state in states if not state.allowed]
        if blocked:
            return max(blocked, key=lambda state: state.retry_after)
        decisions = [bucket.take(now) for bucket in buckets]
        return decisions[0]

    def charge(self, key: Hashable, rule: Rule, cost: float) -> Decision:
        """Charge ``cost`` more tokens to the bucket of ``key``."""
        return self.bucket(key, rule).charge(self._clock(), cost)

    def window(self, key: Hashable, limit: int, period: float) -> SlidingWindow:
        """The sliding window of ``key``."""
        found = self._windows.get(key)
        if found is None or found.limit != limit:
            found = SlidingWindow(limit, period, self._scale)
            self._windows[key] = found
        return found
