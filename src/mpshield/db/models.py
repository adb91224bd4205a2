"""The database tables: shops, proxies, orders and per-feed sync cursors.

The same models serve PostgreSQL (production) and SQLite (the embedded
default). JSON columns become JSONB on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mpshield.redaction import MASK, mask_url

JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY columns.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that reads back timezone-aware, in UTC, on every backend.

    SQLite stores no offset: without this, the same column would read back
    naive there and aware on PostgreSQL. A naive value is taken to be UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            # Stored as text; one offset everywhere keeps comparisons right.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Marketplace(enum.StrEnum):
    WB = "wb"
    OZON = "ozon"


class ShopStatus(enum.StrEnum):
    ACTIVE = "active"
    AUTH_ERROR = "auth_error"
    DISABLED = "disabled"


class Shop(Base):
    """One seller account's shop with its credentials.

    ``api_key`` is the WB token or the Ozon Api-Key; ``client_id`` is Ozon's
    Client-Id. Neither appears in ``repr``.
    """

    __tablename__ = "shops"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    marketplace: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    api_key: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str | None] = mapped_column(String(64), default=None)
    # WB catalog services send a per-service secret beside the token.
    client_secret: Mapped[str | None] = mapped_column(Text, default=None)
    status: Mapped[str] = mapped_column(String(16), default=ShopStatus.ACTIVE)
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    status_changed_at: Mapped[dt.datetime | None] = mapped_column(
        UtcDateTime(), default=None
    )
    browser_profile: Mapped[str | None] = mapped_column(String(64), default=None)
    unauthorized_categories: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime(), default=utcnow, server_default=func.now()
    )

    def __repr__(self) -> str:
        return (
            f"Shop(id={self.id!r}, marketplace={self.marketplace!r}, "
            f"name={self.name!r}, status={self.status!r}, api_key={MASK!r})"
        )


class Proxy(Base):
    """A forward proxy; ``url`` may carry a password and is masked in ``repr``."""

    __tablename__ = "proxies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    url: Mapped[str] = mapped_column(Text, unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime(), default=utcnow, server_default=func.now()
    )

    def __repr__(self) -> str:
        return f"Proxy(id={self.id!r}, url={mask_url(self.url)!r}, enabled={self.enabled!r})"


class Order(Base):
    """One order as a feed delivered it, upserted by (shop, feed, external id).

    ``payload`` keeps the marketplace's row verbatim; the other columns are the
    ones a platform queries. Feeds have separate id spaces (a WB assembly order
    id is not a statistics ``srid``), hence the feed in the key.
    """

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("shop_id", "feed", "external_id"),
        Index(None, "shop_id", "order_created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    marketplace: Mapped[str] = mapped_column(String(16))
    feed: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str | None] = mapped_column(String(64), default=None)
    order_created_at: Mapped[dt.datetime | None] = mapped_column(
        UtcDateTime(), default=None
    )
    price: Mapped[Decimal | None] = mapped_column(Numeric(18, 2), default=None)
    currency: Mapped[str | None] = mapped_column(String(8), default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    first_seen_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime(), default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime(), default=utcnow, server_default=func.now()
    )


class SyncState(Base):
    """Where a shop's feed stands: its cursor and when to try next."""

    __tablename__ = "sync_state"

    shop_id: Mapped[int] = mapped_column(
        ForeignKey("shops.id", ondelete="CASCADE"), primary_key=True
    )
    feed: Mapped[str] = mapped_column(String(32), primary_key=True)
    cursor: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(
        UtcDateTime(), default=None
    )
    last_success_at: Mapped[dt.datetime | None] = mapped_column(
        UtcDateTime(), default=None
    )
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime(), default=utcnow, server_default=func.now()
    )
