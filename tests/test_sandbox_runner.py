"""Starting and stopping the sandbox: its settings block, dead proxies, the command."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest
from curl_cffi import requests as curl
from curl_cffi.requests import exceptions as curl_errors

from mpshield.exceptions import ConfigurationError
from mpshield.sandbox.runner import Sandbox, SandboxConfig, SandboxThread
from mpshield.sandbox.testing import (
    new_ozon_seller,
    new_wb_token,
    running_sandbox,
    suite_config,
)
from mpshield.settings import load_settings

MPSHIELD = Path(sys.executable).with_name("mpshield")


def ca_path(ca_file: Path | str) -> Any:
    """The CA file for curl_cffi's ``verify``, which takes a path though typed bool."""
    return str(ca_file)


def storefront_status(
    storefront_url: str, ca_file: Path | str, proxy: str | None = None
) -> int:
    """One Chrome request for a product card, directly or through ``proxy``."""
    answer = curl.get(
        f"{storefront_url}/cards/v4/detail",
        params={"nm": "7"},
        impersonate="chrome",
        verify=ca_path(ca_file),
        proxy=proxy,
        timeout=10,
    )
    return answer.status_code


def test_env_points_at_the_servers(
    sandbox: SandboxThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """env() names the servers, the CA, the proxies and the scale; Settings reads it."""
    env = sandbox.env()

    assert env == {
        "MPSHIELD_WB_BASE_URL": sandbox.wb_url,
        "MPSHIELD_OZON_BASE_URL": sandbox.ozon_url,
        "MPSHIELD_WB_STOREFRONT_BASE_URL": sandbox.storefront_url,
        "MPSHIELD_CA_BUNDLE": str(sandbox.ca_file),
        "MPSHIELD_PROXIES": json.dumps(sandbox.proxy_urls),
        "MPSHIELD_TIME_SCALE": "0.01",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.wb_base_url == sandbox.wb_url
    assert settings.ozon_base_url == sandbox.ozon_url
    assert settings.wb_storefront_base_url == sandbox.storefront_url
    assert settings.ca_bundle == sandbox.ca_file
    assert settings.proxies == sandbox.proxy_urls
    assert len(settings.proxies) == 4
    assert settings.time_scale == 0.01
    assert sandbox.ca_file.is_file()
    assert storefront_status(sandbox.storefront_url, sandbox.ca_file) == 200
    for proxy in settings.proxies:
        assert storefront_status(sandbox.storefront_url, sandbox.ca_file, proxy) == 200


@pytest.mark.parametrize(
    "config",
    [
        {"proxies": 2, "dead_proxies": 3},
        {"proxies": -1},
        {"proxies": 201},
        {"time_scale": 0},
        {"host": "0.0.0.0"},
        {"host": "192.0.2.1"},
    ],
)
def test_bad_configs_are_refused(config: dict[str, Any]) -> None:
    """Impossible proxy counts, scales and non-loopback hosts are refused."""
    with pytest.raises(ConfigurationError):
        SandboxConfig(**config)


async def test_dead_proxies_refuse() -> None:
    """dead_proxies=2 of 3 makes the last two proxies refuse; the first serves."""
    async with Sandbox(SandboxConfig(proxies=3, dead_proxies=2)) as running:
        modes = [proxy["mode"] for proxy in running.proxy_pool.stats()]
        assert modes == ["ok", "refuse", "refuse"]
        env = running.env()
        urls = json.loads(env["MPSHIELD_PROXIES"])
        assert len(urls) == 3

        # The sandbox runs on this loop: the blocking client goes to a thread.
        status = await asyncio.to_thread(
            storefront_status, running.storefront_url, running.ca_file, urls[0]
        )
        assert status == 200
        for dead in urls[1:]:
            with pytest.raises(curl_errors.RequestException):
                await asyncio.to_thread(
                    storefront_status, running.storefront_url, running.ca_file, dead
                )
        assert [p["refused"] for p in running.proxy_pool.stats()] == [0, 1, 1]


def free_port_base(count: int = 4) -> int:
    """A port p such that p .. p + count - 1 are free on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base: int = probe.getsockname()[1]
        if base + count > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError("no free port range")


def test_thread_start_stop_twice(tmp_path: Path) -> None:
    """Two sandboxes on one set of fixed ports start and stop in turn; stop twice."""
    base = free_port_base()
    for round_ in range(2):
        home = tmp_path / f"home-{round_}"
        running = SandboxThread(
            SandboxConfig(proxies=1, port_base=base, home=home)
        ).start()
        assert running.wb_url == f"https://127.0.0.1:{base}"
        assert running.admin_url == f"https://127.0.0.1:{base + 3}"
        assert running.ca_file == home / "ca.pem"
        assert storefront_status(running.storefront_url, running.ca_file) == 200
        assert running.call(lambda: 6 * 7) == 42
        running.stop()
        running.stop()
    # A thread never started stops quietly too.
    SandboxThread().stop()


def test_failed_start_releases_what_it_bound(tmp_path: Path) -> None:
    """A sandbox whose third port is taken fails to start and frees the first two."""
    base = free_port_base()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 2))
        squatter.listen(1)
        with pytest.raises(OSError):
            SandboxThread(SandboxConfig(port_base=base, home=tmp_path)).start()
    for port in (base, base + 1):
        with socket.socket() as again:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", port))


def pump(stream: IO[str]) -> queue.Queue[str | None]:
    """The lines of ``stream`` as they come, then None; readline gets a deadline."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in iter(stream.readline, ""):
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def lines_until(
    lines: queue.Queue[str | None], prefix: str, seconds: float
) -> list[str]:
    """Lines up to and including the first that starts with ``prefix``."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if line.startswith(prefix):
            return seen
    raise AssertionError(f"no line starting {prefix!r} in:\n" + "".join(seen))


def drive_sandbox_command(
    process: subprocess.Popen[str], signum: signal.Signals
) -> tuple[int, str, Path]:
    """Check the printed block, use proxy 8, then ``signum``; returns rc, stderr, CA."""
    assert process.stdout is not None and process.stderr is not None
    stdout = pump(process.stdout)
    lines = lines_until(stdout, "Running", 30)
    exports = dict(
        line.removeprefix("export ").strip().split("=", 1)
        for line in lines
        if line.startswith("export ")
    )
    assert set(exports) == {
        "MPSHIELD_WB_BASE_URL",
        "MPSHIELD_OZON_BASE_URL",
        "MPSHIELD_WB_STOREFRONT_BASE_URL",
        "MPSHIELD_CA_BUNDLE",
        "MPSHIELD_PROXIES",
        "MPSHIELD_TIME_SCALE",
    }
    assert exports["MPSHIELD_TIME_SCALE"] == "0.01"
    proxies = json.loads(exports["MPSHIELD_PROXIES"].strip("'"))
    assert len(proxies) == 8
    assert any("(leaves from 127.0.0.18)" in line for line in lines)
    ca_file = Path(exports["MPSHIELD_CA_BUNDLE"])
    storefront = exports["MPSHIELD_WB_STOREFRONT_BASE_URL"]
    # A tunnel still open at shutdown must not turn into an error either.
    assert storefront_status(storefront, ca_file, proxies[7]) == 200

    process.send_signal(signum)
    lines_until(stdout, "sandbox stopped", 20)
    returncode = process.wait(timeout=20)
    return returncode, process.stderr.read(), ca_file


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_sandbox_command_prints_env_and_stops_on_signal(signum: signal.Signals) -> None:
    """``mpshield sandbox --proxies 8`` prints the env block and exits 0 on a signal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPSHIELD_")}
    with subprocess.Popen(
        [str(MPSHIELD), "sandbox", "--proxies", "8", "--time-scale", "0.01"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        try:
            returncode, err, ca_file = drive_sandbox_command(process, signum)
        finally:
            if process.poll() is None:
                process.kill()

    assert returncode == 0
    assert "Traceback" not in err
    assert "ERROR" not in err
    assert not ca_file.exists()  # the temporary home went with it


def test_sandbox_command_reports_a_taken_port() -> None:
    """A fixed port already in use ends the command with one error line, rc 1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPSHIELD_")}
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        done = subprocess.run(
            [str(MPSHIELD), "sandbox", "--port-base", str(port)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    assert done.returncode == 1
    assert done.stderr.startswith("error: the sandbox could not start:")
    assert "Traceback" not in done.stderr


async def test_proxy_password_stays_out_of_reprs() -> None:
    """The proxies' password shows in no repr, only in the URLs handed out."""
    config = SandboxConfig(proxies=2, proxy_auth=("user", "pool-secret-9"))
    async with Sandbox(config) as running:
        texts = [
            repr(config),
            repr(running.proxy_pool),
            str(running.proxy_pool.stats()),
        ]
        assert all(
            url.startswith("http://user:pool-secret-9@") for url in running.proxy_urls
        )

    assert not any("pool-secret-9" in text for text in texts)


def test_admin_stats_merge_fingerprints_and_proxies(sandbox: SandboxThread) -> None:
    """The admin API's stats carry the fingerprint log and every proxy's counters."""
    proxy = sandbox.proxy_urls[2]
    assert storefront_status(sandbox.storefront_url, sandbox.ca_file, proxy) == 200

    answer = curl.get(
        f"{sandbox.admin_url}/stats",
        headers={"Authorization": f"Bearer {sandbox.admin_token}"},
        impersonate="chrome",
        verify=ca_path(sandbox.ca_file),
        timeout=10,
    )

    assert answer.status_code == 200
    stats = answer.json()
    described = stats["proxies"]
    assert [p["source_address"] for p in described] == [
        f"127.0.0.{10 + index}" for index in range(1, 5)
    ]
    assert described[2]["tunnels"] >= 1 and described[2]["bytes_down"] > 0
    entries = stats["fingerprints"]["127.0.0.13"]
    assert all(e["browser"] for e in entries)
    assert sum(e["admitted"] for e in entries) >= 1


def test_testing_helpers_make_sellers_on_a_private_sandbox(tmp_path: Path) -> None:
    """running_sandbox starts the suite's configuration; the helpers add sellers."""
    config = suite_config(proxies=1, home=tmp_path)
    assert (config.proxies, config.time_scale, config.gate_seller_apis) == (
        1,
        0.01,
        True,
    )

    with running_sandbox(config) as running:
        token = new_wb_token(running, orders=3)
        client_id, api_key = new_ozon_seller(running, orders=1)
        answer = curl.get(
            f"{running.wb_url}/api/v3/orders",
            params={"limit": 10, "next": 0},
            headers={"Authorization": token},
            impersonate="chrome",
            verify=ca_path(running.ca_file),
            proxy=running.proxy_urls[0],
            timeout=10,
        )
        ozon_sellers = running.call(lambda: set(running.world.ozon_sellers))

    assert answer.status_code == 200
    assert answer.json()["orders"]
    assert client_id in ozon_sellers and api_key
    assert running.ca_file == tmp_path / "ca.pem"
