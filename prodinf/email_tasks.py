"""Celery entry point of the ``email``-queue worker: ``celery -A prodinf.email_tasks worker``.

A composition root, like ``wsgi.py``: it builds the app from the environment
when imported. Started without ``-Q``, its worker consumes only the email queue.
"""

from prodinf.celery_app import create_celery
from prodinf.config import get_settings
from prodinf.runtime import EMAIL_WHEN_COMPLETE

app = create_celery(get_settings(), consume="email")

#: ``email_when_complete.delay(url, address)``: mail ``address`` once ``url`` is done.
email_when_complete = app.tasks[EMAIL_WHEN_COMPLETE]

__all__ = ["app", "email_when_complete"]
