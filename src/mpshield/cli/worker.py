"""``mpshield worker`` and ``mpshield beat``: the Celery processes."""

from __future__ import annotations

import os
import socket
from typing import Annotated

import typer

from mpshield.settings import get_settings


def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            "-c",
            min=1,
            help="Worker processes (MPSHIELD_SYNC_CONCURRENCY).",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Node name (unique per worker).")
    ] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l")] = "INFO",
) -> None:
    """Run a Celery worker that syncs shops (prefork pool, one task per process)."""
    from mpshield.jobs.celery_app import QUEUE, app

    settings = get_settings()
    node = name or f"mpshield-{os.getpid()}@{socket.gethostname()}"
    app.worker_main(
        [
            "worker",
            "--pool=prefork",
            f"--concurrency={concurrency or settings.sync_concurrency}",
            f"--hostname={node}",
            f"--queues={QUEUE}",
            f"--loglevel={loglevel}",
            "--without-mingle",
            "--without-gossip",
        ]
    )


def beat(
    loglevel: Annotated[str, typer.Option("--loglevel", "-l")] = "INFO",
) -> None:
    """Run the scheduler that queues ``sync_all`` every sync period. Run exactly one."""
    from mpshield.jobs.celery_app import app

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    app.start(
        [
            "beat",
            f"--schedule={settings.home / 'celerybeat-schedule'}",
            f"--loglevel={loglevel}",
        ]
    )
