"""prodinf: production job infrastructure — durable jobs on Celery, a job store, a portal, a CLI.

The parts a user imports::

    from prodinf.config import Settings
    from prodinf.engine.registry import job_kind
    from prodinf.engine.steps import Flow, Retry, Step, Wait
    from prodinf.email_tasks import email_when_complete  # builds a Celery app when imported
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("prodinf")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
