"""The sandbox's forward proxies: distinct exits, fault modes, auth, loopback only.

The first test goes through the session's sandbox (4 proxies). The fault tests
start their own small sandbox (2 proxies with basic auth) on the test's loop,
so a misbehaving proxy never reaches another test.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from curl_cffi import requests as curl
from curl_cffi.requests import AsyncSession
from curl_cffi.requests import exceptions as curl_errors

from mpshield.exceptions import ConfigurationError
from mpshield.sandbox import proxies as proxy_module
from mpshield.sandbox.proxies import ForbiddenUpstream, ForwardProxy, check_loopback
from mpshield.sandbox.runner import Sandbox, SandboxConfig, SandboxThread

AUTH = ("u", "p")
GOOD_AUTH = "Proxy-Authorization: Basic " + base64.b64encode(b"u:p").decode()


def ca_path(ca_file: object) -> Any:
    """The CA file for curl_cffi's ``verify``, which takes a path though typed bool."""
    return str(ca_file)


def test_each_proxy_leaves_from_its_own_address(sandbox: SandboxThread) -> None:
    """Chrome through each of the 4 proxies gets WB orders from 127.0.0.(10 + i)."""
    sid = sandbox.call(lambda: sandbox.world.wb_create_seller(orders=3))
    token = sandbox.call(lambda: sandbox.world.wb_issue_token(sid))
    addresses = [f"127.0.0.{10 + index}" for index in range(1, 5)]
    before = sandbox.call(lambda: sandbox.world.stats())["addresses"]
    tunnels = [proxy["tunnels"] for proxy in sandbox.proxy_pool.stats()]

    for proxy_url in sandbox.proxy_urls:
        answer = curl.get(
            f"{sandbox.wb_url}/api/v3/orders",
            params={"limit": 10, "next": 0},
            headers={"Authorization": token},
            impersonate="chrome",
            verify=ca_path(sandbox.ca_file),
            proxy=proxy_url,
            timeout=10,
        )
        assert answer.status_code == 200
        assert "orders" in answer.json()

    after = sandbox.call(lambda: sandbox.world.stats())
    for address in addresses:
        grew = after["addresses"][address].get("2xx", 0)
        assert grew - before.get(address, {}).get("2xx", 0) == 1, address
    assert after["sellers"][sid]["2xx"] == 4
    assert [p["source_address"] for p in sandbox.proxy_pool.stats()] == addresses
    assert [p["tunnels"] for p in sandbox.proxy_pool.stats()] == [
        count + 1 for count in tunnels
    ]
    seen = sandbox.fingerprints.by_address()
    assert all(entry["browser"] for address in addresses for entry in seen[address])


async def test_storefront_sees_each_proxy_as_its_own_address(
    sandbox: SandboxThread,
) -> None:
    """Async Chrome through each proxy passes the storefront gate from 127.0.0.(10+i)."""
    addresses = [proxy.source_address for proxy in sandbox.proxy_pool.proxies]
    before = sandbox.call(lambda: sandbox.world.stats())["addresses"]
    verify = ca_path(sandbox.ca_file)

    async with AsyncSession(impersonate="chrome", verify=verify) as session:
        for proxy_url in sandbox.proxy_urls:
            answer = await session.get(
                f"{sandbox.storefront_url}/cards/v4/detail",
                params={"nm": "7;8"},
                proxy=proxy_url,
                timeout=10,
            )
            assert answer.status_code == 200
            assert len(answer.json()["products"]) == 2

    after = sandbox.call(lambda: sandbox.world.stats())["addresses"]
    grew = [after[a].get("2xx", 0) - before.get(a, {}).get("2xx", 0) for a in addresses]
    assert grew == [1, 1, 1, 1]
    seen = sandbox.fingerprints.by_address()
    for address in addresses:
        assert any(e["browser"] and e["admitted"] for e in seen[address]), address


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.9.8.7", "::1", "[::1]", "localhost", "LOCALHOST"]
)
def test_loopback_upstreams_are_allowed(host: str) -> None:
    """Loopback literals and ``localhost`` pass the upstream check."""
    check_loopback(host)


@pytest.mark.parametrize(
    "host",
    [
        "192.0.2.1",
        "10.0.0.1",
        "0.0.0.0",
        "169.254.169.254",
        "::ffff:192.0.2.1",
        "example.com",
        "127.0.0.1.example.com",
        "2130706433",
        "",
    ],
)
def test_other_upstreams_are_forbidden(host: str) -> None:
    """Anything that is not a loopback literal is refused before any connection."""
    with pytest.raises(ForbiddenUpstream):
        check_loopback(host)


# -- a private sandbox for the fault modes ----------------------------------


@pytest.fixture
async def small() -> AsyncIterator[Sandbox]:
    """A sandbox with 2 proxies asking for basic auth, on the test's own loop."""
    async with Sandbox(SandboxConfig(proxies=2, proxy_auth=AUTH)) as running:
        yield running


async def raw_proxy_exchange(proxy: ForwardProxy, head: str) -> bytes:
    """Send ``head`` to the proxy on a raw socket; return all it answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(head.encode())
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()


async def wb_orders(
    small: Sandbox, proxy_url: str, *, timeout: float = 10
) -> curl.Response:
    sid = small.world.wb_create_seller(orders=2)
    token = small.world.wb_issue_token(sid)
    async with AsyncSession(impersonate="chrome", verify=ca_path(small.ca_file)) as s:
        answer: curl.Response = await s.get(
            f"{small.wb_url}/api/v3/orders/new",
            headers={"Authorization": token},
            proxy=proxy_url,
            timeout=timeout,
        )
        return answer


async def test_authenticated_proxy_tunnels(small: Sandbox) -> None:
    """With the credentials in the proxy URL the tunnel opens and WB answers."""
    proxy = small.proxy_pool.proxies[0]
    assert small.proxy_urls[0].startswith("http://u:p@127.0.0.1:")

    answer = await wb_orders(small, small.proxy_urls[0])

    assert answer.status_code == 200
    assert proxy.stats.tunnels == 1
    assert proxy.stats.auth_failures == 0
    assert proxy.stats.bytes_up > 0 and proxy.stats.bytes_down > 0
    assert small.world.stats()["addresses"]["127.0.0.11"]["2xx"] == 1


async def test_localhost_upstream_leaves_from_the_proxy_address(small: Sandbox) -> None:
    """CONNECT localhost:port tunnels to 127.0.0.1 from the proxy's own address."""
    sid = small.world.wb_create_seller(orders=1)
    token = small.world.wb_issue_token(sid)
    port = small.wb_url.rsplit(":", 1)[1]
    async with AsyncSession(impersonate="chrome", verify=ca_path(small.ca_file)) as s:
        answer = await s.get(
            f"https://localhost:{port}/api/v3/orders/new",
            headers={"Authorization": token},
            proxy=small.proxy_urls[1],
            timeout=10,
        )

    assert answer.status_code == 200
    assert small.world.stats()["addresses"]["127.0.0.12"]["2xx"] == 1


@pytest.mark.parametrize(
    "credentials",
    [None, "Proxy-Authorization: Basic " + base64.b64encode(b"u:wrong").decode()],
)
async def test_missing_or_wrong_credentials_get_407(
    small: Sandbox, credentials: str | None
) -> None:
    """A CONNECT without the right credentials gets 407 and opens nothing."""
    proxy = small.proxy_pool.proxies[0]
    port = small.wb_url.rsplit(":", 1)[1]
    head = f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    head += (f"{credentials}\r\n" if credentials else "") + "\r\n"

    reply = await raw_proxy_exchange(proxy, head)

    assert reply.startswith(b"HTTP/1.1 407 ")
    assert b'Proxy-Authenticate: Basic realm="mpshield-sandbox"' in reply
    assert proxy.stats.auth_failures == 1
    assert proxy.stats.tunnels == 0
    password_free = small.proxy_urls[0].replace("u:p@", "")
    with pytest.raises(curl_errors.RequestException):
        await wb_orders(small, password_free)


async def test_non_loopback_upstream_is_refused_unopened(
    small: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CONNECT 192.0.2.1:443 gets 403 and the proxy opens no upstream connection."""
    proxy = small.proxy_pool.proxies[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    opened: list[tuple[Any, ...]] = []
    original = asyncio.open_connection

    async def spy(*args: Any, **kwargs: Any) -> Any:
        # Only the proxy's upstream connections leave from a source address.
        if "local_addr" in kwargs:
            opened.append(args)
        return await original(*args, **kwargs)

    monkeypatch.setattr(asyncio, "open_connection", spy)
    try:
        writer.write(
            f"CONNECT 192.0.2.1:443 HTTP/1.1\r\nHost: 192.0.2.1:443\r\n"
            f"{GOOD_AUTH}\r\n\r\n".encode()
        )
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    forward = await raw_proxy_exchange(
        proxy, f"GET http://10.0.0.1/ HTTP/1.1\r\nHost: 10.0.0.1\r\n{GOOD_AUTH}\r\n\r\n"
    )

    assert reply.startswith(b"HTTP/1.1 403 ")
    assert forward.startswith(b"HTTP/1.1 403 ")
    assert proxy.stats.forbidden == 2
    assert proxy.stats.tunnels == proxy.stats.forwarded == 0
    assert opened == []


async def test_refusing_proxy(small: Sandbox) -> None:
    """A proxy in ``refuse`` mode closes every connection; the client sees an error."""
    small.proxy_pool.set_mode(1, "refuse")

    with pytest.raises(curl_errors.RequestException):
        await wb_orders(small, small.proxy_urls[0])

    proxy = small.proxy_pool.proxies[0]
    assert proxy.stats.refused >= 1
    assert proxy.stats.tunnels == 0
    assert (await wb_orders(small, small.proxy_urls[1])).status_code == 200


async def test_502_proxy(small: Sandbox) -> None:
    """A proxy in ``502`` mode answers every request 502 Bad Gateway."""
    proxy = small.proxy_pool.proxies[0]
    proxy.mode = "502"
    port = small.wb_url.rsplit(":", 1)[1]

    reply = await raw_proxy_exchange(
        proxy, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n{GOOD_AUTH}\r\n\r\n"
    )
    with pytest.raises(curl_errors.RequestException):
        await wb_orders(small, small.proxy_urls[0])

    assert reply.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert proxy.stats.tunnels == 0
    assert small.world.stats()["addresses"] == {}


async def test_hanging_proxy(small: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hanging proxy times the client out, then drops the connection after a bound."""
    monkeypatch.setattr(proxy_module, "HANG_SECONDS", 0.5)
    proxy = small.proxy_pool.proxies[0]
    proxy.mode = "hang"

    with pytest.raises(curl_errors.Timeout):
        await wb_orders(small, small.proxy_urls[0], timeout=0.2)
    reply = await raw_proxy_exchange(
        proxy, f"CONNECT 127.0.0.1:1 HTTP/1.1\r\n{GOOD_AUTH}\r\n\r\n"
    )

    assert reply == b""  # closed unanswered once the hang ran out
    assert proxy.stats.connections == 2
    assert proxy.stats.tunnels == 0


async def test_plain_http_is_forwarded_from_the_proxy_address(small: Sandbox) -> None:
    """An absolute-URI request leaves from 127.0.0.(10 + i) without proxy headers."""
    seen: list[tuple[str | None, dict[str, str]]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append((request.remote, dict(request.headers)))
        return web.json_response({"path": request.path_qs})

    app = web.Application()
    app.router.add_get("/echo", echo)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with AsyncSession(impersonate="chrome") as session:
            answer = await session.get(
                f"http://127.0.0.1:{server.port}/echo?x=1",
                proxy=small.proxy_urls[1],
                timeout=10,
            )
    finally:
        await server.close()

    assert answer.status_code == 200
    assert answer.json() == {"path": "/echo?x=1"}
    remote, headers = seen[0]
    assert remote == "127.0.0.12"
    assert not any(name.lower().startswith("proxy-") for name in headers)
    assert small.proxy_pool.proxies[1].stats.forwarded == 1


async def test_modes_can_be_changed_back(small: Sandbox) -> None:
    """A proxy set back to ``ok`` serves again; stats describe every proxy."""
    pool = small.proxy_pool
    pool.set_mode(2, "refuse")
    with pytest.raises(curl_errors.RequestException):
        await wb_orders(small, small.proxy_urls[1])
    pool.set_mode(2, "ok")

    assert (await wb_orders(small, small.proxy_urls[1])).status_code == 200
    described = pool.stats()
    assert [p["mode"] for p in described] == ["ok", "ok"]
    assert [p["source_address"] for p in described] == ["127.0.0.11", "127.0.0.12"]
    assert described[1]["refused"] >= 1


@pytest.mark.parametrize(
    ("index", "mode"), [(0, "ok"), (3, "ok"), (-1, "ok"), (1, "down"), (1, "")]
)
async def test_set_mode_refuses_unknown_proxies_and_modes(
    small: Sandbox, index: int, mode: str
) -> None:
    """Proxy numbers outside 1..N and unknown modes are refused, changing nothing."""
    with pytest.raises(ConfigurationError):
        small.proxy_pool.set_mode(index, mode)

    assert [p["mode"] for p in small.proxy_pool.stats()] == ["ok", "ok"]


async def test_admin_api_sets_a_proxy_mode(small: Sandbox) -> None:
    """``PUT /proxies/{i}`` on the admin API switches a running proxy's mode."""
    url = f"{small.admin_url}/proxies"
    bearer = {"Authorization": f"Bearer {small.admin_token}"}
    async with AsyncSession(impersonate="chrome", verify=ca_path(small.ca_file)) as s:
        broken = await s.put(f"{url}/1", json={"mode": "502"}, headers=bearer)
        unknown = await s.put(f"{url}/3", json={"mode": "ok"}, headers=bearer)
        bad = await s.put(f"{url}/2", json={"mode": "down"}, headers=bearer)
        anonymous = await s.put(f"{url}/2", json={"mode": "refuse"})
        with pytest.raises(curl_errors.RequestException):
            await wb_orders(small, small.proxy_urls[0])
        mended = await s.put(f"{url}/1", json={"mode": "ok"}, headers=bearer)

    assert broken.status_code == 200
    assert broken.json()["mode"] == "502"
    assert broken.json()["source_address"] == "127.0.0.11"
    assert [unknown.status_code, bad.status_code, anonymous.status_code] == [
        404,
        400,
        401,
    ]
    assert mended.json()["mode"] == "ok"
    assert (await wb_orders(small, small.proxy_urls[0])).status_code == 200
    assert [p["mode"] for p in small.proxy_pool.stats()] == ["ok", "ok"]
