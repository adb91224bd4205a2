"""A pool of forward proxies on loopback, each leaving from its own address.

Proxy ``i`` listens on 127.0.0.1 and opens its upstream connections from
127.0.0.(10 + i), so the sandbox's servers see a distinct source address per
proxy and per-IP limits and bans behave as they would on the internet. The
proxies speak CONNECT (for HTTPS) and plain absolute-URI requests, may ask
for basic auth, and can be told to misbehave: refuse connections, answer 502,
or hang. They only ever connect to loopback addresses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from mpshield.exceptions import ConfigurationError
from mpshield.redaction import get_logger

logger = get_logger(__name__)

ProxyMode = Literal["ok", "refuse", "502", "hang"]
PROXY_MODES: dict[str, ProxyMode] = {mode: mode for mode in get_args(ProxyMode)}
MAX_HEAD_BYTES = 64 * 1024
HANG_SECONDS = 30.0
FIRST_SOURCE_OCTET = 10


class ForbiddenUpstream(ValueError):
    """The proxy was asked to reach something that is not loopback."""


def check_loopback(host: str) -> None:
    """Refuse, before any connection, every upstream that is not loopback."""
    if host.lower() == "localhost":
        return
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ForbiddenUpstream(
            f"upstream {host!r} is not a loopback literal"
        ) from None
    if not address.is_loopback:
        raise ForbiddenUpstream(f"upstream {host!r} is not loopback")


def _split_host_port(authority: str, default_port: int) -> tuple[str, int]:
    host, sep, port = authority.rpartition(":")
    if not sep or "]" in port:
        return authority.strip("[]"), default_port
    return host.strip("[]"), int(port)


@dataclass
class ProxyStats:
    connections: int = 0
    tunnels: int = 0
    forwarded: int = 0
    refused: int = 0
    forbidden: int = 0
    auth_failures: int = 0
    # Payload relayed, client to upstream and back (request heads included).
    bytes_up: int = 0
    bytes_down: int = 0


@dataclass
class ForwardProxy:
    """One proxy of the pool."""

    index: int
    source_address: str
    # The password stays out of reprs, as every proxy password does.
    auth: tuple[str, str] | None = field(default=None, repr=False)
    mode: ProxyMode = "ok"
    port: int = 0
    host: str = "127.0.0.1"
    stats: ProxyStats = field(default_factory=ProxyStats)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        if self.auth:
            user, password = self.auth
            return f"http://{user}:{password}@{self.host}:{self.port}"
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ) as exc:
            logger.debug("proxy %s: %s", self.index, exc)
        except asyncio.CancelledError:
            # Only stop() cancels a handler. The stream server of Python 3.11
            # logs a cancelled handler task as an unhandled error, so the
            # handler ends normally instead.
            pass
        finally:
            self._tasks.discard(task)
            await _close(writer)

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.stats.connections += 1
        if self.mode == "refuse":
            self.stats.refused += 1
            return
        if self.mode == "hang":
            await asyncio.sleep(HANG_SECONDS)
            return
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD_BYTES:
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = [line for line in lines[1:] if line]
        if self.mode == "502":
            await _reply(writer, "502 Bad Gateway", "upstream unavailable")
            return
        if not self._authorized(headers):
            self.stats.auth_failures += 1
            await _reply(
                writer,
                "407 Proxy Authentication Required",
                "proxy authentication required",
                extra='Proxy-Authenticate: Basic realm="mpshield-sandbox"\r\n',
            )
            return
        if method.upper() == "CONNECT":
            await self._tunnel(target, reader, writer)
        else:
            await self._forward(method, target, version, headers, reader, writer)

    def _authorized(self, headers: list[str]) -> bool:
        if self.auth is None:
            return True
        expected = base64.b64encode(":".join(self.auth).encode())
        for line in headers:
            name, _, value = line.partition(":")
            if name.strip().lower() == "proxy-authorization":
                scheme, _, token = value.strip().partition(" ")
                matches = secrets.compare_digest(token.encode("latin-1"), expected)
                return scheme.lower() == "basic" and matches
        return False

    async def _open_upstream(
        self, host: str, port: int, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            check_loopback(host)
        except ForbiddenUpstream as exc:
            self.stats.forbidden += 1
            await _reply(writer, "403 Forbidden", str(exc))
            return None
        # No resolver: "localhost" could come back as ::1, which cannot leave
        # from the proxy's IPv4 source address.
        address = "127.0.0.1" if host.lower() == "localhost" else host
        try:
            return await asyncio.open_connection(
                address, port, local_addr=(self.source_address, 0)
            )
        except OSError as exc:
            await _reply(writer, "502 Bad Gateway", f"upstream unreachable: {exc}")
            return None

    async def _tunnel(
        self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        host, port = _split_host_port(target, 443)
        upstream = await self._open_upstream(host, port, writer)
        if upstream is None:
            return
        try:
            self.stats.tunnels += 1
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            await self._relay(reader, writer, *upstream)
        finally:
            await _close(upstream[1])

    async def _forward(
        self,
        method: str,
        target: str,
        version: str,
        headers: list[str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        if not target.startswith("http://"):
            await _reply(writer, "400 Bad Request", "absolute http:// URI expected")
            return
        authority, _, path = target[len("http://") :].partition("/")
        host, port = _split_host_port(authority, 80)
        upstream = await self._open_upstream(host, port, writer)
        if upstream is None:
            return
        try:
            self.stats.forwarded += 1
            await self._send_head(method, path, version, headers, upstream[1])
            await self._relay(reader, writer, *upstream)
        finally:
            await _close(upstream[1])

    async def _send_head(
        self,
        method: str,
        path: str,
        version: str,
        headers: list[str],
        upstream: asyncio.StreamWriter,
    ) -> None:
        kept = [
            line
            for line in headers
            if not line.lower().startswith(("proxy-", "connection:", "keep-alive:"))
        ]
        head = f"{method} /{path} {version}\r\n" + "".join(
            f"{line}\r\n" for line in [*kept, "Connection: close"]
        )
        encoded = head.encode("latin-1") + b"\r\n"
        self.stats.bytes_up += len(encoded)
        upstream.write(encoded)
        await upstream.drain()

    async def _relay(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        def up(size: int) -> None:
            self.stats.bytes_up += size

        def down(size: int) -> None:
            self.stats.bytes_down += size

        pipes = [
            asyncio.create_task(_pipe(client_reader, upstream_writer, up)),
            asyncio.create_task(_pipe(upstream_reader, client_writer, down)),
        ]
        try:
            await asyncio.gather(*pipes)
        finally:
            # One side failing ends the other too, instead of leaving it behind.
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)

    def describe(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "port": self.port,
            "source_address": self.source_address,
            "mode": self.mode,
            **vars(self.stats),
        }


async def _reply(
    writer: asyncio.StreamWriter, status: str, text: str, *, extra: str = ""
) -> None:
    body = text.encode()
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    # close() comes before any await, so a cancellation cannot skip it.
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    count: Callable[[int], None],
) -> None:
    try:
        while chunk := await reader.read(65536):
            count(len(chunk))
            writer.write(chunk)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()


@dataclass
class ProxyPool:
    """``count`` proxies; proxy i leaves from 127.0.0.(10 + i)."""

    count: int
    auth: tuple[str, str] | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    proxies: list[ForwardProxy] = field(default_factory=list)

    async def start(self) -> None:
        for index in range(1, self.count + 1):
            proxy = ForwardProxy(
                index=index,
                source_address=f"127.0.0.{FIRST_SOURCE_OCTET + index}",
                auth=self.auth,
                host=self.host,
            )
            await proxy.start()
            self.proxies.append(proxy)

    async def stop(self) -> None:
        await asyncio.gather(*(proxy.stop() for proxy in self.proxies))

    def set_mode(self, index: int, mode: str) -> ForwardProxy:
        """Make proxy ``index`` (1-based) behave as ``mode`` from now on.

        Connections already open keep going; new ones see the new mode.

        Returns:
            The proxy.

        Raises:
            ConfigurationError: there is no proxy ``index``, or no such mode.
        """
        if not 1 <= index <= len(self.proxies):
            raise ConfigurationError(
                f"no proxy {index}; the pool has proxies 1 to {len(self.proxies)}"
            )
        if mode not in PROXY_MODES:
            raise ConfigurationError(
                f"proxy mode {mode!r} is not one of {', '.join(PROXY_MODES)}"
            )
        proxy = self.proxies[index - 1]
        proxy.mode = PROXY_MODES[mode]
        return proxy

    @property
    def urls(self) -> list[str]:
        return [proxy.url for proxy in self.proxies]

    def stats(self) -> list[dict[str, Any]]:
        return [proxy.describe() for proxy in self.proxies]
