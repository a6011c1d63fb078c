"""Celery entry point of the ``event``-queue worker: ``celery -A prodinf.event_tasks worker``.

A composition root, like ``wsgi.py``: it builds the app from the environment
when imported. Started without ``-Q``, its worker consumes only the event queue.
"""

from prodinf.celery_app import create_celery
from prodinf.config import get_settings

app = create_celery(get_settings(), consume="event")

__all__ = ["app"]
