"""``mpshield sync``: pull shops' orders now, in this process, with progress."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from mpshield.cli.db import run_async
from mpshield.exceptions import ConfigurationError
from mpshield.jobs.feeds import FEEDS
from mpshield.jobs.runner import Outcome, ShopResult, run_sync
from mpshield.settings import get_settings
from mpshield.state.store import get_store

STYLES = {
    Outcome.OK: "green",
    Outcome.DEFERRED: "yellow",
    Outcome.DISABLED: "red",
    Outcome.ERROR: "red",
    Outcome.NOT_FOUND: "red",
}


def sync_command(
    all_shops: Annotated[
        bool, typer.Option("--all", help="Sync every shop in the database.")
    ] = False,
    shop: Annotated[
        list[int] | None,
        typer.Option("--shop", help="A shop id to sync; repeat for several."),
    ] = None,
    feed: Annotated[
        list[str] | None,
        typer.Option(
            "--feed",
            help="Only this feed (wb_fbs, wb_stats, ozon_fbs, ozon_fbo); repeatable.",
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="Shops synced at once [default: settings]."),
    ] = None,
    max_wait: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Seconds a request may wait for a rate limit [default: settings].",
        ),
    ] = None,
    retry_within: Annotated[
        float,
        typer.Option(
            min=0, help="Run a deferred feed again when its wait is this short."
        ),
    ] = 0.0,
) -> None:
    """Sync orders of the given shops now and print a table of what happened.

    Exits with 1 when a shop failed; disabled and deferred shops are normal
    states and leave the exit code 0.
    """
    if all_shops == bool(shop):
        raise ConfigurationError("give either --all or at least one --shop ID")
    unknown = sorted(set(feed or ()) - set(FEEDS))
    if unknown:
        raise ConfigurationError(
            f"unknown feed {', '.join(unknown)}; known: {', '.join(FEEDS)}"
        )
    settings = get_settings()
    console = Console()

    async def work() -> list[ShopResult]:
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("syncing", total=None if all_shops else len(shop or ()))

            def advance(result: ShopResult) -> None:
                bar.update(task, advance=1, description=f"shop {result.shop_id}")

            try:
                return await run_sync(
                    "all" if all_shops else list(shop or ()),
                    settings=settings,
                    concurrency=concurrency,
                    feeds=feed or None,
                    max_wait=max_wait,
                    retry_within=retry_within,
                    progress=advance,
                )
            finally:
                await get_store(settings).aclose()

    results = run_async(work)
    console.print(_table(results))
    if any(r.outcome in (Outcome.ERROR, Outcome.NOT_FOUND) for r in results):
        raise typer.Exit(1)


def _table(results: list[ShopResult]) -> Table:
    table = Table(title=f"order sync: {len(results)} shop(s)")
    for column in ("shop", "marketplace", "orders", "new", "updated", "status"):
        table.add_column(column, justify="right" if column != "status" else "left")
    for result in results:
        report = result.report
        status = str(result.outcome)
        if result.error:
            status += f": {result.error}"
        table.add_row(
            str(result.shop_id),
            (report.marketplace or "-") if report else "-",
            str(report.orders) if report else "-",
            str(report.new) if report else "-",
            str(report.updated) if report else "-",
            f"[{STYLES[result.outcome]}]{_escape(status)}[/]",
        )
    return table


def _escape(text: str) -> str:
    # Marketplace texts may hold square brackets, which Rich reads as markup.
    return text.replace("[", "\\[")
