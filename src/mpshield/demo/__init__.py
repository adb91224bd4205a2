"""``mpshield demo``: many sandbox shops synced by real Celery workers, checked to the order."""
