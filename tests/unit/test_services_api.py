"""``/api/v1/services`` on the embedded portal: each service as its file states it, with
the names of the variables that hold its token and secret, never their values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from flask.testing import FlaskClient

from prodinf.config import Settings
from prodinf.remote.services import DEFAULT_SERVICES

TOKEN = "tok-Wp3-known-secret"
SECRET = "sec-Hq8-known-secret"
PASSWORD = "pw-Rt5-known-secret"


@pytest.fixture
def settings(home: Path, tmp_path: Path) -> Settings:
    """The shipped example, and one more service whose URL carries a password."""
    document = yaml.safe_load(DEFAULT_SERVICES.read_text())
    document["services"].append(
        {
            "name": "legacy",
            "type": "prodinf",
            "url": f"https://robot:{PASSWORD}@legacy.example.org",
        }
    )
    path = tmp_path / "services.yaml"
    path.write_text(yaml.safe_dump(document))
    return Settings(home=home, services=path)


def test_services_are_listed_with_their_variables_never_their_values(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the datacheck token and the staging secret set, the staging token not
    monkeypatch.setenv("DATACHECK_TOKEN", TOKEN)
    monkeypatch.setenv("STAGING_PRODINF_WEBHOOK_SECRET", SECRET)
    monkeypatch.delenv("STAGING_PRODINF_TOKEN", raising=False)

    # When the services are listed
    answer = client.get("/api/v1/services")

    # Then each is shown with the names of its variables and whether each is set
    assert answer.status_code == 200
    assert answer.json is not None
    items = {s["name"]: s for s in answer.json["items"]}
    assert list(items) == ["staging-prodinf", "datacheck", "legacy"]
    staging, datacheck = items["staging-prodinf"], items["datacheck"]
    assert (staging["type"], staging["url"]) == ("prodinf", "https://staging-prodinf.example.org")
    assert (staging["token_env"], staging["token_set"]) == ("STAGING_PRODINF_TOKEN", False)
    assert (staging["secret_env"], staging["secret_set"]) == (
        "STAGING_PRODINF_WEBHOOK_SECRET",
        True,
    )
    assert (datacheck["token_env"], datacheck["token_set"]) == ("DATACHECK_TOKEN", True)
    # And an http service with how it is driven: the request, pointers and vocabularies
    assert datacheck["submit"]["method"] == "POST" and datacheck["submit"]["path"] == "/runs"
    assert (datacheck["job_id"], datacheck["status"]) == ("/run/run_ref", "/run/state")
    assert datacheck["pending"] == ["incomplete", "running"]
    assert datacheck["succeeded"] == ["complete"]
    assert datacheck["failed"] == ["failed", "dc-run-error"]
    assert (datacheck["poll_interval"], datacheck["deadline"], datacheck["timeout"]) == (
        20.0,
        21600.0,
        15.0,
    )
    # And no token, secret or password anywhere in the answer
    assert items["legacy"]["url"] == "https://robot:***@legacy.example.org"
    for value in (TOKEN, SECRET, PASSWORD):
        assert value not in answer.get_data(as_text=True)


def test_one_service_is_shown_and_an_unknown_one_is_404(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATACHECK_TOKEN", TOKEN)

    one = client.get("/api/v1/services/datacheck")
    assert one.status_code == 200
    assert one.json is not None and one.json["name"] == "datacheck"
    assert TOKEN not in one.get_data(as_text=True)

    missing = client.get("/api/v1/services/nope")
    assert missing.status_code == 404
    assert missing.json == {"message": "no service 'nope'", "field": "name"}
