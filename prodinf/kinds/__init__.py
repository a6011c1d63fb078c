"""The built-in kinds. Importing this package registers them."""

from prodinf.kinds import database, http, job_notification, notify

__all__ = ["database", "http", "job_notification", "notify"]
