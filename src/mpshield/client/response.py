"""The answer a caller gets from ``MarketplaceClient``: ours, not curl_cffi's."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from typing import Any

from mpshield.exceptions import MalformedResponseError


class Response:
    """A successful marketplace answer.

    Attributes:
        status: The HTTP status (below 400).
        headers: Response headers; names are case-insensitive.
        content: The raw body.
        method: The request's method.
        path: The request's path, without the query.
        shop_id: The shop the request was made for.
        marketplace: ``wb`` or ``ozon``.
    """

    __slots__ = (
        "content",
        "headers",
        "marketplace",
        "method",
        "path",
        "shop_id",
        "status",
    )

    def __init__(
        self,
        *,
        status: int,
        headers: Mapping[str, str],
        content: bytes,
        method: str,
        path: str,
        shop_id: int,
        marketplace: str,
    ) -> None:
        self.status = status
        self.headers = headers
        self.content = content
        self.method = method
        self.path = path
        self.shop_id = shop_id
        self.marketplace = marketplace

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.method} {self.path})"

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            MalformedResponseError: The body is not JSON (an HTML page, a cut-off
                answer...).
        """
        try:
            return jsonlib.loads(self.content)
        except ValueError:
            raise MalformedResponseError(
                f"{self.marketplace}: {self.method} {self.path} answered "
                f"{self.status} with a body that is not JSON "
                f"({len(self.content)} bytes)",
                status=self.status,
                body=self.text[:500],
                shop_id=self.shop_id,
                marketplace=self.marketplace,
            ) from None
