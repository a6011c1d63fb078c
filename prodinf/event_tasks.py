"""Celery entry point of the ``event``-queue worker: ``celery -A prodinf.event_tasks worker``.

A composition root, like ``wsgi.py``: it builds the app from the environment
when imported. Started without ``-Q``, its worker consumes only the event queue.
"""

from prodinf.celery_app import create_celery
from prodinf.config import get_settings
from prodinf.runtime import SUBMIT_EVENT

app = create_celery(get_settings(), consume="event")

#: ``submit_event.delay(type, dataset=..., payload=...)``: record an event; its job
#: starts every process subscribed to it.
submit_event = app.tasks[SUBMIT_EVENT]

__all__ = ["app", "submit_event"]
