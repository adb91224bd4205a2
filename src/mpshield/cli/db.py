"""``mpshield db``: the database's migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from mpshield.db.engine import (
    current_revision,
    dispose_engines,
    head_revision,
    resolve_database_url,
    upgrade,
)
from mpshield.redaction import mask_url
from mpshield.settings import get_settings

T = TypeVar("T")

app = typer.Typer(
    name="db",
    help="The database: migrations and their state.",
    no_args_is_help=True,
)


def run_async(work: Callable[[], Awaitable[T]]) -> T:
    """Run one command's work on a fresh loop and close its database pools after."""

    async def main() -> T:
        try:
            return await work()
        finally:
            await dispose_engines()

    return asyncio.run(main())


@app.command("upgrade")
def upgrade_command(
    revision: Annotated[str, typer.Option(help="The revision to migrate to.")] = "head",
) -> None:
    """Migrate the configured database (or the embedded one) and print its revision."""
    settings = get_settings()

    async def work() -> str | None:
        await upgrade(settings, revision)
        return await current_revision(settings)

    reached = run_async(work)
    url = mask_url(resolve_database_url(settings))
    typer.echo(f"{url} is at revision {reached or 'none'}")


@app.command("current")
def current_command() -> None:
    """Print the database's revision and the one this version of mpshield needs."""
    settings = get_settings()
    current = run_async(lambda: current_revision(settings))
    url = mask_url(resolve_database_url(settings))
    typer.echo(f"{url} is at revision {current or 'none'}; head is {head_revision()}")
