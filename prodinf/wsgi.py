"""WSGI entry point: ``gunicorn prodinf.wsgi:app``. A composition root: builds the app on
import, and sends the process's log lines to stderr in ``PRODINF_LOG_FORMAT``."""

from prodinf.config import get_settings
from prodinf.engine.logformat import configure
from prodinf.portal import create_app

settings = get_settings()
configure(settings.log_format, settings.log_level)
app = create_app(settings)

__all__ = ["app"]
