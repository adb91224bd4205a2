"""``mpshield sandbox``: local WB and Ozon look-alikes and a proxy pool."""

from __future__ import annotations

import shlex
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from mpshield.sandbox.runner import SandboxConfig, SandboxThread


def sandbox(
    proxies: Annotated[int, typer.Option(min=0, max=200, help="Forward proxies.")] = 0,
    dead_proxies: Annotated[
        int, typer.Option(min=0, help="How many of them refuse every connection.")
    ] = 0,
    time_scale: Annotated[
        float, typer.Option(min=0.0001, help="Multiplies every marketplace period.")
    ] = 1.0,
    gate_seller_apis: Annotated[
        bool,
        typer.Option(help="Refuse non-browser TLS fingerprints on the seller APIs."),
    ] = False,
    port_base: Annotated[
        int | None, typer.Option(help="Fixed ports: wb, ozon, storefront, admin.")
    ] = None,
    proxy_user: Annotated[
        str | None, typer.Option(help="Proxy basic-auth user.")
    ] = None,
    proxy_password: Annotated[
        str | None, typer.Option(help="Proxy basic-auth password.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 0,
    home: Annotated[
        Path | None, typer.Option(help="Where the CA file goes (default: a temp dir).")
    ] = None,
) -> None:
    """Start the sandbox on loopback and print the settings that point at it."""
    if (proxy_user is None) != (proxy_password is None):
        raise typer.BadParameter("give both --proxy-user and --proxy-password")
    auth = (proxy_user, proxy_password) if proxy_user and proxy_password else None
    config = SandboxConfig(
        proxies=proxies,
        dead_proxies=dead_proxies,
        proxy_auth=auth,
        time_scale=time_scale,
        seed=seed,
        gate_seller_apis=gate_seller_apis,
        home=home,
        port_base=port_base,
    )
    stop = threading.Event()
    # Installed first, so that Ctrl-C during start-up stops cleanly as well.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        running = SandboxThread(config).start()
    except OSError as exc:
        typer.echo(f"error: the sandbox could not start: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        print(f"WB seller API    {running.wb_url}")
        print(f"Ozon seller API  {running.ozon_url}")
        print(f"WB storefront    {running.storefront_url}")
        print(f"admin API        {running.admin_url}")
        print(f"admin token      {running.admin_token}")
        print(f"CA file          {running.ca_file}")
        for proxy in running.proxy_pool.proxies:
            note = f"leaves from {proxy.source_address}"
            if proxy.mode != "ok":
                note += f"; {proxy.mode}"
            print(f"proxy {proxy.index:<3}        {proxy.url}  ({note})")
        if running.proxy_urls:
            print(
                "\n# set a proxy's mode (ok, refuse, 502, hang) while it runs:\n"
                f"# curl --cacert {shlex.quote(str(running.ca_file))}"
                f" -H 'Authorization: Bearer {running.admin_token}' -X PUT"
                f' -d \'{{"mode": "502"}}\' {running.admin_url}/proxies/1'
            )
        print("\n# point mpshield at the sandbox:")
        for name, value in running.env().items():
            print(f"export {name}={shlex.quote(value)}")
        print("\nRunning; press Ctrl-C to stop.", flush=True)
        stop.wait()
    finally:
        running.stop()
        print("sandbox stopped")
