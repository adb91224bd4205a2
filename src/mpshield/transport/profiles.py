"""Browser impersonation profiles: which browser a shop's connections look like.

Each shop gets one profile, chosen from the shop id so that the choice is
stable across processes and machines, and kept in ``shops.browser_profile``.
A stored profile stays as long as curl_cffi still supports it, so a shop does
not change browsers between tasks.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from curl_cffi.requests import BrowserType

# Current desktop releases of the three engines curl_cffi imitates; a mix,
# so that a fleet of shops does not look like one browser build.
PROFILES: Final[tuple[str, ...]] = (
    "chrome146",
    "chrome145",
    "chrome142",
    "safari260",
    "safari184",
    "firefox147",
    "firefox144",
)

SUPPORTED: Final = frozenset(browser.value for browser in BrowserType)


def choose_profile(shop_id: int) -> str:
    """The profile for ``shop_id``: the same on every machine and every run."""
    digest = hashlib.sha256(f"mpshield-profile:{shop_id}".encode()).digest()
    return PROFILES[int.from_bytes(digest[:8], "big") % len(PROFILES)]


def profile_for(shop_id: int, stored: str | None) -> str:
    """The shop's stored profile when curl_cffi still supports it, else a new one."""
    if stored and stored in SUPPORTED:
        return stored
    return choose_profile(shop_id)


def browser_family(profile: str) -> str:
    """``chrome``, ``safari``, ``firefox``... from a profile name."""
    match = re.match(r"[a-z]+", profile)
    return match.group(0) if match else profile
