"""The Celery application: broker, delivery guarantees and the beat schedule.

Everything comes from the settings. Without ``MPSHIELD_CELERY_BROKER_URL`` the
broker is the state store's Redis (the embedded server's Unix socket when
``MPSHIELD_REDIS_URL`` is unset too), and all Celery keys live under
``<key_prefix>:celery:`` beside mpshield's own.

Delivery: a task is acknowledged after it finished (``acks_late``) and is put
back when its worker process dies (``reject_on_worker_lost``), so a killed
worker loses nothing; the order sync is idempotent, and a per-shop lock keeps
two deliveries from running at once. Each worker process reserves one task at a
time. The Redis broker redelivers any message not acknowledged within the
visibility timeout, countdowns included, so tasks never take a countdown longer
than :func:`max_countdown` (see ``mpshield.jobs.tasks``).

The pool is prefork. Nothing network-related is created in the parent; see
``mpshield.jobs.loop``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from celery import Celery

from mpshield.settings import Settings, get_settings
from mpshield.state.store import resolve_redis_url

QUEUE = "mpshield"
SYNC_SHOP = "mpshield.sync_shop"
SYNC_ALL = "mpshield.sync_all"
# Countdowns stop this far short of the visibility timeout: the ETA is measured
# on the worker that retries, the timeout on the one that reserved the message.
VISIBILITY_MARGIN_FRACTION = 0.2
VISIBILITY_MARGIN_MIN_SECONDS = 60.0


def broker_url(settings: Settings) -> str:
    """The broker URL: the configured one, or the state store's Redis.

    A ``unix://`` Redis URL becomes kombu's ``redis+socket://`` form.
    """
    if settings.celery_broker_url:
        return settings.celery_broker_url
    return _kombu_url(resolve_redis_url(settings))


def result_backend_url(settings: Settings) -> str:
    """The result backend URL: the configured one, or the broker's Redis."""
    if settings.celery_result_backend:
        return settings.celery_result_backend
    if settings.celery_broker_url:
        return settings.celery_broker_url
    return _kombu_url(resolve_redis_url(settings))


def _kombu_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = f"?{parts.query}" if parts.query else ""
        return f"redis+socket://{parts.path}{query}"
    return url


def max_countdown(settings: Settings) -> float:
    """The longest countdown a task may take without being delivered twice."""
    timeout = settings.celery_visibility_timeout_seconds
    margin = max(timeout * VISIBILITY_MARGIN_FRACTION, VISIBILITY_MARGIN_MIN_SECONDS)
    return max(timeout - margin, 0.0)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery's configuration for ``settings``."""
    prefix = f"{settings.key_prefix}:celery:"
    transport = {
        "visibility_timeout": settings.celery_visibility_timeout_seconds,
        "global_keyprefix": prefix,
    }
    return {
        "broker_url": broker_url(settings),
        "result_backend": result_backend_url(settings),
        "broker_transport_options": transport,
        "result_backend_transport_options": {"global_keyprefix": prefix},
        "broker_connection_retry_on_startup": True,
        "task_default_queue": QUEUE,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": False,
        "result_expires": 3600,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_pool": "prefork",
        "worker_concurrency": settings.sync_concurrency,
        "beat_schedule": {
            "sync-all": {
                "task": SYNC_ALL,
                "schedule": settings.sync_period_seconds,
                # A tick nobody ran within a period is superseded by the next.
                "options": {"expires": settings.sync_period_seconds},
            }
        },
        "timezone": "UTC",
    }


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app for ``settings`` (the process's settings when omitted).

    The configuration is built on first use, so importing this module starts
    nothing, not even the embedded Redis.
    """
    app = Celery("mpshield", include=["mpshield.jobs.tasks"], set_as_current=False)
    app.add_defaults(lambda: celery_config(settings or get_settings()))
    return app


app = create_app()
