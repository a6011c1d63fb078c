"""prodinf: production job infrastructure — durable jobs on Celery, a job store, a portal, a CLI.

What a plugin author writes a kind with::

    from prodinf import Flow, Retry, Step, StepContext, job_kind

    @job_kind("rebuild_index", queue="jobs", params=RebuildParams)
    def rebuild_index(params: RebuildParams) -> Flow:
        return Flow.of(Step("rebuild", rebuild, retry=Retry(attempts=5)))

and ``email_when_complete.delay(url, address)`` from ``prodinf.email_tasks`` (which
builds a Celery app from the environment when imported).
"""

from importlib.metadata import PackageNotFoundError, version

from prodinf.engine.choices import choices
from prodinf.engine.context import StepContext
from prodinf.engine.registry import Kind, NoParams, job_kind
from prodinf.engine.steps import Flow, Retry, Step
from prodinf.engine.waits import Child, Commit, Wait, Watch
from prodinf.exceptions import PermanentError, ProdinfError, TransientError, ValidationError
from prodinf.status import JobStatus, StepStatus

try:
    __version__ = version("prodinf")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"

__all__ = [  # noqa: RUF022 (grouped by purpose)
    # writing a kind
    "job_kind",
    "Kind",
    "NoParams",
    "Flow",
    "Step",
    "Retry",
    "StepContext",
    "choices",
    # waiting without a worker
    "Wait",
    "Watch",
    "Child",
    "Commit",
    # what a step raises
    "ProdinfError",
    "TransientError",
    "PermanentError",
    "ValidationError",
    # where a job stands
    "JobStatus",
    "StepStatus",
    "__version__",
]
