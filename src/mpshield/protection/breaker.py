"""The per-shop circuit breaker, shared by the whole fleet through Redis.

=========  ===============================================================
CLOSED     normal work
OPEN       ``breaker_failure_threshold`` auth failures seen through at least
           ``breaker_distinct_proxies`` exits (or without proxies): the key is
           dead, no request goes out
HALF_OPEN  ``breaker_open_seconds`` after opening, exactly one worker in the
           fleet holds the probe; its success closes, its 401 re-opens
=========  ===============================================================

Keys sit under ``{prefix}:circuit:{shop_id}:``: ``state`` and ``failures`` as
the design names them, plus ``exits`` (which exits saw a 401), ``opened_at``,
``probe`` (the probe lease) and ``half_open_since``. Every transition is one
Lua script on the server clock. The probe is a lease with a TTL, so a prober
that dies frees it; a HALF_OPEN with no verdict for
``breaker_half_open_timeout_seconds`` returns to OPEN instead of hanging.

Which 401s open the circuit: each is recorded with the exit it came through
(``proxy-<id>``, or ``direct`` when ``proxy`` is None). Through proxies, the
count must reach the threshold *and* the 401s must come from at least
``breaker_distinct_proxies`` exits, because one proxy answering 401 is the
proxy's fault. A shop that goes direct has no second exit to compare with, so
once a direct 401 is among the remembered ones the count alone decides.
A pool smaller than ``breaker_distinct_proxies`` could never show that, so
the client reports such a shop's 401s with ``proxy=None``. Failures and exits are forgotten after
``FAILURE_MEMORY_SECONDS`` without a new one, and at once on any success.

A probe's verdict counts while its lease is live, and also after the lease
lapsed when no other worker has taken the probe over.

The breaker keeps no database state: the client mirrors its verdicts into
``shops.status`` in the same step, and re-opens a circuit with
:meth:`CircuitBreaker.force_open` when Redis lost it but the database still
says ``auth_error``.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from mpshield.redaction import get_logger
from mpshield.settings import Settings
from mpshield.state.store import StateStore, translate_redis_errors

logger = get_logger(__name__)

# How long failures and the exits that saw them are remembered without a new one.
FAILURE_MEMORY_SECONDS = 24 * 3600


class CircuitState(enum.StrEnum):
    """A circuit's state, stored as this text under ``...:state``."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


@dataclass(frozen=True)
class Permit:
    """The breaker's answer before a request."""

    allowed: bool
    state: CircuitState
    # Set when this caller holds the fleet's one HALF_OPEN probe.
    probe_token: str | None = None
    # When refused: seconds until a probe may be tried.
    retry_after: float | None = None

    @property
    def is_probe(self) -> bool:
        return self.probe_token is not None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class CircuitBreaker:
    """Per-shop breaker; cheap to create, all state lives in the store."""

    def __init__(self, store: StateStore, settings: Settings) -> None:
        self._store = store
        self._settings = settings

    def _keys(self, shop_id: int) -> list[str]:
        names = ("state", "failures", "exits", "opened_at", "probe", "half_open_since")
        return [self._store.key("circuit", shop_id, name) for name in names]

    async def before_request(self, shop_id: int) -> Permit:
        """Ask whether ``shop_id`` may send a request now (one round trip)."""
        state_key, _, _, opened_key, probe_key, half_key = self._keys(shop_id)
        s = self._settings
        allowed, state, token, retry_ms = await self._store.run(
            "breaker_before",
            [state_key, opened_key, probe_key, half_key],
            [
                int(s.breaker_open_seconds * 1000),
                int(s.breaker_probe_lease_seconds * 1000),
                int(s.breaker_half_open_timeout_seconds * 1000),
                uuid.uuid4().hex,
            ],
        )
        permit = Permit(
            allowed=bool(int(allowed)),
            state=CircuitState(_text(state)),
            probe_token=_text(token) or None,
            retry_after=None if int(allowed) else float(retry_ms) / 1000,
        )
        if permit.is_probe:
            logger.info("shop %s: circuit half-open, this worker probes", shop_id)
        return permit

    async def _record(
        self, shop_id: int, verdict: str, permit: Permit, exit_id: str
    ) -> tuple[CircuitState, bool]:
        s = self._settings
        state, changed = await self._store.run(
            "breaker_record",
            self._keys(shop_id),
            [
                verdict,
                permit.probe_token or "",
                s.breaker_failure_threshold,
                s.breaker_distinct_proxies,
                exit_id,
                FAILURE_MEMORY_SECONDS * 1000,
            ],
        )
        return CircuitState(_text(state)), bool(int(changed))

    async def record_success(self, shop_id: int, permit: Permit) -> CircuitState:
        """A request got through: the count resets; a probe's success closes."""
        state, changed = await self._record(shop_id, "success", permit, "")
        if changed:
            logger.info("shop %s: probe succeeded, circuit closed", shop_id)
        return state

    async def record_auth_failure(
        self, shop_id: int, permit: Permit, *, proxy: str | None
    ) -> CircuitState:
        """Count a 401 seen through ``proxy`` (None: a direct connection).

        Returns the state after it: OPEN when this failure opened the circuit,
        failed the probe, or found it opened by another worker meanwhile.
        """
        state, changed = await self._record(
            shop_id, "failure", permit, proxy or "direct"
        )
        if changed:
            logger.warning("shop %s: circuit opened after auth failures", shop_id)
        return state

    async def release_probe(self, shop_id: int, permit: Permit) -> None:
        """The probe ended without a verdict: let another worker probe."""
        if permit.is_probe:
            await self._record(shop_id, "release", permit, "")

    async def state(self, shop_id: int) -> CircuitState:
        async with translate_redis_errors():
            raw = await self._store.redis.get(self._keys(shop_id)[0])
        return CircuitState(_text(raw)) if raw else CircuitState.CLOSED

    async def failures(self, shop_id: int) -> int:
        async with translate_redis_errors():
            raw = await self._store.redis.get(self._keys(shop_id)[1])
        return int(raw or 0)

    async def reset(self, shop_id: int) -> None:
        """Close the circuit and forget its counts (a new key was saved)."""
        await self._store.run("breaker_force", self._keys(shop_id), ["reset", ""])
        logger.info("shop %s: circuit reset", shop_id)

    async def force_open(self, shop_id: int, *, opened_at: float | None = None) -> None:
        """Open a closed circuit, as of ``opened_at`` (epoch seconds) or now.

        Used when the database says the shop is disabled but Redis lost the
        circuit: the open period then counts from the database's status time.
        """
        when = "" if opened_at is None else str(int(opened_at * 1000))
        await self._store.run("breaker_force", self._keys(shop_id), ["open", when])
