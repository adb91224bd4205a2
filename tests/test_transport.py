"""The curl_cffi transport: browser profiles, headers, TLS checks and error translation."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mpshield.settings import Settings, load_settings
from mpshield.transport.profiles import (
    PROFILES,
    SUPPORTED,
    browser_family,
    choose_profile,
    profile_for,
)
from mpshield.transport.session import (
    Answer,
    CurlTransport,
    FailureKind,
    Headers,
    TransportFailure,
)


class TestProfiles:
    def test_profiles_are_supported_by_curl_cffi(self) -> None:
        """Every profile we hand out is a curl_cffi impersonation target."""
        assert set(PROFILES) <= SUPPORTED

    def test_choice_is_stable(self) -> None:
        """The same shop id always gets the same profile."""
        assert [choose_profile(7) for _ in range(5)] == [choose_profile(7)] * 5

    def test_choice_spreads_over_browsers(self) -> None:
        """A fleet of shops looks like several browsers, not one build."""
        chosen = {choose_profile(shop_id) for shop_id in range(200)}
        assert {browser_family(profile) for profile in chosen} == {
            "chrome",
            "safari",
            "firefox",
        }

    def test_stored_profile_is_kept(self) -> None:
        """A supported stored profile wins over a fresh choice."""
        assert profile_for(1, "safari184") == "safari184"

    def test_unsupported_stored_profile_is_replaced(self) -> None:
        """A profile curl_cffi no longer knows is replaced by the stable choice."""
        assert profile_for(1, "netscape4") == choose_profile(1)


class TestHeaders:
    def test_names_are_case_insensitive(self) -> None:
        """Headers are found whatever the case of the name."""
        headers = Headers([("X-Ratelimit-Remaining", "5"), ("set-cookie", "a")])
        assert headers["x-ratelimit-remaining"] == "5"
        assert headers.get("X-RATELIMIT-REMAINING") == "5"
        assert "SET-COOKIE" in headers

    def test_repeated_headers_are_joined(self) -> None:
        """A header sent twice reads as one comma-joined value."""
        assert Headers([("Via", "a"), ("via", "b")])["VIA"] == "a, b"


Seen = list[dict[str, Any]]


async def _start(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = int(runner.addresses[0][1])
    return runner, port


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, Seen]]:
    """A loopback HTTP server that records each request's headers."""
    seen: Seen = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(
            {
                "headers": dict(request.headers),
                "query": dict(request.query),
                "body": body,
            }
        )
        return web.json_response({"ok": True}, headers={"X-Ratelimit-Remaining": "19"})

    async def reset(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        await asyncio.sleep(0)
        raise ConnectionResetError

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/reset", reset)
    app.router.add_get("/slow", slow)
    runner, port = await _start(app)
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


def _settings(**overrides: Any) -> Settings:
    return load_settings(**overrides)


async def test_browser_headers_and_accept(echo_server: tuple[str, Seen]) -> None:
    """Requests carry the profile's browser User-Agent and ask for JSON."""
    base, seen = echo_server
    transport = CurlTransport("chrome146", _settings())
    try:
        answer = await transport.send(
            "GET",
            f"{base}/echo",
            headers={"Authorization": "Bearer t"},
            params={"limit": 5, "flag": True},
        )
    finally:
        await transport.aclose()

    assert isinstance(answer, Answer)
    assert answer.status == 200
    assert answer.headers["x-ratelimit-remaining"] == "19"
    sent = seen[0]["headers"]
    assert "Chrome/146" in sent["User-Agent"]
    assert sent["Accept"] == "application/json"
    assert sent["Authorization"] == "Bearer t"
    assert seen[0]["query"] == {"limit": "5", "flag": "true"}


async def test_firefox_profile_sends_firefox_user_agent(
    echo_server: tuple[str, Seen],
) -> None:
    """The User-Agent matches the impersonated browser, not a Python library."""
    base, seen = echo_server
    transport = CurlTransport("firefox147", _settings())
    try:
        await transport.send("POST", f"{base}/echo", headers={}, json={"a": 1})
    finally:
        await transport.aclose()

    user_agent = seen[0]["headers"]["User-Agent"]
    assert "Firefox/" in user_agent
    assert "python" not in user_agent.lower()
    assert seen[0]["body"] == b'{"a":1}'


async def test_refused_connection_is_translated() -> None:
    """A closed port becomes a CONNECT failure, not a curl_cffi exception."""
    transport = CurlTransport("chrome146", _settings())
    try:
        result = await transport.send("GET", "http://127.0.0.1:9/x", headers={})
    finally:
        await transport.aclose()

    assert isinstance(result, TransportFailure)
    assert result.kind is FailureKind.CONNECT


async def test_reset_is_translated(echo_server: tuple[str, Seen]) -> None:
    """A connection dropped mid-request becomes a RESET failure."""
    base, _ = echo_server
    transport = CurlTransport("chrome146", _settings())
    try:
        result = await transport.send("GET", f"{base}/reset", headers={})
    finally:
        await transport.aclose()

    assert isinstance(result, TransportFailure)
    assert result.kind is FailureKind.RESET


async def test_timeout_is_translated(echo_server: tuple[str, Seen]) -> None:
    """A server slower than the read timeout becomes a TIMEOUT failure."""
    base, _ = echo_server
    transport = CurlTransport(
        "chrome146", _settings(connect_timeout_seconds=0.3, read_timeout_seconds=0.3)
    )
    try:
        result = await transport.send("GET", f"{base}/slow", headers={})
    finally:
        await transport.aclose()

    assert isinstance(result, TransportFailure)
    assert result.kind is FailureKind.TIMEOUT


async def test_bad_proxy_is_translated() -> None:
    """A proxy that refuses connections becomes a failure the client can act on."""
    transport = CurlTransport("chrome146", _settings())
    try:
        result = await transport.send(
            "GET",
            "http://127.0.0.1:9/x",
            headers={},
            proxy="http://user:hunter22@127.0.0.1:9",
        )
    finally:
        await transport.aclose()

    assert isinstance(result, TransportFailure)
    assert result.kind in (FailureKind.PROXY, FailureKind.CONNECT)
    assert "hunter22" not in result.detail


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mpshield test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / "cert.pem"
    key_file = directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_tls_is_verified_against_the_ca_bundle(tmp_path: Path) -> None:
    """HTTPS succeeds with the configured CA and fails verification without it."""
    cert_file, key_file = _certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"hello": "tls"})

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner, port = await _start(app, context)
    url = f"https://127.0.0.1:{port}/hello"
    trusted = CurlTransport("safari184", _settings(ca_bundle=cert_file))
    untrusted = CurlTransport("safari184", _settings())
    try:
        good = await trusted.send("GET", url, headers={})
        bad = await untrusted.send("GET", url, headers={})
    finally:
        await trusted.aclose()
        await untrusted.aclose()
        await runner.cleanup()

    assert isinstance(good, Answer)
    assert good.status == 200
    assert isinstance(bad, TransportFailure)
    assert bad.kind is FailureKind.TLS
