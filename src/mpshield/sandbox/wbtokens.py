"""WB API tokens as the sandbox issues and checks them: ES256 JWTs with WB's claims.

Claims follow WB's published token layout: ``id`` (token UUID), ``s`` (scope
bitmask), ``sid`` (seller UUID), ``exp``, ``acc`` (1 base, 2 test, 3 personal,
4 service), ``for`` (``self`` for personal, ``asid:<service>`` for service
tokens), ``t`` (true for test tokens). The signing key is generated per World,
so a token from one sandbox run never opens another.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from mpshield.exceptions import ConfigurationError
from mpshield.marketplaces.tokens import READ_ONLY_BIT, SCOPE_BITS, TOKEN_TYPES

TokenType = Literal["personal", "service", "base", "test"]

ACC_BY_TYPE: dict[str, int] = {kind: acc for acc, kind in TOKEN_TYPES.items()}
TYPE_BY_ACC = TOKEN_TYPES


class TokenProblem(Exception):
    """A token the gateway refuses; ``detail`` is the text WB puts in its 401 body."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class WbToken:
    """The claims of a token that passed the signature check."""

    token_id: str
    sid: str
    scopes: int
    exp: float
    acc: int
    service: str | None
    test: bool

    @property
    def token_type(self) -> str:
        return TYPE_BY_ACC.get(self.acc, "base")

    @property
    def budget(self) -> str:
        """Whose bucket the token draws on: one per type, one per catalog service."""
        if self.acc == ACC_BY_TYPE["service"] and self.service:
            return f"service:{self.service}"
        return self.token_type

    @property
    def read_only(self) -> bool:
        return bool(self.scopes & (1 << READ_ONLY_BIT))

    def allows(self, category: str) -> bool:
        """Whether the scope bitmask opens ``category`` (``common`` is open to all)."""
        bit = SCOPE_BITS.get(category)
        return bit is None or bool(self.scopes & (1 << bit))


def scope_mask(scopes: Iterable[str], *, read_only: bool = False) -> int:
    """The ``s`` claim for category names such as ``("marketplace", "statistics")``."""
    mask = 0
    for name in scopes:
        if name not in SCOPE_BITS:
            raise ConfigurationError(f"unknown WB token scope {name!r}")
        mask |= 1 << SCOPE_BITS[name]
    if read_only:
        mask |= 1 << READ_ONLY_BIT
    return mask


class TokenAuthority:
    """Issues and checks the sandbox's WB tokens."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._public = self._key.public_key()

    def issue(
        self,
        sid: str,
        *,
        token_type: TokenType,
        scopes: int,
        exp: float,
        issued_at: float,
        service: str | None = None,
    ) -> tuple[str, str]:
        """Sign a new token; returns (token, token id)."""
        if token_type not in ACC_BY_TYPE:
            raise ConfigurationError(f"unknown WB token type {token_type!r}")
        token_id = str(uuid.uuid4())
        claims: dict[str, Any] = {
            "acc": ACC_BY_TYPE[token_type],
            "ent": 1,
            "exp": int(exp),
            "iat": int(issued_at),
            "id": token_id,
            "s": scopes,
            "sid": sid,
            "t": token_type == "test",
        }
        if token_type == "personal":
            claims["for"] = "self"
        elif token_type == "service":
            claims["for"] = f"asid:{service or uuid.uuid4()}"
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": "1"})
        return token, token_id

    def check(self, raw: str) -> WbToken:
        """Verify the signature and read the claims; expiry is the caller's check.

        Raises:
            TokenProblem: the token is malformed or not signed by this sandbox.
        """
        if raw.count(".") != 2:
            raise TokenProblem(
                "token problem; token is malformed: token contains an invalid number of segments"
            )
        try:
            claims = jwt.decode(
                raw,
                self._public,
                algorithms=["ES256"],
                options={"verify_exp": False, "verify_iat": False},
            )
        except jwt.InvalidSignatureError:
            raise TokenProblem("token problem; token signature is invalid") from None
        except jwt.DecodeError as exc:
            raise TokenProblem(
                f"token problem; token is malformed: could not decode token: {type(exc).__name__}"
            ) from None
        except jwt.PyJWTError:
            raise TokenProblem("token problem; token is malformed") from None
        try:
            service = claims.get("for")
            return WbToken(
                token_id=str(claims["id"]),
                sid=str(claims["sid"]),
                scopes=int(claims["s"]),
                exp=float(claims["exp"]),
                acc=int(claims.get("acc", 1)),
                service=service[5:]
                if isinstance(service, str) and service.startswith("asid:")
                else None,
                test=bool(claims.get("t", False)),
            )
        except (KeyError, TypeError, ValueError):
            raise TokenProblem("token problem; token claims are invalid") from None
