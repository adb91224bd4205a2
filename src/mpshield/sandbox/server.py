"""Serving an aiohttp application over TLS, reading each ClientHello first.

Each accepted connection is peeked at (``MSG_PEEK``, nothing consumed) until
its whole ClientHello has arrived; the fingerprint is recorded per source
address and per connection, and only then does TLS start on the socket. A
middleware (:func:`fingerprint_gate`) answers a non-browser with the kind of
HTML 403 page a storefront's bot protection gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from mpshield.redaction import get_logger
from mpshield.sandbox.fingerprint import (
    MAX_HELLO_BYTES,
    Fingerprint,
    FingerprintLog,
    NotClientHello,
    hello_length,
    parse_client_hello,
)

logger = get_logger(__name__)

HELLO_TIMEOUT_SECONDS = 10.0
BLOCKED_PAGE = """<!DOCTYPE html>
<html><head><title>403 Forbidden</title></head>
<body><h1>403 Forbidden</h1><p>Access denied: your client is not supported.</p></body>
</html>
"""


def fingerprint_gate(log: FingerprintLog, *, enabled: bool) -> Middleware:
    """A middleware refusing connections whose handshake is not a browser's.

    With ``enabled`` false it only counts each request as admitted, so the log
    shows who reached an ungated server too.
    """

    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        peername = transport.get_extra_info("peername") if transport else None
        peer = (str(peername[0]), int(peername[1])) if peername else None
        fingerprint = log.for_connection(peer) if peer else None
        admitted = not enabled or (fingerprint is not None and fingerprint.browser)
        if peer:
            log.verdict(peer, admitted=admitted)
        if not admitted:
            return web.Response(status=403, text=BLOCKED_PAGE, content_type="text/html")
        return await handler(request)

    return gate


async def _wait_readable(sock: socket.socket, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await asyncio.wait_for(ready, seconds)
    finally:
        loop.remove_reader(sock.fileno())


async def read_client_hello(sock: socket.socket) -> bytes:
    """Peek at ``sock`` until a whole ClientHello is there; consume nothing.

    Raises:
        NotClientHello: the client sent something else.
        TimeoutError: the hello did not arrive in time.
        ConnectionError: the client went away.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HELLO_TIMEOUT_SECONDS
    while True:
        await _wait_readable(sock, max(deadline - loop.time(), 0.001))
        data = sock.recv(MAX_HELLO_BYTES, socket.MSG_PEEK)
        if not data:
            raise ConnectionError("client closed before its ClientHello")
        needed = hello_length(data)
        if needed is not None and len(data) >= needed:
            return data[:needed]
        if loop.time() > deadline:
            raise TimeoutError("ClientHello incomplete")
        # The rest is in flight; peeking again at once would spin.
        await asyncio.sleep(0.002)


class _ForgetOnClose(asyncio.Protocol):
    """aiohttp's protocol, dropping the connection's fingerprint once it closes.

    The log keys live connections by peer; without this, a long keep-alive
    connection would fall out of the bounded log after enough newer ones, and
    the gate would then refuse a browser mid-session.
    """

    def __init__(self, inner: asyncio.Protocol, on_close: Callable[[], None]) -> None:
        self._inner = inner
        self._on_close = on_close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._inner.connection_lost(exc)
        finally:
            self._on_close()


class TlsSite:
    """One aiohttp application on one loopback address, behind TLS."""

    def __init__(
        self,
        app: web.Application,
        *,
        host: str,
        port: int,
        context: ssl.SSLContext,
        log: FingerprintLog,
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._context = context
        self._log = log
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await self._runner.setup()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self._host, self._port))
            listener.listen(512)
            listener.setblocking(False)
        except OSError:
            listener.close()
            await self._runner.cleanup()
            raise
        self._port = listener.getsockname()[1]
        self._listener = listener
        self._accepting = asyncio.create_task(self._accept_loop())

    async def _accept_loop(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peer = await loop.sock_accept(self._listener)
            except OSError as exc:
                # Out of descriptors, or a client that reset before accept:
                # keep serving the others rather than stop accepting for good.
                logger.warning("accept failed on %s: %s", self.url, exc)
                await asyncio.sleep(0.05)
                continue
            task = asyncio.create_task(self._serve(sock, peer))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _serve(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        try:
            hello = parse_client_hello(await read_client_hello(sock))
        except (NotClientHello, TimeoutError, OSError) as exc:
            logger.debug("connection from %s dropped: %s", peer, exc)
            sock.close()
            return
        except BaseException:
            sock.close()
            raise
        key = (str(peer[0]), int(peer[1]))
        fingerprint = Fingerprint.of(hello)
        self._log.record(key, fingerprint)
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.Protocol:
            return _ForgetOnClose(
                server(), lambda: self._log.forget(key, only=fingerprint)
            )

        try:
            # From here the transport owns the socket and closes it on failure.
            await asyncio.get_running_loop().connect_accepted_socket(
                protocol,
                sock,
                ssl=self._context,
                ssl_handshake_timeout=HELLO_TIMEOUT_SECONDS,
            )
        except (TimeoutError, OSError) as exc:
            # A failed handshake never reaches connection_lost.
            self._log.forget(key, only=fingerprint)
            logger.debug("TLS with %s failed: %s", peer, exc)

    async def stop(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        for task in list(self._handshakes):
            task.cancel()
        if self._handshakes:
            await asyncio.gather(*self._handshakes, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        await self._runner.cleanup()
