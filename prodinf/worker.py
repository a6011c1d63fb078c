"""Celery entry point for every queue, beat and flower: ``celery -A prodinf.worker ...``.

A composition root, like ``wsgi.py``: it builds the app from the environment when imported.
"""

from prodinf.celery_app import create_celery
from prodinf.config import get_settings

app = create_celery(get_settings())

__all__ = ["app"]
