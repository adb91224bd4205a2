"""Shops and their credentials: the functions the client, the jobs and the CLI share.

Every function works inside the caller's session and transaction and leaves
the commit to the caller. Credentials are registered as secrets as soon as they
are stored or loaded, so logs mask them; messages never repeat them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mpshield.db.models import Marketplace, Shop, ShopStatus, utcnow
from mpshield.exceptions import ConfigurationError, ShopNotFoundError
from mpshield.redaction import register_secret

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
# Keys go into HTTP headers, where whitespace or control characters would
# either be refused or split the header.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
_MAX_NAME_LENGTH = 200
_MAX_PROFILE_LENGTH = 64


def _check_marketplace(marketplace: str) -> Marketplace:
    try:
        return Marketplace(marketplace.strip().lower())
    except ValueError:
        known = ", ".join(repr(str(member)) for member in Marketplace)
        raise ConfigurationError(
            f"unknown marketplace {marketplace[:20]!r}; use one of {known}"
        ) from None


def _decode_base64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _looks_like_jwt(token: str) -> bool:
    parts = token.split(".")
    if len(parts) != 3 or not all(_BASE64URL.fullmatch(part) for part in parts):
        return False
    try:
        header = json.loads(_decode_base64url(parts[0]))
        payload = json.loads(_decode_base64url(parts[1]))
    except (binascii.Error, ValueError):
        return False
    return isinstance(header, dict) and isinstance(payload, dict)


def _check_api_key(marketplace: Marketplace, api_key: str) -> str:
    api_key = api_key.strip()
    if not api_key:
        raise ConfigurationError("the API key is empty")
    if not _HEADER_SAFE.fullmatch(api_key):
        raise ConfigurationError(
            "the API key contains spaces or control characters; paste it again"
        )
    if marketplace is Marketplace.WB and not _looks_like_jwt(api_key):
        raise ConfigurationError(
            "a Wildberries API key is a token of three dot-separated parts "
            "(a JWT); the key given is not one"
        )
    return api_key


def _check_client_id(marketplace: Marketplace, client_id: str | None) -> str | None:
    # The value is never echoed: an API key pasted into the wrong option
    # would otherwise end up on the screen.
    if marketplace is Marketplace.WB:
        if client_id is not None:
            raise ConfigurationError(
                "Wildberries shops have no Client-Id; leave it out"
            )
        return None
    if client_id is None or not client_id.strip():
        raise ConfigurationError("an Ozon shop needs its Client-Id")
    client_id = client_id.strip()
    if not (client_id.isascii() and client_id.isdigit() and int(client_id) > 0):
        raise ConfigurationError("an Ozon Client-Id is a positive whole number")
    return str(int(client_id))


def _check_client_secret(client_secret: str | None) -> str | None:
    if client_secret is None:
        return None
    client_secret = client_secret.strip()
    if not _HEADER_SAFE.fullmatch(client_secret):
        raise ConfigurationError(
            "the client secret is empty or contains spaces or control characters"
        )
    return client_secret


def _check_name(name: str) -> str:
    name = name.strip()
    if len(name) > _MAX_NAME_LENGTH:
        raise ConfigurationError(
            f"a shop name has at most {_MAX_NAME_LENGTH} characters"
        )
    return name


def _check_status(status: ShopStatus | str) -> ShopStatus:
    try:
        return ShopStatus(status)
    except ValueError:
        known = ", ".join(repr(str(member)) for member in ShopStatus)
        raise ConfigurationError(
            f"unknown shop status {str(status)[:20]!r}; use one of {known}"
        ) from None


def _register_credentials(shop: Shop) -> Shop:
    register_secret(shop.api_key)
    register_secret(shop.client_secret)
    return shop


async def add_shop(
    session: AsyncSession,
    *,
    marketplace: str,
    api_key: str,
    client_id: str | None = None,
    client_secret: str | None = None,
    name: str = "",
) -> Shop:
    """Store a new, active shop and return it with its id assigned.

    Args:
        session: The caller's session; the caller commits.
        marketplace: ``"wb"`` or ``"ozon"``.
        api_key: The WB token (a JWT) or the Ozon Api-Key.
        client_id: Ozon's Client-Id, a positive integer; none for WB.
        client_secret: The secret some WB services want beside the token.
        name: A label for people; at most 200 characters.

    Raises:
        ConfigurationError: A field is missing or malformed. The message says
            which, and never contains the key.
    """
    kind = _check_marketplace(marketplace)
    # Registered before checking, so that even a rejected key is masked.
    register_secret(api_key.strip())
    register_secret(client_secret)
    shop = Shop(
        marketplace=str(kind),
        api_key=_check_api_key(kind, api_key),
        client_id=_check_client_id(kind, client_id),
        client_secret=_check_client_secret(client_secret),
        name=_check_name(name),
        status=ShopStatus.ACTIVE,
        unauthorized_categories=[],
    )
    session.add(shop)
    await session.flush()
    return _register_credentials(shop)


async def get_shop(
    session: AsyncSession, shop_id: int, *, for_update: bool = False
) -> Shop:
    """Load one shop.

    Args:
        session: The caller's session.
        shop_id: The shop's id.
        for_update: Lock the row until the transaction ends (PostgreSQL; SQLite
            serialises writers anyway) and read it afresh.

    Raises:
        ShopNotFoundError: No shop has this id.
    """
    if for_update:
        shop = await session.get(
            Shop, shop_id, with_for_update=True, populate_existing=True
        )
    else:
        shop = await session.get(Shop, shop_id)
    if shop is None:
        raise ShopNotFoundError(f"shop {shop_id} does not exist", shop_id=shop_id)
    return _register_credentials(shop)


async def list_shops(
    session: AsyncSession,
    *,
    marketplace: str | None = None,
    status: ShopStatus | str | None = None,
) -> list[Shop]:
    """The shops in id order, optionally only one marketplace's or one status's."""
    query = select(Shop).order_by(Shop.id)
    if marketplace is not None:
        query = query.where(Shop.marketplace == _check_marketplace(marketplace))
    if status is not None:
        query = query.where(Shop.status == _check_status(status))
    shops = list((await session.scalars(query)).all())
    for shop in shops:
        _register_credentials(shop)
    return shops


async def set_shop_status(
    session: AsyncSession, shop_id: int, status: ShopStatus, reason: str | None
) -> None:
    """Set a shop's status and why, stamping the time of the change (UTC).

    Raises:
        ShopNotFoundError: No shop has this id.
    """
    shop = await get_shop(session, shop_id)
    shop.status = _check_status(status)
    shop.status_reason = reason
    shop.status_changed_at = utcnow()
    await session.flush()


async def mark_category_unauthorized(
    session: AsyncSession, shop_id: int, category: str
) -> None:
    """Record that the shop's key has no scope for ``category``; marking twice is harmless.

    Raises:
        ShopNotFoundError: No shop has this id.
    """
    # Locked and re-read: two workers marking two categories at once must
    # not overwrite each other's list.
    shop = await get_shop(session, shop_id, for_update=True)
    if category in shop.unauthorized_categories:
        return
    # A new list, not an append: the JSON column only notices assignment.
    shop.unauthorized_categories = sorted([*shop.unauthorized_categories, category])
    await session.flush()


async def update_credentials(
    session: AsyncSession,
    shop_id: int,
    *,
    api_key: str,
    client_id: str | None = None,
    client_secret: str | None = None,
) -> None:
    """Replace a shop's key, checked as ``add_shop`` checks it.

    A new key brings new scopes, so the unauthorized categories are cleared.
    The status is left alone: ``reset_shop_circuit`` is what reopens the shop.

    Args:
        session: The caller's session; the caller commits.
        shop_id: The shop's id.
        api_key: The new key.
        client_id: A new Ozon Client-Id; None keeps the stored one.
        client_secret: A new client secret; None keeps the stored one.

    Raises:
        ShopNotFoundError: No shop has this id.
        ConfigurationError: A field is malformed (the message omits the key).
    """
    register_secret(api_key.strip())
    register_secret(client_secret)
    shop = await get_shop(session, shop_id, for_update=True)
    kind = _check_marketplace(shop.marketplace)
    shop.api_key = _check_api_key(kind, api_key)
    if client_id is not None or kind is Marketplace.WB:
        shop.client_id = _check_client_id(kind, client_id)
    if client_secret is not None:
        shop.client_secret = _check_client_secret(client_secret)
    shop.unauthorized_categories = []
    await session.flush()


async def set_browser_profile(
    session: AsyncSession, shop_id: int, profile: str
) -> None:
    """Remember the browser impersonation profile chosen for the shop.

    Raises:
        ShopNotFoundError: No shop has this id.
        ConfigurationError: The profile name is empty or too long.
    """
    profile = profile.strip()
    if not profile or len(profile) > _MAX_PROFILE_LENGTH:
        raise ConfigurationError(
            f"a browser profile name has 1 to {_MAX_PROFILE_LENGTH} characters"
        )
    shop = await get_shop(session, shop_id)
    shop.browser_profile = profile
    await session.flush()
