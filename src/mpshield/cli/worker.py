"""``mpshield worker`` and ``mpshield beat``: the Celery processes."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from typing import Annotated

import redis
import typer

from mpshield.exceptions import ConfigurationError
from mpshield.settings import Settings, get_settings
from mpshield.state.store import resolve_redis_url

# A beat that dies frees its place after this long.
BEAT_LEASE_SECONDS = 60


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
    """Run the scheduler that queues ``sync_all`` every sync period. Run exactly one.

    A second beat on the same Redis and key prefix refuses to start: two would
    queue every shop twice.
    """
    from mpshield.jobs.celery_app import app

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    with _only_beat(settings):
        app.start(
            [
                "beat",
                f"--schedule={settings.home / 'celerybeat-schedule'}",
                f"--loglevel={loglevel}",
            ]
        )


@contextlib.contextmanager
def _only_beat(settings: Settings) -> Iterator[None]:
    client = redis.Redis.from_url(resolve_redis_url(settings))
    key = f"{settings.key_prefix}:beat:owner"
    token = f"{socket.gethostname()}:{os.getpid()}"
    if not client.set(key, token, nx=True, ex=BEAT_LEASE_SECONDS):
        raise ConfigurationError(
            "another mpshield beat is running for this Redis and key prefix "
            f"({settings.key_prefix}); run exactly one"
        )
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(BEAT_LEASE_SECONDS / 3):
            with contextlib.suppress(redis.RedisError):
                client.set(key, token, xx=True, ex=BEAT_LEASE_SECONDS)

    threading.Thread(target=renew, name="beat-lease", daemon=True).start()
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(redis.RedisError):
            if client.get(key) == token.encode():
                client.delete(key)
