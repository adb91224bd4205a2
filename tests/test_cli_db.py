"""``mpshield db`` and ``mpshield shops`` on both backends."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from mpshield.cli.main import app, main
from mpshield.db.engine import dispose_engines, get_sessionmaker, head_revision
from mpshield.db.shops import get_shop
from mpshield.exceptions import ConfigurationError, DatabaseUnavailableError
from mpshield.settings import Settings, get_settings

OZON_KEY = "0b7c1f4e-2a9d-4c3b-8e5f-6a7b8c9d0e1f"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_wb_token() -> str:
    """A token shaped like WB's (an ES256 JWT); the signature is random bytes."""
    header = _b64(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps({"sid": str(uuid.uuid4()), "exp": 4102444800}).encode())
    return f"{header}.{payload}.{_b64(secrets.token_bytes(64))}"


@pytest.fixture
def cli_env(db_ready: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The environment a user would set, pointing the CLI at the test database."""
    monkeypatch.setenv("MPSHIELD_HOME", str(db_ready.home))
    if db_ready.database_url:
        monkeypatch.setenv("MPSHIELD_DATABASE_URL", db_ready.database_url)
    else:
        monkeypatch.delenv("MPSHIELD_DATABASE_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # one table row per line
    get_settings.cache_clear()
    yield db_ready
    get_settings.cache_clear()


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input)


def _stored_shop(settings: Settings, shop_id: int) -> Any:
    async def load() -> Any:
        try:
            async with get_sessionmaker(settings)() as session:
                return await get_shop(session, shop_id)
        finally:
            await dispose_engines()

    return asyncio.run(load())


def test_db_upgrade_prints_the_revision(cli_env: Settings) -> None:
    """`db upgrade` migrates and names the revision reached."""
    result = invoke("db", "upgrade")

    assert result.exit_code == 0, result.output
    assert f"at revision {head_revision()}" in result.output


def test_db_current_prints_both_revisions(cli_env: Settings) -> None:
    """`db current` shows where the database is and where head is."""
    result = invoke("db", "current")

    assert result.exit_code == 0, result.output
    assert f"head is {head_revision()}" in result.output


def test_shops_add_wb_prints_the_id(cli_env: Settings) -> None:
    """`shops add` for WB prints only the new shop's id."""
    token = make_wb_token()

    result = invoke("shops", "add", "--marketplace", "wb", "--api-key", token)

    assert result.exit_code == 0, result.output
    shop = _stored_shop(cli_env, int(result.output.strip()))
    assert (shop.marketplace, shop.api_key) == ("wb", token)
    assert token not in result.output


def test_shops_add_ozon_reads_the_key_from_stdin(cli_env: Settings) -> None:
    """`--api-key -` takes the key from standard input."""
    result = invoke(
        "shops",
        "add",
        "--marketplace",
        "ozon",
        "--client-id",
        "123456",
        "--api-key",
        "-",
        "--name",
        "Ozon main",
        input=f"{OZON_KEY}\n",
    )

    assert result.exit_code == 0, result.output
    shop = _stored_shop(cli_env, int(result.output.strip()))
    assert (shop.marketplace, shop.client_id, shop.name) == (
        "ozon",
        "123456",
        "Ozon main",
    )
    assert shop.api_key == OZON_KEY


@pytest.mark.parametrize(
    "args",
    [
        ["--marketplace", "amazon", "--api-key", OZON_KEY],
        ["--marketplace", "wb", "--api-key", OZON_KEY],
        ["--marketplace", "wb", "--api-key", "not.a-jwt.secretvalue"],
        ["--marketplace", "ozon", "--client-id", "abc123", "--api-key", OZON_KEY],
        ["--marketplace", "ozon", "--client-id", OZON_KEY, "--api-key", OZON_KEY],
        ["--marketplace", "ozon", "--api-key", OZON_KEY],
    ],
)
def test_bad_input_exits_1_without_the_key(cli_env: Settings, args: list[str]) -> None:
    """Bad input fails with exit 1 and a one-line error that never shows the key."""
    key = args[args.index("--api-key") + 1]

    result = invoke("shops", "add", *args)

    assert result.exit_code == 1
    assert isinstance(result.exception, ConfigurationError)
    message = str(result.exception)
    assert "\n" not in message
    assert key not in message
    assert key not in result.output
    assert "no shops" in invoke("shops", "list").output


def test_empty_stdin_is_an_error(cli_env: Settings) -> None:
    """`--api-key -` with nothing on stdin fails instead of storing an empty key."""
    result = invoke("shops", "add", "--marketplace", "wb", "--api-key", "-", input="")

    assert result.exit_code == 1
    assert isinstance(result.exception, ConfigurationError)


def test_main_prints_one_line(
    cli_env: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The installed entry point prints one `error:` line and exits 1."""
    key = "not-a-jwt-but-a-secret"
    argv = ["mpshield", "shops", "add", "--marketplace", "wb", "--api-key", key]
    monkeypatch.setattr(sys, "argv", argv)

    with pytest.raises(SystemExit) as raised:
        main()

    captured = capsys.readouterr()
    assert raised.value.code == 1
    assert captured.err.startswith("error: ")
    assert captured.err.count("\n") == 1
    assert key not in captured.err + captured.out


def test_shops_list_shows_no_keys(cli_env: Settings) -> None:
    """`shops list` shows every shop's state and none of its credentials."""
    token, secret = make_wb_token(), "wb-client-secret-value"
    wb = ["--marketplace", "wb", "--api-key", token, "--client-secret", secret]
    ozon = ["--marketplace", "ozon", "--client-id", "77", "--api-key", OZON_KEY]
    added = [
        invoke("shops", "add", *wb, "--name", "[red]wb"),
        invoke("shops", "add", *ozon),
    ]
    ids = [result.output.strip() for result in added]

    result = invoke("shops", "list")

    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ids
    assert "[red]wb" in result.output
    for credential in (token, secret, OZON_KEY, OZON_KEY[:8]):
        assert credential not in result.output
    filtered = invoke("shops", "list", "--marketplace", "ozon")
    assert "ozon" in filtered.output
    assert "[red]wb" not in filtered.output


def test_refused_database_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """A database that refuses connections is a one-line error with the password masked."""
    password = "cli-refused-password"
    url = f"postgresql+asyncpg://postgres:{password}@127.0.0.1:1/x"
    monkeypatch.setenv("MPSHIELD_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        result = invoke("db", "upgrade")
    finally:
        get_settings.cache_clear()

    assert result.exit_code == 1
    assert isinstance(result.exception, DatabaseUnavailableError)
    assert password not in str(result.exception)
    assert "\n" not in str(result.exception)
