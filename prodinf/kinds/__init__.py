"""The built-in kinds. Importing this package registers them."""

from prodinf.kinds import (
    database,
    email_when_complete,
    event,
    event_notice,
    handover,
    http,
    job_notification,
    remote_job,
)

__all__ = [
    "database",
    "email_when_complete",
    "event",
    "event_notice",
    "handover",
    "http",
    "job_notification",
    "remote_job",
]
