"""Fleet-wide coordination of sync tasks through the state store.

- :class:`ShopLock`: a shop is synced by one task at a time across all
  workers. Redis redelivers a message when a worker dies or the visibility
  timeout passes, so two deliveries of one shop's task can overlap; the second
  finds the lock and retries later. The lock has a short TTL that a heartbeat
  renews while the sync runs, so a killed worker's lock frees itself within
  seconds and its redelivered task does not wait long.
- :class:`WakeSlots`: retries are spread so that no slot of time (one second,
  scaled with ``time_scale``) wakes more than a few tasks. Random jitter alone
  lets several of fifty shops land in one second; the slots make the cap hold
  for the whole fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import uuid
from collections.abc import AsyncIterator

from mpshield.redaction import get_logger
from mpshield.state.store import StateStore, translate_redis_errors

logger = get_logger(__name__)

LOCK_TTL_SECONDS = 10.0
# Renew well before expiry so one slow round trip does not lose the lock.
LOCK_RENEW_EVERY_SECONDS = 3.0

WAKE_SLOT_CAP = 2
WAKE_SLOT_SCAN = 32
WAKE_SLOT_MAX_PROBES = 1024

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class ShopLock:
    """An exclusive, self-expiring lock on one shop's sync.

    Args:
        store: the state store.
        shop_id: the shop.
        ttl: seconds the lock outlives its last renewal.
    """

    def __init__(
        self, store: StateStore, shop_id: int, *, ttl: float = LOCK_TTL_SECONDS
    ) -> None:
        self.store = store
        self.shop_id = shop_id
        self.ttl_ms = max(int(ttl * 1000), 1)
        self.key = store.key("job", "lock", shop_id)
        # Who holds it, for an operator reading Redis; never a secret.
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

    def __repr__(self) -> str:
        return f"ShopLock(shop_id={self.shop_id!r})"

    async def acquire(self) -> bool:
        """Take the lock if it is free; True when taken."""
        async with translate_redis_errors():
            taken = await self.store.redis.set(
                self.key, self.token, nx=True, px=self.ttl_ms
            )
        return bool(taken)

    async def remaining(self) -> float:
        """Seconds until the current holder's lock expires (0 when free)."""
        async with translate_redis_errors():
            pttl = await self.store.redis.pttl(self.key)
        return max(int(pttl), 0) / 1000

    async def renew(self) -> bool:
        """Push our lock's expiry out again; False when it is no longer ours."""
        script = self.store.redis.register_script(_RENEW)
        async with translate_redis_errors():
            renewed = await script(keys=[self.key], args=[self.token, self.ttl_ms])
        return bool(renewed)

    async def release(self) -> None:
        """Free the lock if it is still ours."""
        script = self.store.redis.register_script(_RELEASE)
        async with translate_redis_errors():
            await script(keys=[self.key], args=[self.token])

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[None]:
        """Renew the (already taken) lock in the background while the body runs."""
        renewer = asyncio.create_task(self._renew_forever())
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _renew_forever(self) -> None:
        every = min(LOCK_RENEW_EVERY_SECONDS, self.ttl_ms / 3000)
        while True:
            await asyncio.sleep(every)
            try:
                if not await self.renew():
                    logger.warning(
                        "shop %s: sync lock expired while held", self.shop_id
                    )
                    return
            except Exception:
                # The sync itself will hit the same outage and report it.
                logger.warning("shop %s: could not renew the sync lock", self.shop_id)


class WakeSlots:
    """Caps how many retries wake in one slot of time, for the whole fleet.

    Args:
        store: the state store.
        width: the slot length in seconds.
        cap: how many wake-ups one slot takes.
    """

    def __init__(
        self, store: StateStore, *, width: float = 1.0, cap: int = WAKE_SLOT_CAP
    ) -> None:
        self.store = store
        self.width = width
        self.cap = cap

    async def claim(self, wake_at: float) -> float:
        """Book a wake-up at ``wake_at`` (Unix seconds) or in the first later slot
        with room, moved by whole slots; returns the booked time."""
        first = math.floor(wake_at / self.width)
        slot = first
        # Slots live a little past their time, then vanish on their own.
        ttl = max(int(self.width * WAKE_SLOT_MAX_PROBES) + 60, 60)
        async with translate_redis_errors():
            while slot < first + WAKE_SLOT_MAX_PROBES:
                keys = [self._key(slot + i) for i in range(WAKE_SLOT_SCAN)]
                counts = await self.store.redis.mget(keys)
                free = [i for i, n in enumerate(counts) if int(n or 0) < self.cap]
                if not free:
                    slot += WAKE_SLOT_SCAN
                    continue
                candidate = slot + free[0]
                async with self.store.redis.pipeline(transaction=True) as pipe:
                    pipe.incr(self._key(candidate))
                    pipe.expire(self._key(candidate), ttl)
                    taken, _ = await pipe.execute()
                if int(taken) <= self.cap:
                    return wake_at + (candidate - first) * self.width
                # Another worker took the last place first; look further on.
                slot = candidate + 1
        return wake_at + (slot - first) * self.width

    def _key(self, slot: int) -> str:
        return self.store.key("job", "wake", slot)
