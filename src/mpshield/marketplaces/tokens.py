"""What a Wildberries token says about itself.

A WB token is a JWT whose payload names the seller (``sid``), the token's
categories (the ``s`` bit mask), its type (``acc``) and its expiry (``exp``).
We read the payload without checking the signature: only WB can check it, and
we use the fields to pick rate-limit buckets and to refuse requests that WB
would answer with a 401 anyway (expired token, missing category).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

import jwt

# Position n of the ``s`` mask is the value 1 << n.
SCOPE_BITS: dict[str, int] = {
    "content": 1,
    "analytics": 2,
    "prices": 3,
    "marketplace": 4,
    "statistics": 5,
    "promotion": 6,
    "feedbacks": 7,
    "chat": 9,
    "supplies": 10,
    "returns": 11,
    "documents": 12,
    "finance": 13,
    "users": 16,
}
READ_ONLY_BIT = 30

TOKEN_TYPES = {1: "base", 2: "test", 3: "personal", 4: "service"}


@dataclass(frozen=True)
class WbToken:
    """The payload of a WB token; holds no part of the token itself.

    Attributes:
        id: The token's own id (``id``), a UUID.
        sid: The seller account the token belongs to; WB counts limits per seller.
        scopes: Category names whose bit is set (see ``SCOPE_BITS``).
        token_type: ``personal``, ``service``, ``base`` or ``test``; each type
            has its own budget at WB.
        expires_at: Expiry as a Unix timestamp, None when the token has none.
        read_only: The token may only read.
        readable: False when the token is not a JWT at all; then ``sid`` is a
            stand-in derived from the token and no category check is possible.
    """

    id: str
    sid: str
    scopes: frozenset[str]
    token_type: str
    expires_at: float | None
    read_only: bool
    readable: bool = True

    def expired(self, now: float | None = None) -> bool:
        """Whether the expiry has passed at ``now`` (default: the current time)."""
        if self.expires_at is None:
            return False
        if now is None:
            now = dt.datetime.now(dt.UTC).timestamp()
        return now >= self.expires_at

    def allows(self, category: str) -> bool:
        """Whether the token may call ``category``.

        Categories without a bit (``common``, the storefront) are open to any
        token, and an unreadable token is given the benefit of the doubt.
        """
        if not self.readable or category not in SCOPE_BITS:
            return True
        return category in self.scopes


def decode_wb_token(token: str) -> WbToken:
    """Read a WB token's payload without verifying its signature.

    A value that is not a JWT yields a token with ``readable=False`` whose seller
    id is a hash of the value, so that its requests still share one bucket.
    """
    try:
        payload: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        digest = hashlib.sha256(token.encode()).hexdigest()[:16]
        return WbToken(
            id=digest,
            sid=f"opaque-{digest}",
            scopes=frozenset(),
            token_type="personal",
            expires_at=None,
            read_only=False,
            readable=False,
        )
    mask = _int(payload.get("s"))
    scopes = frozenset(name for name, bit in SCOPE_BITS.items() if mask >> bit & 1)
    exp = payload.get("exp")
    return WbToken(
        id=str(payload.get("id", "")),
        sid=str(payload.get("sid", "")) or "unknown",
        scopes=scopes,
        token_type=_token_type(payload),
        expires_at=float(exp) if isinstance(exp, int | float) else None,
        read_only=bool(mask >> READ_ONLY_BIT & 1),
    )


def _int(value: object) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def _token_type(payload: dict[str, Any]) -> str:
    if payload.get("t") is True:
        return "test"
    # A token without a type marker is most likely a personal one, whose
    # limits are also the ones most of the table documents.
    return TOKEN_TYPES.get(_int(payload.get("acc")), "personal")
