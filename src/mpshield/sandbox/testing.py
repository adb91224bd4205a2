"""Running the sandbox under a test suite.

A suite starts one sandbox for the whole run with :func:`running_sandbox`. It
lives on its own event loop in a daemon thread, so every test, whatever loop
pytest gives it, talks to it over loopback like any client would. The helpers
below create sellers on it from the test's thread; the world is only touched
on the sandbox's own loop.

A ``conftest.py`` needs no more than::

    @pytest.fixture(scope="session")
    def sandbox() -> Iterator[SandboxThread]:
        with running_sandbox(suite_config()) as running:
            yield running
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from mpshield.sandbox.runner import SandboxConfig, SandboxThread


def suite_config(**overrides: Any) -> SandboxConfig:
    """The sandbox a suite shares: 4 proxies, time 100 times faster, gates on.

    Args:
        overrides: ``SandboxConfig`` fields to change.

    Returns:
        The configuration; the gate refuses non-browser handshakes on the
        seller APIs too, so a test fails loudly if Python's TLS ever leaks.
    """
    fields: dict[str, Any] = {
        "proxies": 4,
        "time_scale": 0.01,
        "gate_seller_apis": True,
    }
    fields.update(overrides)
    return SandboxConfig(**fields)


@contextlib.contextmanager
def running_sandbox(config: SandboxConfig | None = None) -> Iterator[SandboxThread]:
    """A sandbox started on its own loop thread, stopped on leaving the block."""
    running = SandboxThread(config or suite_config()).start()
    try:
        yield running
    finally:
        running.stop()


def new_wb_token(sandbox: SandboxThread, *, orders: int = 2, **options: Any) -> str:
    """A token of a new WB seller that already has ``orders`` orders.

    Args:
        sandbox: The running sandbox.
        orders: Past orders the seller starts with.
        options: Passed to ``World.wb_issue_token`` (token_type, scopes, ...).
    """
    world = sandbox.world
    sid = sandbox.call(lambda: world.wb_create_seller(orders=orders))
    return sandbox.call(lambda: world.wb_issue_token(sid, **options))


def new_ozon_seller(sandbox: SandboxThread, *, orders: int = 2) -> tuple[str, str]:
    """``(client_id, api_key)`` of a new Ozon seller with ``orders`` postings."""
    world = sandbox.world
    return sandbox.call(lambda: world.ozon_create_seller(orders=orders))
