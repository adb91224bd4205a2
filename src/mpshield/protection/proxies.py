"""Proxies: one sticky exit per shop, quarantined per marketplace on trouble.

A shop keeps its proxy for the whole ``async with`` block and gets the same
one again on its next task while that proxy stays healthy; a marketplace sees
one shop arriving from one address, as a browser user would. A proxy that
draws a 403, an IP-level 429, a 5xx or a connection error is quarantined for
that marketplace only (WB's ban does not stop it serving Ozon), for the
duration the settings give per cause. A proxy quarantined again within
``quarantine_memory_seconds`` of its release stays out twice as long each
time, up to ``quarantine_max_seconds``.

With no proxies configured at all the shop connects directly; when proxies
exist but none is healthy, :class:`NoProxyAvailableError` says when the first
one returns. mpshield never silently falls back to going direct.

State, all on the server clock: ``{prefix}:shop:{id}:proxy`` (the shop's
sticky proxy id), ``{prefix}:proxy:{id}:leases`` (a sorted set of lease
tokens scored by expiry, so a worker that dies without releasing stops
counting when its lease runs out) and ``{prefix}:proxy:{id}:quarantine:{mp}``
(the release time, with ``:level`` beside it for the escalation).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mpshield.db.models import Proxy
from mpshield.exceptions import ConfigurationError, NoProxyAvailableError
from mpshield.redaction import MASK, get_logger, mask_url, register_secret
from mpshield.settings import Settings
from mpshield.state.store import StateStore, translate_redis_errors

logger = get_logger(__name__)

QuarantineReason = Literal["403", "429", "5xx", "connection"]
# How long a shop remembers its proxy between tasks.
STICKY_MEMORY_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class ProxyInfo:
    """A proxy; the password its URL may hold never shows in ``repr`` or ``str``."""

    id: int
    url: str
    label: str

    def __post_init__(self) -> None:
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            # Not chained: the parser's message may quote part of the password.
            raise ConfigurationError(
                f"proxy {self.label or self.id}: bad URL {_mask_unparsed(self.url)!r}"
            ) from None
        # A path, query or fragment is most likely a password with an
        # unescaped "/", "?" or "#" that moved the rest of the URL out of the
        # host part.
        if (
            parts.scheme not in {"http", "https", "socks5", "socks5h"}
            or not parts.hostname
            or parts.path not in {"", "/"}
            or parts.query
            or parts.fragment
        ):
            raise ConfigurationError(
                f"proxy {self.label or self.id}: expected scheme://host:port, "
                f"got {_mask_unparsed(self.url)!r}"
            )
        register_secret(parts.password)

    def __repr__(self) -> str:
        return (
            f"ProxyInfo(id={self.id!r}, url={mask_url(self.url)!r}, "
            f"label={self.label!r})"
        )

    def __str__(self) -> str:
        return mask_url(self.url)

    @property
    def exit_id(self) -> str:
        return f"proxy-{self.id}"


def _mask_unparsed(url: str) -> str:
    """``url`` with everything before its last ``@`` hidden, for error messages.

    A URL that fails to parse (a password with an unescaped ``/``, ``#`` or
    ``?``, a missing scheme) defeats :func:`mask_url`, so this works on the
    raw text instead.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        rest = MASK + "@" + rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}"


@dataclass
class Lease:
    """A shop's hold on one proxy (or on the direct connection)."""

    shop_id: int
    marketplace: str
    proxy: ProxyInfo | None
    token: str

    @property
    def exit_id(self) -> str:
        """Identity of the exit address: the per-IP bucket and the breaker use it."""
        return self.proxy.exit_id if self.proxy else "direct"

    @property
    def label(self) -> str:
        return self.proxy.label if self.proxy else "direct"


@dataclass(frozen=True)
class ProxyHealth:
    """One proxy's standing for one marketplace."""

    proxy: ProxyInfo
    # Seconds until the proxy serves this marketplace again; 0 when healthy.
    quarantined_for: float
    leases: int

    @property
    def label(self) -> str:
        return self.proxy.label


class ProxyProvider:
    """Leases, releases and quarantines proxies in the shared store."""

    def __init__(
        self, store: StateStore, settings: Settings, proxies: Sequence[ProxyInfo]
    ) -> None:
        self._store = store
        self._settings = settings
        self._proxies = list(proxies)
        self._by_id = {proxy.id: proxy for proxy in self._proxies}

    @classmethod
    async def from_db(
        cls, session: AsyncSession, store: StateStore, settings: Settings
    ) -> ProxyProvider:
        """The enabled proxies of the ``proxies`` table.

        An empty table is first seeded from ``settings.proxies`` (labelled
        ``proxy-1``, ``proxy-2``...); two workers seeding at once end with one
        copy. A table whose rows are all disabled means no proxies: the shop
        connects directly, with a warning.
        """
        rows = (await session.scalars(select(Proxy).order_by(Proxy.id))).all()
        if not rows and settings.proxies:
            await _seed(session, settings.proxies)
            rows = (await session.scalars(select(Proxy).order_by(Proxy.id))).all()
        proxies = [
            ProxyInfo(id=row.id, url=row.url, label=row.label or f"proxy-{row.id}")
            for row in rows
            if row.enabled
        ]
        if rows and not proxies:
            logger.warning("every proxy is disabled; connecting directly")
        return cls(store, settings, proxies)

    @property
    def proxies(self) -> list[ProxyInfo]:
        return list(self._proxies)

    def _quarantine_key(self, proxy_id: int, marketplace: str) -> str:
        return self._store.key("proxy", proxy_id, "quarantine", marketplace)

    def _leases_key(self, proxy_id: int) -> str:
        return self._store.key("proxy", proxy_id, "leases")

    async def lease(self, shop_id: int, marketplace: str) -> Lease:
        """Lease the shop's proxy for ``marketplace`` (one round trip).

        The shop's current or previous proxy if it is healthy for
        ``marketplace``, else the healthy proxy with the fewest live leases.
        With no proxies configured the lease is a direct connection.

        Raises:
            NoProxyAvailableError: every proxy is quarantined for ``marketplace``;
                ``retry_after`` is the time until the first comes back.
        """
        return await self._lease(shop_id, marketplace, avoid=None)

    async def _lease(
        self, shop_id: int, marketplace: str, *, avoid: ProxyInfo | None
    ) -> Lease:
        token = uuid.uuid4().hex
        if not self._proxies:
            return Lease(shop_id, marketplace, None, token)
        keys = [self._store.key("shop", shop_id, "proxy")]
        for proxy in self._proxies:
            keys += [
                self._quarantine_key(proxy.id, marketplace),
                self._leases_key(proxy.id),
            ]
        ok, value = await self._store.run(
            "proxy_lease",
            keys,
            [
                token,
                int(self._settings.proxy_lease_seconds * 1000),
                STICKY_MEMORY_SECONDS * 1000,
                # Shops with equal choices start the search at different proxies.
                shop_id % len(self._proxies),
                "" if avoid is None else avoid.id,
                *(proxy.id for proxy in self._proxies),
            ],
        )
        if not int(ok):
            retry_after = float(value) / 1000
            others = "every other proxy" if avoid is not None else "every proxy"
            raise NoProxyAvailableError(
                f"{others} is quarantined for {marketplace}; "
                f"the first returns in {retry_after:.0f}s",
                retry_after=retry_after,
                shop_id=shop_id,
                marketplace=marketplace,
            )
        proxy = self._by_id[int(value)]
        return Lease(shop_id, marketplace, proxy, token)

    async def renew(self, lease: Lease) -> None:
        """Extend a long-running lease by ``proxy_lease_seconds`` from now."""
        if lease.proxy is None:
            return
        await self._store.run(
            "proxy_renew",
            [self._leases_key(lease.proxy.id)],
            [lease.token, int(self._settings.proxy_lease_seconds * 1000)],
        )

    async def release(self, lease: Lease) -> None:
        """End the lease; the shop still prefers this proxy next time."""
        if lease.proxy is not None:
            async with translate_redis_errors():
                await self._store.redis.zrem(
                    self._leases_key(lease.proxy.id), lease.token
                )

    async def quarantine(self, lease: Lease, reason: QuarantineReason) -> float:
        """Keep the lease's proxy away from its marketplace; returns the seconds.

        A proxy already in quarantine keeps its release time (many workers see
        one ban at once); the returned value is then the time it has left.
        A direct lease has nothing to quarantine and returns 0.
        """
        if lease.proxy is None:
            return 0.0
        s = self._settings
        base = {
            "403": s.quarantine_403_seconds,
            "429": s.quarantine_429_seconds,
            "5xx": s.quarantine_5xx_seconds,
            "connection": s.quarantine_connection_seconds,
        }[reason]
        quarantine_key = self._quarantine_key(lease.proxy.id, lease.marketplace)
        left_ms = await self._store.run(
            "proxy_quarantine",
            [quarantine_key, quarantine_key + ":level"],
            [
                int(base * 1000),
                int(s.quarantine_max_seconds * 1000),
                int(s.quarantine_memory_seconds * 1000),
            ],
        )
        seconds = float(left_ms) / 1000
        logger.warning(
            "proxy %s quarantined for %s for %.0fs after %s",
            lease.proxy.label,
            lease.marketplace,
            seconds,
            reason,
        )
        return seconds

    async def move(self, lease: Lease) -> Lease:
        """Lease another healthy proxy for the shop, then release ``lease``.

        The new proxy is never the lease's own, quarantined or not, and
        becomes the shop's sticky proxy. A direct lease is returned unchanged.

        Raises:
            NoProxyAvailableError: no other proxy is healthy; ``lease`` is
                then still held, so the caller may keep using or release it.
        """
        if lease.proxy is None:
            return lease
        moved = await self._lease(lease.shop_id, lease.marketplace, avoid=lease.proxy)
        await self.release(lease)
        return moved

    async def health(self, marketplace: str) -> list[ProxyHealth]:
        """Each proxy's quarantine and live leases, for status displays."""
        async with (
            translate_redis_errors(),
            self._store.redis.pipeline(transaction=False) as pipe,
        ):
            pipe.time()
            for proxy in self._proxies:
                pipe.get(self._quarantine_key(proxy.id, marketplace))
                pipe.zrange(self._leases_key(proxy.id), 0, -1, withscores=True)
            replies = await pipe.execute()
        seconds, micros = replies[0]
        now = int(seconds) * 1000 + int(micros) // 1000
        report = []
        for index, proxy in enumerate(self._proxies):
            raw_until, leases = replies[1 + 2 * index : 3 + 2 * index]
            until = float(raw_until or 0)
            live = sum(1 for _, expiry in leases if expiry > now)
            report.append(ProxyHealth(proxy, max(until - now, 0.0) / 1000, live))
        return report


async def _seed(session: AsyncSession, urls: Sequence[str]) -> None:
    # The column is unique: a repeated URL would make every seeding fail.
    urls = list(dict.fromkeys(urls))
    for index, url in enumerate(urls, start=1):
        session.add(Proxy(url=url, label=f"proxy-{index}"))
    try:
        await session.commit()
    except IntegrityError:
        # Another worker seeded the same URLs first.
        await session.rollback()
    else:
        logger.info("seeded %d proxies from the settings", len(urls))
