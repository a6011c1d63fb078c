"""Who may do what, route by route (``PRODINF_AUTH=users``).

Every route of the app's URL map is tried without credentials, with a bad token, an
expired one, a revoked one, and as each role; the answer expected for each comes from
:data:`EXPECTED`, this test's own table. A route added to the app without an entry
here fails the test: nobody adds an endpoint without saying who may use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from prodinf.config import Settings
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from prodinf.store import upgrade
from prodinf.store.models import TOKENS
from prodinf.store.types import utcnow
from prodinf.store.users import Users

#: (endpoint, method) -> who may: "open" (anyone), a role (it and the ones above it),
#: or "own" (a submitter on their own work, an operator or admin on anyone's).
EXPECTED: dict[tuple[str, str], str] = {
    ("health", "GET"): "open",
    ("static", "GET"): "open",
    ("restx_doc.static", "GET"): "open",
    ("api_docs", "GET"): "open",
    ("api.specs", "GET"): "open",
    ("api.root", "GET"): "open",
    ("auth.login", "GET"): "open",
    ("auth.login", "POST"): "open",
    ("auth.logout", "POST"): "open",
    ("api.callbacks_callback", "POST"): "open",
    ("api.jobs_job_list", "GET"): "viewer",
    ("api.jobs_job_list", "POST"): "submitter",
    ("api.jobs_job_item", "GET"): "viewer",
    ("api.jobs_job_logs", "GET"): "viewer",
    ("api.jobs_job_cancel", "POST"): "own",
    ("api.jobs_job_retry", "POST"): "own",
    ("api.kinds_kind_list", "GET"): "viewer",
    ("api.kinds_kind_item", "GET"): "viewer",
    ("api.notifications_notification_list", "POST"): "submitter",
    ("api.events_event_list", "GET"): "viewer",
    ("api.events_event_list", "POST"): "submitter",
    ("api.events_event_item", "GET"): "viewer",
    ("api.subscriptions_subscription_list", "GET"): "viewer",
    ("api.services_service_list", "GET"): "viewer",
    ("api.services_service_item", "GET"): "viewer",
    ("api.handovers_handover_list", "GET"): "viewer",
    ("api.handovers_handover_list", "POST"): "submitter",
    ("api.handovers_handover_item", "GET"): "viewer",
    ("api.handovers_bulk_handover", "POST"): "submitter",
    ("api.handovers_bulk_item", "GET"): "viewer",
    ("api.handovers_handover_stop", "POST"): "own",
    ("api.handovers_handover_restart", "POST"): "own",
    ("api.databases_database_list", "GET"): "submitter",
    ("api.datasets_dataset_list", "GET"): "viewer",
    ("api.datasets_dataset_item", "GET"): "viewer",
    ("api.users_user_list", "GET"): "admin",
    ("api.users_user_list", "POST"): "admin",
    ("api.users_user_item", "GET"): "admin",
    ("api.users_user_item", "PATCH"): "admin",
    ("api.users_token_list", "GET"): "admin",
    ("api.users_token_list", "POST"): "admin",
    ("api.users_token_item", "GET"): "admin",
    ("api.users_token_item", "DELETE"): "admin",
    ("api.users_me", "GET"): "viewer",
    ("web.jobs", "GET"): "viewer",
    ("web.job", "GET"): "viewer",
    ("web.new_job", "GET"): "submitter",
    ("web.submit_job", "POST"): "submitter",
    ("web.cancel", "POST"): "own",
    ("web.retry", "POST"): "own",
    ("web.new_notification", "GET"): "submitter",
    ("web.submit_notification_form", "POST"): "submitter",
    ("web.outbox", "GET"): "viewer",
    ("web.outbox_mail", "GET"): "viewer",
    ("events.events", "GET"): "viewer",
    ("events.event", "GET"): "viewer",
    ("events.new_event", "GET"): "submitter",
    ("events.submit_event", "POST"): "submitter",
    ("handover_pages.handovers", "GET"): "viewer",
    ("handover_pages.handover", "GET"): "viewer",
    ("handover_pages.bulk", "GET"): "viewer",
    ("handover_pages.new_handover", "GET"): "submitter",
    ("handover_pages.new_handover", "POST"): "submitter",
    ("handover_pages.bulk_form", "GET"): "submitter",
    ("handover_pages.bulk_form", "POST"): "submitter",
    ("handover_pages.stop_handover", "POST"): "own",
    ("handover_pages.restart_handover", "POST"): "own",
    ("datasets.datasets", "GET"): "viewer",
    ("dashboard.dashboard", "GET"): "viewer",
    ("datasets.dataset", "GET"): "viewer",
    ("metrics", "GET"): "viewer",  # PRODINF_METRICS_AUTH=token, the default
}
ROLES = ("viewer", "submitter", "operator", "admin")
#: The users: one per role, and a second submitter who owns nothing.
PEOPLE = {"vic": "viewer", "sue": "submitter", "sam": "submitter", "ola": "operator",
          "ada": "admin"}  # fmt: skip


class Stack:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self.rt: Runtime = app.extensions["prodinf"]
        self.users = Users(self.rt.store)
        self.tokens: dict[str, str] = {}
        for name, role in PEOPLE.items():
            self.users.add(name, role, f"{name}-password-long")
            self.tokens[name], _ = self.users.create_token(name)
        self.tokens["expired"], made = self.users.create_token("ada")
        with self.rt.store.transaction() as conn:
            conn.execute(
                update(TOKENS)
                .where(TOKENS.c.id == made.id)
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
        self.tokens["revoked"], made = self.users.create_token("ada")
        self.users.revoke(made.id)
        self.tokens["read-only"], _ = self.users.create_token("ada", read_only=True)
        # a job of sue's, which sue (and operators) may act on, sam may not
        job, _ = self.rt.jobs.submit(
            "http_get", {"url": "http://127.0.0.1:9/x"}, submitted_by="sue"
        )
        self.job = str(job["id"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One portal for the module: what a call changes (a job cancelled, then retried)
    changes no answer's being a refusal or not."""
    home = tmp_path_factory.mktemp("access") / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("prodinf.portal.auth_views.FAILED_DELAY", 0.0)
        settings = Settings(home=home, auth="users", reconcile_interval=0.2)
        app = create_app(settings)
        app.config.update(WTF_CSRF_ENABLED=False, RATELIMIT_ENABLED=False)
        upgrade(app.extensions["prodinf"].store)
        made = Stack(app)
        yield made
        made.rt.close()


def url_of(app: Flask, rule: Any, job: str) -> str:
    args = {}
    for name in rule.arguments:
        if name in ("job_id", "token"):
            args[name] = job
        elif name == "filename":
            args[name] = "style.css" if rule.endpoint == "static" else "swagger-ui.css"
        else:
            args[name] = "nothing-here"
    with app.test_request_context():
        return str(rule.build(args, append_unknown=False)[1])


def routes(app: Flask) -> list[tuple[str, str, str]]:
    found = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((rule.endpoint, method, rule.rule))
    return found


def call(client: FlaskClient, method: str, path: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if path.startswith("/api/") and method != "GET":
        answer = client.open(path, method=method, json={}, headers=headers)
    else:
        answer = client.open(path, method=method, headers=headers, data={})
    answer.get_data()  # read, then closed: a static file's answer holds the file open
    answer.close()
    return answer


def allowed(rule: str, name: str | None) -> bool:
    role = PEOPLE.get(name or "")
    if rule == "open":
        return True
    if role is None:
        return False
    if rule == "own":
        return name == "sue" or ROLES.index(role) >= ROLES.index("operator")
    return ROLES.index(role) >= ROLES.index(rule)


def test_every_route_has_an_entry_in_the_table(stack: Stack) -> None:
    """Given the app's URL map, then every route and method is in EXPECTED, and every
    entry of EXPECTED is a route: a route added later must say who may use it."""
    present = {(endpoint, method) for endpoint, method, _ in routes(stack.app)}
    missing = sorted(present - set(EXPECTED))
    assert not missing, f"add these to EXPECTED (and portal/access.py's ACCESS): {missing}"
    assert not sorted(set(EXPECTED) - present), "EXPECTED names routes the app lacks"


@pytest.mark.parametrize("who", ["nobody", "bad", "expired", "revoked", *PEOPLE])
def test_each_route_answers_as_the_table_says(stack: Stack, who: str) -> None:
    """Given a caller (no credentials, a malformed, expired or revoked token, or a user
    of each role), when each route is called, then it is refused exactly when the
    table says: the API with 401 (no valid token) or 403 (naming the role), a page
    with a redirect to the login or 403."""
    wrong = []
    for endpoint, method, rule_text in routes(stack.app):
        rule = next(r for r in stack.app.url_map.iter_rules() if r.rule == rule_text)
        path = url_of(stack.app, rule, stack.job)
        expected = EXPECTED[(endpoint, method)]
        client = stack.app.test_client()
        token = None
        if who == "bad":
            token = "prodinf_000000000000_" + "x" * 43
        elif who in ("expired", "revoked"):
            token = stack.tokens[who]
        elif who in PEOPLE:
            token = stack.tokens[who]
            with client.session_transaction() as session:  # logged in to the pages
                session["_user_id"] = who
                session["_fresh"] = True
        answer = call(client, method, path, token)
        person = who if who in PEOPLE else None
        to_login = answer.status_code == 302 and "/login" in answer.headers.get("Location", "")
        refused = (
            answer.status_code == 403
            or (answer.status_code == 401 and path.startswith(("/api/", "/metrics")))
            or (to_login and not endpoint.startswith("auth."))  # logout goes to the login
        )
        if allowed(expected, person) == refused:
            wrong.append(f"{method} {path} ({expected}) as {who}: {answer.status_code}")
            continue
        if refused and path.startswith("/api/"):
            body = answer.get_json()
            if person is None:
                assert answer.status_code == 401, (path, who)
                assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            else:
                assert answer.status_code == 403, (path, who)
                assert "role" in body["message"] or "operator" in body["message"], body
    assert not wrong, "\n".join(wrong)


def test_a_read_only_token_only_reads(stack: Stack) -> None:
    """Given an admin's read-only token, then it reads, and anything else is a 403."""
    client = stack.app.test_client()
    token = {"Authorization": f"Bearer {stack.tokens['read-only']}"}
    assert client.get("/api/v1/jobs", headers=token).status_code == 200
    assert client.get("/api/v1/me", headers=token).get_json()["role"] == "viewer"
    answer = client.post(f"/api/v1/jobs/{stack.job}/cancel", json={}, headers=token)
    assert answer.status_code == 403
    assert client.get("/api/v1/users", headers=token).status_code == 403


def test_the_submitter_is_who_the_token_says(stack: Stack) -> None:
    """Given sue's token, when she submits claiming to be someone else (body and header),
    then the job is hers; when ola cancels it, the history names ola."""
    client = stack.app.test_client()
    sue = {"Authorization": f"Bearer {stack.tokens['sue']}", "X-Prodinf-User": "mallory"}
    made = client.post(
        "/api/v1/jobs",
        json={"kind": "http_get", "params": {"url": "http://127.0.0.1:9/y"},
              "submitted_by": "mallory"},
        headers=sue,
    )  # fmt: skip
    assert made.status_code == 201, made.get_data(as_text=True)
    job_id = made.get_json()["id"]
    assert stack.rt.store.describe(job_id)["submitted_by"] == "sue"

    ola = {"Authorization": f"Bearer {stack.tokens['ola']}"}
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", json={}, headers=ola).status_code == 200
    history = stack.rt.store.describe(job_id)["history"]
    cancelled = [h for h in history if h["event"] == "job.cancelled"]
    assert cancelled and cancelled[0]["data"] == {"actor": "ola"}


def test_the_api_document_declares_the_token(stack: Stack) -> None:
    spec = stack.app.test_client().get("/api/v1/swagger.json").get_json()
    assert spec["securityDefinitions"]["bearer"]["name"] == "Authorization"
    assert spec["security"] == [{"bearer": []}]
    # an open operation says it needs none: a remote service's signed callback
    assert spec["paths"]["/callbacks/{job_id}"]["post"]["security"] == []
