"""What the app calls when a user has dealt with a disabled shop."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mpshield.db import shops as shop_db
from mpshield.db.models import ShopStatus
from mpshield.protection.breaker import CircuitBreaker
from mpshield.redaction import get_logger, register_secret
from mpshield.settings import Settings, get_settings
from mpshield.state.store import get_store

logger = get_logger(__name__)


async def reset_shop_circuit(
    shop_id: int, db: AsyncSession, *, settings: Settings | None = None
) -> None:
    """Close the shop's circuit, clear its failure counts and mark it active.

    The status change is committed on ``db``.

    Args:
        shop_id: The shop.
        db: The session the shop's status is written through.
        settings: Defaults to the process-wide settings.

    Raises:
        ShopNotFoundError: No such shop.
    """
    settings = settings or get_settings()
    await shop_db.get_shop(db, shop_id)
    breaker = CircuitBreaker(get_store(settings), settings)
    await breaker.reset(shop_id)
    await shop_db.set_shop_status(db, shop_id, ShopStatus.ACTIVE, None)
    await db.commit()
    logger.info("shop=%s circuit reset, shop active", shop_id)


async def update_shop_credentials(
    shop_id: int,
    db: AsyncSession,
    *,
    api_key: str,
    client_id: str | None = None,
    client_secret: str | None = None,
    settings: Settings | None = None,
) -> None:
    """Save a shop's new key and reset its circuit, so that it is tried again.

    The new key (and the cleared list of unauthorized categories) is committed
    together with the status.

    Args:
        shop_id: The shop.
        db: The session the shop is written through.
        api_key: The new WB token or Ozon Api-Key.
        client_id: Ozon's Client-Id, when it changes too.
        client_secret: A WB catalog service's secret, when it changes too.
        settings: Defaults to the process-wide settings.

    Raises:
        ShopNotFoundError: No such shop.
    """
    register_secret(api_key)
    register_secret(client_secret)
    await shop_db.update_credentials(
        db, shop_id, api_key=api_key, client_id=client_id, client_secret=client_secret
    )
    await reset_shop_circuit(shop_id, db, settings=settings)
