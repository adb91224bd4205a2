"""One asyncio event loop per worker process, made after the fork.

Celery has no ``async def`` tasks, and ``asyncio.run()`` in every task breaks
anything pooled: a Redis pool or database engine made on one loop fails on the
next ("attached to a different loop"), and curl_cffi sessions made before a
fork crash in the child. So each worker process owns exactly one loop, created
in the child (``worker_process_init``) or lazily on first use, and every task
of that process runs its coroutine on it. Pools are made lazily by the code that
needs them, which therefore happens inside this loop. On
``worker_process_shutdown`` the registered closers run on the loop before it
closes, so sockets are shut cleanly instead of leaking.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from celery.signals import worker_process_init, worker_process_shutdown

from mpshield.redaction import get_logger

logger = get_logger(__name__)

T = TypeVar("T")
Closer = Callable[[], Awaitable[None]]

_local = threading.local()
_closers_lock = threading.Lock()
_closers: list[Closer] = []


def add_closer(closer: Closer) -> None:
    """Run ``closer`` on the worker loop before it closes (once per process)."""
    with _closers_lock:
        if closer not in _closers:
            _closers.append(closer)


def remove_closer(closer: Closer) -> None:
    """Forget a closer added with :func:`add_closer`."""
    with _closers_lock:
        if closer in _closers:
            _closers.remove(closer)


def worker_loop() -> asyncio.AbstractEventLoop:
    """This process's (and thread's) loop, made on first use and after a fork."""
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed() or getattr(_local, "pid", None) != os.getpid():
        # A loop inherited through fork shares its selector with the parent:
        # never touch it, just make a fresh one.
        loop = asyncio.new_event_loop()
        _local.loop = loop
        _local.pid = os.getpid()
        logger.debug("event loop created in process %s", os.getpid())
    return loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on this process's loop.

    Raises:
        RuntimeError: when called from inside a running loop (a task must not
            nest loops; await the coroutine there instead).
    """
    loop = worker_loop()
    if loop.is_running():
        coro.close()
        raise RuntimeError("the worker loop is already running in this thread")
    asyncio.set_event_loop(loop)
    return loop.run_until_complete(coro)


async def _run_closers() -> None:
    with _closers_lock:
        closers = list(_closers)
    for closer in reversed(closers):
        try:
            await closer()
        except Exception:
            logger.warning("closing a pool failed", exc_info=True)


def close_worker_loop() -> None:
    """Run the closers, cancel what is left and close this process's loop."""
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed() or getattr(_local, "pid", None) != os.getpid():
        return
    try:
        loop.run_until_complete(_run_closers())
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        with contextlib.suppress(Exception):
            asyncio.set_event_loop(None)
        loop.close()
        _local.loop = None
        logger.debug("event loop closed in process %s", os.getpid())


@worker_process_init.connect
def _on_worker_process_init(**_: Any) -> None:
    # Fresh loop in the new child; nothing network-related came over the fork.
    _local.loop = None
    worker_loop()


@worker_process_shutdown.connect
def _on_worker_process_shutdown(**_: Any) -> None:
    close_worker_loop()
