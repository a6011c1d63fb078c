"""The job store contract: one suite, run on every backend (SQLite, PostgreSQL, MariaDB).

Every test takes ``any_store``, a freshly migrated store on one backend, and drives
it with the real engine: a ``Registry`` of small test kinds, ``Jobs`` to submit,
``Runner`` to execute and ``reconcile`` to re-drive. Messages are not sent anywhere;
``publish`` records (job id, queue) so a test can see what would have been sent.
Read each test as Given / When / Then.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import BaseModel, ConfigDict
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from prodinf import Flow, Retry, Step, Watch
from prodinf.config import Settings
from prodinf.engine.reconciler import reconcile
from prodinf.engine.registry import Registry, job_kind
from prodinf.engine.runner import Runner
from prodinf.engine.service import Jobs
from prodinf.engine.watches import look_due
from prodinf.exceptions import Conflict, NotFound, PermanentError, StoreUnavailable
from prodinf.exceptions import ValidationError as ProdinfValidationError
from prodinf.store import Base, JobRow, JobStore, StepRow, WatcherRow, WatchRow, upgrade
from prodinf.store.migrate import alembic_config
from prodinf.store.types import utcnow
from tests.conftest import backend_url, fresh_store
from tests.integration.servers import StatusServer

T = TypeVar("T")

# -- the world the test kinds live in ------------------------------------------------------


class Payload(BaseModel):
    """Params of every test kind: any JSON, carried through to the result."""

    model_config = ConfigDict(extra="forbid")

    payload: Any = None


class WorkerDied(BaseException):
    """Raised inside a step to stop its runner dead, as a killed worker would."""


@dataclass
class Lab:
    """What the test kinds did, and the outside world they depend on."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: (job id, "run" or "revert", step) in the order they happened.
    log: list[tuple[str, str, str]] = field(default_factory=list)
    #: Steps that fail permanently while listed here.
    broken: set[str] = field(default_factory=set)
    #: Steps that kill their runner (once) while listed here.
    crash: set[str] = field(default_factory=set)
    #: Seconds each step takes.
    delay: float = 0.0
    #: The "hold" step of the gated kind runs until this is set.
    gate: threading.Event = field(default_factory=threading.Event)

    def record(self, job_id: str, action: str, step: str) -> None:
        with self.lock:
            self.log.append((job_id, action, step))

    def done(self, job_id: str) -> list[tuple[str, str]]:
        with self.lock:
            return [(action, step) for j, action, step in self.log if j == job_id]

    def count(self, job_id: str, action: str, step: str) -> int:
        return self.done(job_id).count((action, step))


@dataclass
class World:
    """A store, a registry of test kinds, and the engine wired to both."""

    store: JobStore
    registry: Registry
    settings: Settings
    lab: Lab
    published: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, job_id: str, queue: str) -> None:
        with self._lock:
            self.published.append((job_id, queue))

    def jobs(self, settings: Settings | None = None) -> Jobs:
        return Jobs(self.store, self.registry, settings or self.settings, self.publish)

    def runner(self, store: JobStore | None = None, settings: Settings | None = None) -> Runner:
        return Runner(store or self.store, self.registry, settings or self.settings, self.publish)

    def submit(self, kind: str, payload: Any = None, **kw: Any) -> str:
        job, created = self.jobs().submit(kind, {"payload": payload}, **kw)
        assert created
        return str(job["id"])

    def steps(self, job_id: str) -> dict[str, str]:
        return {s["name"]: s["status"] for s in self.store.describe(job_id)["steps"]}

    def events(self, job_id: str) -> list[tuple[str, str | None]]:
        return [(h["event"], h["step"]) for h in self.store.describe(job_id)["history"]]


def build_registry(lab: Lab) -> Registry:
    reg = Registry()

    def step(name: str, *, revert: bool = False, after: tuple[str, ...] | None = None) -> Step:
        def execute(ctx: Any) -> Any:
            lab.record(ctx.job_id, "run", name)
            if lab.delay:
                time.sleep(lab.delay)
            if name in lab.crash:
                lab.crash.discard(name)
                raise WorkerDied(name)
            if name in lab.broken:
                raise PermanentError(f"{name} is broken")
            return {"step": name, "after": sorted(ctx.outputs), "payload": ctx.params.payload}

        def undo(ctx: Any) -> None:
            lab.record(ctx.job_id, "revert", name)

        return Step(
            name, execute, revert=undo if revert else None, after=after, retry=Retry(attempts=1)
        )

    @job_kind("plain", params=Payload, into=reg)
    def plain(params: Payload) -> Flow:
        """a -> b -> c, nothing to undo."""
        return Flow.of(step("a"), step("b"), step("c"))

    @job_kind("undoable", params=Payload, into=reg)
    def undoable(params: Payload) -> Flow:
        """a -> b -> c -> d, each undone when a later step fails for good."""
        return Flow.of(*(step(name, revert=True) for name in "abcd"))

    @job_kind("fanout", queue="handover", params=Payload, into=reg)
    def fanout(params: Payload) -> Flow:
        """p1, p2, p3 in parallel, then join."""
        return Flow.of(
            step("p1", after=()),
            step("p2", after=()),
            step("p3", after=()),
            step("join", after=("p1", "p2", "p3")),
        )

    def hold(ctx: Any) -> str:
        lab.record(ctx.job_id, "run", "hold")
        assert lab.gate.wait(timeout=20), "the test never opened the gate"
        return "held"

    @job_kind("gated", params=Payload, into=reg)
    def gated(params: Payload) -> Flow:
        """hold (until the test opens the gate) -> after."""
        return Flow.of(Step("hold", hold, retry=Retry(attempts=1)), step("after"))

    @job_kind("not_json", params=Payload, into=reg)
    def not_json(params: Payload) -> Flow:
        """One step whose output JSON cannot carry (NaN)."""
        return Flow.of(Step("score", lambda ctx: {"score": float("nan")}, retry=Retry(attempts=1)))

    class Watching(BaseModel):
        model_config = ConfigDict(extra="forbid")
        payload: Any = None
        url: str = ""

    def watching(ctx: Any) -> Any:
        watched = ctx.state.get("watched")
        if watched is not None:
            return watched
        return ctx.wait(3600, "watching", watch=Watch(ctx.params.url, 60, max_errors=2))

    @job_kind("watcher", params=Watching, into=reg)
    def watcher(params: Watching) -> Flow:
        """One step that waits on a shared URL watch and returns what it found."""
        return Flow.of(Step("watch", watching))

    return reg


@pytest.fixture
def world(any_store: JobStore, settings: Settings) -> World:
    lab = Lab()
    return World(store=any_store, registry=build_registry(lab), settings=settings, lab=lab)


def at_once(n: int, fn: Callable[[int], T]) -> list[T]:
    """Call ``fn(0..n-1)`` from ``n`` threads released together; re-raise the first error."""
    barrier = threading.Barrier(n)

    def run(i: int) -> T:
        barrier.wait(timeout=10)
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(run, i) for i in range(n)]
        return [f.result(timeout=60) for f in futures]


def parse(stamp: str | None) -> datetime:
    assert stamp is not None
    value = datetime.fromisoformat(stamp)
    assert value.utcoffset() == timedelta(0), stamp
    return value


# -- migrations ------------------------------------------------------------------------------


def test_upgrade_twice_is_a_no_op(world: World) -> None:
    # Given a migrated store holding a job
    job_id = world.submit("plain", {"keep": "me"})
    head = ScriptDirectory.from_config(alembic_config(world.store)).get_current_head()

    # When upgrade runs again
    upgrade(world.store)
    upgrade(world.store)

    # Then the schema stays at head with one version row, and the job is untouched
    with world.store.engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM prodinf_alembic_version")).all()
    assert [v for (v,) in versions] == [head]
    assert world.store.describe(job_id)["params"] == {"payload": {"keep": "me"}}


def test_migrated_schema_matches_the_models(any_store: JobStore) -> None:
    # Given a store migrated by Alembic (not by create_all)
    # When Alembic compares the live schema with the models
    with any_store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "version_table": "prodinf_alembic_version",
                "compare_type": True,
                "compare_server_default": True,
            },
        )
        diff = compare_metadata(context, Base.metadata)

    # Then there is nothing a new migration would have to do
    assert diff == []


# -- submitting and reading ------------------------------------------------------------------


def test_submit_stores_the_job_its_steps_and_its_history(world: World) -> None:
    # When a job is submitted
    summary, created = world.jobs().submit(
        "undoable", {"payload": [1, 2]}, submitted_by="ana", idempotency_key="k-1"
    )

    # Then the job, its steps in flow order and its first history event are stored
    assert created
    job = world.store.describe(summary["id"])
    assert job["id"] == summary["id"]
    assert (job["kind"], job["queue"], job["status"]) == ("undoable", "jobs", "queued")
    assert job["params"] == {"payload": [1, 2]}
    assert (job["submitted_by"], job["idempotency_key"]) == ("ana", "k-1")
    assert job["progress"] == {"done": 0, "total": 4, "message": "queued"}
    assert [(s["name"], s["status"], s["after"], s["attempts"]) for s in job["steps"]] == [
        ("a", "pending", [], 0),
        ("b", "pending", ["a"], 0),
        ("c", "pending", ["b"], 0),
        ("d", "pending", ["c"], 0),
    ]
    assert [(h["event"], h["message"]) for h in job["history"]] == [
        ("job.submitted", "submitted undoable by ana")
    ]
    assert (job["result"], job["error"], job["finished_at"]) == (None, None, None)
    # and its message was published once, to the kind's queue
    assert world.published == [(summary["id"], "jobs")]


def test_describe_of_an_unknown_job_is_not_found(world: World) -> None:
    with pytest.raises(NotFound) as caught:
        world.store.describe("00000000-0000-0000-0000-000000000000")
    assert caught.value.field == "id"


JSON_VALUES: dict[str, Any] = {
    "nested": {"a": [1, [2, {"b": None, "c": [True, False]}]], "empty": {}, "list": []},
    "unicode": 'héllo ☃ 日本語 \U0001f600 ‮ "quotes" \\ back\nslash\ttab',
    "keys": {"clé": 1, "\U0001f511": 2, "": 3},
    "ints": [0, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 10**30],
    # Floats of large magnitude are left out on purpose: PostgreSQL's JSONB keeps
    # 6.02e23 as the integer 602214076000000000000000 (the same JSON number).
    "floats": [0.1, -2.5e-7, 3.141592653589793, 1e-300, 123456.789, 0.5],
    "long_text": "lorem ipsum " * 20_000,
}


def test_params_and_results_round_trip_as_json(world: World) -> None:
    # Given a job whose params carry awkward JSON
    job_id = world.submit("plain", JSON_VALUES)

    # When it runs to the end (the last step returns the payload it was given)
    world.runner().drive(job_id)

    # Then params, step outputs and the result come back equal, floats as floats
    job = world.store.describe(job_id)
    assert job["status"] == "succeeded"
    assert job["params"] == {"payload": JSON_VALUES}
    assert job["result"] == {"step": "c", "after": ["a", "b"], "payload": JSON_VALUES}
    floats = job["result"]["payload"]["floats"]
    assert [type(f) for f in floats] == [float] * len(floats)
    assert [s["output"]["payload"] for s in job["steps"]] == [JSON_VALUES] * 3


def test_timestamps_are_aware_utc_and_keep_microseconds(world: World) -> None:
    # Given two jobs submitted one right after the other
    first, _ = world.jobs().submit("plain", {})
    second, _ = world.jobs().submit("plain", {})

    # When they are read back from the store
    stored_first = world.store.describe(first["id"])
    stored_second = world.store.describe(second["id"])

    # Then each timestamp is the instant written, in UTC, to the microsecond
    assert stored_first["created_at"] == first["created_at"]
    assert stored_second["created_at"] == second["created_at"]
    assert parse(stored_first["created_at"]) < parse(stored_second["created_at"])
    with world.store.session() as session:
        row = session.get(JobRow, first["id"])
        assert row is not None
        assert row.created_at.tzinfo is not None
        assert row.created_at.utcoffset() == UTC.utcoffset(None)
        # and SQL comparisons see the same order
        newer = session.scalars(select(JobRow.id).where(JobRow.created_at > row.created_at)).all()
    assert newer == [second["id"]]

    # And history written in quick succession keeps its order
    world.runner().drive(first["id"])
    stamps = [parse(h["at"]) for h in world.store.describe(first["id"])["history"]]
    assert len(stamps) == 8  # submitted, 3 x (started, succeeded), succeeded
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)


def test_idempotency_key_gives_one_job_under_a_race(world: World) -> None:
    # When eight callers submit with the same key at the same instant
    results = at_once(8, lambda i: world.jobs().submit("plain", {}, idempotency_key="race-1"))

    # Then exactly one job exists, every caller got its id, and one message was sent
    ids = {job["id"] for job, _ in results}
    assert len(ids) == 1
    assert sum(created for _, created in results) == 1
    assert world.store.list_jobs()[1] == 1
    assert world.published == [(ids.pop(), "jobs")]


def test_idempotency_key_reused_for_another_kind_is_a_conflict(world: World) -> None:
    world.jobs().submit("plain", {}, idempotency_key="shared")
    with pytest.raises(Conflict) as caught:
        world.jobs().submit("fanout", {}, idempotency_key="shared")
    assert caught.value.field == "idempotency_key"


@pytest.mark.parametrize("other", ["KEY-a", "key-a ", "kéy-a"])
def test_idempotency_keys_are_compared_exactly(world: World, other: str) -> None:
    # Given a job submitted with one key
    first, _ = world.jobs().submit("plain", {}, idempotency_key="key-a")

    # When another caller uses a key that differs by case, accent or a trailing space
    try:
        second, created = world.jobs().submit("plain", {}, idempotency_key=other)
    except ProdinfValidationError as exc:
        # Then it is either refused as a key prodinf cannot compare exactly,
        assert exc.field == "idempotency_key"
        return

    # or it is a different key: a new job, never the first caller's
    assert created
    assert second["id"] != first["id"]
    assert world.store.describe(second["id"])["idempotency_key"] == other


@pytest.mark.parametrize(
    ("params", "submitted_by"),
    [
        ({"payload": {"text": "nul\x00byte"}}, None),
        ({"payload": None}, "nul\x00byte"),
        ({"payload": {"text": "lone \ud800 surrogate"}}, None),
        ({"payload": None}, "lone \ud800 surrogate"),
    ],
    ids=[
        "nul-in-params",
        "nul-in-submitted_by",
        "surrogate-in-params",
        "surrogate-in-submitted_by",
    ],
)
def test_unstorable_characters_are_refused_or_kept_never_a_driver_error(
    world: World, params: dict[str, Any], submitted_by: str | None
) -> None:
    # When input carries a NUL or a lone surrogate (both valid JSON: "\u0000", "\ud800")
    try:
        job, _ = world.jobs().submit("plain", params, submitted_by=submitted_by)
    except ProdinfValidationError as exc:
        # Then either it is refused as bad input, naming the field,
        assert exc.field is not None
        assert exc.field.split(".")[0] in ("params", "submitted_by")
        return
    # or it is stored exactly as given
    stored = world.store.describe(job["id"])
    assert (stored["params"], stored["submitted_by"]) == (params, submitted_by)


def test_too_long_submitted_by_is_refused_on_every_backend(world: World) -> None:
    # The column holds 200 characters: SQLite would keep more, the servers refuse.
    with pytest.raises(ProdinfValidationError) as caught:
        world.jobs().submit("plain", {}, submitted_by="u" * 201)
    assert caught.value.field == "submitted_by"
    assert world.store.list_jobs()[1] == 0


def test_store_errors_do_not_carry_the_values_written(world: World) -> None:
    # Given a write that the database refuses (a duplicate id), carrying a secret
    job_id = world.submit("plain")
    secret = "http://user:hunter2@example.org/"

    # When it fails
    with pytest.raises(IntegrityError) as caught, world.store.session() as session:
        now = datetime.now(UTC)
        session.add(
            JobRow(
                id=job_id,
                kind="plain",
                queue="jobs",
                status="queued",
                params={"url": secret},
                progress_done=0,
                progress_total=0,
                cancel_requested=False,
                created_at=now,
                updated_at=now,
            )
        )

    # Then the error (which ends up in logs) does not carry the values written
    assert "hunter2" not in "".join(traceback.format_exception(caught.value))


# -- listing ---------------------------------------------------------------------------------


def test_list_jobs_filters_orders_newest_first_and_pages(world: World) -> None:
    # Given three plain jobs and two fanout jobs, one of the plain ones cancelled
    plain = [world.submit("plain", i) for i in range(3)]
    fanout = [world.submit("fanout", i) for i in range(2)]
    world.jobs().cancel(plain[1])
    newest_first = [*reversed(fanout), *reversed(plain)]

    # Then listing shows them newest first, filtered, with totals for paging
    items, total = world.store.list_jobs()
    assert ([j["id"] for j in items], total) == (newest_first, 5)
    items, total = world.store.list_jobs(kind="plain")
    assert ([j["id"] for j in items], total) == (list(reversed(plain)), 3)
    items, total = world.store.list_jobs(status="cancelled")
    assert ([j["id"] for j in items], total) == ([plain[1]], 1)
    items, total = world.store.list_jobs(kind="fanout", status="queued")
    assert ([j["id"] for j in items], total) == (list(reversed(fanout)), 2)
    assert world.store.list_jobs(kind="nothing") == ([], 0)

    pages = [world.store.list_jobs(limit=2, offset=offset) for offset in (0, 2, 4, 6)]
    assert [[j["id"] for j in page] for page, _ in pages] == [
        newest_first[0:2],
        newest_first[2:4],
        newest_first[4:],
        [],
    ]
    assert {total for _, total in pages} == {5}
    assert set(items[0]) >= {"id", "kind", "status", "progress", "created_at", "updated_at"}

    assert world.store.counts() == {"queued": 4, "cancelled": 1}


def test_counts_of_an_empty_store(world: World) -> None:
    assert world.store.counts() == {}
    assert world.store.list_jobs() == ([], 0)


# -- running ---------------------------------------------------------------------------------


def test_linear_flow_runs_each_step_once_in_order(world: World) -> None:
    # Given a submitted job
    job_id = world.submit("plain", {"n": 1})

    # When a runner drives it
    world.runner().drive(job_id)

    # Then every step ran once, in order, and the job succeeded with the last output
    assert world.lab.done(job_id) == [("run", "a"), ("run", "b"), ("run", "c")]
    job = world.store.describe(job_id)
    assert job["status"] == "succeeded"
    assert job["progress"]["done"] == 3
    assert job["result"] == {"step": "c", "after": ["a", "b"], "payload": {"n": 1}}
    assert [s["status"] for s in job["steps"]] == ["succeeded"] * 3
    assert parse(job["started_at"]) <= parse(job["finished_at"])
    assert world.events(job_id) == [
        ("job.submitted", None),
        ("step.started", "a"),
        ("step.succeeded", "a"),
        ("step.started", "b"),
        ("step.succeeded", "b"),
        ("step.started", "c"),
        ("step.succeeded", "c"),
        ("job.succeeded", None),
    ]

    # And driving a finished job does nothing
    world.runner().drive(job_id)
    assert len(world.lab.done(job_id)) == 3


def test_failing_flow_reverts_in_reverse_order(world: World) -> None:
    # Given a job whose last step fails for good
    world.lab.broken.add("d")
    job_id = world.submit("undoable")

    # When a runner drives it
    world.runner().drive(job_id)

    # Then the steps that succeeded are undone, latest first, and the job is reverted
    assert world.lab.done(job_id) == [
        ("run", "a"),
        ("run", "b"),
        ("run", "c"),
        ("run", "d"),
        ("revert", "c"),
        ("revert", "b"),
        ("revert", "a"),
    ]
    job = world.store.describe(job_id)
    assert job["status"] == "reverted"
    assert world.steps(job_id) == {"a": "reverted", "b": "reverted", "c": "reverted", "d": "failed"}
    assert job["error"]["type"] == "PermanentError"
    assert job["error"]["message"] == "d is broken"
    assert job["error"]["step"] == "d"


def test_retry_resumes_from_the_failed_step(world: World) -> None:
    # Given a job that failed at step b
    world.lab.broken.add("b")
    job_id = world.submit("plain")
    world.runner().drive(job_id)
    assert world.store.describe(job_id)["status"] == "failed"
    assert world.steps(job_id) == {"a": "succeeded", "b": "failed", "c": "pending"}

    # When the cause is fixed and the job is retried
    world.lab.broken.clear()
    world.published.clear()
    summary = world.jobs().retry(job_id)
    assert summary["status"] == "queued"
    assert world.published == [(job_id, "jobs")]
    world.runner().drive(job_id)

    # Then a is not run again, b and c run, and the job succeeds
    assert world.lab.done(job_id) == [("run", "a"), ("run", "b"), ("run", "b"), ("run", "c")]
    job = world.store.describe(job_id)
    assert (job["status"], job["error"]) == ("succeeded", None)
    assert ("job.retried", None) in world.events(job_id)

    # And a job that succeeded cannot be retried
    with pytest.raises(Conflict):
        world.jobs().retry(job_id)


def test_cancel_a_queued_job_and_not_a_finished_one(world: World) -> None:
    job_id = world.submit("plain")

    summary = world.jobs().cancel(job_id)

    assert summary["status"] == "cancelled"
    assert set(world.steps(job_id).values()) == {"cancelled"}
    world.runner().drive(job_id)
    assert world.lab.done(job_id) == []
    with pytest.raises(Conflict):
        world.jobs().cancel(job_id)
    with pytest.raises(NotFound):
        world.jobs().cancel("no-such-job")


def test_a_step_output_that_is_not_json_fails_the_job(world: World) -> None:
    # Given a kind whose step returns NaN (json.dumps accepts it; JSON does not)
    job_id = world.submit("not_json")

    # When a runner drives it
    world.runner().drive(job_id)

    # Then the job fails permanently with a clear error, the same on every backend
    job = world.store.describe(job_id)
    assert job["status"] == "failed"
    assert job["error"]["type"] == "PermanentError"
    assert "JSON" in job["error"]["message"]


# -- concurrency -----------------------------------------------------------------------------


def test_two_runners_on_one_job_never_run_a_step_twice(world: World) -> None:
    # Given a job whose three first steps can run in parallel, and a second worker
    # with its own connections
    world.lab.delay = 0.05
    other = JobStore(world.store.url)
    runners = [world.runner(), world.runner(store=other)]
    try:
        for _round in range(3):
            job_id = world.submit("fanout")

            # When both workers drive it at the same instant
            def drive(i: int, job_id: str = job_id) -> None:
                runners[i].drive(job_id)

            at_once(2, drive)

            # Then every step ran exactly once and the job finished
            done = world.lab.done(job_id)
            assert sorted(done) == [("run", s) for s in ("join", "p1", "p2", "p3")]
            assert done[-1] == ("run", "join")
            assert world.store.describe(job_id)["status"] == "succeeded"
    finally:
        other.dispose()


def test_a_step_whose_lease_expired_is_taken_over(world: World, tmp_path: Path) -> None:
    # Given a worker that died in the middle of step b, holding a short lease
    settings = Settings(home=tmp_path / "lease", lease_seconds=0.5)
    world.lab.crash.add("b")
    job_id = world.submit("plain")
    with pytest.raises(WorkerDied):
        world.runner(settings=settings).drive(job_id)
    assert world.steps(job_id) == {"a": "succeeded", "b": "running", "c": "pending"}

    # When another worker drives the job while the lease still holds
    world.runner(settings=settings).drive(job_id)

    # Then it leaves the step alone
    assert world.lab.count(job_id, "run", "b") == 1

    # When it drives the job after the lease ran out
    time.sleep(0.6)
    world.runner(settings=settings).drive(job_id)

    # Then it resumes b (the step runs again: steps are idempotent) and finishes the job
    assert world.lab.done(job_id) == [("run", "a"), ("run", "b"), ("run", "b"), ("run", "c")]
    assert world.store.describe(job_id)["status"] == "succeeded"
    assert ("step.resumed", "b") in world.events(job_id)


def test_heartbeat_and_a_runner_deciding_the_job_do_not_deadlock(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a worker running a long step, its heartbeat renewing the lease often
    settings = Settings(home=tmp_path / "beat", lease_seconds=0.3)
    job_id = world.submit("gated")
    other = JobStore(world.store.url)
    caplog.set_level(logging.WARNING, logger="prodinf.engine")
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(world.runner(settings=settings).drive, job_id)
        try:
            deadline = time.monotonic() + 10
            while world.lab.count(job_id, "run", "hold") == 0:
                assert time.monotonic() < deadline, "the step never started"
                time.sleep(0.01)

            # When another worker decides the job's next step meanwhile, locking as
            # Runner._advance does: the job row, a heartbeat later, then its steps
            error: BaseException | None = None
            try:
                with other.session() as session:
                    session.execute(select(JobRow.id).where(JobRow.id == job_id).with_for_update())
                    time.sleep(0.25)  # the heartbeat (every 0.1 s) runs now
                    session.execute(
                        select(StepRow.id).where(StepRow.job_id == job_id).with_for_update()
                    ).all()
            except Exception as exc:
                error = exc
        finally:
            world.lab.gate.set()
            running.result(timeout=30)
            other.dispose()

    # Then neither side was chosen as a deadlock victim
    beats_failed = [r.getMessage() for r in caplog.records if "heartbeat" in r.getMessage()]
    assert error is None, f"the runner's transaction failed: {error}"
    assert beats_failed == []
    # and the job finished, its long step run once
    assert world.store.describe(job_id)["status"] == "succeeded"
    assert world.lab.count(job_id, "run", "hold") == 1


def test_concurrent_reconcilers_publish_each_due_job_once(world: World, tmp_path: Path) -> None:
    # Given twelve jobs whose messages may have been lost (queued past redrive_after)
    quick = Settings(home=tmp_path / "quick", redrive_after=0.05)
    ids = [world.jobs(quick).submit("plain", {})[0]["id"] for _ in range(12)]
    ids.append(world.jobs(quick).submit("fanout", {})[0]["id"])
    time.sleep(0.1)
    world.published.clear()

    # When two reconcilers run at the same instant
    counts = at_once(2, lambda i: reconcile(world.store, world.publish, redrive_after=60.0))

    # Then each due job was published exactly once, to its own queue
    assert sum(counts) == 13
    assert sorted(world.published) == sorted(
        [(job_id, "jobs") for job_id in ids[:-1]] + [(ids[-1], "handover")]
    )
    # and none is due again until redrive_after has passed
    assert reconcile(world.store, world.publish, redrive_after=60.0) == 0


def test_reconciler_publishes_only_the_queues_asked_for(world: World, tmp_path: Path) -> None:
    quick = Settings(home=tmp_path / "quick", redrive_after=0.05)
    plain = world.jobs(quick).submit("plain", {})[0]["id"]
    fanout = world.jobs(quick).submit("fanout", {})[0]["id"]
    time.sleep(0.1)
    world.published.clear()

    assert reconcile(world.store, world.publish, redrive_after=60.0, queues=["handover"]) == 1
    assert world.published == [(fanout, "handover")]
    assert reconcile(world.store, world.publish, redrive_after=60.0) == 1
    assert world.published[-1] == (plain, "jobs")


def test_url_watches_are_shared_and_wake_their_steps(world: World) -> None:
    # Given five jobs waiting on one URL, and two on a URL that answers 404
    server = StatusServer()
    server.start()
    try:
        shared, missing = f"{server.base}/job/w?running=1", f"{server.base}/missing"
        jobs = world.jobs()
        ids = [jobs.submit("watcher", {"url": shared})[0]["id"] for _ in range(5)]
        bad = [jobs.submit("watcher", {"url": missing})[0]["id"] for _ in range(2)]
        runner = world.runner()
        for job_id in ids + bad:
            runner.drive(job_id)
        assert {world.store.describe(j)["status"] for j in ids + bad} == {"waiting"}

        def looks() -> int:
            with world.store.session() as session:
                session.execute(
                    update(WatchRow).values(next_look_at=utcnow() - timedelta(seconds=1))
                )
            return look_due(world.store)

        # When the watches are looked at: once per URL (running; 404)
        assert looks() == 2
        assert server.looked("/job/w") == 1
        # then again (complete; a second 404, which is max_errors)
        assert looks() == 2
        assert server.looked("/job/w") == 2 and server.looked("/missing") == 2
    finally:
        server.stop()

    # Then every step was woken with what its URL said, and the watches are gone
    world.published.clear()
    assert reconcile(world.store, world.publish, redrive_after=60.0) == 7
    for job_id in ids + bad:
        runner.drive(job_id)
    results = [world.store.describe(j)["result"] for j in ids + bad]
    assert [r["outcome"] for r in results] == ["complete"] * 5 + ["failed"] * 2
    assert all(r["document"]["status"] == "complete" for r in results[:5])
    assert "answered HTTP 404" in results[5]["reason"]
    with world.store.session() as session:
        assert session.scalars(select(WatchRow)).all() == []
        assert session.scalars(select(WatcherRow)).all() == []


def test_steps_that_start_watching_one_new_url_at_once_share_one_watch(world: World) -> None:
    # Given six jobs about to watch the same URL, which nobody watches yet
    url = f"http://127.0.0.1:9/race-{uuid.uuid4().hex}"
    ids = [world.jobs().submit("watcher", {"url": url})[0]["id"] for _ in range(6)]

    # When six runners record their waits at the same instant
    at_once(6, lambda i: world.runner().drive(ids[i]))

    # Then every step waits, watching the one watch of that URL
    assert {world.store.describe(j)["status"] for j in ids} == {"waiting"}
    with world.store.session() as session:
        assert len(session.scalars(select(WatchRow)).all()) == 1
        assert len(session.scalars(select(WatcherRow)).all()) == 6


def test_reconciler_ignores_finished_jobs(world: World, tmp_path: Path) -> None:
    quick = Settings(home=tmp_path / "quick", redrive_after=0.05)
    job_id = world.jobs(quick).submit("plain", {})[0]["id"]
    world.runner().drive(job_id)
    with world.store.session() as session:  # even with a stale next_run_at left behind
        session.execute(
            update(JobRow).where(JobRow.id == job_id).values(next_run_at=datetime.now(UTC))
        )
    time.sleep(0.01)
    world.published.clear()

    assert reconcile(world.store, world.publish, redrive_after=60.0) == 0
    assert world.published == []


# -- availability ----------------------------------------------------------------------------

PASSWORD = "s3cr3t-pw"


def unreachable(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "postgresql":
        yield f"postgresql+psycopg://prodinf:{PASSWORD}@127.0.0.1:1/prodinf"
    elif backend == "mysql":
        yield f"mysql+pymysql://prodinf:{PASSWORD}@127.0.0.1:1/prodinf"
    else:
        yield f"sqlite:///{tmp_path}"  # a directory, not a file
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        yield f"sqlite:///{blocker}/store.sqlite"  # under a file: cannot be created


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"])
def test_an_unreachable_store_raises_store_unavailable(backend: str, tmp_path: Path) -> None:
    # Given a store URL nothing answers at (no server needed: that is the point)
    for url in unreachable(backend, tmp_path):
        # When it is used
        with pytest.raises(StoreUnavailable) as caught:
            store = JobStore(url)
            try:
                store.ping()
            finally:
                store.dispose()

        # Then the error is prodinf's transient one, without the password
        assert PASSWORD not in str(caught.value)
        assert backend in str(caught.value)


# -- the fixture itself ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_fresh_store_creates_a_database_that_does_not_exist_yet(
    backend: str, tmp_path: Path
) -> None:
    # Guards conftest.fresh_store: on a new CI server the test database is missing.
    url = make_url(backend_url(backend, tmp_path))
    name = f"prodinf_new_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        url.set(database="postgres" if backend == "postgresql" else "mysql"),
        isolation_level="AUTOCOMMIT",
    )
    try:
        store = fresh_store(url.set(database=name).render_as_string(hide_password=False))
        store.ping()
        store.dispose()
    finally:
        with admin.connect() as conn:
            quoted = f'"{name}"' if backend == "postgresql" else f"`{name}`"
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))
        admin.dispose()
