"""The built-in kinds. Importing this package registers them."""

from prodinf.kinds import http, job_notification, notify

__all__ = ["http", "job_notification", "notify"]
