"""The per-shop circuit breaker, on both backends.

Times that matter are taken from settings scaled down to fractions of a
second, or from ``force_open`` with an opening time in the past.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from _workers import run_workers
from mpshield.protection.breaker import CircuitBreaker, CircuitState, Permit
from mpshield.settings import Settings
from mpshield.state.store import StateStore

SHOP = 42
HOUR = 3600.0


def _breaker(
    store: StateStore, settings: Settings, **overrides: float
) -> CircuitBreaker:
    return CircuitBreaker(store, settings.model_copy(update=overrides))


async def _fail(
    breaker: CircuitBreaker, times: int, proxy: str | None, shop_id: int = SHOP
) -> CircuitState:
    state = CircuitState.CLOSED
    for _ in range(times):
        permit = await breaker.before_request(shop_id)
        state = await breaker.record_auth_failure(shop_id, permit, proxy=proxy)
    return state


async def _open_in_the_past(breaker: CircuitBreaker, seconds_ago: float) -> None:
    await breaker.force_open(SHOP, opened_at=time.time() - seconds_ago)


class TestOpening:
    async def test_closed_circuit_allows(
        self, store: StateStore, settings: Settings
    ) -> None:
        """A shop never seen before is CLOSED and may send."""
        permit = await CircuitBreaker(store, settings).before_request(SHOP)

        assert permit == Permit(True, CircuitState.CLOSED, None, None)

    async def test_one_proxy_never_opens(
        self, store: StateStore, settings: Settings
    ) -> None:
        """Many 401s through one proxy are the proxy's fault: the circuit stays CLOSED."""
        breaker = CircuitBreaker(store, settings)

        state = await _fail(breaker, 15, "proxy-1")

        assert state is CircuitState.CLOSED
        assert await breaker.state(SHOP) is CircuitState.CLOSED
        assert await breaker.failures(SHOP) == 15

    async def test_two_proxies_open_at_the_threshold(
        self, store: StateStore, settings: Settings
    ) -> None:
        """Ten 401s seen through two proxies open the circuit, and the call says so."""
        breaker = CircuitBreaker(store, settings)

        before = await _fail(breaker, 9, "proxy-1")
        opened = await _fail(breaker, 1, "proxy-2")

        assert before is CircuitState.CLOSED
        assert opened is CircuitState.OPEN
        assert await breaker.state(SHOP) is CircuitState.OPEN

    async def test_second_proxy_opens_after_many_from_one(
        self, store: StateStore, settings: Settings
    ) -> None:
        """Once a second proxy also answers 401, a count past the threshold opens."""
        breaker = CircuitBreaker(store, settings)
        await _fail(breaker, 12, "proxy-1")

        assert await _fail(breaker, 1, "proxy-2") is CircuitState.OPEN

    async def test_two_proxies_below_threshold_stay_closed(
        self, store: StateStore, settings: Settings
    ) -> None:
        """Nine 401s through two proxies are not yet enough."""
        breaker = CircuitBreaker(store, settings)

        await _fail(breaker, 5, "proxy-1")
        state = await _fail(breaker, 4, "proxy-2")

        assert state is CircuitState.CLOSED

    async def test_direct_count_alone_decides(
        self, store: StateStore, settings: Settings
    ) -> None:
        """Without proxies the tenth 401 opens the circuit, with one exit only."""
        breaker = CircuitBreaker(store, settings)

        before = await _fail(breaker, 9, None)
        opened = await _fail(breaker, 1, None)

        assert (before, opened) == (CircuitState.CLOSED, CircuitState.OPEN)

    async def test_success_resets_count_and_exits(
        self, store: StateStore, settings: Settings
    ) -> None:
        """A success forgets the failures and the proxies that saw them."""
        breaker = CircuitBreaker(store, settings)
        await _fail(breaker, 9, "proxy-1")

        permit = await breaker.before_request(SHOP)
        state = await breaker.record_success(SHOP, permit)
        after = await _fail(breaker, 9, "proxy-2")

        assert state is CircuitState.CLOSED
        assert after is CircuitState.CLOSED
        assert await breaker.failures(SHOP) == 9

    async def test_design_keys_hold_state_and_count(
        self, store: StateStore, settings: Settings
    ) -> None:
        """The state and the count sit under the keys the design names."""
        breaker = CircuitBreaker(store, settings)
        await _fail(breaker, 10, None)
        prefix = settings.key_prefix

        state = await store.redis.get(f"{prefix}:circuit:{SHOP}:state")
        failures = await store.redis.get(f"{prefix}:circuit:{SHOP}:failures")

        assert (state, failures) == (b"OPEN", b"10")

    async def test_shops_are_independent(
        self, store: StateStore, settings: Settings
    ) -> None:
        """Opening one shop's circuit leaves another shop's alone."""
        breaker = CircuitBreaker(store, settings)
        await _fail(breaker, 10, None)

        permit = await breaker.before_request(SHOP + 1)

        assert permit.allowed and permit.state is CircuitState.CLOSED


class TestOpen:
    async def test_open_refuses_with_retry_after(
        self, store: StateStore, settings: Settings
    ) -> None:
        """An OPEN circuit refuses and says how long until a probe may be tried."""
        breaker = CircuitBreaker(store, settings)
        await _fail(breaker, 10, None)

        permit = await breaker.before_request(SHOP)

        assert not permit.allowed
        assert permit.state is CircuitState.OPEN
        assert permit.probe_token is None
        assert permit.retry_after is not None
        assert HOUR - 5 < permit.retry_after <= HOUR

    async def test_failures_while_open_change_nothing(
        self, store: StateStore, settings: Settings
    ) -> None:
        """A late 401 on an OPEN circuit reports OPEN without restarting the hour."""
        breaker = CircuitBreaker(store, settings)
        await _open_in_the_past(breaker, 1000)
        late = Permit(True, CircuitState.CLOSED, None, None)

        state = await breaker.record_auth_failure(SHOP, late, proxy="proxy-1")
        permit = await breaker.before_request(SHOP)

        assert state is CircuitState.OPEN
        assert permit.retry_after is not None
        assert permit.retry_after < HOUR - 900

    async def test_open_period_elapses_on_the_server_clock(
        self, store: StateStore, settings: Settings
    ) -> None:
        """After ``breaker_open_seconds`` exactly one caller gets the probe."""
        breaker = _breaker(store, settings, breaker_open_seconds=0.5)
        await _fail(breaker, 10, None)
        refused = await breaker.before_request(SHOP)

        await asyncio.sleep(0.6)
        probe = await breaker.before_request(SHOP)
        second = await breaker.before_request(SHOP)

        assert not refused.allowed
        assert refused.retry_after is not None and 0 < refused.retry_after <= 0.5
        assert probe.allowed
        assert probe.state is CircuitState.HALF_OPEN
        assert probe.probe_token
        assert not second.allowed and second.probe_token is None


class TestHalfOpen:
    async def test_exactly_one_probe(
        self, store: StateStore, settings: Settings
    ) -> None:
        """After the open period one caller probes; the next is refused."""
        breaker = CircuitBreaker(store, settings)
        await _open_in_the_past(breaker, HOUR + 1)

        first = await breaker.before_request(SHOP)
        second = await breaker.before_request(SHOP)

        assert first.allowed and first.probe_token
        assert first.state is CircuitState.HALF_OPEN
        assert not second.allowed and second.probe_token is None
        assert second.state is CircuitState.HALF_OPEN
        assert second.retry_after is not None
        assert 0 < second.retry_after <= settings.breaker_probe_lease_seconds

    async def test_concurrent_callers_in_one_process_get_one_probe(
        self, store: StateStore, settings: Settings
    ) -> None:
        """Twenty callers at once on one loop: exactly one probe token."""
        breaker = CircuitBreaker(store, settings)
        await _open_in_the_past(breaker, HOUR + 1)

        permits = await asyncio.gather(
            *(breaker.before_request(SHOP) for _ in range(20))
        )

        assert sum(1 for permit in permits if permit.probe_token) == 1
        assert sum(1 for permit in permits if permit.allowed) == 1

    async def test_probe_success_closes(
        self, store: StateStore, settings: Settings
    ) -> None:
        """The probe's success closes the circuit and forgets the old failures."""
        breaker = _breaker(store, settings, breaker_open_seconds=0.2)
        await _fail(breaker, 10, None)
        await asyncio.sleep(0.3)
        probe = await breaker.before_request(SHOP)

        state = await breaker.record_success(SHOP, probe)
        after = await breaker.before_request(SHOP)

        assert state is CircuitState.CLOSED
        assert after.allowed and after.state is CircuitState.CLOSED
        assert await breaker.failures(SHOP) == 0

    async def test_success_without_the_probe_does_not_close(
        self, store: StateStore, settings: Settings
    ) -> None:
        """A late success of a request sent before opening leaves HALF_OPEN alone."""
        breaker = CircuitBreaker(store, settings)
        await _open_in_the_past(breaker, HOUR + 1)
        await breaker.before_request(SHOP)
        late = Permit(True, CircuitState.CLOSED, None, None)

        state = await breaker.record_success(SHOP, late)

        assert state is CircuitState.HALF_OPEN
        assert await breaker.state(SHOP) is CircuitState.HALF_OPEN

    async def test_probe_failure_reopens_for_a_full_period(
        self, store: StateStore, settings: Settings
    ) -> None:
        """A 401 to the probe re-opens the circuit for another whole hour."""
        breaker = CircuitBreaker(store, settings)
        await _open_in_the_past(breaker, HOUR + 1)
        probe = await breaker.before_request(SHOP)

        state = await breaker.record_auth_failure(SHOP, probe, proxy="proxy-1")
        after = await breaker.before_request(SHOP)

        assert state is CircuitState.OPEN
        assert not after.allowed and after.state is CircuitState.OPEN
        assert after.retry_after is not None
        assert HOUR - 5 < after.retry_after <= HOUR

    async def test_released_probe_goes_to_the_next_caller(
        self, store: StateStore, settings: Settings
    ) -> None:
        """A probe that ended without a verdict frees the lease at once."""
        breaker = CircuitBreaker(store, settings)
        await _open_in_the_past(breaker, HOUR + 1)
        probe = await breaker.before_request(SHOP)

        await breaker.release_probe(SHOP, probe)
        second = await breaker.before_request(SHOP)

        assert second.allowed and second.probe_token
        assert second.probe_token != probe.probe_token
        assert second.state is CircuitState.HALF_OPEN

    async def test_dead_prober_lease_expires_and_another_probes(
        self, store: StateStore, settings: Settings
    ) -> None:
        """When the prober dies its lease runs out and a new caller takes the probe."""
        breaker = _breaker(store, settings, breaker_probe_lease_seconds=0.3)
        await _open_in_the_past(breaker, HOUR + 1)
        dead = await breaker.before_request(SHOP)
        refused = await breaker.before_request(SHOP)

        await asyncio.sleep(0.4)
        taker = await breaker.before_request(SHOP)
        stale = await breaker.record_success(SHOP, dead)

        assert not refused.allowed
        assert taker.allowed and taker.probe_token not in (None, dead.probe_token)
        assert stale is CircuitState.HALF_OPEN
        assert await breaker.record_success(SHOP, taker) is CircuitState.CLOSED

    async def test_slow_probe_verdict_counts_when_nobody_took_over(
        self, store: StateStore, settings: Settings
    ) -> None:
        """A probe answering after its lease lapsed still decides, if no one else probes."""
        breaker = _breaker(store, settings, breaker_probe_lease_seconds=0.2)
        await _open_in_the_past(breaker, HOUR + 1)
        probe = await breaker.before_request(SHOP)

        await asyncio.sleep(0.3)
        state = await breaker.record_auth_failure(SHOP, probe, proxy=None)

        assert state is CircuitState.OPEN

    async def test_half_open_without_verdict_returns_to_open(
        self, store: StateStore, settings: Settings
    ) -> None:
        """A HALF_OPEN that hears nothing for its timeout goes back to OPEN."""
        breaker = _breaker(
            store,
            settings,
            breaker_probe_lease_seconds=0.2,
            breaker_half_open_timeout_seconds=0.5,
        )
        await _open_in_the_past(breaker, HOUR + 1)
        await breaker.before_request(SHOP)

        await asyncio.sleep(0.6)
        permit = await breaker.before_request(SHOP)

        assert not permit.allowed
        assert permit.state is CircuitState.OPEN
        assert permit.retry_after is not None
        assert HOUR - 5 < permit.retry_after <= HOUR
        assert await breaker.state(SHOP) is CircuitState.OPEN


class TestByHand:
    async def test_reset_closes_and_clears(
        self, store: StateStore, settings: Settings
    ) -> None:
        """``reset`` closes an OPEN circuit and forgets counts and exits."""
        breaker = CircuitBreaker(store, settings)
        await _fail(breaker, 10, None)

        await breaker.reset(SHOP)
        permit = await breaker.before_request(SHOP)
        after = await _fail(breaker, 9, "proxy-1")

        assert permit.allowed and permit.state is CircuitState.CLOSED
        assert after is CircuitState.CLOSED

    async def test_reset_drops_a_live_probe(
        self, store: StateStore, settings: Settings
    ) -> None:
        """After ``reset`` a HALF_OPEN probe's late verdict changes nothing."""
        breaker = CircuitBreaker(store, settings)
        await _open_in_the_past(breaker, HOUR + 1)
        probe = await breaker.before_request(SHOP)

        await breaker.reset(SHOP)
        state = await breaker.record_success(SHOP, probe)

        assert state is CircuitState.CLOSED
        assert await breaker.state(SHOP) is CircuitState.CLOSED

    async def test_force_open_now(self, store: StateStore, settings: Settings) -> None:
        """``force_open`` without a time opens the circuit for a full period."""
        breaker = CircuitBreaker(store, settings)

        await breaker.force_open(SHOP)
        permit = await breaker.before_request(SHOP)

        assert not permit.allowed and permit.state is CircuitState.OPEN
        assert permit.retry_after is not None
        assert HOUR - 5 < permit.retry_after <= HOUR

    async def test_force_open_counts_from_the_given_time(
        self, store: StateStore, settings: Settings
    ) -> None:
        """An opening time 50 minutes ago leaves about 10 minutes to wait."""
        breaker = CircuitBreaker(store, settings)

        await _open_in_the_past(breaker, 3000)
        permit = await breaker.before_request(SHOP)

        assert permit.retry_after is not None
        assert 590 < permit.retry_after <= 600

    async def test_force_open_keeps_an_open_circuit(
        self, store: StateStore, settings: Settings
    ) -> None:
        """``force_open`` on an OPEN circuit does not move its opening time."""
        breaker = CircuitBreaker(store, settings)
        await breaker.force_open(SHOP)

        await _open_in_the_past(breaker, 3000)
        permit = await breaker.before_request(SHOP)

        assert permit.retry_after is not None
        assert permit.retry_after > HOUR - 5

    async def test_open_circuit_without_opening_time_recovers(
        self, store: StateStore, settings: Settings
    ) -> None:
        """An OPEN state whose opening time was lost counts its period from then."""
        breaker = _breaker(store, settings, breaker_open_seconds=0.3)
        await store.redis.set(store.key("circuit", SHOP, "state"), "OPEN")

        refused = await breaker.before_request(SHOP)
        await asyncio.sleep(0.4)
        probe = await breaker.before_request(SHOP)

        assert not refused.allowed
        assert probe.allowed and probe.probe_token


@pytest.mark.slow
async def test_one_probe_among_twenty_callers_in_four_processes(
    store: StateStore, settings: Settings
) -> None:
    """Four processes with five concurrent callers each race for the probe; one wins."""
    breaker = CircuitBreaker(store, settings)
    await _open_in_the_past(breaker, HOUR + 1)

    results = await run_workers(store, "probe", [str(SHOP), "5"], count=4)

    permits = [permit for result in results for permit in result]
    assert len(permits) == 20
    assert sum(1 for _, token in permits if token) == 1
    assert sum(1 for allowed, _ in permits if allowed) == 1
    assert await breaker.state(SHOP) is CircuitState.HALF_OPEN
