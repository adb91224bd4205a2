"""The sandbox's TLS layer: its CA, ClientHello parsing, fingerprints and the gate.

Live tests use the session's sandbox (gate on for the seller APIs) and bind
each client to its own loopback source address (127.0.0.101 and up), so the
fingerprint log can be read per client without other tests in the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import http.client
import re
import shutil
import socket
import ssl
import struct
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from curl_cffi import requests as curl
from curl_cffi.requests import AsyncSession, BrowserType
from curl_cffi.requests import exceptions as curl_errors

from mpshield.sandbox.certs import make_certificates
from mpshield.sandbox.fingerprint import (
    ClientHello,
    Fingerprint,
    FingerprintLog,
    NotClientHello,
    hello_length,
    is_browser,
    is_grease,
    parse_client_hello,
)
from mpshield.sandbox.runner import SandboxThread
from mpshield.sandbox.server import (
    BLOCKED_PAGE,
    TlsSite,
    fingerprint_gate,
    read_client_hello,
)
from mpshield.sandbox.testing import new_wb_token

JA4_SHAPE = re.compile(r"^t13[di]\d{4}(h2|h1|00)_[0-9a-f]{12}_[0-9a-f]{12}$")
GREASE = [0x0A0A + 0x1010 * i for i in range(16)]
BROWSERS = ["chrome", "safari", "firefox"]


# -- a handcrafted ClientHello ----------------------------------------------


@dataclass
class Hello:
    """The parts of a handcrafted ClientHello, and its bytes."""

    ciphers: list[int]
    extensions: list[tuple[int, bytes]]
    version: int = 0x0303

    def handshake(self) -> bytes:
        """The handshake message: type, length and body."""
        cipher_bytes = b"".join(struct.pack("!H", c) for c in self.ciphers)
        extension_bytes = b"".join(
            struct.pack("!HH", kind, len(data)) + data for kind, data in self.extensions
        )
        body = (
            struct.pack("!H", self.version)
            + bytes(range(32))  # random
            + b"\x00"  # no session id
            + struct.pack("!H", len(cipher_bytes))
            + cipher_bytes
            + b"\x01\x00"  # null compression
            + struct.pack("!H", len(extension_bytes))
            + extension_bytes
        )
        return b"\x01" + len(body).to_bytes(3, "big") + body

    def records(self, split_at: int | None = None) -> bytes:
        """The hello in one TLS record, or in two split at ``split_at``."""
        message = self.handshake()
        parts = (
            [message] if split_at is None else [message[:split_at], message[split_at:]]
        )
        return b"".join(
            b"\x16\x03\x01" + struct.pack("!H", len(part)) + part for part in parts
        )


def u16s(values: list[int]) -> bytes:
    return b"".join(struct.pack("!H", v) for v in values)


def sni(name: str) -> bytes:
    entry = b"\x00" + struct.pack("!H", len(name)) + name.encode()
    return struct.pack("!H", len(entry)) + entry


def alpn(*protocols: str) -> bytes:
    listed = b"".join(bytes([len(p)]) + p.encode() for p in protocols)
    return struct.pack("!H", len(listed)) + listed


CIPHERS = [0x1A1A, 0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F]
GROUPS = [0x2A2A, 29, 23, 24]
SIGNATURES = [0x0403, 0x0804, 0x0401]


def browser_like_hello(*, grease: bool = True) -> Hello:
    """A Chrome-shaped hello: GREASE first, SNI, groups, ALPN, TLS 1.3."""
    extensions = [
        (0x0000, sni("sandbox.test")),
        (0x000A, struct.pack("!H", 2 * len(GROUPS)) + u16s(GROUPS)),
        (0x000B, b"\x01\x00"),
        (0x000D, struct.pack("!H", 2 * len(SIGNATURES)) + u16s(SIGNATURES)),
        (0x0010, alpn("h2", "http/1.1")),
        (0x002B, b"\x06" + u16s([0x3A3A, 0x0304, 0x0303])),
        (0x0017, b""),
    ]
    ciphers = list(CIPHERS)
    if grease:
        extensions.insert(0, (0x4A4A, b""))
        extensions.append((0x5A5A, b"\x00"))
    else:
        ciphers = [c for c in ciphers if not is_grease(c)]
    return Hello(ciphers=ciphers, extensions=extensions)


def sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- units ------------------------------------------------------------------


def test_grease_values_are_recognised() -> None:
    """The sixteen RFC 8701 values are GREASE; neighbours and real ids are not."""
    assert all(is_grease(value) for value in GREASE)
    others = [0x0000, 0x0A0B, 0x0B0A, 0x1A0A, 0x0A1A, 0x1301, 0xC02B, 0xFAFB, 0x0A]
    assert not any(is_grease(value) for value in others)


def test_handcrafted_hello_parses() -> None:
    """Every field of a handcrafted hello comes back in wire order."""
    hello = parse_client_hello(browser_like_hello().records())

    assert hello.legacy_version == 0x0303
    assert hello.ciphers == tuple(CIPHERS)
    assert hello.extensions == (
        0x4A4A,
        0x0000,
        0x000A,
        0x000B,
        0x000D,
        0x0010,
        0x002B,
        0x0017,
        0x5A5A,
    )
    assert hello.groups == tuple(GROUPS)
    assert hello.point_formats == (0,)
    assert hello.signature_algorithms == tuple(SIGNATURES)
    assert hello.alpn == ("h2", "http/1.1")
    assert hello.versions == (0x3A3A, 0x0304, 0x0303)
    assert hello.server_name == "sandbox.test"


def test_fingerprints_of_the_handcrafted_hello() -> None:
    """JA3, JA3N and JA4 of a known hello match values worked out by hand."""
    fingerprint = Fingerprint.of(parse_client_hello(browser_like_hello().records()))

    ciphers = "4865-4866-4867-49195-49199"
    tail = "29-23-24,0"
    ja3 = f"771,{ciphers},0-10-11-13-16-43-23,{tail}"
    ja3n = f"771,{ciphers},0-10-11-13-16-23-43,{tail}"
    assert fingerprint.ja3_text == ja3
    assert fingerprint.ja3 == hashlib.md5(ja3.encode()).hexdigest()
    assert fingerprint.ja3n == hashlib.md5(ja3n.encode()).hexdigest()
    part_b = sha12("1301,1302,1303,c02b,c02f")
    part_c = sha12("000a,000b,000d,0017,002b_0403,0804,0401")
    assert fingerprint.ja4 == f"t13d0507h2_{part_b}_{part_c}"
    assert JA4_SHAPE.match(fingerprint.ja4)
    assert fingerprint.browser


def test_ja4_shape_without_sni_alpn_or_extensions() -> None:
    """A bare TLS 1.2 hello still yields a well-formed JA4 (``i``, ``00``, zeros)."""
    bare = parse_client_hello(Hello(ciphers=[0xC02F], extensions=[]).records())
    ja4 = Fingerprint.of(bare).ja4

    assert ja4.startswith("t12i010000_")
    assert ja4.endswith("_000000000000")
    versions_only = Hello(ciphers=[0x1301], extensions=[(0x002B, b"\x02\x03\x04")])
    assert JA4_SHAPE.match(
        Fingerprint.of(parse_client_hello(versions_only.records())).ja4
    )


@pytest.mark.parametrize(
    ("protocol", "code"),
    [
        ("http/1.1", "h1"),
        ("h2", "h2"),
        ("x", "xx"),
        ("\x00\xab", "0b"),
        ("h\xff", "6f"),
    ],
)
def test_ja4_alpn_characters(protocol: str, code: str) -> None:
    """JA4 takes the first ALPN's end characters, or hex digits when not alphanumeric."""
    raw = protocol.encode("latin-1")
    listed = bytes([len(raw)]) + raw
    hello = Hello(
        ciphers=[0x1301],
        extensions=[(0x0010, struct.pack("!H", len(listed)) + listed)],
    )
    parsed = parse_client_hello(hello.records())

    assert parsed.alpn == (protocol,)
    assert Fingerprint.of(parsed).ja4.split("_")[0] == f"t12i0101{code}"


def test_browser_traits() -> None:
    """GREASE or Firefox's two extensions mark a browser; an OpenSSL shape does not."""
    plain = browser_like_hello(grease=False)
    assert not is_browser(parse_client_hello(plain.records()))
    assert is_browser(parse_client_hello(browser_like_hello().records()))
    firefox = browser_like_hello(grease=False)
    firefox.extensions += [(0x0022, b"\x00\x02\x04\x03"), (0x001C, b"\x40\x01")]
    assert is_browser(parse_client_hello(firefox.records()))
    only_one = browser_like_hello(grease=False)
    only_one.extensions.append((0x001C, b"\x40\x01"))
    assert not is_browser(parse_client_hello(only_one.records()))


def test_hello_split_across_two_records_parses() -> None:
    """A hello spread over two TLS records parses to the same fields."""
    hello = browser_like_hello()
    whole = hello.records()
    for split_at in (10, 60, len(hello.handshake()) - 3):
        split = hello.records(split_at=split_at)
        assert hello_length(split) == len(split)
        assert parse_client_hello(split) == parse_client_hello(whole)


def test_truncated_hello_is_refused() -> None:
    """Every proper prefix of a hello is incomplete: None or NotClientHello."""
    for data in (browser_like_hello().records(), browser_like_hello().records(80)):
        for cut in range(1, len(data)):
            prefix = data[:cut]
            needed = hello_length(prefix)
            assert needed is None or needed > len(prefix)
            with pytest.raises(NotClientHello):
                parse_client_hello(prefix)


def test_inner_lengths_that_overrun_are_refused() -> None:
    """A cipher list or extension claiming more bytes than the hello has is refused."""
    message = bytearray(browser_like_hello(grease=False).handshake())
    cipher_length_at = 4 + 2 + 32 + 1
    message[cipher_length_at : cipher_length_at + 2] = b"\x7f\xff"
    record = b"\x16\x03\x01" + struct.pack("!H", len(message)) + bytes(message)
    with pytest.raises(NotClientHello):
        parse_client_hello(record)

    liar = Hello(ciphers=[0x1301], extensions=[(0x000A, b"\x00\x02\x00\x1d")])
    message = bytearray(liar.handshake())
    message[-6:-4] = b"\x00\x40"  # the groups extension claims 64 bytes
    record = b"\x16\x03\x01" + struct.pack("!H", len(message)) + bytes(message)
    with pytest.raises(NotClientHello):
        parse_client_hello(record)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"\x17\x03\x03\x00\x05hello",  # application data, not a handshake
        b"\x16\x03\x03\x00\x04\x02\x00\x00\x00",  # a ServerHello
        b"\x16\x03\x01\x00\x01\x01",  # a handshake too short to hold a header
        b"",
    ],
)
def test_non_hello_bytes_are_refused(data: bytes) -> None:
    """Plain HTTP, other record types and other handshakes raise NotClientHello."""
    with pytest.raises(NotClientHello):
        parse_client_hello(data)


def test_hello_length_refuses_foreign_bytes_early() -> None:
    """The first byte of plain HTTP already tells the peek loop to give up."""
    with pytest.raises(NotClientHello):
        hello_length(b"G")
    assert hello_length(b"\x16\x03") is None


def test_fingerprint_log_counts_per_address() -> None:
    """The log groups handshakes and verdicts per address; old connections go."""
    log = FingerprintLog(max_connections=2)
    browser = Fingerprint.of(parse_client_hello(browser_like_hello().records()))
    plain = Fingerprint.of(
        parse_client_hello(browser_like_hello(grease=False).records())
    )

    log.record(("127.0.0.5", 1000), browser)
    log.record(("127.0.0.5", 1001), browser)
    log.record(("127.0.0.6", 1000), plain)
    log.verdict(("127.0.0.5", 1001), admitted=True)
    log.verdict(("127.0.0.6", 1000), admitted=False)
    log.verdict(("127.0.0.7", 1000), admitted=True)  # never seen: ignored

    seen = log.by_address()
    assert seen["127.0.0.5"] == [
        {
            "ja3n": browser.ja3n,
            "ja4": browser.ja4,
            "browser": True,
            "connections": 2,
            "admitted": 1,
            "refused": 0,
        }
    ]
    assert seen["127.0.0.6"][0]["refused"] == 1
    assert "127.0.0.7" not in seen
    assert [entry["browser"] for entry in seen["127.0.0.6"]] == [False]
    assert log.non_browser_connections() == 1
    assert log.for_connection(("127.0.0.5", 1000)) is None  # evicted, oldest first
    assert log.for_connection(("127.0.0.6", 1000)) == plain
    log.forget(("127.0.0.6", 1000))
    assert log.for_connection(("127.0.0.6", 1000)) is None


def test_forget_spares_a_newer_connection_on_the_same_port() -> None:
    """A closing connection does not remove a newer handshake from its peer."""
    log = FingerprintLog()
    old = Fingerprint.of(parse_client_hello(browser_like_hello().records()))
    new = Fingerprint.of(parse_client_hello(browser_like_hello().records()))
    peer = ("127.0.0.5", 2000)
    log.record(peer, old)
    log.record(peer, new)

    log.forget(peer, only=old)
    assert log.for_connection(peer) is new
    log.forget(peer, only=new)
    assert log.for_connection(peer) is None


def test_certificates_chain_to_the_ca(tmp_path: Path) -> None:
    """The server certificate is signed by the CA and names the sandbox's hosts."""
    files = make_certificates(tmp_path / "certs", ["127.0.0.1", "localhost"])
    ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    server = x509.load_pem_x509_certificate(files.cert_file.read_bytes())

    assert server.issuer == ca.subject
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert [str(ip) for ip in names.value.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1"
    ]
    assert names.value.get_values_for_type(x509.DNSName) == ["localhost"]
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert files.key_file.stat().st_mode & 0o077 == 0
    assert files.server_context().protocol == ssl.PROTOCOL_TLS_SERVER


# -- live: the session's sandbox -------------------------------------------


def ca_path(sandbox: SandboxThread) -> Any:
    """The CA file for curl_cffi's ``verify``, which takes a path though typed bool."""
    return str(sandbox.ca_file)


def ca_context(sandbox: SandboxThread) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(sandbox.ca_file))


def test_ca_file_verifies_the_servers(sandbox: SandboxThread) -> None:
    """With the CA file curl_cffi verifies every sandbox server; without it, refuses."""
    token = new_wb_token(sandbox)
    answer = curl.get(
        f"{sandbox.wb_url}/api/v3/orders/new",
        headers={"Authorization": token},
        impersonate="chrome",
        verify=ca_path(sandbox),
        timeout=10,
    )
    assert answer.status_code == 200
    assert "orders" in answer.json()
    for url in (sandbox.ozon_url, sandbox.storefront_url, sandbox.admin_url):
        # Any HTTP status proves the handshake was verified.
        reply = curl.get(url, impersonate="chrome", verify=ca_path(sandbox))
        assert reply.status_code >= 200

    with pytest.raises(curl_errors.RequestException):
        curl.get(sandbox.wb_url, impersonate="chrome", verify=True, timeout=10)


def test_gate_admits_browsers_and_refuses_python(sandbox: SandboxThread) -> None:
    """curl_cffi's browsers get orders; httpx and Python's ssl get the HTML 403 page."""
    token = new_wb_token(sandbox)
    url = f"{sandbox.wb_url}/api/v3/orders/new"
    headers = {"Authorization": token}
    addresses = {
        "chrome": "127.0.0.101",
        "safari": "127.0.0.102",
        "firefox": "127.0.0.103",
        "httpx": "127.0.0.104",
        "http.client": "127.0.0.105",
    }
    for browser in BROWSERS:
        answer = curl.get(
            url,
            headers=headers,
            impersonate=browser,
            verify=ca_path(sandbox),
            interface=addresses[browser],
            timeout=10,
        )
        assert answer.status_code == 200, browser

    transport = httpx.HTTPTransport(
        verify=ca_context(sandbox), local_address=addresses["httpx"]
    )
    with httpx.Client(transport=transport) as client:
        refused = client.get(url, headers=headers)
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("text/html")
    assert refused.text == BLOCKED_PAGE

    host, port = sandbox.wb_url.removeprefix("https://").split(":")
    connection = http.client.HTTPSConnection(
        host,
        int(port),
        context=ca_context(sandbox),
        source_address=(addresses["http.client"], 0),
        timeout=10,
    )
    try:
        connection.request("GET", "/api/v3/orders/new", headers=headers)
        reply = connection.getresponse()
        assert reply.status == 403
        assert reply.read().decode() == BLOCKED_PAGE
    finally:
        connection.close()

    seen = sandbox.fingerprints.by_address()
    for name, address in addresses.items():
        flags = {entry["browser"] for entry in seen[address]}
        assert flags == {name in BROWSERS}, name
        assert all(JA4_SHAPE.match(entry["ja4"]) for entry in seen[address])
    # httpx and Python's ssl share OpenSSL's cipher list (only ALPN differs).
    ciphers = {
        seen[addresses[name]][0]["ja4"].split("_")[1]
        for name in ("httpx", "http.client")
    }
    assert len(ciphers) == 1


def test_urllib_gets_the_blocked_page(sandbox: SandboxThread) -> None:
    """urllib, verifying with the CA, gets the storefront's HTML 403 page."""
    handler = urllib.request.HTTPSHandler(context=ca_context(sandbox))
    opener = urllib.request.build_opener(handler)
    with pytest.raises(urllib.error.HTTPError) as caught:
        opener.open(f"{sandbox.storefront_url}/cards/v4/detail?nm=1", timeout=10)
    assert caught.value.code == 403
    assert caught.value.read().decode() == BLOCKED_PAGE


async def capture_hello(impersonate: str) -> bytes:
    """The ClientHello one fresh curl_cffi session sends, read off a bare listener."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    loop = asyncio.get_running_loop()

    async def accept_one() -> bytes:
        sock, _ = await loop.sock_accept(listener)
        try:
            return await read_client_hello(sock)
        finally:
            sock.close()

    try:
        reading = asyncio.create_task(accept_one())
        async with AsyncSession(impersonate=impersonate) as session:
            with pytest.raises(curl_errors.RequestException):
                await session.get(f"https://127.0.0.1:{port}/", timeout=5)
        return await asyncio.wait_for(reading, 5)
    finally:
        listener.close()


async def test_ja3n_is_stable_across_fresh_chrome_connections() -> None:
    """Two fresh Chrome handshakes share JA3N and JA4 though extensions are shuffled."""
    first, second = [
        Fingerprint.of(parse_client_hello(await capture_hello("chrome")))
        for _ in range(2)
    ]

    assert first.ja3n == second.ja3n
    assert first.ja4 == second.ja4
    assert JA4_SHAPE.match(first.ja4)
    assert first.browser and second.browser


def test_one_client_shows_one_fingerprint_in_the_log(sandbox: SandboxThread) -> None:
    """Two fresh Chrome connections from one address are one log entry with 2 hits."""
    address = "127.0.0.106"
    for _ in range(2):
        with curl.Session(impersonate="chrome", verify=ca_path(sandbox)) as s:
            reply = s.get(
                f"{sandbox.storefront_url}/cards/v4/detail",
                params={"nm": "5"},
                interface=address,
                timeout=10,
            )
            assert reply.status_code == 200

    entries = sandbox.fingerprints.by_address()[address]
    assert [(e["browser"], e["connections"]) for e in entries] == [(True, 2)]


def raw_exchange(
    sandbox: SandboxThread, source: str, chunks: list[bytes], pause: float = 0.0
) -> bytes:
    """Send ``chunks`` to the WB port from ``source``; return what comes back."""
    host, port = sandbox.wb_url.removeprefix("https://").split(":")
    with socket.create_connection(
        (host, int(port)), timeout=5, source_address=(source, 0)
    ) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
            time.sleep(pause)
        # End our side, so a server waiting for more handshake gives up now.
        with contextlib.suppress(OSError):  # the server may have closed already
            sock.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while data := sock.recv(4096):
                received += data
                if len(received) > 64 * 1024:
                    break
        except (ConnectionResetError, TimeoutError):
            pass
        return received


def browser_gets_orders(sandbox: SandboxThread) -> int:
    return curl.get(
        f"{sandbox.wb_url}/api/v3/orders/new",
        headers={"Authorization": new_wb_token(sandbox)},
        impersonate="chrome",
        verify=ca_path(sandbox),
        timeout=10,
    ).status_code


def test_plain_http_to_the_tls_port_is_dropped(sandbox: SandboxThread) -> None:
    """Plain HTTP on the TLS port is closed unanswered; the server keeps serving."""
    source = "127.0.0.107"
    reply = raw_exchange(sandbox, source, [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"])

    assert reply == b""
    assert source not in sandbox.fingerprints.by_address()
    assert browser_gets_orders(sandbox) == 200


def test_hello_in_two_records_and_two_writes_is_logged(
    sandbox: SandboxThread,
) -> None:
    """A hello in two records and two writes is fingerprinted; junk TLS is dropped."""
    source = "127.0.0.108"
    hello = browser_like_hello()
    data = hello.records(split_at=50)
    middle = len(data) // 2

    raw_exchange(sandbox, source, [data[:middle], data[middle:]], pause=0.05)

    expected = Fingerprint.of(parse_client_hello(hello.records()))
    entries = sandbox.fingerprints.by_address()[source]
    assert [(e["ja4"], e["ja3n"], e["browser"]) for e in entries] == [
        (expected.ja4, expected.ja3n, True)
    ]
    assert browser_gets_orders(sandbox) == 200


async def test_captured_browser_hellos_parse() -> None:
    """Every impersonated browser's hello has GREASE or Firefox's traits, and a JA4."""
    hellos: dict[str, ClientHello] = {}
    for browser in BROWSERS:
        hellos[browser] = parse_client_hello(await capture_hello(browser))

    for browser, hello in hellos.items():
        fingerprint = Fingerprint.of(hello)
        assert fingerprint.browser, browser
        assert JA4_SHAPE.match(fingerprint.ja4), browser
    assert any(is_grease(c) for c in hellos["chrome"].ciphers)
    assert not any(is_grease(c) for c in hellos["firefox"].ciphers)


async def test_every_impersonated_profile_is_a_browser() -> None:
    """Every profile curl_cffi can impersonate passes the browser test."""
    refused = []
    for profile in BrowserType:
        if not Fingerprint.of(
            parse_client_hello(await capture_hello(profile.value))
        ).browser:
            refused.append(profile.value)

    assert refused == []


def test_log_counts_admitted_and_refused_requests(sandbox: SandboxThread) -> None:
    """Per address the log counts verdicts: Chrome admitted, httpx refused."""
    url = f"{sandbox.storefront_url}/cards/v4/detail?nm=3"
    with curl.Session(impersonate="chrome", verify=ca_path(sandbox)) as session:
        for _ in range(3):
            assert (
                session.get(url, interface="127.0.0.109", timeout=10).status_code == 200
            )
    transport = httpx.HTTPTransport(
        verify=ca_context(sandbox), local_address="127.0.0.110"
    )
    with httpx.Client(transport=transport) as client:
        assert [client.get(url).status_code for _ in range(2)] == [403, 403]

    seen = sandbox.fingerprints.by_address()
    chrome, python = seen["127.0.0.109"], seen["127.0.0.110"]
    assert [(e["connections"], e["admitted"], e["refused"]) for e in chrome] == [
        (1, 3, 0)
    ]
    assert [(e["connections"], e["admitted"], e["refused"]) for e in python] == [
        (1, 0, 2)
    ]
    assert sandbox.fingerprints.non_browser_connections() >= 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl command")
def test_curl_command_gets_the_blocked_page(sandbox: SandboxThread) -> None:
    """The plain curl command, verifying with the CA, gets the storefront's 403 page."""
    done = subprocess.run(
        [
            "curl",
            "--silent",
            "--max-time",
            "10",
            "--noproxy",
            "*",
            "--cacert",
            str(sandbox.ca_file),
            "--interface",
            "127.0.0.111",
            "--write-out",
            "\\n%{http_code}",
            f"{sandbox.storefront_url}/cards/v4/detail?nm=4",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body, _, status = done.stdout.rpartition("\n")

    assert status == "403"
    assert body == BLOCKED_PAGE
    entries = sandbox.fingerprints.by_address()["127.0.0.111"]
    assert [(e["browser"], e["refused"]) for e in entries] == [(False, 1)]


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """All a server sends before it closes; a reset (unread bytes) counts as none."""
    try:
        return await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        return b""


async def test_site_stops_cleanly_with_clients_mid_hello(tmp_path: Path) -> None:
    """Stopping a site with a half-sent hello and an idle client leaks no socket."""
    log = FingerprintLog()
    app = web.Application(middlewares=[fingerprint_gate(log, enabled=True)])
    files = make_certificates(tmp_path, ["127.0.0.1"])
    site = TlsSite(
        app, host="127.0.0.1", port=0, context=files.server_context(), log=log
    )
    await site.start()
    half = browser_like_hello().records()[:40]
    clients = [await asyncio.open_connection("127.0.0.1", site.port) for _ in range(2)]
    clients[0][1].write(half)
    await clients[0][1].drain()
    await asyncio.sleep(0.05)

    await site.stop()
    replies = [await read_to_end(reader) for reader, _ in clients]
    for _, writer in clients:
        writer.close()
        with contextlib.suppress(ConnectionResetError):
            await writer.wait_closed()
    gc.collect()  # an unclosed socket would warn here, and warnings are errors

    assert replies == [b"", b""]
    assert log.by_address() == {}


async def close_python_connection(port: int, ca_file: Path, source: str) -> int:
    """One request over Python's TLS from ``source``; returns the local port used."""
    context = ssl.create_default_context(cafile=str(ca_file))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, local_addr=(source, 0)
    )
    local_port = int(writer.get_extra_info("sockname")[1])
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    await writer.drain()
    assert (await read_to_end(reader)).startswith(b"HTTP/1.1 403")
    writer.close()
    with contextlib.suppress(ConnectionResetError, ssl.SSLError):
        await writer.wait_closed()
    return local_port


async def test_keep_alive_browser_outlives_newer_closed_connections(
    tmp_path: Path,
) -> None:
    """Closed connections leave the log, so a long keep-alive browser stays admitted."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    log = FingerprintLog(max_connections=3)
    app = web.Application(middlewares=[fingerprint_gate(log, enabled=True)])
    app.router.add_get("/", ok)
    files = make_certificates(tmp_path, ["127.0.0.1"])
    site = TlsSite(
        app, host="127.0.0.1", port=0, context=files.server_context(), log=log
    )
    await site.start()
    browser, python = "127.0.0.112", "127.0.0.113"
    ca_file: Any = str(files.ca_file)  # curl_cffi takes a path, though typed bool
    try:
        async with AsyncSession(
            impersonate="chrome", verify=ca_file, interface=browser
        ) as session:
            url = f"https://127.0.0.1:{site.port}/"
            assert (await session.get(url, timeout=5)).status_code == 200
            for _ in range(5):
                peer = (
                    python,
                    await close_python_connection(site.port, files.ca_file, python),
                )
                for _ in range(200):
                    if log.for_connection(peer) is None:
                        break
                    await asyncio.sleep(0.01)
                assert log.for_connection(peer) is None
            assert (await session.get(url, timeout=5)).status_code == 200
    finally:
        await site.stop()

    seen = log.by_address()
    assert [(e["connections"], e["admitted"]) for e in seen[browser]] == [(1, 2)]
    assert [(e["connections"], e["refused"]) for e in seen[python]] == [(5, 5)]
