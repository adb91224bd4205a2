"""The sandbox's world: sellers, their keys and orders, limits, bans and counts.

One ``World`` is shared by the WB, Ozon, storefront and admin apps. It holds
everything a marketplace would hold (sellers, tokens and keys, orders as they
are now) and the judgement state (rate-limit buckets, bans, breakers). Every
period, whether a limit, a ban or the pace of new orders, is multiplied by
``time_scale``: 0.01 turns an hour into 36 s. Data windows (WB's 30-day order
window, Ozon's one-year period) concern order dates and are not scaled; order
dates are wall-clock UTC moments that advance with the injected clock.

Behaviour the marketplaces do not document is a setting in ``WorldSettings``,
with the most plausible choice as its default.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import random
import secrets
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from mpshield.exceptions import ConfigurationError
from mpshield.redaction import get_logger, register_secret
from mpshield.sandbox import orders as gen
from mpshield.sandbox.faults import FaultConfig
from mpshield.sandbox.limits import BucketTable, EventCounter, Rule
from mpshield.sandbox.wbtokens import TokenAuthority, WbToken, scope_mask

logger = get_logger(__name__)

DAY = 86400.0
MINUTE = 60.0
HOUR = 3600.0

# WB method groups: budget ("personal", "service", "base", "test" or "*") -> rule.
WB_LIMITS: dict[str, dict[str, Rule]] = {
    "marketplace.fbs": {"*": Rule(MINUTE, 300, 20)},
    "marketplace.fbs_cancel": {"*": Rule(MINUTE, 100, 20)},
    "marketplace.fbs_meta": {"*": Rule(MINUTE, 1000, 20)},
    "statistics.orders": {"*": Rule(MINUTE, 1, 10), "base": Rule(3 * HOUR, 1, 1)},
    "statistics.sales": {"*": Rule(MINUTE, 1, 1), "base": Rule(2 * HOUR, 1, 1)},
    "common.seller_info": {"*": Rule(MINUTE, 1, 10), "base": Rule(DAY, 1, 1)},
    "content.cards": {"*": Rule(MINUTE, 100, 5), "base": Rule(HOUR, 2, 1)},
}

SANDBOX_RULE = Rule(1.0, 1, 1)
PING_RULE = Rule(30.0, 3, 3)
STOREFRONT_RULE = Rule(MINUTE, 300, 50)

# Ozon method limits on top of the per-Client-Id cap: path -> (limit, period).
OZON_METHOD_LIMITS: dict[str, tuple[int, float]] = {
    "/v2/products/stocks": (80, MINUTE),
    "/v1/analytics/data": (1, MINUTE),
    "/v1/analytics/turnover/stocks": (1, MINUTE),
}


@dataclass
class WorldSettings:
    """The sandbox's knobs; periods are in unscaled seconds."""

    # WB limits and their consequences.
    wb_limits: dict[str, dict[str, Rule]] = field(
        default_factory=lambda: dict(WB_LIMITS)
    )
    wb_4xx_cost: int = 10  # a Marketplace 4XX is charged as this many requests
    wb_charge_429: bool = False  # whether a 429 itself takes a token [U]
    wb_sandbox_rule: Rule = SANDBOX_RULE  # test tokens: Marketplace as a whole
    wb_ping_rule: Rule = PING_RULE
    # /ping is blocked after this many 429s within the window, or after this many
    # calls at a steady cadence (a scheduler); 0 turns a trigger off.
    wb_ping_block_after_429: int = 3
    wb_ping_block_window: float = 5 * MINUTE
    wb_ping_schedule_calls: int = 6
    wb_ping_schedule_tolerance: float = 0.1
    wb_ping_block_seconds: float = 10 * MINUTE
    wb_stats_page_size: int = 500  # WB documents ~80,000 rows
    # Floods: this many failing answers within the window restrict the source
    # address (401s) or the token (any 4XX) for the ban period [U].
    wb_address_401_threshold: int = 50
    wb_token_4xx_threshold: int = 100
    flood_window: float = MINUTE
    flood_ban_seconds: float = 30 * MINUTE
    # Ozon.
    ozon_rps: int = 50
    ozon_method_limits: dict[str, tuple[int, float]] = field(
        default_factory=lambda: dict(OZON_METHOD_LIMITS)
    )
    ozon_rate_headers: bool = True
    ozon_circle_threshold: int = 30  # 429s of one method within the window
    ozon_circle_window: float = 10.0
    ozon_circle_seconds: float = 3 * MINUTE
    ozon_circle_status: int = 503
    ozon_key_lifetime: float = 180 * DAY
    ozon_address_auth_threshold: int = 50  # 401/404-code-5 answers per address
    ozon_client_error_threshold: int = 200  # 4XX per Client-Id
    ozon_stock_interval: float = 30.0  # one stock update per product and warehouse
    # Orders.
    history_days: float = 14.0
    order_rate_per_hour: float = 30.0
    status_rate_per_hour: float = 20.0
    wb_fbw_share: float = 0.3  # WB orders from WB warehouses: statistics only
    ozon_fbo_share: float = 0.3
    # Storefront (per source address).
    storefront_rule: Rule = STOREFRONT_RULE
    storefront_ban_after_429: int = 20
    storefront_ban_window: float = MINUTE
    storefront_ban_seconds: float = 30 * MINUTE
    storefront_blocked_networks: list[str] = field(default_factory=list)


@dataclass
class WbSeller:
    """One WB seller account and its orders as WB holds them."""

    sid: str
    name: str
    faults: FaultConfig
    rng: random.Random
    factory: gen.WbOrderFactory
    cursor_key: int
    fbs: dict[int, dict[str, Any]] = field(default_factory=dict)
    fbs_created: dict[int, float] = field(default_factory=dict)
    status: dict[int, tuple[str, str]] = field(default_factory=dict)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    row_changed: dict[str, tuple[int, int]] = field(default_factory=dict)
    next_order_at: float = 0.0
    next_change_at: float = 0.0


@dataclass
class OzonKey:
    """One Api-Key of a Client-Id."""

    value: str
    expires_at: float
    active: bool = True


@dataclass
class OzonSeller:
    """One Ozon Client-Id, its keys and postings."""

    client_id: str
    name: str
    faults: FaultConfig
    rng: random.Random
    factory: gen.OzonPostingFactory
    keys: dict[str, OzonKey] = field(default_factory=dict)
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(
        default_factory=list
    )
    fbs: dict[str, dict[str, Any]] = field(default_factory=dict)
    fbo: dict[str, dict[str, Any]] = field(default_factory=dict)
    sort_key: dict[str, tuple[int, int]] = field(default_factory=dict)
    status_changed: dict[str, float] = field(default_factory=dict)
    stock_updates: dict[tuple[str, int], float] = field(default_factory=dict)
    next_order_at: float = 0.0
    next_change_at: float = 0.0


StatKey = Literal["requests", "2xx", "401", "403", "404", "429", "5xx", "bans", "drops"]


class World:
    """Everything the sandbox marketplaces know; see the module docstring."""

    def __init__(
        self,
        *,
        time_scale: float = 1.0,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        settings: WorldSettings | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ConfigurationError("time_scale must be positive")
        self.time_scale = time_scale
        self.seed = seed
        self.clock = clock
        self.settings = settings or WorldSettings()
        self.tokens = TokenAuthority()
        self.buckets = BucketTable(clock, time_scale)
        self.lock = threading.RLock()
        self.wb_sellers: dict[str, WbSeller] = {}
        self.ozon_sellers: dict[str, OzonSeller] = {}
        self.revoked: set[str] = set()
        self.bans: dict[tuple[str, str], float] = {}
        self.blocks: dict[tuple[str, ...], float] = {}
        self.ping_times: dict[tuple[str, str], list[float]] = defaultdict(list)
        self._counters: dict[tuple[str, ...], EventCounter] = {}
        self._stats: dict[str, dict[str, Counter[str]]] = {
            "sellers": defaultdict(Counter),
            "addresses": defaultdict(Counter),
        }
        self._wall0 = time.time()
        self._clock0 = clock()
        self._rng = random.Random(seed)
        self._next_wb_id = 13_833_711 + self._rng.randrange(10**6)
        self._next_ozon_id = 30_000_000_000 + self._rng.randrange(10**8)
        self._next_client_id = 100_000 + self._rng.randrange(10**5)
        self._seq = 0
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ time

    def now(self) -> float:
        """The world's wall clock (UTC epoch seconds), advancing with ``clock``."""
        return self._wall0 + (self.clock() - self._clock0)

    def scaled(self, seconds: float) -> float:
        """A marketplace period in this world's seconds."""
        return seconds * self.time_scale

    # ------------------------------------------------------------ WB admin

    def wb_create_seller(
        self, *, name: str = "", orders: int = 50, faults: FaultConfig | None = None
    ) -> str:
        """Create a WB seller with ``orders`` past orders; returns its ``sid``."""
        with self.lock:
            index = len(self.wb_sellers) + len(self.ozon_sellers)
            rng = random.Random(f"{self.seed}:wb:{index}")
            sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            seller = WbSeller(
                sid=sid,
                name=name or f"WB seller {index + 1}",
                faults=faults or FaultConfig(),
                rng=rng,
                factory=gen.WbOrderFactory(rng, self._wb_id),
                cursor_key=rng.getrandbits(64),
            )
            self.wb_sellers[sid] = seller
            self._seed_history(
                orders, lambda moment: self._wb_new_order(seller, moment)
            )
            seller.next_order_at = self._next_event(
                rng, self.settings.order_rate_per_hour
            )
            seller.next_change_at = self._next_event(
                rng, self.settings.status_rate_per_hour
            )
            return sid

    def wb_issue_token(
        self,
        sid: str,
        *,
        token_type: Literal["personal", "service", "base", "test"] = "personal",
        scopes: Iterable[str] = ("marketplace", "statistics", "content"),
        expires_in: float = 180 * DAY,
        read_only: bool = False,
    ) -> str:
        """Sign a token for seller ``sid``; ``expires_in`` is scaled like every period."""
        with self.lock:
            self._wb_seller(sid)
            now = self.now()
            token, _ = self.tokens.issue(
                sid,
                token_type=token_type,
                scopes=scope_mask(scopes, read_only=read_only),
                exp=now + self.scaled(expires_in),
                issued_at=now,
            )
        register_secret(token)
        return token

    def wb_revoke_token(self, token: str) -> None:
        """Withdraw a token: from now on it gets 401."""
        claims = self.tokens.check(token)
        with self.lock:
            self.revoked.add(claims.token_id)

    def wb_token_state(self, token: WbToken) -> str | None:
        """Why a well-signed token is refused, or None."""
        if token.token_id in self.revoked:
            return "token problem; token withdrawn"
        if token.exp <= self.now():
            return "token problem; token expired"
        if token.sid not in self.wb_sellers:
            return "token problem; seller not found"
        return None

    # ---------------------------------------------------------- Ozon admin

    def ozon_create_seller(
        self, *, name: str = "", orders: int = 50, faults: FaultConfig | None = None
    ) -> tuple[str, str]:
        """Create an Ozon seller; returns ``(client_id, api_key)``."""
        with self.lock:
            index = len(self.wb_sellers) + len(self.ozon_sellers)
            rng = random.Random(f"{self.seed}:ozon:{index}")
            self._next_client_id += 1 + rng.randrange(1000)
            client_id = str(self._next_client_id)
            seller = OzonSeller(
                client_id=client_id,
                name=name or f"Ozon seller {index + 1}",
                faults=faults or FaultConfig(),
                rng=rng,
                factory=gen.OzonPostingFactory(rng, self._ozon_id),
            )
            self.ozon_sellers[client_id] = seller
            key = self._new_ozon_key(seller)
            self._seed_history(
                orders, lambda moment: self._ozon_new_posting(seller, moment)
            )
            seller.next_order_at = self._next_event(
                rng, self.settings.order_rate_per_hour
            )
            seller.next_change_at = self._next_event(
                rng, self.settings.status_rate_per_hour
            )
            return client_id, key

    def ozon_rotate_key(self, client_id: str) -> str:
        """Issue a new Api-Key and deactivate the old ones."""
        with self.lock:
            seller = self._ozon_seller(client_id)
            for key in seller.keys.values():
                key.active = False
            return self._new_ozon_key(seller)

    def ozon_deactivate_key(self, client_id: str, api_key: str) -> None:
        """Deactivate one Api-Key: it now gets 404 with code 5."""
        with self.lock:
            seller = self._ozon_seller(client_id)
            if api_key not in seller.keys:
                raise ConfigurationError("no such Api-Key for this Client-Id")
            seller.keys[api_key].active = False

    def ozon_restrict_key(self, client_id: str, networks: list[str]) -> None:
        """Allow the Client-Id's keys only from ``networks``; [] lifts the restriction."""
        try:
            parsed = [ipaddress.ip_network(net, strict=False) for net in networks]
        except ValueError as exc:
            raise ConfigurationError(f"invalid network: {exc}") from None
        with self.lock:
            self._ozon_seller(client_id).networks = parsed

    def _new_ozon_key(self, seller: OzonSeller) -> str:
        value = str(uuid.UUID(int=seller.rng.getrandbits(128), version=4))
        expires = self.now() + self.scaled(self.settings.ozon_key_lifetime)
        seller.keys[value] = OzonKey(value=value, expires_at=expires)
        register_secret(value)
        return value

    # ---------------------------------------------------------- both

    def set_faults(self, seller: str, faults: FaultConfig) -> None:
        """Replace the fault config of a seller (``sid`` or ``client_id``)."""
        with self.lock:
            self._any_seller(seller).faults = faults

    def truth(self, seller: str) -> dict[str, list[dict[str, Any]]]:
        """Every order of a seller as the marketplace holds it now, per feed.

        WB: ``wb_fbs`` (as ``GET /api/v3/orders`` shows them, by id) and
        ``wb_stats`` (statistics rows, by srid). Ozon: ``ozon_fbs`` and
        ``ozon_fbo`` (as the list methods show them with every ``with`` flag
        set, by posting number).
        """
        with self.lock:
            if seller in self.wb_sellers:
                wb = self.wb_sellers[seller]
                fields = gen.wb_order_fields("Order")
                return {
                    "wb_fbs": [
                        {
                            key: value
                            for key, value in wb.fbs[ident].items()
                            if key in fields
                        }
                        for ident in sorted(wb.fbs)
                    ],
                    "wb_stats": [dict(wb.rows[srid]) for srid in sorted(wb.rows)],
                }
            ozon = self._ozon_seller(seller)
            return {
                "ozon_fbs": [_copy(ozon.fbs[number]) for number in sorted(ozon.fbs)],
                "ozon_fbo": [_copy(ozon.fbo[number]) for number in sorted(ozon.fbo)],
            }

    def stats(self) -> dict[str, Any]:
        """Counts per seller and per source address, and the bans in force."""
        with self.lock:
            now = self.clock()
            active = [
                {
                    "scope": scope,
                    "subject": subject,
                    "seconds_left": round(until - now, 3),
                }
                for (scope, subject), until in self.bans.items()
                if until > now
            ]
            return {
                "sellers": {
                    key: dict(value) for key, value in self._stats["sellers"].items()
                },
                "addresses": {
                    key: dict(value) for key, value in self._stats["addresses"].items()
                },
                "bans": active,
            }

    def record(self, seller: str | None, address: str, status: int | str) -> None:
        """Count one answer (or ``"drop"``) for a seller and a source address."""
        keys: list[StatKey] = ["requests"]
        if status == "drop":
            keys.append("drops")
        elif isinstance(status, int):
            if 200 <= status < 300:
                keys.append("2xx")
            elif status >= 500:
                keys.append("5xx")
            elif str(status) in ("401", "403", "404", "429"):
                keys.append(str(status))  # type: ignore[arg-type]
        with self.lock:
            for key in keys:
                if seller is not None:
                    self._stats["sellers"][seller][key] += 1
                self._stats["addresses"][address][key] += 1

    # ---------------------------------------------------- bans and counters

    def banned(self, scope: str, subject: str) -> float:
        """Seconds left on a ban (0 when none)."""
        until = self.bans.get((scope, subject))
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self.bans[(scope, subject)]
            return 0.0
        return left

    def ban(
        self, scope: str, subject: str, seconds: float, seller: str | None = None
    ) -> None:
        """Ban ``subject`` in ``scope`` for ``seconds`` (unscaled)."""
        self.bans[(scope, subject)] = self.clock() + self.scaled(seconds)
        logger.info(
            "sandbox ban: %s %s for %.1f s", scope, subject, self.scaled(seconds)
        )
        self._stats["addresses" if seller is None else "sellers"][seller or subject][
            "bans"
        ] += 1

    def count(self, key: tuple[str, ...], window: float) -> int:
        """Add an event under ``key``; returns how many fell in the window (unscaled)."""
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = EventCounter(self.scaled(window))
        return counter.add(self.clock())

    def reset_count(self, key: tuple[str, ...]) -> None:
        """Forget the events under ``key``."""
        counter = self._counters.get(key)
        if counter is not None:
            counter.clear()

    # ---------------------------------------------------------- orders

    def _wb_id(self) -> int:
        self._next_wb_id += 1 + self._rng.randrange(7)
        return self._next_wb_id

    def _ozon_id(self) -> int:
        self._next_ozon_id += 1 + self._rng.randrange(50)
        return self._next_ozon_id

    def _seed_history(self, count: int, make: Callable[[float], None]) -> None:
        now = self.now()
        span = self.settings.history_days * DAY
        # Past orders sit at distinct seconds, evenly spread over the history.
        for index in range(count):
            make(now - span + span * (index + 1) / (count + 1))

    def _wb_new_order(self, seller: WbSeller, moment: float) -> None:
        if seller.rng.random() < self.settings.wb_fbw_share:
            row = seller.factory.stats_row(None, moment, moment)
        else:
            order = seller.factory.assembly_order(moment)
            seller.fbs[order["id"]] = order
            seller.fbs_created[order["id"]] = moment
            seller.status[order["id"]] = gen.WB_FLOW[0]
            row = seller.factory.stats_row(order, moment, moment)
        self._touch_row(seller, row, moment)

    def _touch_row(self, seller: WbSeller, row: dict[str, Any], moment: float) -> None:
        row["lastChangeDate"] = gen.msk_time(moment)
        seller.rows[row["srid"]] = row
        seller.row_changed[row["srid"]] = (int(moment), self._sequence())

    def _sequence(self) -> int:
        self._seq += 1
        return self._seq

    def _ozon_new_posting(self, seller: OzonSeller, moment: float) -> None:
        fbo = seller.rng.random() < self.settings.ozon_fbo_share
        posting = seller.factory.fbo(moment) if fbo else seller.factory.fbs(moment)
        number = posting["posting_number"]
        (seller.fbo if fbo else seller.fbs)[number] = posting
        seller.sort_key[number] = (round(moment * 1000), posting["order_id"])
        seller.status_changed[number] = moment

    def wb_cancel(
        self, seller: WbSeller, order_id: int, by_client: bool = False
    ) -> None:
        """Cancel an assembly order and show it in its statistics row."""
        now = self.now()
        seller.status[order_id] = gen.WB_CANCELS[1 if by_client else 0]
        row = seller.rows.get(seller.fbs[order_id]["rid"])
        if row is not None:
            row["isCancel"] = True
            row["cancelDate"] = gen.msk_time(now)
            self._touch_row(seller, row, now)

    def _wb_change(self, seller: WbSeller) -> None:
        rng = seller.rng
        open_orders = [
            ident
            for ident, pair in seller.status.items()
            if pair not in gen.WB_CANCELS and pair != gen.WB_FLOW[-1]
        ]
        if not open_orders:
            return
        ident = rng.choice(open_orders)
        pair = seller.status[ident]
        if pair[0] in ("new", "confirm") and rng.random() < 0.2:
            self.wb_cancel(seller, ident, by_client=pair[0] == "new")
            return
        seller.status[ident] = gen.WB_FLOW[gen.WB_FLOW.index(pair) + 1]
        row = seller.rows.get(seller.fbs[ident]["rid"])
        if row is not None:
            # WB re-delivers a row whenever anything about the order changes.
            self._touch_row(seller, row, self.now())

    def _ozon_change(self, seller: OzonSeller) -> None:
        rng = seller.rng
        candidates = [
            (number, fbo)
            for fbo, book in ((False, seller.fbs), (True, seller.fbo))
            for number, posting in book.items()
            if posting["status"] in gen.OZON_FLOW[:-1]
        ]
        if not candidates:
            return
        number, fbo = rng.choice(candidates)
        posting = (seller.fbo if fbo else seller.fbs)[number]
        if posting["status"] == "awaiting_packaging" and rng.random() < 0.2:
            gen.ozon_cancel(posting, fbo)
        else:
            gen.ozon_advance(posting, fbo)
        seller.status_changed[number] = self.now()

    def add_orders(self, seller: str, count: int = 1) -> None:
        """Let ``count`` new orders arrive for a seller now."""
        with self.lock:
            target = self._any_seller(seller)
            for _ in range(count):
                if isinstance(target, WbSeller):
                    self._wb_new_order(target, self.now())
                else:
                    self._ozon_new_posting(target, self.now())

    def change_statuses(self, seller: str, count: int = 1) -> None:
        """Let ``count`` orders of a seller change status now."""
        with self.lock:
            target = self._any_seller(seller)
            for _ in range(count):
                if isinstance(target, WbSeller):
                    self._wb_change(target)
                else:
                    self._ozon_change(target)

    def _next_event(self, rng: random.Random, per_hour: float) -> float:
        if per_hour <= 0:
            return float("inf")
        return self.clock() + rng.expovariate(per_hour / HOUR) * self.time_scale

    def tick(self) -> None:
        """Let every order arrival and status change due by now happen."""
        with self.lock:
            now = self.clock()
            sellers: list[WbSeller | OzonSeller] = [
                *self.wb_sellers.values(),
                *self.ozon_sellers.values(),
            ]
            for seller in sellers:
                self._catch_up(seller, now)

    def _catch_up(self, seller: WbSeller | OzonSeller, now: float) -> None:
        settings = self.settings
        # A long pause (a suspended laptop) must not replay thousands of events.
        for _ in range(1000):
            if seller.next_order_at > now:
                break
            self.add_orders(_ident(seller))
            seller.next_order_at += self._gap(seller.rng, settings.order_rate_per_hour)
        for _ in range(1000):
            if seller.next_change_at > now:
                break
            self.change_statuses(_ident(seller))
            seller.next_change_at += self._gap(
                seller.rng, settings.status_rate_per_hour
            )

    def _gap(self, rng: random.Random, per_hour: float) -> float:
        if per_hour <= 0:
            return float("inf")
        return rng.expovariate(per_hour / HOUR) * self.time_scale

    async def start(self) -> None:
        """Start the background task that keeps orders arriving and changing."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sandbox-world")

    async def stop(self) -> None:
        """Stop the background task."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        pause = min(1.0, max(0.01, 10 * self.time_scale))
        while True:
            try:
                self.tick()
            except Exception:
                logger.exception("sandbox world tick failed")
            await asyncio.sleep(pause)

    # ---------------------------------------------------------- lookups

    def _wb_seller(self, sid: str) -> WbSeller:
        try:
            return self.wb_sellers[sid]
        except KeyError:
            raise ConfigurationError(f"no WB seller {sid!r} in the sandbox") from None

    def _ozon_seller(self, client_id: str) -> OzonSeller:
        try:
            return self.ozon_sellers[str(client_id)]
        except KeyError:
            raise ConfigurationError(
                f"no Ozon seller {client_id!r} in the sandbox"
            ) from None

    def _any_seller(self, seller: str) -> WbSeller | OzonSeller:
        if seller in self.wb_sellers:
            return self.wb_sellers[seller]
        return self._ozon_seller(seller)

    def random_id(self) -> str:
        """A 32-hex request id."""
        return secrets.token_hex(16)


# Where each sandbox app keeps its world.
WORLD_KEY = web.AppKey("world", World)
# Which seller a refused request counts against (None: no seller known).
SELLER: web.ResponseKey[str | None] = web.ResponseKey("sandbox.seller")


def _ident(seller: WbSeller | OzonSeller) -> str:
    return seller.sid if isinstance(seller, WbSeller) else seller.client_id


def _copy(posting: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(posting)
