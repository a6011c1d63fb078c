"""The lifecycle's one home: every status in prodinf.status, and the API's enum made from it."""

from __future__ import annotations

import json

from prodinf.config import Settings
from prodinf.portal import create_app
from prodinf.status import ACTIVE, HELD, RETRYABLE, TERMINAL, JobStatus, StepStatus


def test_a_job_is_either_active_or_over() -> None:
    assert frozenset(JobStatus) == ACTIVE | TERMINAL
    assert not ACTIVE & TERMINAL
    assert RETRYABLE <= TERMINAL and JobStatus.SUCCEEDED not in RETRYABLE
    assert {StepStatus.RUNNING, StepStatus.REVERTING} == HELD


def test_a_status_read_back_as_text_is_the_member() -> None:
    """Given a status as a database gives it back (plain text),
    then it equals, hashes and serialises as the member."""
    stored = "waiting"

    assert stored == JobStatus.WAITING
    assert stored in ACTIVE
    assert {JobStatus.WAITING: 1}[stored] == 1
    assert json.dumps({"status": JobStatus.WAITING}) == '{"status": "waiting"}'


def test_the_openapi_document_lists_every_job_status(settings: Settings) -> None:
    """Given the portal, when a client reads its OpenAPI document,
    then the status enums are JobStatus' values, in order."""
    client = create_app(settings).test_client()

    document = client.get("/api/v1/swagger.json").get_json()

    status = document["definitions"]["Created"]["properties"]["status"]
    assert status["enum"] == [s.value for s in JobStatus]
