"""What the demo shows: a live summary with the liveliest shops, and the final report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mpshield.demo.report import Verdict
from mpshield.demo.scenario import DemoShop

LIVE_ROWS = 14
_STATE_STYLE = {"CLOSED": "green", "OPEN": "red", "HALF_OPEN": "yellow"}


@dataclass
class Snapshot:
    """One look at the fleet: per shop id, and the totals."""

    phase: str
    elapsed: float
    orders: dict[int, int] = field(default_factory=dict)
    tasks: dict[int, str] = field(default_factory=dict)
    circuits: dict[int, str] = field(default_factory=dict)
    proxies: dict[int, str] = field(default_factory=dict)
    statuses: dict[int, str] = field(default_factory=dict)
    seller_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    bans: int = 0


def _seller_count(snapshot: Snapshot, shop: DemoShop, key: str) -> int:
    return int(snapshot.seller_stats.get(shop.seller, {}).get(key, 0))


def live_view(shops: list[DemoShop], snapshot: Snapshot) -> RenderableType:
    """A summary line and the shops worth watching (specials first, then busiest)."""
    tasks = Counter(snapshot.tasks.values())
    totals = Counter[str]()
    for stats in snapshot.seller_stats.values():
        totals.update({k: int(v) for k, v in stats.items()})
    summary = Text.assemble(
        (f"{snapshot.phase}", "bold cyan"),
        f"  {snapshot.elapsed:5.1f}s  shops {len(shops)}  ",
        f"orders {sum(snapshot.orders.values())}  ",
        f"requests {totals['requests']}  429s {totals['429']}  ",
        f"403s {totals['403']}  5xx {totals['5xx']}  bans {snapshot.bans}  ",
        "tasks " + " ".join(f"{k.lower()}={v}" for k, v in sorted(tasks.items())),
    )
    table = Table(expand=False, pad_edge=False, show_edge=False)
    columns = (
        "shop",
        "mp",
        "kind",
        "orders",
        "429s",
        "5xx",
        "proxy",
        "breaker",
        "task",
    )
    for column in columns:
        table.add_column(
            column, justify="right" if column in ("orders", "429s", "5xx") else "left"
        )

    def interest(shop: DemoShop) -> tuple[int, int]:
        special = 0 if shop.kind == "healthy" else 1
        return (special, snapshot.orders.get(shop.shop_id, 0))

    for shop in sorted(shops, key=interest, reverse=True)[:LIVE_ROWS]:
        circuit = snapshot.circuits.get(shop.shop_id, "CLOSED")
        status = snapshot.statuses.get(shop.shop_id, "active")
        breaker = Text(circuit, style=_STATE_STYLE.get(circuit, ""))
        if status != "active":
            breaker.append(f" ({status})", style="red")
        table.add_row(
            shop.name,
            shop.marketplace,
            shop.kind,
            str(snapshot.orders.get(shop.shop_id, 0)),
            str(_seller_count(snapshot, shop, "429")),
            str(_seller_count(snapshot, shop, "5xx")),
            snapshot.proxies.get(shop.shop_id, "-"),
            breaker,
            snapshot.tasks.get(shop.shop_id, "-").lower(),
        )
    return Group(summary, table)


def final_view(
    shops: list[DemoShop],
    verdict: Verdict,
    wall: float,
    outcomes: Counter[str],
    proxies: list[dict[str, Any]] | None = None,
) -> RenderableType:
    """The report: truth check, disabled shops and why, and the counts."""
    parts: list[RenderableType] = []
    checked = len(verdict.checks)
    exact = checked - len(verdict.mismatches)
    expected = sum(check.expected for check in verdict.checks)
    stored = sum(check.stored for check in verdict.checks)
    style = "bold green" if verdict.ok else "bold red"
    parts.append(
        Text(
            f"orders: {stored} stored vs {expected} in the sandbox; "
            f"{exact}/{checked} healthy feeds match exactly",
            style=style,
        )
    )
    if verdict.mismatches:
        table = Table(title="feeds that differ", show_edge=False)
        for column in (
            "shop",
            "feed",
            "expected",
            "stored",
            "missing",
            "extra",
            "stale",
        ):
            table.add_column(column)
        for check in verdict.mismatches:
            table.add_row(
                check.shop.name,
                check.feed,
                *(
                    str(n)
                    for n in (
                        check.expected,
                        check.stored,
                        check.missing,
                        check.extra,
                        check.stale,
                    )
                ),
            )
        parts.append(table)
    by_id = {shop.shop_id: shop for shop in shops}
    disabled = Table(title="shops disabled", show_edge=False)
    disabled.add_column("shop")
    disabled.add_column("expected")
    disabled.add_column("reason")
    for shop_id, reason in sorted(verdict.disabled.items()):
        shop = by_id[shop_id]
        disabled.add_row(shop.name, "yes" if shop.expect_disabled else "NO", reason)
    for shop in verdict.not_disabled:
        disabled.add_row(shop.name, "yes", Text("still active", style="red"))
    parts.append(disabled)
    counts = verdict.counts
    parts.append(
        Text(
            f"requests {counts['requests']}  429s {counts['429']}  403s {counts['403']}  "
            f"401s {counts['401']}  5xx {counts['5xx']}  "
            f"bans {counts['bans'] + counts['address_bans']}  "
            f"task outcomes {dict(sorted(outcomes.items()))}  wall time {wall:.1f}s"
        )
    )
    if proxies:
        # How the traffic spread over the pool, and how little the dead one got.
        parts.append(
            Text(
                "proxy connections  "
                + "  ".join(
                    f"{p['index']}:{p['connections']}"
                    + (
                        f" (dead, {p['refused']} refused)"
                        if p["mode"] == "refuse"
                        else ""
                    )
                    for p in proxies
                )
            )
        )
    parts.append(
        Text("RESULT: exact match" if verdict.ok else "RESULT: MISMATCH", style=style)
    )
    return Group(*parts)


def outcome_of(result: Any) -> str:
    """A finished task's action (``synced``, ``disabled``...) or its state."""
    value = getattr(result, "result", None)
    if isinstance(value, dict) and "action" in value:
        return str(value["action"])
    return str(getattr(result, "state", "?")).lower()
