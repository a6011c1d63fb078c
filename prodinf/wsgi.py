"""WSGI entry point: ``gunicorn prodinf.wsgi:app``. A composition root: builds the app on import."""

from prodinf.config import get_settings
from prodinf.portal import create_app

app = create_app(get_settings())

__all__ = ["app"]
