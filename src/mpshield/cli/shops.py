"""``mpshield shops``: add shops and see their state. Keys are never shown."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mpshield.cli.db import run_async
from mpshield.db.engine import session_scope
from mpshield.db.models import Shop
from mpshield.db.shops import add_shop, list_shops
from mpshield.exceptions import ConfigurationError
from mpshield.redaction import redact, register_secret
from mpshield.settings import get_settings

app = typer.Typer(
    name="shops",
    help="Shops and their credentials.",
    no_args_is_help=True,
)

STDIN = "-"


def _read_secret(value: str | None, what: str) -> str | None:
    """The value itself, or the next line of stdin when it is ``-``."""
    if value != STDIN:
        return value
    line = typer.get_text_stream("stdin").readline().strip()
    if not line:
        raise ConfigurationError(f"expected the {what} on standard input, got nothing")
    register_secret(line)
    return line


@app.command("add")
def add_command(
    marketplace: Annotated[str, typer.Option(help="wb or ozon.", show_default=False)],
    api_key: Annotated[
        str,
        typer.Option(
            help="The WB token or the Ozon Api-Key; '-' reads it from stdin, "
            "keeping it out of the shell history.",
            show_default=False,
        ),
    ],
    client_id: Annotated[str | None, typer.Option(help="Ozon's Client-Id.")] = None,
    client_secret: Annotated[
        str | None,
        typer.Option(
            help="The client secret some WB services want; '-' reads it from "
            "stdin (after the key, when both are '-')."
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="A label for people.")] = "",
) -> None:
    """Add a shop and print its id."""
    settings = get_settings()
    key = _read_secret(api_key, "API key") or ""
    secret = _read_secret(client_secret, "client secret")

    async def work() -> int:
        async with session_scope(settings) as session:
            shop = await add_shop(
                session,
                marketplace=marketplace,
                api_key=key,
                client_id=client_id,
                client_secret=secret,
                name=name,
            )
            return shop.id

    typer.echo(run_async(work))


@app.command("list")
def list_command(
    marketplace: Annotated[
        str | None, typer.Option(help="Only this marketplace's shops.")
    ] = None,
    status: Annotated[
        str | None, typer.Option(help="Only shops in this status.")
    ] = None,
) -> None:
    """Show the shops with their status; keys are never shown."""
    settings = get_settings()

    async def work() -> list[Shop]:
        async with session_scope(settings) as session:
            return await list_shops(session, marketplace=marketplace, status=status)

    shops = run_async(work)
    console = Console()
    if not shops:
        console.print("no shops")
        return
    table = Table("id", "marketplace", "name", "status", "reason", "unauthorized")
    for shop in shops:
        # Text, not markup: a name like "[red]" is shown as typed.
        cells = (
            str(shop.id),
            shop.marketplace,
            shop.name,
            shop.status,
            redact(shop.status_reason or ""),
            ", ".join(shop.unauthorized_categories),
        )
        table.add_row(*(Text(cell) for cell in cells))
    console.print(table)
