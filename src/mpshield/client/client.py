"""MarketplaceClient: the one door through which mpshield talks to a marketplace.

Each request passes, in this order:

1. the shop's circuit breaker (CLOSED, or this caller holds the HALF_OPEN probe);
2. checks that need no request: a WB token past its expiry disables the shop,
   a WB token without the category's scope marks the category unauthorized;
3. the shared rate limiter: the seller account's buckets and the exit
   address's bucket, taken together or not at all;
4. the transport (curl_cffi as a browser) through the shop's sticky proxy;
5. the marketplace module's reading of the answer, which feeds the breaker,
   the proxy quarantine and the limiter before the caller sees a result.

Only reads are retried (GETs, and POSTs the marketplace module marks as
reads); a write is sent once, whatever comes back. A 401 through a proxy that
does not open the circuit moves the shop to another exit, so that the next
401, if any, shows whether the key or the address is at fault.

One client may serve concurrent requests (``asyncio.gather``); its database
writes are serialised because an ``AsyncSession`` is not safe for concurrent use.

What the client writes to the database (a disabled shop, an unauthorized
category, the shop's browser profile, a shop active again) it commits at once
on the session it was given: a shop disabled "in the same step" must stay
disabled even when the caller's block then fails and rolls back. Give the
client a session that holds none of your own uncommitted work.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NoReturn, Self
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from mpshield.client.response import Response
from mpshield.db import shops as shop_db
from mpshield.db.models import ShopStatus
from mpshield.exceptions import (
    CategoryUnauthorizedError,
    MarketplaceError,
    MarketplaceUnavailableError,
    MpShieldError,
    RateLimitedError,
    ShopDisabledError,
)
from mpshield.marketplaces import get_api
from mpshield.marketplaces.base import (
    Account,
    Credentials,
    MarketplaceApi,
    Outcome,
    Route,
    Verdict,
)
from mpshield.marketplaces.wb import WildberriesApi
from mpshield.protection.breaker import CircuitBreaker, CircuitState, Permit
from mpshield.protection.limiter import Bucket, RateLimiter
from mpshield.protection.proxies import Lease, ProxyProvider, QuarantineReason
from mpshield.protection.timing import Jitter, Sleep
from mpshield.redaction import get_logger, register_secret
from mpshield.settings import Settings, get_settings
from mpshield.state.store import get_store
from mpshield.transport.profiles import profile_for
from mpshield.transport.session import CurlTransport, Transport, TransportFailure

logger = get_logger(__name__)

# Used when a rate-limit answer carries no hint of its own.
DEFAULT_RETRY_HINT = 1.0


@dataclass
class _Trace:
    """What the request's log line reports."""

    status: int | str = "-"
    exit: str = "-"
    waited: float = 0.0
    attempts: int = 0


class _Retry(Exception):
    """Internal: this attempt failed in a way that another attempt may fix."""

    def __init__(self, error: MpShieldError, delay: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        # None: back off by the attempt number (full jitter).
        self.delay = delay


class MarketplaceClient:
    """Talks to one shop's marketplace, inside its limits, through its proxy.

    Args:
        db: The SQLAlchemy session the shop is read from and its status written to.
        shop_id: The shop to act for.
        settings: Defaults to the process-wide settings.
        max_wait: Seconds a request may wait for the rate limiter or a 429 before
            raising ``RateLimitedError`` (default ``settings.max_wait_seconds``).
        jitter: Randomness of retries and waits (default from the settings).
        sleep: How the client waits; tests pass a recorder.
    """

    def __init__(
        self,
        db: AsyncSession,
        shop_id: int,
        *,
        settings: Settings | None = None,
        max_wait: float | None = None,
        jitter: Jitter | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.shop_id = shop_id
        self.marketplace: str | None = None
        self._db = db
        self._settings = settings or get_settings()
        self._max_wait = (
            self._settings.max_wait_seconds if max_wait is None else max_wait
        )
        self._jitter = jitter or Jitter(self._settings)
        self._sleep = sleep
        self._db_lock = asyncio.Lock()
        self._lease_lock = asyncio.Lock()
        self._probe_lock = asyncio.Lock()
        self._pending_probe: Permit | None = None
        self._opened = False

    def __repr__(self) -> str:
        return (
            f"MarketplaceClient(shop_id={self.shop_id!r}, "
            f"marketplace={self.marketplace!r})"
        )

    # -- entering and leaving -------------------------------------------------

    async def __aenter__(self) -> Self:
        """Load the shop, ask its breaker, lease its proxy and open the transport.

        Raises:
            ShopNotFoundError: No such shop.
            ShopDisabledError: The shop is disabled, its WB token has expired,
                or its circuit is OPEN; nothing was sent.
            NoProxyAvailableError: Proxies are configured and all are quarantined.
        """
        shop = await shop_db.get_shop(self._db, self.shop_id)
        # Read now: seeding the proxy table below may roll the session back
        # (another worker seeded first), which expires every loaded row.
        marketplace, stored_profile = shop.marketplace, shop.browser_profile
        register_secret(shop.api_key)
        register_secret(shop.client_secret)
        self.marketplace = shop.marketplace
        self._api: MarketplaceApi = get_api(shop.marketplace, self._settings)
        self._credentials = Credentials(
            shop.api_key, shop.client_id, shop.client_secret
        )
        self._account: Account = self._api.account(self._credentials)
        self._status = shop.status
        if shop.status == ShopStatus.DISABLED:
            raise self._disabled(shop.status_reason or "disabled")

        store = get_store(self._settings)
        self._breaker = CircuitBreaker(store, self._settings)
        if shop.status == ShopStatus.AUTH_ERROR:
            await self._restore_open_circuit(shop.status_changed_at)
        await self._refuse_expired_token()
        permit = await self._breaker.before_request(self.shop_id)
        if not permit.allowed:
            raise self._disabled(
                shop.status_reason or "circuit_open", retry_after=permit.retry_after
            )
        if permit.probe_token is not None:
            self._pending_probe = permit

        try:
            self._limiter = RateLimiter(
                store, self._settings, jitter=self._jitter, sleep=self._sleep
            )
            self._proxies = await ProxyProvider.from_db(self._db, store, self._settings)
            self._lease: Lease = await self._proxies.lease(self.shop_id, marketplace)
        except BaseException:
            await self._release_pending_probe()
            raise
        self._leased_at = asyncio.get_running_loop().time()
        self._register_proxy_secret(self._lease)
        try:
            profile = profile_for(self.shop_id, stored_profile)
            if profile != stored_profile:
                async with self._db_lock:
                    await shop_db.set_browser_profile(self._db, self.shop_id, profile)
                    await self._db.commit()
            self._transport: Transport = CurlTransport(profile, self._settings)
        except BaseException:
            await self._proxies.release(self._lease)
            await self._release_pending_probe()
            raise
        self._opened = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Give back the probe (if unused) and the proxy, and close the transport."""
        if not self._opened:
            return
        self._opened = False
        try:
            await self._release_pending_probe()
            await self._proxies.release(self._lease)
        finally:
            await self._transport.aclose()

    # -- the public calls ----------------------------------------------------

    async def get(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        category: str | None = None,
    ) -> Response:
        """``GET path``; see ``request``."""
        return await self.request("GET", path, params=params, category=category)

    async def post(
        self, path: str, *, json: Any = None, category: str | None = None
    ) -> Response:
        """``POST path`` with a JSON body; see ``request``."""
        return await self.request("POST", path, json=json, category=category)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        category: str | None = None,
    ) -> Response:
        """Send one request for the shop and return the marketplace's answer.

        Args:
            method: The HTTP method.
            path: The path on the marketplace's API (the host comes from the
                marketplace module and the settings).
            params: Query parameters.
            json: A JSON body.
            category: The API category, when the path alone does not tell
                (WB's ``/ping`` on a particular host, a path the tables lack).

        Returns:
            The answer, for any status below 400.

        Raises:
            ShopDisabledError: The circuit is open or has just opened, or the WB
                token has expired.
            CategoryUnauthorizedError: The token lacks the category's scope.
            RateLimitedError: A bucket would make the request wait longer than
                ``max_wait``.
            NoProxyAvailableError: Every proxy is quarantined for the marketplace.
            MarketplaceUnavailableError: Server errors, bans or broken
                connections outlasted the retries (or hit a write).
            MarketplaceError: Any other refusal (4xx), with status, body and code.
        """
        if not self._opened:
            raise RuntimeError("use MarketplaceClient inside 'async with'")
        route = self._api.route(method, path, category)
        trace = _Trace()
        try:
            return await self._with_retries(route, params, json, trace)
        finally:
            logger.info(
                "request shop=%s marketplace=%s method=%s path=%s status=%s "
                "exit=%s waited=%.3f attempts=%d",
                self.shop_id,
                self.marketplace,
                route.method,
                route.path,
                trace.status,
                trace.exit,
                trace.waited,
                trace.attempts,
            )

    # -- one request ---------------------------------------------------------

    async def _with_retries(
        self,
        route: Route,
        params: Mapping[str, Any] | None,
        json: Any,
        trace: _Trace,
    ) -> Response:
        attempts = self._settings.max_attempts if route.read else 1
        for attempt in range(1, attempts + 1):
            trace.attempts = attempt
            try:
                return await self._attempt(route, params, json, trace)
            except _Retry as retry:
                delay = retry.delay
                if delay is None:
                    delay = self._jitter.backoff(attempt)
                if attempt >= attempts or delay > self._max_wait_for(retry):
                    raise retry.error from None
                trace.waited += delay
                await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _max_wait_for(self, retry: _Retry) -> float:
        # A rate-limit hint is bounded by what the caller agreed to wait;
        # backoff after a server or exit failure is bounded by the settings.
        if isinstance(retry.error, RateLimitedError):
            return self._max_wait
        return float("inf")

    async def _attempt(
        self,
        route: Route,
        params: Mapping[str, Any] | None,
        json: Any,
        trace: _Trace,
    ) -> Response:
        permit = await self._permit()
        try:
            await self._check_before_send(route)
            await self._renew_lease_if_old()
            lease = self._lease
            trace.exit = _exit_label(lease)
            account_buckets = self._api.account_buckets(route, self._account)
            exit_bucket = self._api.exit_bucket(route, lease.exit_id)
            await self._acquire([*account_buckets, exit_bucket], route, trace)
            headers = self._api.auth_headers(self._credentials, route)
            result = await self._transport.send(
                route.method,
                route.url,
                headers=headers,
                params=params,
                json=json,
                proxy=lease.proxy.url if lease.proxy is not None else None,
            )
        except BaseException:
            await self._release(permit)
            raise

        if isinstance(result, TransportFailure):
            trace.status = result.kind.value
            await self._release(permit)
            raise await self._exit_failed(route, lease, "connection", result.detail)

        trace.status = result.status
        verdict = self._api.classify(
            route, result.status, result.headers, result.content
        )
        if verdict.extra_cost and account_buckets:
            await self._limiter.charge(account_buckets[0], verdict.extra_cost)
        if verdict.outcome is Outcome.OK:
            if verdict.remaining is not None and account_buckets:
                await self._limiter.sync_remaining(
                    account_buckets[0], verdict.remaining
                )
            await self._succeeded(permit)
            return Response(
                status=result.status,
                headers=result.headers,
                content=result.content,
                method=route.method,
                path=route.path,
                shop_id=self.shop_id,
                marketplace=route.marketplace,
            )
        await self._failed(route, lease, permit, verdict)

    async def _failed(
        self, route: Route, lease: Lease, permit: Permit, verdict: Verdict
    ) -> NoReturn:
        """Act on an error answer; always raises (``_Retry`` when worth another try)."""
        outcome = verdict.outcome
        if outcome is Outcome.AUTH_FAILURE:
            raise await self._auth_failed(route, lease, permit, verdict)

        if outcome is Outcome.CLIENT_ERROR and verdict.status != 403:
            # The marketplace accepted the key and refused the request itself.
            await self._succeeded(permit)
        else:
            await self._release(permit)

        if outcome is Outcome.SCOPE_FAILURE:
            raise await self._category_unauthorized(route, verdict.detail)
        if outcome is Outcome.ACCOUNT_RATE_LIMIT:
            raise await self._account_limited(route, verdict)
        if outcome is Outcome.IP_BAN:
            raise await self._exit_failed(route, lease, "403", verdict.detail)
        if outcome is Outcome.IP_RATE_LIMIT:
            raise await self._exit_failed(route, lease, "429", verdict.detail)
        if outcome is Outcome.SERVER_ERROR:
            raise await self._exit_failed(route, lease, "5xx", verdict.detail)
        raise self._refusal(
            route,
            verdict,
            f"{route.marketplace} answered {verdict.status} to {route.method} "
            f"{route.path}",
        )

    # -- the breaker ---------------------------------------------------------

    async def _permit(self) -> Permit:
        async with self._probe_lock:
            if self._pending_probe is not None:
                permit, self._pending_probe = self._pending_probe, None
                return permit
        permit = await self._breaker.before_request(self.shop_id)
        if not permit.allowed:
            raise self._disabled("circuit_open", retry_after=permit.retry_after)
        return permit

    async def _release(self, permit: Permit) -> None:
        if permit.probe_token is not None:
            await self._breaker.release_probe(self.shop_id, permit)

    async def _release_pending_probe(self) -> None:
        async with self._probe_lock:
            permit, self._pending_probe = self._pending_probe, None
        if permit is not None:
            await self._breaker.release_probe(self.shop_id, permit)

    async def _succeeded(self, permit: Permit) -> None:
        state = await self._breaker.record_success(self.shop_id, permit)
        if state is CircuitState.CLOSED and self._status != ShopStatus.ACTIVE:
            async with self._db_lock:
                await shop_db.set_shop_status(
                    self._db, self.shop_id, ShopStatus.ACTIVE, None
                )
                await self._db.commit()
            self._status = ShopStatus.ACTIVE
            logger.info("shop=%s circuit closed, shop active again", self.shop_id)

    async def _auth_failed(
        self, route: Route, lease: Lease, permit: Permit, verdict: Verdict
    ) -> MpShieldError:
        # With fewer proxies than the breaker wants to compare, 401s are
        # reported as direct ones, so that the count alone can open it.
        compare = len(self._proxies.proxies) >= self._settings.breaker_distinct_proxies
        proxy = lease.exit_id if lease.proxy is not None and compare else None
        state = await self._breaker.record_auth_failure(
            self.shop_id, permit, proxy=proxy
        )
        if state is CircuitState.OPEN:
            reason = f"auth_failure: {verdict.status} {verdict.detail or ''}".strip()
            await self._set_auth_error(reason)
            return self._disabled(
                reason, retry_after=self._settings.breaker_open_seconds
            )
        if lease.proxy is not None:
            await self._move_after_auth_failure(lease)
        return self._refusal(
            route,
            verdict,
            f"{route.marketplace} refused the shop's credentials ({verdict.status})",
        )

    def _refusal(self, route: Route, verdict: Verdict, what: str) -> MarketplaceError:
        return MarketplaceError(
            f"{what}: {verdict.detail or 'no detail'}",
            status=verdict.status,
            body=verdict.body,
            code=verdict.code,
            shop_id=self.shop_id,
            marketplace=route.marketplace,
            category=route.category,
        )

    async def _restore_open_circuit(self, changed_at: dt.datetime | None) -> None:
        """Re-open a circuit Redis forgot: the database says the shop is disabled."""
        if await self._breaker.state(self.shop_id) is CircuitState.CLOSED:
            opened_at = _timestamp(changed_at)
            await self._breaker.force_open(self.shop_id, opened_at=opened_at)
            logger.warning(
                "shop=%s is auth_error in the database but its circuit was closed; "
                "re-opened it",
                self.shop_id,
            )

    # -- checks before sending -----------------------------------------------

    async def _check_before_send(self, route: Route) -> None:
        await self._refuse_expired_token()
        token = self._account.token
        if token is None or not isinstance(self._api, WildberriesApi):
            return
        scope = self._api.scope(route)
        if scope is not None and not token.allows(scope):
            raise await self._category_unauthorized(
                route, "the token has no scope for this category"
            )

    async def _refuse_expired_token(self) -> None:
        token = self._account.token
        if token is None or not token.expired():
            return
        await self._breaker.force_open(self.shop_id)
        await self._set_auth_error("token_expired")
        raise self._disabled("token_expired")

    async def _category_unauthorized(
        self, route: Route, detail: str | None
    ) -> CategoryUnauthorizedError:
        async with self._db_lock:
            await shop_db.mark_category_unauthorized(
                self._db, self.shop_id, route.category
            )
            await self._db.commit()
        logger.warning(
            "shop=%s marketplace=%s category %s unauthorized: %s",
            self.shop_id,
            route.marketplace,
            route.category,
            detail,
        )
        return CategoryUnauthorizedError(
            f"shop {self.shop_id}: the {route.marketplace} key has no access to "
            f"category {route.category!r} ({detail or 'scope missing'})",
            shop_id=self.shop_id,
            marketplace=route.marketplace,
            category=route.category,
        )

    # -- the limiter ---------------------------------------------------------

    async def _acquire(
        self, buckets: list[Bucket], route: Route, trace: _Trace
    ) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self._limiter.acquire(buckets, max_wait=self._max_wait)
        except RateLimitedError as exc:
            raise RateLimitedError(
                f"shop {self.shop_id}: {route.marketplace} bucket "
                f"{exc.bucket} needs {exc.retry_after:.1f} s",
                retry_after=exc.retry_after,
                bucket=exc.bucket,
                shop_id=self.shop_id,
                marketplace=route.marketplace,
                category=route.category,
            ) from None
        finally:
            trace.waited += loop.time() - started

    async def _account_limited(self, route: Route, verdict: Verdict) -> _Retry:
        hint = verdict.retry_after
        if hint is None:
            hint = DEFAULT_RETRY_HINT
        bucket = self._api.cool_bucket(route, self._account, verdict)
        await self._limiter.cool_down(bucket, hint)
        delay = self._jitter.retry_delay(hint)
        error = RateLimitedError(
            f"shop {self.shop_id}: {route.marketplace} rate-limited the account "
            f"({verdict.detail or verdict.status}); retry in {delay:.1f} s",
            retry_after=delay,
            bucket=bucket.name,
            shop_id=self.shop_id,
            marketplace=route.marketplace,
            category=route.category,
        )
        return _Retry(error, delay)

    # -- proxies -------------------------------------------------------------

    async def _exit_failed(
        self,
        route: Route,
        lease: Lease,
        reason: QuarantineReason,
        detail: str | None,
    ) -> _Retry:
        """Quarantine the exit that failed and move the shop off it."""
        async with self._lease_lock:
            if lease.proxy is not None and lease is self._lease:
                await self._proxies.quarantine(lease, reason)
                logger.warning(
                    "shop=%s marketplace=%s exit %s quarantined (%s)",
                    self.shop_id,
                    route.marketplace,
                    _exit_label(lease),
                    reason,
                )
                # NoProxyAvailableError propagates: every exit is out.
                self._lease = await self._proxies.move(lease)
                self._leased_at = asyncio.get_running_loop().time()
                self._register_proxy_secret(self._lease)
        error = MarketplaceUnavailableError(
            f"shop {self.shop_id}: {route.marketplace} {route.method} {route.path} "
            f"failed ({reason}: {detail or 'no detail'})",
            retry_after=self._settings.backoff_cap_seconds,
            shop_id=self.shop_id,
            marketplace=route.marketplace,
            category=route.category,
        )
        return _Retry(error)

    async def _renew_lease_if_old(self) -> None:
        # A block that outlives half the lease renews it, so that the proxy's
        # lease count stays right and the shop keeps its exit.
        now = asyncio.get_running_loop().time()
        if now - self._leased_at < self._settings.proxy_lease_seconds / 2:
            return
        self._leased_at = now
        await self._proxies.renew(self._lease)

    async def _move_after_auth_failure(self, lease: Lease) -> None:
        async with self._lease_lock:
            if lease is not self._lease:
                return
            try:
                self._lease = await self._proxies.move(lease)
            except MpShieldError:
                return
            self._register_proxy_secret(self._lease)

    @staticmethod
    def _register_proxy_secret(lease: Lease) -> None:
        if lease.proxy is not None:
            register_secret(urlsplit(lease.proxy.url).password)

    # -- the database --------------------------------------------------------

    async def _set_auth_error(self, reason: str) -> None:
        async with self._db_lock:
            await shop_db.set_shop_status(
                self._db, self.shop_id, ShopStatus.AUTH_ERROR, reason
            )
            await self._db.commit()
        self._status = ShopStatus.AUTH_ERROR
        logger.warning("shop=%s disabled: %s", self.shop_id, reason)

    def _disabled(
        self, reason: str, *, retry_after: float | None = None
    ) -> ShopDisabledError:
        return ShopDisabledError(
            f"shop {self.shop_id} is disabled ({reason})",
            shop_id=self.shop_id,
            marketplace=self.marketplace,
            reason=reason,
            retry_after=retry_after,
        )


def _exit_label(lease: Lease) -> str:
    if lease.proxy is None:
        return "direct"
    return lease.proxy.label or lease.exit_id


def _timestamp(moment: dt.datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        # SQLite hands back naive datetimes; we store UTC.
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


__all__ = ["MarketplaceClient", "Response"]
