"""The job store contract for jobs: submitting, reading, listing and running them, one
suite run on every backend (SQLite, PostgreSQL, MariaDB).

Every test takes ``world`` (tests/world.py) on a freshly migrated store of one
backend, with the test kinds of tests/contract/lab.py: ``jobs`` to submit,
``runner`` to execute. ``publish`` records (job id, queue): the store is what is
tested here, not the broker. Read each test as Given / When / Then.
"""

from __future__ import annotations

import traceback
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from prodinf.exceptions import Conflict, NotFound
from prodinf.exceptions import ValidationError as ProdinfValidationError
from prodinf.limits import MAX_PARAM_TEXT
from prodinf.store import JobRow
from tests.contract.lab import Lab, at_once, parse
from tests.world import World

# -- submitting and reading ------------------------------------------------------------------


def test_submit_stores_the_job_its_steps_and_its_history(world: World) -> None:
    # When a job is submitted
    summary, created = world.jobs.submit(
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
    # When a job that does not exist is described, then it is not found, naming the id
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
    # as long as a string in params may be (longer is refused at submission)
    "long_text": ("lorem ipsum " * 6_000)[:MAX_PARAM_TEXT],
}


def test_params_and_results_round_trip_as_json(world: World) -> None:
    # Given a job whose params carry awkward JSON
    job_id = world.submit("plain", {"payload": JSON_VALUES})

    # When it runs to the end (the last step returns the payload it was given)
    world.runner.drive(job_id)

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
    first, _ = world.jobs.submit("plain", {})
    second, _ = world.jobs.submit("plain", {})

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
    world.runner.drive(first["id"])
    stamps = [parse(h["at"]) for h in world.store.describe(first["id"])["history"]]
    assert len(stamps) == 8  # submitted, 3 x (started, succeeded), succeeded
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)


def test_idempotency_key_gives_one_job_under_a_race(world: World) -> None:
    # When eight callers submit with the same key at the same instant
    results = at_once(8, lambda i: world.jobs.submit("plain", {}, idempotency_key="race-1"))

    # Then exactly one job exists, every caller got its id, and every message sent was
    # that job's (a caller that found it queued sent it again: a duplicate costs nothing)
    ids = {job["id"] for job, _ in results}
    assert len(ids) == 1
    assert sum(created for _, created in results) == 1
    assert world.store.list_jobs()[1] == 1
    assert set(world.published) == {(ids.pop(), "jobs")}


def test_idempotency_key_reused_for_another_kind_is_a_conflict(world: World) -> None:
    # Given a job submitted with a key
    world.jobs.submit("plain", {}, idempotency_key="shared")

    # When the key is used for a job of another kind, then it is a conflict naming the key
    with pytest.raises(Conflict) as caught:
        world.jobs.submit("fanout", {}, idempotency_key="shared")
    assert caught.value.field == "idempotency_key"


@pytest.mark.parametrize("other", ["KEY-a", "key-a ", "kéy-a"])
def test_idempotency_keys_are_compared_exactly(world: World, other: str) -> None:
    # Given a job submitted with one key
    first, _ = world.jobs.submit("plain", {}, idempotency_key="key-a")

    # When another caller uses a key that differs by case, accent or a trailing space
    try:
        second, created = world.jobs.submit("plain", {}, idempotency_key=other)
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
        job, _ = world.jobs.submit("plain", params, submitted_by=submitted_by)
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
    # When someone with a 201-character name submits, then it is refused naming the field
    with pytest.raises(ProdinfValidationError) as caught:
        world.jobs.submit("plain", {}, submitted_by="u" * 201)
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
    plain = [world.submit("plain", {"payload": i}) for i in range(3)]
    fanout = [world.submit("fanout", {"payload": i}) for i in range(2)]
    world.jobs.cancel(plain[1])
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
    # Given no job, then counts and lists are empty
    assert world.store.counts() == {}
    assert world.store.list_jobs() == ([], 0)


# -- running ---------------------------------------------------------------------------------


def test_linear_flow_runs_each_step_once_in_order(world: World, lab: Lab) -> None:
    # Given a submitted job
    job_id = world.submit("plain", {"payload": {"n": 1}})

    # When a runner drives it
    world.runner.drive(job_id)

    # Then every step ran once, in order, and the job succeeded with the last output
    assert lab.done(job_id) == [("run", "a"), ("run", "b"), ("run", "c")]
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
    world.runner.drive(job_id)
    assert len(lab.done(job_id)) == 3


def test_failing_flow_reverts_in_reverse_order(world: World, lab: Lab) -> None:
    # Given a job whose last step fails for good
    lab.broken.add("d")
    job_id = world.submit("undoable")

    # When a runner drives it
    world.runner.drive(job_id)

    # Then the steps that succeeded are undone, latest first, and the job is reverted
    assert lab.done(job_id) == [
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


def test_retry_resumes_from_the_failed_step(world: World, lab: Lab) -> None:
    # Given a job that failed at step b
    lab.broken.add("b")
    job_id = world.submit("plain")
    world.runner.drive(job_id)
    assert world.store.describe(job_id)["status"] == "failed"
    assert world.steps(job_id) == {"a": "succeeded", "b": "failed", "c": "pending"}

    # When the cause is fixed and the job is retried
    lab.broken.clear()
    world.published.clear()
    summary = world.jobs.retry(job_id)
    assert summary["status"] == "queued"
    assert world.published == [(job_id, "jobs")]
    world.runner.drive(job_id)

    # Then a is not run again, b and c run, and the job succeeds
    assert lab.done(job_id) == [("run", "a"), ("run", "b"), ("run", "b"), ("run", "c")]
    job = world.store.describe(job_id)
    assert (job["status"], job["error"]) == ("succeeded", None)
    assert ("job.retried", None) in world.events(job_id)

    # And a job that succeeded cannot be retried
    with pytest.raises(Conflict):
        world.jobs.retry(job_id)


def test_cancel_a_queued_job_and_not_a_finished_one(world: World, lab: Lab) -> None:
    # Given a queued job
    job_id = world.submit("plain")

    # When it is cancelled
    summary = world.jobs.cancel(job_id)

    # Then it and its steps are cancelled, and its message finds nothing to run
    assert summary["status"] == "cancelled"
    assert set(world.steps(job_id).values()) == {"cancelled"}
    world.runner.drive(job_id)
    assert lab.done(job_id) == []

    # And cancelling it again is a conflict; an unknown job is not found
    with pytest.raises(Conflict):
        world.jobs.cancel(job_id)
    with pytest.raises(NotFound):
        world.jobs.cancel("no-such-job")


def test_a_step_output_that_is_not_json_fails_the_job(world: World) -> None:
    # Given a kind whose step returns NaN (json.dumps accepts it; JSON does not)
    job_id = world.submit("not_json")

    # When a runner drives it
    world.runner.drive(job_id)

    # Then the job fails permanently with a clear error, the same on every backend
    job = world.store.describe(job_id)
    assert job["status"] == "failed"
    assert job["error"]["type"] == "PermanentError"
    assert "JSON" in job["error"]["message"]


def test_a_single_statement_commits_on_its_own_and_then_runs_its_hooks(world: World) -> None:
    # Given a job's rows written by one statement (JobStore.single: on PostgreSQL
    # without BEGIN and COMMIT round trips), with a hook for after its commit
    from prodinf.engine.newjob import new_job
    from prodinf.store.repository import after_commit
    from prodinf.store.submissions import insert_job
    from prodinf.store.types import utcnow

    kind = world.registry.get("plain")
    params = kind.validate({})
    new = new_job(kind, params.model_dump(mode="json"), kind.flow(params), world.settings, utcnow())
    ran: list[str] = []
    with world.store.single() as conn:
        new.insert(conn)
        after_commit(conn, lambda: ran.append("committed"))
        assert ran == []  # not before the statement's end
    # Then it is committed (another connection sees it) and the hook ran once
    assert ran == ["committed"]
    assert world.store.describe(new.id)["status"] == "queued"

    # When the same rows are written again (the id taken): the statement fails,
    # nothing more is written, and no hook runs
    with pytest.raises(IntegrityError), world.store.single() as conn:
        after_commit(conn, lambda: ran.append("again"))
        new.insert(conn)
    assert ran == ["committed"]
    with pytest.raises(IntegrityError):
        insert_job(world.store, new)
    assert len(world.store.describe(new.id)["steps"]) == len(new.steps)
