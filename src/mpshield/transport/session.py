"""The only code that opens connections to a marketplace: curl_cffi, as a browser.

Every connection carries a browser's TLS and HTTP/2 fingerprint (curl_cffi's
impersonation), so a plain Python TLS handshake never reaches a marketplace.
curl_cffi also sets the browser's own default headers; we add only
``Accept: application/json`` and the marketplace's auth headers, nothing that
would contradict the browser. The environment's proxy variables are ignored:
a request goes through the proxy its lease names, or directly, never through a
proxy picked up by accident.

curl_cffi's errors are translated here, in one place, into a
``TransportFailure`` the client acts on; nothing above this module sees a
curl_cffi type.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from curl_cffi.const import CurlECode
from curl_cffi.requests import AsyncSession
from curl_cffi.requests import exceptions as curl_errors

from mpshield.redaction import get_logger, mask_url, redact
from mpshield.settings import Settings

logger = get_logger(__name__)

ACCEPT = "application/json"


class Headers(Mapping[str, str]):
    """Response headers with case-insensitive names; repeated headers are joined."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in items:
            key = name.lower()
            if key in self._items:
                original, before = self._items[key]
                self._items[key] = (original, f"{before}, {value}")
            else:
                self._items[key] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(frozen=True)
class Answer:
    """What came back over the wire."""

    status: int
    headers: Headers
    content: bytes


class FailureKind(enum.StrEnum):
    """Why no answer came back."""

    TIMEOUT = "timeout"
    CONNECT = "connect"  # refused, unreachable, name not resolved
    RESET = "reset"  # the connection broke mid-exchange
    PROXY = "proxy"  # the proxy refused or failed
    TLS = "tls"  # handshake or certificate failure
    OTHER = "other"


@dataclass(frozen=True)
class TransportFailure:
    """No answer; ``detail`` is safe to log (secrets and proxy passwords masked)."""

    kind: FailureKind
    detail: str


Result = Answer | TransportFailure


class Transport(Protocol):
    """Sends one request; the seam where tests put a fake."""

    profile: str

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        proxy: str | None = None,
    ) -> Result: ...

    async def aclose(self) -> None: ...


_RESET_CODES = frozenset(
    {CurlECode.RECV_ERROR, CurlECode.SEND_ERROR, CurlECode.GOT_NOTHING}
)

# Most specific first: SSLError and ConnectTimeout are ConnectionErrors too.
_TRANSLATION: tuple[tuple[type[BaseException], FailureKind], ...] = (
    (curl_errors.ProxyError, FailureKind.PROXY),
    (curl_errors.SSLError, FailureKind.TLS),
    (curl_errors.CertificateVerifyError, FailureKind.TLS),
    (curl_errors.Timeout, FailureKind.TIMEOUT),
    (curl_errors.DNSError, FailureKind.CONNECT),
    (curl_errors.IncompleteRead, FailureKind.RESET),
    (curl_errors.ConnectionError, FailureKind.CONNECT),
)


def translate(exc: BaseException) -> TransportFailure:
    """The failure a curl_cffi (or socket) error stands for."""
    detail = redact(str(exc))
    code = getattr(exc, "code", None)
    if code in _RESET_CODES:
        return TransportFailure(FailureKind.RESET, detail)
    for error_type, kind in _TRANSLATION:
        if isinstance(exc, error_type):
            return TransportFailure(kind, detail)
    if isinstance(exc, ConnectionResetError):
        return TransportFailure(FailureKind.RESET, detail)
    return TransportFailure(FailureKind.OTHER, detail)


class CurlTransport:
    """A curl_cffi session impersonating one browser profile.

    Args:
        profile: A curl_cffi impersonation target such as ``chrome146``.
        settings: Timeouts and the CA bundle come from here. curl_cffi bounds
            a whole request by the connect plus the read timeout. TLS is always
            verified: against ``settings.ca_bundle`` when set, else the
            system's roots.
    """

    def __init__(self, profile: str, settings: Settings) -> None:
        self.profile = profile
        options: dict[str, Any] = {
            "impersonate": profile,
            "timeout": (
                settings.connect_timeout_seconds,
                settings.read_timeout_seconds,
            ),
            "trust_env": False,
            "allow_redirects": False,
            "default_headers": True,
        }
        if settings.ca_bundle is not None:
            # curl_cffi takes a CA file path where it types a bool.
            options["verify"] = str(settings.ca_bundle)
        else:
            options["verify"] = True
        self._session: AsyncSession[Any] = AsyncSession(**options)

    def __repr__(self) -> str:
        return f"CurlTransport(profile={self.profile!r})"

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        proxy: str | None = None,
    ) -> Result:
        """Send one request; failures come back as a ``TransportFailure``."""
        sent = {"Accept": ACCEPT, **headers}
        try:
            response = await self._session.request(
                method,  # type: ignore[arg-type]
                url,
                params=_query(params),
                json=json,
                headers=sent,
                proxy=proxy,
            )
        except (curl_errors.RequestException, OSError) as exc:
            failure = translate(exc)
            logger.debug(
                "transport failure %s via %s: %s",
                failure.kind,
                mask_url(proxy) if proxy else "direct",
                failure.detail,
            )
            return failure
        return Answer(
            status=response.status_code,
            headers=Headers(response.headers.multi_items()),
            content=response.content,
        )

    async def aclose(self) -> None:
        await self._session.close()


def _query(params: Mapping[str, Any] | None) -> list[tuple[str, str]] | None:
    """Query parameters as strings; booleans the way the marketplaces spell them."""
    if params is None:
        return None
    query: list[tuple[str, str]] = []
    for name, value in params.items():
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if item is None:
                continue
            text = str(item).lower() if isinstance(item, bool) else str(item)
            query.append((name, text))
    return query
