"""What the engine tests share: a step held on a worker, another worker, a dead one.

``Gate`` holds a step inside ``execute`` (a long step); ``Background`` drives a
job in a thread (another worker process); ``expire_lease`` leaves what a worker
that died leaves behind. The rest are small helpers the tests build steps from.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from sqlalchemy import update

from prodinf.config import Settings
from prodinf.engine.context import StepContext
from prodinf.engine.runner import Runner
from prodinf.exceptions import PermanentError
from prodinf.status import StepStatus
from prodinf.store import JobRow, StepRow
from prodinf.store.types import utcnow
from tests.world import World

__all__ = [
    "Background",
    "Gate",
    "count",
    "counter",
    "expire_lease",
    "fail_for_good",
    "long_lease",
    "when",
]


class Gate:
    """Holds a step inside ``execute`` until the test releases it: a long step on a worker."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()

    def hold(self) -> None:
        self.entered.set()
        assert self.released.wait(10), "the test never released the gate"


class Background:
    """``runner.drive(job_id)`` in a thread, as another worker process would run it."""

    def __init__(self, runner: Runner, job_id: str) -> None:
        self.error: BaseException | None = None

        def run() -> None:
            try:
                runner.drive(job_id)
            except BaseException as exc:  # re-raised in the test's thread by join()
                self.error = exc

        self.thread = threading.Thread(target=run, name="other-worker", daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join(10)
        assert not self.thread.is_alive(), "the background drive did not return"
        if self.error is not None:
            raise self.error


def when(dt: str | None) -> datetime:
    """A timestamp as ``describe`` shows it, read back."""
    assert dt is not None
    return datetime.fromisoformat(dt)


def counter() -> dict[str, int]:
    return {}


def count(calls: dict[str, int], name: str) -> int:
    """Count a call of ``name``; return how many there have been."""
    calls[name] = calls.get(name, 0) + 1
    return calls[name]


def fail_for_good(ctx: StepContext) -> None:
    raise PermanentError("disk full on staging")


def long_lease(settings: Settings) -> Settings:
    """Settings with a 60 s lease: the heartbeat (every 20 s) will not tick during a test."""
    return settings.model_copy(update={"lease_seconds": 60.0})


def expire_lease(world: World, job_id: str) -> None:
    """What a dead worker leaves behind: its running step's lease in the past.

    The worker's thread is still blocked in the step, so we can later let it
    return "late"; it runs with a 60 s lease (``long_lease``), so its heartbeat
    cannot renew the lease before the second runner looks (a frozen or
    partitioned worker).
    """
    past = utcnow() - timedelta(seconds=1)
    with world.store.session() as session:
        session.execute(
            update(StepRow)
            .where(StepRow.job_id == job_id, StepRow.status == StepStatus.RUNNING)
            .values(lease_until=past)
        )
        session.execute(update(JobRow).where(JobRow.id == job_id).values(next_run_at=past))
