"""TLS ClientHello fingerprints (JA3, JA3N, JA4) and the browser test.

Marketplaces' public storefronts refuse clients whose TLS handshake is not a
browser's. The sandbox reads each connection's ClientHello before TLS starts,
computes its fingerprints and keeps a log per source address, so a test can
prove that mpshield never shows a plain Python (or plain curl) handshake.

JA3 joins the legacy version, ciphers, extensions, groups and point formats;
JA3N sorts the extensions first (Chrome shuffles them per connection); JA4
follows FoxIO's ``a_b_c`` layout. GREASE values are ignored everywhere.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

HANDSHAKE = 0x16
CLIENT_HELLO = 0x01
EXT_SNI = 0x0000
EXT_GROUPS = 0x000A
EXT_POINT_FORMATS = 0x000B
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_ALPN = 0x0010
EXT_RECORD_SIZE_LIMIT = 0x001C
EXT_DELEGATED_CREDENTIALS = 0x0022
EXT_SUPPORTED_VERSIONS = 0x002B

_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3"}
# A ClientHello larger than this is not a client we want to parse.
MAX_HELLO_BYTES = 64 * 1024


class NotClientHello(ValueError):
    """The bytes are not (the start of) a TLS ClientHello."""


def is_grease(value: int) -> bool:
    """RFC 8701 values: 0x0a0a, 0x1a1a, ... 0xfafa."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


@dataclass(frozen=True)
class ClientHello:
    """The parts of a ClientHello that fingerprints use, in wire order."""

    legacy_version: int
    ciphers: tuple[int, ...]
    extensions: tuple[int, ...]
    groups: tuple[int, ...]
    point_formats: tuple[int, ...]
    signature_algorithms: tuple[int, ...]
    alpn: tuple[str, ...]
    versions: tuple[int, ...]
    server_name: str | None


def hello_length(data: bytes) -> int | None:
    """Bytes of TLS records needed to hold the whole ClientHello, once known.

    Returns None while ``data`` is too short to tell.

    Raises:
        NotClientHello: the bytes cannot start a ClientHello.
    """
    if len(data) < 9:
        if data and data[0] != HANDSHAKE:
            raise NotClientHello("not a TLS handshake record")
        return None
    if data[0] != HANDSHAKE or data[5] != CLIENT_HELLO:
        raise NotClientHello("not a TLS ClientHello")
    needed = 4 + int.from_bytes(data[6:9], "big")
    if needed > MAX_HELLO_BYTES:
        raise NotClientHello("ClientHello too large")
    # Walk the records until their payloads cover the handshake message.
    offset, payload = 0, 0
    while payload < needed:
        if len(data) < offset + 5:
            return None
        if data[offset] != HANDSHAKE:
            raise NotClientHello("ClientHello interrupted by another record")
        length = int.from_bytes(data[offset + 3 : offset + 5], "big")
        offset += 5 + length
        payload += length
    return offset


def _handshake_bytes(data: bytes) -> bytes:
    out, offset = bytearray(), 0
    while offset + 5 <= len(data):
        length = int.from_bytes(data[offset + 3 : offset + 5], "big")
        out += data[offset + 5 : offset + 5 + length]
        offset += 5 + length
    return bytes(out)


def _u16_list(blob: bytes) -> tuple[int, ...]:
    return tuple(v for (v,) in struct.iter_unpack("!H", blob[: len(blob) // 2 * 2]))


def parse_client_hello(data: bytes) -> ClientHello:
    """Parse the TLS records holding a ClientHello.

    Raises:
        NotClientHello: the bytes are not a well-formed ClientHello.
    """
    needed = hello_length(data)
    if needed is None or len(data) < needed:
        raise NotClientHello("incomplete ClientHello")
    try:
        return _parse(_handshake_bytes(data[:needed]))
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise NotClientHello(f"malformed ClientHello: {exc}") from exc


def _parse(body: bytes) -> ClientHello:
    if not body or body[0] != CLIENT_HELLO:
        raise NotClientHello("not a ClientHello")
    # Every length inside must stay within the message, or it was cut short.
    body = body[: 4 + int.from_bytes(body[1:4], "big")]
    pos = 4
    legacy_version = int.from_bytes(body[pos : pos + 2], "big")
    pos += 2 + 32
    pos += 1 + body[pos]
    cipher_len = int.from_bytes(body[pos : pos + 2], "big")
    if pos + 2 + cipher_len > len(body):
        raise NotClientHello("cipher list runs past the ClientHello")
    ciphers = _u16_list(body[pos + 2 : pos + 2 + cipher_len])
    pos += 2 + cipher_len
    pos += 1 + body[pos]

    extensions: list[int] = []
    groups: tuple[int, ...] = ()
    point_formats: tuple[int, ...] = ()
    signature_algorithms: tuple[int, ...] = ()
    alpn: list[str] = []
    versions: tuple[int, ...] = ()
    server_name: str | None = None
    if pos + 2 <= len(body):
        end = pos + 2 + int.from_bytes(body[pos : pos + 2], "big")
        if end > len(body):
            raise NotClientHello("extensions run past the ClientHello")
        pos += 2
        while pos + 4 <= end:
            kind, length = struct.unpack("!HH", body[pos : pos + 4])
            if pos + 4 + length > end:
                raise NotClientHello("an extension runs past the ClientHello")
            data = body[pos + 4 : pos + 4 + length]
            pos += 4 + length
            extensions.append(kind)
            if kind == EXT_GROUPS:
                groups = _u16_list(data[2:])
            elif kind == EXT_POINT_FORMATS:
                point_formats = tuple(data[1 : 1 + data[0]])
            elif kind == EXT_SIGNATURE_ALGORITHMS:
                signature_algorithms = _u16_list(data[2:])
            elif kind == EXT_SUPPORTED_VERSIONS:
                versions = _u16_list(data[1 : 1 + data[0]])
            elif kind == EXT_ALPN:
                at = 2
                while at < len(data):
                    size = data[at]
                    # Any bytes are allowed; latin-1 keeps each byte one char.
                    alpn.append(data[at + 1 : at + 1 + size].decode("latin-1"))
                    at += 1 + size
            elif kind == EXT_SNI and len(data) > 5:
                size = int.from_bytes(data[3:5], "big")
                name = data[5 : 5 + size]
                server_name = name.decode("ascii", errors="replace")
    return ClientHello(
        legacy_version=legacy_version,
        ciphers=ciphers,
        extensions=tuple(extensions),
        groups=groups,
        point_formats=point_formats,
        signature_algorithms=signature_algorithms,
        alpn=tuple(alpn),
        versions=versions,
        server_name=server_name,
    )


def _clean(values: tuple[int, ...]) -> list[int]:
    return [v for v in values if not is_grease(v)]


def _dash(values: list[int]) -> str:
    return "-".join(str(v) for v in values)


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Fingerprint:
    """One handshake's fingerprints and the verdict on it.

    ``ja3_text`` is the JA3 string before hashing; ``ja3`` and ``ja3n`` are
    MD5 digests, as JA3 databases list them.
    """

    ja3_text: str
    ja3: str
    ja3n: str
    ja4: str
    browser: bool

    @classmethod
    def of(cls, hello: ClientHello) -> Fingerprint:
        ciphers = _clean(hello.ciphers)
        extensions = _clean(hello.extensions)
        version = str(hello.legacy_version)
        tail = [_dash(_clean(hello.groups)), _dash(list(hello.point_formats))]
        ja3 = ",".join([version, _dash(ciphers), _dash(extensions), *tail])
        ja3n = ",".join([version, _dash(ciphers), _dash(sorted(extensions)), *tail])
        return cls(
            ja3_text=ja3,
            ja3=_md5(ja3),
            ja3n=_md5(ja3n),
            ja4=_ja4(hello, ciphers, extensions),
            browser=is_browser(hello),
        )


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _alpn_code(first: str) -> str:
    """JA4's two ALPN characters: first and last, or hex digits if not alnum."""
    if not first:
        return "00"
    if all(char.isascii() and char.isalnum() for char in (first[0], first[-1])):
        return f"{first[0]}{first[-1]}"
    hexed = first.encode("latin-1").hex()
    return f"{hexed[0]}{hexed[-1]}"


def _ja4(hello: ClientHello, ciphers: list[int], extensions: list[int]) -> str:
    versions = _clean(hello.versions) or [hello.legacy_version]
    version = _VERSIONS.get(max(versions), "00")
    sni = "d" if EXT_SNI in extensions else "i"
    alpn = _alpn_code(hello.alpn[0] if hello.alpn else "")
    counts = f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}"
    part_a = f"t{version}{sni}{counts}{alpn}"
    part_b = (
        _sha12(",".join(f"{c:04x}" for c in sorted(ciphers))) if ciphers else "0" * 12
    )
    rest = sorted(e for e in extensions if e not in (EXT_SNI, EXT_ALPN))
    text = ",".join(f"{e:04x}" for e in rest)
    algorithms = _clean(hello.signature_algorithms)
    if algorithms:
        text += "_" + ",".join(f"{a:04x}" for a in algorithms)
    part_c = _sha12(text) if rest else "0" * 12
    return f"{part_a}_{part_b}_{part_c}"


def is_browser(hello: ClientHello) -> bool:
    """Whether the handshake carries the traits of a current browser.

    Chromium (Chrome, Edge) and Safari send GREASE values (RFC 8701) in their
    ciphers and extensions; Firefox (and Tor Browser, built on it) sends none
    but offers delegated credentials (34) and a record size limit (28).
    OpenSSL-based clients (Python's ssl, httpx, requests, the curl command)
    do neither. Checked against every profile curl_cffi 0.17 impersonates.
    """
    if any(is_grease(v) for v in (*hello.ciphers, *hello.extensions)):
        return True
    extensions = set(hello.extensions)
    return {EXT_DELEGATED_CREDENTIALS, EXT_RECORD_SIZE_LIMIT} <= extensions


@dataclass
class _Seen:
    ja3n: str
    ja4: str
    browser: bool
    count: int = 0
    admitted: int = 0
    refused: int = 0


@dataclass
class FingerprintLog:
    """Fingerprints per source address, and per live connection for the gate."""

    max_connections: int = 10_000
    # Address -> (JA3N, JA4) -> counts; JA4 alone ignores group order and
    # point formats, so two clients could share it.
    _by_address: dict[str, dict[tuple[str, str], _Seen]] = field(default_factory=dict)
    _by_connection: OrderedDict[tuple[str, int], Fingerprint] = field(
        default_factory=OrderedDict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, peer: tuple[str, int], fingerprint: Fingerprint) -> None:
        with self._lock:
            seen = self._by_address.setdefault(peer[0], {})
            entry = seen.setdefault(
                (fingerprint.ja3n, fingerprint.ja4),
                _Seen(fingerprint.ja3n, fingerprint.ja4, fingerprint.browser),
            )
            entry.count += 1
            self._by_connection[peer] = fingerprint
            self._by_connection.move_to_end(peer)
            while len(self._by_connection) > self.max_connections:
                self._by_connection.popitem(last=False)

    def for_connection(self, peer: tuple[str, int]) -> Fingerprint | None:
        with self._lock:
            return self._by_connection.get(peer)

    def verdict(self, peer: tuple[str, int], *, admitted: bool) -> None:
        """Count one request on ``peer``'s connection as admitted or refused."""
        with self._lock:
            fingerprint = self._by_connection.get(peer)
            if fingerprint is None:
                return
            key = (fingerprint.ja3n, fingerprint.ja4)
            seen = self._by_address.get(peer[0], {}).get(key)
            if seen is None:
                return
            if admitted:
                seen.admitted += 1
            else:
                seen.refused += 1

    def forget(self, peer: tuple[str, int], *, only: Fingerprint | None = None) -> None:
        """Drop ``peer``'s connection; with ``only``, if it is still that handshake.

        ``only`` keeps a closing connection from removing the entry of a newer
        one that the kernel gave the same client port.
        """
        with self._lock:
            current = self._by_connection.get(peer)
            if current is not None and (only is None or current is only):
                del self._by_connection[peer]

    def by_address(self) -> dict[str, list[dict[str, Any]]]:
        """Source address -> the fingerprints seen from it, with counts.

        ``connections`` counts handshakes; ``admitted`` and ``refused`` count
        the requests a gate let through or answered with its 403 page.
        """
        with self._lock:
            return {
                address: [
                    {
                        "ja3n": s.ja3n,
                        "ja4": s.ja4,
                        "browser": s.browser,
                        "connections": s.count,
                        "admitted": s.admitted,
                        "refused": s.refused,
                    }
                    for s in seen.values()
                ]
                for address, seen in self._by_address.items()
            }

    def non_browser_connections(self) -> int:
        with self._lock:
            return sum(
                s.count
                for seen in self._by_address.values()
                for s in seen.values()
                if not s.browser
            )
