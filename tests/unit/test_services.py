"""The services file (``PRODINF_SERVICES``): checked when prodinf starts, naming the entry
and the field; tokens and secrets named by their environment variables, never written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from prodinf.config import Settings
from prodinf.exceptions import PermanentError, ValidationError
from prodinf.kinds.rules_files import check_rules_files
from prodinf.remote.pointer import MISSING, check_pointer, resolve
from prodinf.remote.services import (
    DEFAULT_SERVICES,
    HttpService,
    ProdinfService,
    Services,
    auth_headers,
    describe_service,
    load_services,
    secret_of,
    token_of,
)
from prodinf.status import StepStatus

ROOT = Path(__file__).resolve().parents[2]

HTTP: dict[str, Any] = {
    "name": "dc",
    "type": "http",
    "url": "https://dc.example.org/api",
    "token_env": "DC_TOKEN",
    "submit": {"path": "/runs", "body": {"db": "{{ params.database }}", "key": "{{ key }}"}},
    "job_id": "/job/ref",
    "status_url": "/runs/{{ job_id }}",
    "status": "/state",
    "pending": ["incomplete", "running"],
    "succeeded": ["Complete"],
    "failed": ["FAILED", "dc-run-error"],
}
PRODINF: dict[str, Any] = {
    "name": "other",
    "type": "prodinf",
    "url": "https://other.example.org",
    "token_env": "OTHER_TOKEN",
    "secret_env": "OTHER_SECRET",
}


def write(tmp_path: Path, *entries: dict[str, Any]) -> Path:
    path = tmp_path / "services.yaml"
    path.write_text(yaml.safe_dump({"services": list(entries)}))
    return path


def test_the_shipped_example_loads_with_both_types() -> None:
    # Given the example shipped with prodinf (config/services.yaml)
    services = load_services(None)

    # Then it has another prodinf and an HTTP service with its own words
    staging, datacheck = services.by_name["staging-prodinf"], services.by_name["datacheck"]
    assert isinstance(staging, ProdinfService)
    assert (staging.token_env, staging.secret_env) == (
        "STAGING_PRODINF_TOKEN",
        "STAGING_PRODINF_WEBHOOK_SECRET",
    )
    assert isinstance(datacheck, HttpService)
    assert datacheck.job_id == "/run/run_ref"
    assert datacheck.state_of("incomplete") == StepStatus.PENDING
    assert datacheck.state_of("complete") == StepStatus.SUCCEEDED
    assert datacheck.state_of("dc-run-error") == StepStatus.FAILED
    assert datacheck.state_of("Complete") is None  # matched exactly
    assert services.source == str(DEFAULT_SERVICES)
    # And the copy in config/ is the one shipped
    assert (ROOT / "config" / "services.yaml").read_text() == DEFAULT_SERVICES.read_text()


def test_a_good_file_loads_with_its_defaults(tmp_path: Path) -> None:
    services = load_services(write(tmp_path, PRODINF, HTTP))

    other, dc = services.services
    assert isinstance(other, ProdinfService) and isinstance(dc, HttpService)
    assert (other.poll_interval, other.deadline, other.timeout) == (30.0, 86400.0, 30.0)
    assert (dc.auth_header, dc.auth_scheme, dc.submit.method) == ("Authorization", "Bearer", "POST")
    assert dc.state_of("FAILED") == StepStatus.FAILED
    assert dc.url_for("/runs/7") == "https://dc.example.org/api/runs/7"
    assert dc.url_for("runs/7") == "https://dc.example.org/api/runs/7"
    assert dc.url_for("https://elsewhere.example.org/x") == "https://elsewhere.example.org/x"


def bad(**change: Any) -> dict[str, Any]:
    entry = {**HTTP, **change}
    return {k: v for k, v in entry.items() if v is not None}


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({**PRODINF, "colour": "red"}, "service 'other': colour: Extra inputs"),
        (bad(type="ftp"), "service 'dc': type: must be 'prodinf' or 'http', not 'ftp'"),
        (bad(type=None), "service 'dc': type: Field required"),
        (bad(poll_interval="soon"), "service 'dc': poll_interval: Input should be a valid number"),
        (bad(deadline=0), "service 'dc': deadline: Input should be greater than 0"),
        (bad(url="ftp://dc.example.org"), "service 'dc': url: Value error, must be an http(s)"),
        (bad(url="https://"), "service 'dc': url: Value error, must be an http(s) URL with a host"),
        (bad(url="https://x.org:port"), "service 'dc': url: Value error, is not a URL"),
        (bad(job_id="job/ref"), "service 'dc': job_id: Value error, 'job/ref' is not a JSON"),
        (bad(status="/a~2b"), "service 'dc': status: Value error, '/a~2b' is not a JSON pointer"),
        (bad(result="x"), "service 'dc': result: Value error, 'x' is not a JSON pointer"),
        (
            bad(failed=["dc-run-error", "Complete"]),
            "service 'dc': failed: Value error, 'Complete' is in both succeeded and failed",
        ),
        (
            bad(succeeded=["running"]),
            "service 'dc': succeeded: Value error, 'running' is in both pending and succeeded",
        ),
        (bad(pending=[]), "service 'dc': pending: List should have at least 1 item"),
        (bad(submit=None), "service 'dc': submit: Field required"),
        (bad(submit={"method": "GET"}), "service 'dc': submit.method: Input should be 'POST'"),
        (
            bad(submit={"body": {"db": "{{ params."}}),
            "service 'dc': submit.body: Value error, body.db: the template does not compile",
        ),
        (bad(status_url="/runs/{{ job_id"), "service 'dc': status_url: Value error, status_url:"),
        (bad(name="d c"), "service 'd c': name: Value error, must be 1 to 60"),
        (bad(headers={"Authorization": "Bearer x"}), "headers: Value error, 'Authorization'"),
        (bad(auth_header="X Key"), "service 'dc': auth_header: Value error"),
        (
            bad(url="https://u:p@dc.example.org"),
            "service 'dc': auth_header: Value error, the url's user:password goes in",
        ),
        ({**PRODINF, "secret_env": "other_secret"}, "service 'other': secret_env: Value error"),
        ({**PRODINF, "submit": {"path": "/x"}}, "service 'other': submit: Extra inputs"),
    ],
)
def test_a_bad_entry_is_refused_naming_it_and_the_field(
    tmp_path: Path, entry: dict[str, Any], says: str
) -> None:
    path = write(tmp_path, entry)
    with pytest.raises(ValidationError) as caught:
        load_services(path)
    assert caught.value.message.startswith(f"{path}: ")
    assert says in caught.value.message
    assert caught.value.field == "services"


@pytest.mark.parametrize("token", ["s3cr3t-abc123", "dc_token", "Bearer abc123", "DC TOKEN"])
def test_a_token_where_its_variable_belongs_is_refused_and_not_repeated(
    tmp_path: Path, token: str
) -> None:
    # Given a file that writes a token (or anything but a variable's name) in token_env
    path = write(tmp_path, bad(token_env=token))

    # Then it is refused, saying a variable's name belongs there, and the value is not shown
    with pytest.raises(ValidationError) as caught:
        load_services(path)
    assert "service 'dc': token_env: Value error, must be the NAME of an environment variable" in (
        caught.value.message
    )
    assert token not in caught.value.message


def test_a_password_in_a_bad_url_is_not_repeated(tmp_path: Path) -> None:
    path = write(tmp_path, bad(url="ftp://user:hunter2@dc.example.org"))
    with pytest.raises(ValidationError) as caught:
        load_services(path)
    assert "hunter2" not in caught.value.message


def test_a_name_used_twice_and_a_bad_shape_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="service 'dc': the name is used twice"):
        load_services(write(tmp_path, HTTP, {**PRODINF, "name": "dc"}))
    with pytest.raises(ValidationError, match="a list under `services`"):
        Services.from_document({"services": {"dc": HTTP}}, "f.yaml")
    with pytest.raises(ValidationError, match=r"unknown top-level field\(s\): \['extra'\]"):
        Services.from_document({"services": [], "extra": 1}, "f.yaml")
    with pytest.raises(ValidationError, match=r"f\.yaml: service 2: must be a mapping"):
        Services.from_document({"services": [HTTP, "dc"]}, "f.yaml")


def test_a_bad_file_stops_prodinf_at_start_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given PRODINF_SERVICES pointing at a file with a bad JSON pointer
    path = write(tmp_path, bad(job_id="ref"))
    monkeypatch.setenv("PRODINF_SERVICES", str(path))

    # When prodinf starts, then it stops naming the setting, the file, the entry and field
    with pytest.raises(ValidationError) as caught:
        check_rules_files(Settings(home=tmp_path))
    assert caught.value.message.startswith(f"invalid setting PRODINF_SERVICES: {path}: ")
    assert "service 'dc': job_id: " in caught.value.message
    assert caught.value.field == "PRODINF_SERVICES"


def test_a_missing_file_stops_prodinf_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="invalid setting PRODINF_SERVICES: cannot read"):
        check_rules_files(Settings(home=tmp_path, services=tmp_path / "nope.yaml"))


def test_tokens_and_secrets_come_from_the_variables_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other, dc = load_services(
        write(tmp_path, PRODINF, {**HTTP, "headers": {"X-Team": "dc"}})
    ).services
    assert isinstance(other, ProdinfService) and isinstance(dc, HttpService)

    # Given the variables unset: using the token fails naming the variable
    monkeypatch.delenv("DC_TOKEN", raising=False)
    with pytest.raises(PermanentError) as caught:
        auth_headers(dc)
    assert caught.value.message == (
        "service 'dc': the environment variable DC_TOKEN (token_env) is not set"
    )
    monkeypatch.setenv("OTHER_SECRET", "")
    with pytest.raises(PermanentError, match="OTHER_SECRET \\(secret_env\\) is not set"):
        secret_of(other)

    # Given them set: the token goes in the header the service names, after its scheme
    monkeypatch.setenv("DC_TOKEN", "tok-123")
    monkeypatch.setenv("OTHER_TOKEN", "tok-456")
    monkeypatch.setenv("OTHER_SECRET", "sec-789")
    assert auth_headers(dc) == {"X-Team": "dc", "Authorization": "Bearer tok-123"}
    assert token_of(other) == "tok-456" and secret_of(other) == "sec-789"
    bare = dc.model_copy(update={"auth_header": "X-Api-Key", "auth_scheme": ""})
    assert auth_headers(bare) == {"X-Team": "dc", "X-Api-Key": "tok-123"}
    # And a service naming no variable sends no token
    assert auth_headers(other.model_copy(update={"token_env": None})) == {}


def test_a_service_is_described_with_its_variables_never_their_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTHER_TOKEN", "tok-456")
    monkeypatch.delenv("OTHER_SECRET", raising=False)
    other = load_services(
        write(
            tmp_path,
            {**PRODINF, "url": "https://u:hunter2@other.example.org", "auth_header": "X-Token"},
        )
    ).services[0]

    shown = describe_service(other)

    assert shown["url"] == "https://u:***@other.example.org"
    assert (shown["token_env"], shown["token_set"]) == ("OTHER_TOKEN", True)
    assert (shown["secret_env"], shown["secret_set"]) == ("OTHER_SECRET", False)
    assert "tok-456" not in repr(shown) and "hunter2" not in repr(shown)


@pytest.mark.parametrize(
    ("pointer", "found"),
    [
        ("", {"a/b": 1, "m~n": [10, {"x": None}], "": 3}),
        ("/a~1b", 1),
        ("/m~0n/0", 10),
        ("/m~0n/1/x", None),
        ("/", 3),
        ("/m~0n/2", MISSING),
        ("/m~0n/01", MISSING),
        ("/m~0n/-", MISSING),
        ("/nope", MISSING),
        ("/a~1b/deeper", MISSING),
    ],
)
def test_json_pointers_find_what_rfc_6901_says(pointer: str, found: Any) -> None:
    document = {"a/b": 1, "m~n": [10, {"x": None}], "": 3}
    assert check_pointer(pointer) == pointer
    assert resolve(document, pointer) == found
