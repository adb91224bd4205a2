"""``mpshield demo``: the showcase, on the embedded defaults with no services."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def demo(
    small: Annotated[
        bool, typer.Option("--small", help="A dozen shops instead of sixty.")
    ] = False,
    home: Annotated[
        Path | None,
        typer.Option(help="Where the demo keeps its state (default: a new temp dir)."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Celery worker processes.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the sandbox's data.")] = 7,
) -> None:
    """Sync sandbox shops through real Celery workers and check every order."""
    from mpshield.demo.run import DemoConfig, run_demo
    from mpshield.demo.scenario import Cast

    config = DemoConfig(
        cast=Cast.small() if small else Cast(), workers=workers, seed=seed, home=home
    )
    result = run_demo(config, Console())
    if not result.ok:
        raise typer.Exit(1)
