"""The ``mpshield`` command line."""

from __future__ import annotations

import logging

import typer

from mpshield.cli import db as db_cli
from mpshield.cli import demo as demo_cli
from mpshield.cli import sandbox as sandbox_cli
from mpshield.cli import shops as shops_cli
from mpshield.cli import sync as sync_cli
from mpshield.cli import worker as worker_cli
from mpshield.exceptions import MpShieldError

app = typer.Typer(
    name="mpshield",
    help="A safe door to the Wildberries and Ozon seller APIs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db_cli.app, name="db")
app.add_typer(shops_cli.app, name="shops")
app.command("worker")(worker_cli.worker)
app.command("beat")(worker_cli.beat)
app.command("demo")(demo_cli.demo)
app.command("sync")(sync_cli.sync_command)
app.command("sandbox")(sandbox_cli.sandbox)


def main() -> None:
    """Entry point: run the CLI, turning our errors into a one-line message."""
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        app()
    except MpShieldError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
