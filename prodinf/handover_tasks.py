"""Celery entry point of the ``handover``-queue worker: ``celery -A prodinf.handover_tasks worker``.

A composition root, like ``wsgi.py``: it builds the app from the environment
when imported. Started without ``-Q``, its worker consumes only the handover queue.
"""

from prodinf.celery_app import create_celery
from prodinf.config import get_settings

app = create_celery(get_settings(), consume="handover")

__all__ = ["app"]
