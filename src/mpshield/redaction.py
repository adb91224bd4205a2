"""Keeping API keys, tokens and proxy passwords out of logs, errors and reprs.

Secrets are registered where they are loaded (shop credentials, proxy URLs).
Every module logger (``get_logger``) carries a filter that replaces each
registered secret in every record, so even a careless ``%r`` of a foreign object cannot leak one.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import SplitResult, urlsplit, urlunsplit

MASK = "***"
# Short strings such as "1" would mask half of every log line.
_MIN_SECRET_LENGTH = 6

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so that it is masked wherever mpshield writes text."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret replaced by ``***``."""
    if not _secrets:
        return text
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def mask_url(url: str) -> str:
    """Hide the password of a URL such as ``http://user:pass@host:port``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _mask_before_at(url)
    if parts.password is None or "@" in parts.path + parts.query + parts.fragment:
        # A password with an unescaped "/", "?" or "#" is not parsed as one.
        return _mask_before_at(url) if "@" in url else url
    # Keep the port as written: it may not be a number, and this must not fail.
    host_port = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or ''}:{MASK}@{host_port}"
    masked = SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment)
    return urlunsplit(masked)


def _mask_before_at(url: str) -> str:
    """Hide everything between the scheme and the last ``@``."""
    if "@" not in url:
        return MASK
    scheme, sep, _ = url.partition("://")
    prefix = f"{scheme}://" if sep else ""
    return f"{prefix}{MASK}@{url.rpartition('@')[2]}"


class RedactingFilter(logging.Filter):
    """Masks registered secrets in the message and arguments of each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            record.msg = redact(record.getMessage())
            record.args = None
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactingFilter()


def get_logger(name: str) -> logging.Logger:
    """Return the module logger ``name`` with secret masking attached.

    Logger filters do not apply to records of child loggers, so every module
    logger carries the filter itself.
    """
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
