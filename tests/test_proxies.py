"""The proxy provider: sticky leases and per-marketplace quarantine, on both backends.

Quarantines that must run out are scaled down to fractions of a second in
the test's settings.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mpshield.db.engine import get_sessionmaker
from mpshield.db.models import Proxy
from mpshield.exceptions import ConfigurationError, NoProxyAvailableError
from mpshield.protection.proxies import Lease, ProxyInfo, ProxyProvider
from mpshield.redaction import get_logger, redact
from mpshield.settings import Settings
from mpshield.state.store import StateStore

PASSWORD = "s3cret-proxy-pass"
SHOP = 7


def _pool(count: int) -> list[ProxyInfo]:
    return [
        ProxyInfo(
            id=index,
            url=f"http://user{index}:{PASSWORD}{index}@127.0.0.{index + 1}:8{index:03d}",
            label=f"p{index}",
        )
        for index in range(1, count + 1)
    ]


def _provider(
    store: StateStore, settings: Settings, count: int = 3, **overrides: object
) -> ProxyProvider:
    return ProxyProvider(store, settings.model_copy(update=overrides), _pool(count))


async def _leases(provider: ProxyProvider, marketplace: str = "wb") -> dict[str, int]:
    return {item.label: item.leases for item in await provider.health(marketplace)}


class TestSticky:
    async def test_same_proxy_after_release(
        self, store: StateStore, settings: Settings
    ) -> None:
        """A shop's next task gets the proxy its last task had."""
        provider = _provider(store, settings)
        first = await provider.lease(SHOP, "wb")
        await provider.release(first)

        others = [await provider.lease(shop, "wb") for shop in range(100, 106)]
        again = await provider.lease(SHOP, "wb")

        assert first.proxy is not None
        assert again.proxy == first.proxy
        assert again.token != first.token
        assert len({lease.proxy for lease in others}) == 3

    async def test_same_proxy_for_concurrent_tasks_of_one_shop(
        self, store: StateStore, settings: Settings
    ) -> None:
        """Two tasks of one shop at once both leave through the shop's proxy."""
        provider = _provider(store, settings)

        first = await provider.lease(SHOP, "wb")
        second = await provider.lease(SHOP, "wb")

        assert second.proxy == first.proxy
        assert (await _leases(provider))[first.label] == 2

    async def test_fewest_leases_wins(
        self, store: StateStore, settings: Settings
    ) -> None:
        """New shops spread over the pool by live lease count."""
        provider = _provider(store, settings)

        leases = [await provider.lease(shop, "wb") for shop in range(1, 7)]

        assert await _leases(provider) == {"p1": 2, "p2": 2, "p3": 2}
        for lease in leases[:2]:
            await provider.release(lease)
        newcomer = await provider.lease(50, "wb")
        assert newcomer.proxy in {lease.proxy for lease in leases[:2]}

    async def test_release_ends_the_lease(
        self, store: StateStore, settings: Settings
    ) -> None:
        """A released lease no longer counts against its proxy."""
        provider = _provider(store, settings)
        lease = await provider.lease(SHOP, "wb")

        await provider.release(lease)

        assert sum((await _leases(provider)).values()) == 0

    async def test_unreleased_lease_lapses(
        self, store: StateStore, settings: Settings
    ) -> None:
        """A worker that dies holding a lease stops counting when the lease runs out."""
        provider = _provider(store, settings, proxy_lease_seconds=0.2)
        await provider.lease(SHOP, "wb")

        await asyncio.sleep(0.3)

        assert sum((await _leases(provider)).values()) == 0

    async def test_renew_extends_the_lease(
        self, store: StateStore, settings: Settings
    ) -> None:
        """A renewed lease outlives its first term."""
        provider = _provider(store, settings, proxy_lease_seconds=0.4)
        lease = await provider.lease(SHOP, "wb")

        await asyncio.sleep(0.25)
        await provider.renew(lease)
        await asyncio.sleep(0.25)

        assert (await _leases(provider))[lease.label] == 1


class TestQuarantine:
    @pytest.mark.parametrize(
        ("reason", "seconds"),
        [("403", 1800.0), ("429", 900.0), ("5xx", 300.0), ("connection", 300.0)],
    )
    async def test_duration_per_reason(
        self, store: StateStore, settings: Settings, reason: str, seconds: float
    ) -> None:
        """Each cause quarantines for its own time from the settings."""
        provider = _provider(store, settings)
        lease = await provider.lease(SHOP, "wb")

        duration = await provider.quarantine(lease, reason)  # type: ignore[arg-type]
        health = {item.label: item for item in await provider.health("wb")}

        assert duration == seconds
        assert seconds - 5 < health[lease.label].quarantined_for <= seconds

    async def test_quarantine_is_per_marketplace(
        self, store: StateStore, settings: Settings
    ) -> None:
        """A proxy banned by WB still serves Ozon."""
        provider = _provider(store, settings, count=1)
        lease = await provider.lease(SHOP, "wb")

        await provider.quarantine(lease, "403")
        ozon = await provider.lease(SHOP + 1, "ozon")

        with pytest.raises(NoProxyAvailableError):
            await provider.lease(SHOP, "wb")
        assert ozon.proxy == lease.proxy
        assert [item.quarantined_for for item in await provider.health("ozon")] == [0]

    async def test_quarantined_sticky_proxy_is_skipped(
        self, store: StateStore, settings: Settings
    ) -> None:
        """A shop whose proxy is quarantined gets another one."""
        provider = _provider(store, settings)
        lease = await provider.lease(SHOP, "wb")
        await provider.quarantine(lease, "5xx")
        await provider.release(lease)

        again = await provider.lease(SHOP, "wb")

        assert again.proxy is not None and again.proxy != lease.proxy

    async def test_proxy_returns_after_release_time(
        self, store: StateStore, settings: Settings
    ) -> None:
        """When its quarantine runs out the proxy (and the shop's stickiness) is back."""
        provider = _provider(store, settings, count=1, quarantine_5xx_seconds=0.2)
        lease = await provider.lease(SHOP, "wb")
        await provider.quarantine(lease, "5xx")
        with pytest.raises(NoProxyAvailableError):
            await provider.lease(SHOP, "wb")

        await asyncio.sleep(0.3)
        again = await provider.lease(SHOP, "wb")

        assert again.proxy == lease.proxy

    async def test_repeat_offender_doubles_up_to_the_cap(
        self, store: StateStore, settings: Settings
    ) -> None:
        """Quarantined again soon after release, a proxy stays out 2x longer, capped."""
        provider = _provider(
            store,
            settings,
            count=1,
            quarantine_5xx_seconds=0.2,
            quarantine_max_seconds=0.5,
            quarantine_memory_seconds=60.0,
        )
        lease = await provider.lease(SHOP, "wb")

        durations = [await provider.quarantine(lease, "5xx")]
        await asyncio.sleep(0.25)
        durations.append(await provider.quarantine(lease, "5xx"))
        await asyncio.sleep(0.45)
        durations.append(await provider.quarantine(lease, "5xx"))

        assert durations == [0.2, 0.4, 0.5]

    async def test_quarantine_while_quarantined_does_not_escalate(
        self, store: StateStore, settings: Settings
    ) -> None:
        """Many workers reporting one ban keep its release time."""
        provider = _provider(store, settings)
        lease = await provider.lease(SHOP, "wb")

        first = await provider.quarantine(lease, "403")
        again = await provider.quarantine(lease, "403")

        assert first == 1800.0
        assert 1795 < again <= 1800

    async def test_escalation_is_forgotten_after_the_memory(
        self, store: StateStore, settings: Settings
    ) -> None:
        """A proxy that behaved for ``quarantine_memory_seconds`` starts again at the base."""
        provider = _provider(
            store,
            settings,
            count=1,
            quarantine_5xx_seconds=0.2,
            quarantine_memory_seconds=0.1,
        )
        lease = await provider.lease(SHOP, "wb")

        first = await provider.quarantine(lease, "5xx")
        await asyncio.sleep(0.4)
        second = await provider.quarantine(lease, "5xx")

        assert (first, second) == (0.2, 0.2)

    async def test_all_quarantined_says_when_the_first_returns(
        self, store: StateStore, settings: Settings
    ) -> None:
        """NoProxyAvailableError carries the time until the earliest release."""
        provider = _provider(store, settings, count=2)
        banned = await provider.lease(SHOP, "wb")
        await provider.quarantine(banned, "403")
        other = await provider.lease(SHOP, "wb")
        await provider.quarantine(other, "5xx")

        with pytest.raises(NoProxyAvailableError) as caught:
            await provider.lease(SHOP, "wb")

        assert 295 < caught.value.retry_after <= 300
        assert caught.value.shop_id == SHOP
        assert caught.value.marketplace == "wb"


class TestMove:
    async def test_move_leaves_the_quarantined_proxy(
        self, store: StateStore, settings: Settings
    ) -> None:
        """``move`` leases another proxy, releases the old one and sticks to the new."""
        provider = _provider(store, settings)
        lease = await provider.lease(SHOP, "wb")
        await provider.quarantine(lease, "403")

        moved = await provider.move(lease)
        await provider.release(moved)
        next_task = await provider.lease(SHOP, "wb")

        assert moved.proxy is not None and moved.proxy != lease.proxy
        assert next_task.proxy == moved.proxy
        assert (await _leases(provider))[lease.label] == 0

    async def test_move_from_a_healthy_proxy_changes_exit(
        self, store: StateStore, settings: Settings
    ) -> None:
        """``move`` never hands back the lease's own proxy, quarantined or not."""
        provider = _provider(store, settings, count=2)
        lease = await provider.lease(SHOP, "wb")

        moved = await provider.move(lease)

        assert moved.proxy is not None and moved.proxy != lease.proxy

    async def test_move_with_nowhere_to_go_keeps_the_lease(
        self, store: StateStore, settings: Settings
    ) -> None:
        """With no other healthy proxy ``move`` raises and the old lease is still held."""
        provider = _provider(store, settings, count=2)
        lease = await provider.lease(SHOP, "wb")
        other = await provider.lease(SHOP + 1, "wb")
        await provider.quarantine(other, "429")
        await provider.quarantine(lease, "403")

        with pytest.raises(NoProxyAvailableError) as caught:
            await provider.move(lease)

        assert 895 < caught.value.retry_after <= 900
        assert (await _leases(provider))[lease.label] == 1


class TestDirect:
    async def test_no_proxies_means_direct(
        self, store: StateStore, settings: Settings
    ) -> None:
        """Without proxies every operation works on a direct lease."""
        provider = ProxyProvider(store, settings, [])

        lease = await provider.lease(SHOP, "wb")
        quarantined = await provider.quarantine(lease, "403")
        moved = await provider.move(lease)
        await provider.renew(lease)
        await provider.release(lease)

        assert lease.proxy is None
        assert lease.exit_id == "direct"
        assert quarantined == 0.0
        assert moved is lease
        assert await provider.health("wb") == []


class TestSecrets:
    def test_repr_and_str_mask_the_password(self) -> None:
        """Neither a proxy's nor a lease's text shows the proxy password."""
        proxy = _pool(1)[0]
        lease = Lease(SHOP, "wb", proxy, "token")

        texts = [repr(proxy), str(proxy), repr(lease), f"{proxy}"]

        assert all(PASSWORD not in text for text in texts)
        assert "***" in repr(proxy) and "127.0.0.2" in repr(proxy)
        assert lease.exit_id == "proxy-1"

    def test_password_is_registered_as_a_secret(self) -> None:
        """Loading a proxy registers its password for log redaction."""
        _pool(1)

        assert PASSWORD not in redact(f"dialing with {PASSWORD}1 now")

    def test_password_is_masked_in_logs(self, caplog: pytest.LogCaptureFixture) -> None:
        """Whatever a module logger is given, a loaded proxy's password comes out masked."""
        proxy = _pool(1)[0]

        with caplog.at_level(logging.INFO, logger="mpshield"):
            get_logger("mpshield.protection.proxies").info("dialing %s", proxy.url)

        assert len(caplog.records) == 1
        assert PASSWORD not in caplog.text
        assert "***" in caplog.text

    @pytest.mark.parametrize(
        "url",
        [
            f"ftp://user:{PASSWORD}@127.0.0.1:21",
            f"http://user:{PASSWORD}@127.0.0.1:99999",
            f"http://user:{PASSWORD}@127.0.0.1:port",
            f"http://user:{PASSWORD}@:3128",
            f"user:{PASSWORD}@127.0.0.1:3128",
            f"http://user:ab/{PASSWORD}@127.0.0.1:3128",
            f"http://user:ab#{PASSWORD}@127.0.0.1:3128",
            f"http://user:ab?{PASSWORD}@127.0.0.1:3128",
            f"http://user:3128/{PASSWORD}@127.0.0.1:3128",
        ],
    )
    def test_bad_url_error_hides_the_password(self, url: str) -> None:
        """A malformed proxy URL is a ConfigurationError that shows no password."""
        with pytest.raises(ConfigurationError) as caught:
            ProxyInfo(id=1, url=url, label="bad")

        error = caught.value
        chained = [
            error.__cause__,
            None if error.__suppress_context__ else error.__context__,
        ]
        assert PASSWORD not in str(error)
        assert str(error).startswith("proxy bad: ")
        assert all(PASSWORD not in str(link) for link in chained if link)


class TestFromDb:
    async def test_empty_table_is_seeded_once(
        self, store: StateStore, settings: Settings, db: AsyncSession
    ) -> None:
        """An empty table is filled from settings, once, and loads in order."""
        urls = [f"http://u:{PASSWORD}@127.0.0.{i}:3128" for i in (2, 3)]
        seeded = settings.model_copy(update={"proxies": [*urls, urls[0]]})

        first = await ProxyProvider.from_db(db, store, seeded)
        second = await ProxyProvider.from_db(db, store, seeded)
        count = await db.scalar(select(func.count()).select_from(Proxy))

        assert count == 2
        assert [proxy.url for proxy in first.proxies] == urls
        assert [proxy.label for proxy in first.proxies] == ["proxy-1", "proxy-2"]
        assert second.proxies == first.proxies

    async def test_disabled_rows_are_left_out(
        self, store: StateStore, settings: Settings, db: AsyncSession
    ) -> None:
        """Only enabled proxies are leased, and settings do not re-seed a used table."""
        db.add_all(
            [
                Proxy(url="http://127.0.0.2:3128", label="on"),
                Proxy(url="http://127.0.0.3:3128", label="off", enabled=False),
            ]
        )
        await db.commit()
        seeded = settings.model_copy(update={"proxies": ["http://127.0.0.9:3128"]})

        provider = await ProxyProvider.from_db(db, store, seeded)

        assert [proxy.label for proxy in provider.proxies] == ["on"]

    async def test_no_rows_and_no_settings_is_direct(
        self, store: StateStore, settings: Settings, db: AsyncSession
    ) -> None:
        """With nothing configured anywhere the provider leases direct connections."""
        provider = await ProxyProvider.from_db(db, store, settings)

        assert provider.proxies == []
        assert (await provider.lease(SHOP, "wb")).proxy is None

    async def test_concurrent_seeding_ends_with_one_copy(
        self, store: StateStore, settings: Settings, db: AsyncSession
    ) -> None:
        """Two workers seeding an empty table at once agree on the same rows."""
        seeded = settings.model_copy(
            update={"proxies": ["http://127.0.0.2:3128", "http://127.0.0.3:3128"]}
        )
        sessions = get_sessionmaker(settings)

        async def load() -> list[ProxyInfo]:
            async with sessions() as session:
                return (await ProxyProvider.from_db(session, store, seeded)).proxies

        first, second = await asyncio.gather(load(), load())
        count = await db.scalar(select(func.count()).select_from(Proxy))

        assert count == 2
        assert first == second
        assert len(first) == 2
