"""The demo's Celery workers: real ``mpshield worker`` processes it starts and stops."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from mpshield.redaction import get_logger

logger = get_logger(__name__)

STOP_GRACE_SECONDS = 15.0
_LAUNCH = "from mpshield.cli.main import main; main()"


def worker_command(name: str, concurrency: int, loglevel: str = "INFO") -> list[str]:
    """The command line of one ``mpshield worker`` with this interpreter."""
    return [
        sys.executable,
        "-c",
        _LAUNCH,
        "worker",
        f"--concurrency={concurrency}",
        f"--name={name}",
        f"--loglevel={loglevel}",
    ]


@contextlib.contextmanager
def running_workers(
    env: Mapping[str, str], *, count: int, concurrency: int, logdir: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``count`` workers with ``env``; stop exactly those when the block ends.

    Each worker leads its own process group, so stopping it reaches its pool
    processes and nothing else.
    """
    logdir.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(count):
            log = (logdir / f"worker-{index + 1}.log").open("ab")
            name = f"demo{index + 1}-{os.getpid()}@localhost"
            processes.append(
                subprocess.Popen(
                    worker_command(name, concurrency),
                    env=dict(env),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            log.close()
            logger.info("worker %s started (pid %s)", name, processes[-1].pid)
        yield processes
    finally:
        stop_workers(processes)


def stop_workers(processes: list[subprocess.Popen[bytes]]) -> None:
    """Ask each worker to finish (warm shutdown), then kill what is left of it."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            logger.warning("worker %s did not stop; killing it", process.pid)
        # The group is the worker's own (start_new_session): its pool only.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
