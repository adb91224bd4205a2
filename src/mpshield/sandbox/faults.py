"""Per-seller faults: server errors, gateway pages, slow answers, drops, broken JSON.

Each request of a seller draws one fault (or none) from the seller's
``FaultConfig``; the rates add up, so ``error_rate=0.1, drop_rate=0.1`` faults
one request in five. ``slow_seconds`` is real time (it exists to meet client
timeouts) and is not scaled.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import asdict, dataclass
from typing import Any, Literal

from aiohttp import web

from mpshield.exceptions import ConfigurationError

FaultKind = Literal["error", "slow", "drop", "malformed"]

GATEWAY_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass
class FaultConfig:
    """Shares (0..1) of a seller's requests that go wrong, and how."""

    error_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 2.0
    drop_rate: float = 0.0
    malformed_rate: float = 0.0
    # Of the errors, the share answered by the "gateway" as an HTML page.
    html_share: float = 0.5

    def __post_init__(self) -> None:
        rates = (self.error_rate, self.slow_rate, self.drop_rate, self.malformed_rate)
        if any(rate < 0 or rate > 1 for rate in (*rates, self.html_share)):
            raise ConfigurationError("fault rates must lie between 0 and 1")
        if sum(rates) > 1:
            raise ConfigurationError("fault rates must add up to at most 1")
        if self.slow_seconds < 0:
            raise ConfigurationError("slow_seconds must not be negative")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FaultConfig:
        """Build from a JSON object, ignoring unknown keys."""
        if not data:
            return cls()
        known = {key: float(value) for key, value in data.items() if key in _FIELDS}
        return cls(**known)

    def to_dict(self) -> dict[str, float]:
        """The config as a JSON object."""
        return asdict(self)

    def draw(self, rng: random.Random) -> FaultKind | None:
        """Pick this request's fault, if any."""
        point = rng.random()
        for kind, rate in (
            ("error", self.error_rate),
            ("drop", self.drop_rate),
            ("slow", self.slow_rate),
            ("malformed", self.malformed_rate),
        ):
            if point < rate:
                return kind  # type: ignore[return-value]
            point -= rate
        return None


_FIELDS = frozenset(FaultConfig.__dataclass_fields__)


def error_response(
    rng: random.Random, config: FaultConfig, json_body: dict[str, Any]
) -> web.Response:
    """A 500, 502 or 503: an HTML gateway page or the service's own JSON."""
    status = rng.choice((500, 502, 503))
    if rng.random() < config.html_share:
        page = GATEWAY_PAGE.format(status=status, reason=_REASONS[status])
        return web.Response(status=status, text=page, content_type="text/html")
    return web.json_response(json_body, status=status)


def malform(body: bytes, rng: random.Random) -> bytes:
    """Break a JSON body: cut it short, or damage it in the middle."""
    if len(body) < 4 or rng.random() < 0.5:
        return body[: max(1, len(body) // 2)]
    middle = len(body) // 2
    return body[:middle] + b"\x00}{" + body[middle:]


async def drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without an answer."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    # Give the event loop a turn so the abort reaches the socket before
    # aiohttp notices the handler has finished.
    await asyncio.sleep(0)
    raise ConnectionResetError("sandbox dropped the connection")


async def slow(config: FaultConfig) -> None:
    """Hold the answer back."""
    await asyncio.sleep(config.slow_seconds)
