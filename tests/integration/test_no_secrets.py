"""No credential shows anywhere a user or an operator looks (issue 14).

Given prodinf on RabbitMQ + PostgreSQL with ``PRODINF_AUTH=users``, the portal served
over real HTTP, a worker per queue started as users start them, an SMTP server that
requires a login, and secrets planted where prodinf is told them: the store's own URI,
database URIs of jobs (one with an unencoded ``@``), the SMTP password, a service's URL
password, token and webhook secret, the admin's password and the API token every call
carries, and a second token given to jobs as a param (a URL's password, a ``token`` and
a ``password`` field);
when jobs that use them run and fail (healthcheck, register_metadata and copy_database
against a server that refuses, http_get and email_when_complete against a server that
quotes back what it was sent, remote_job on an HTTP job service and on another prodinf
that do the same, an event's process, a handover, and the mails and webhooks they send);
then no secret, in any form (URL-encoded, base64, basic auth), and no password hash or
token digest is in any API answer, page, log line, mail, history entry, step log,
stored result or CLI output. The stored inputs a job needs to run (its params, an
event's payload, its notify) are the only place a secret it was given may be kept.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from flask import Flask

from prodinf.config import Settings
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from prodinf.status import TERMINAL
from prodinf.store.users import Users
from tests.conftest import Processes, env_for
from tests.gates import MYSQL_URL, require
from tests.integration.browser import serve
from tests.integration.conftest import delete_queues, stack_settings
from tests.integration.exposure import (
    Exposure,
    Secret,
    basic_forms,
    forms_of,
    mail_text,
    store_rows,
)
from tests.integration.servers import Inbox, WebhookReceiver
from tests.loopback import Loopback, Reply, Request, free_port
from tests.pages import input_value
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

DB_PASSWORD = "dbpw-Quokka7731"  # a MariaDB user that does not exist
DOWN_PASSWORD = "dbpw-Wombat5512"  # a server that is not there
PG_PASSWORD = "pgpw-Quoll3318"  # a PostgreSQL role that does not exist
RAW_AT = "rawpw-Kiwi3@tailpart-Emu44"  # an unencoded '@': refused at submission
LIST_PASSWORD = "dbpw-Bandicoot905"  # a server to list databases of
STORE_PASSWORD = "storepw-Dingo2290"  # the job store's URI (trust auth ignores it)
SMTP_PASSWORD = "smtppw-Numbat4471"
SERVICE_PASSWORD = "svcpw-Possum8823"  # the HTTP job service's URL
SERVICE_TOKEN = "svctoken-Echidna6604"
PEER_TOKEN = "peertoken-Wallaby1178"
PEER_SECRET = "peersecret-Platypus332"
HOOK_PASSWORD = "hookpw-Cassowary81"  # a webhook URL's
ADMIN_PASSWORD = "adminpw-Kookaburra63"

DATABASE = "homo_sapiens_core_115_38"
REFUSED_URI = f"mysql://leak_user:{DB_PASSWORD}@127.0.0.1:3306/{DATABASE}"
ADDRESS = "ops@example.org"

SERVICES = """
services:
  - name: datacheck
    type: http
    url: http://svcuser:{password}@127.0.0.1:{port}/dc
    token_env: LEAK_SVC_TOKEN
    auth_header: X-Api-Key
    auth_scheme: ""
    submit:
      path: /runs
      body: {{db: "{{{{ params.db }}}}", token: "{{{{ params.token }}}}", key: "{{{{ key }}}}"}}
    job_id: /run/ref
    status_url: "/runs/{{{{ job_id }}}}"
    status: /state
    pending: [running]
    succeeded: [complete]
    failed: [failed]
    message: /error
    deadline: 20
  - name: peer
    type: prodinf
    url: http://127.0.0.1:{port}/peer
    token_env: LEAK_PEER_TOKEN
    secret_env: LEAK_PEER_SECRET
    poll_interval: 0.3
    deadline: 20
"""

SUBSCRIPTIONS = """
subscriptions:
  - name: check
    on: [leak.check]
    run:
      service: datacheck
      params: {db: "{{ payload.database_uri }}", token: "{{ payload.token }}"}
"""


def quoted_back(request: Request) -> str:
    """Everything a request carried, as a careless service quotes it in an error."""
    said = f"{request.method} {request.target} {request.headers} {request.body.decode()}"
    login = request.headers.get("Authorization", "")
    if login.startswith("Basic "):
        said += " login " + base64.b64decode(login[6:]).decode()
    elif login:
        said += " token " + login.split()[-1]
    if "X-Api-Key" in request.headers:
        said += " key " + request.headers["X-Api-Key"]
    return said


class Echo:
    """A server that quotes back what it is sent: ``/status`` as a final status, ``/fail``
    in a 500, another prodinf's job (``/peer``) as its failure, anything else in a 422."""

    base = ""  # where it listens, once it does

    def __call__(self, request: Request) -> Reply:
        said = quoted_back(request)
        if request.path == "/status":
            return Reply(200, {"status": "failed", "said": said})
        if request.path == "/fail":
            return Reply(500, f"cannot: {said}")
        job = {"id": "p1", "url": f"{self.base}/peer/api/v1/jobs/p1", "status": "queued"}
        if request.path == "/peer/api/v1/jobs" and request.json()["kind"] == "healthcheck":
            return Reply(201, job)
        if request.path == "/peer/api/v1/jobs/p1":
            return Reply(200, {**job, "status": "failed", "error": {"message": said}, "s": said})
        return Reply(422, {"error": said, "message": said})


class LoginInbox(Inbox):
    """Keeps a mail only from a client that logged in."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.rcpt_tos.append(address)
        return "250 OK"


class AuthSmtp:
    """aiosmtpd on loopback that takes mail only after a login with the planted password
    (a login it offers without TLS: auth_required would warn, so RCPT asks for it)."""

    def __init__(self) -> None:
        self.inbox = LoginInbox()
        self.port = free_port()
        self.controller = Controller(
            self.inbox,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=self.check,
            auth_require_tls=False,
        )

    @staticmethod
    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok)


@pytest.fixture
def smtp_login() -> Iterator[AuthSmtp]:
    server = AuthSmtp()
    server.controller.start()
    yield server
    server.controller.stop()


@pytest.fixture
def quoter() -> Iterator[Loopback]:
    answer = Echo()
    with Loopback(answer) as server:
        answer.base = server.base
        yield server


@pytest.fixture
def deployment(
    request: pytest.FixtureRequest,
    home: Path,
    tmp_path: Path,
    smtp_login: AuthSmtp,
    quoter: Loopback,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Settings]:
    (tmp_path / "services.yaml").write_text(
        SERVICES.format(password=SERVICE_PASSWORD, port=quoter.port)
    )
    (tmp_path / "subscriptions.yaml").write_text(SUBSCRIPTIONS)
    require("MariaDB", MYSQL_URL)
    for name, value in (
        ("LEAK_SVC_TOKEN", SERVICE_TOKEN),
        ("LEAK_PEER_TOKEN", PEER_TOKEN),
        ("LEAK_PEER_SECRET", PEER_SECRET),
    ):
        monkeypatch.setenv(name, value)  # the portal's and, through env_for, the workers'
    base = stack_settings(home, "servers", request)
    assert base.database_url is not None
    store_url = base.database_url.replace("postgres@", f"postgres:{STORE_PASSWORD}@", 1)
    assert STORE_PASSWORD in store_url
    settings = base.model_copy(
        update={
            "database_url": store_url,
            "auth": "users",
            "public_url": f"http://127.0.0.1:{free_port()}",
            "services": tmp_path / "services.yaml",
            "subscriptions": tmp_path / "subscriptions.yaml",
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_login.port,
            "smtp_user": "prodinf-mailer",
            "smtp_password": SMTP_PASSWORD,
            "poll_interval": 0.3,
        }
    )
    settings = Settings(**settings.model_dump())  # validated again: SecretStr, paths
    yield settings
    delete_queues(settings)


@pytest.fixture
def portal(deployment: Settings) -> Iterator[Flask]:
    app = create_app(deployment)
    yield app
    app.extensions["prodinf"].close()


class Client:
    """The API over real HTTP with a bearer token; every answer is kept as exposed."""

    def __init__(self, base: str, token: str, exposure: Exposure) -> None:
        self.base, self.exposure = base, exposure
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        answer = self.http.request(method, self.base + path, timeout=30, **kwargs)
        self.exposure.add(f"{method} {path} ({answer.status_code})", answer.text)
        self.exposure.add(f"{method} {path} headers", dict(answer.headers))
        assert answer.status_code < 500, f"{method} {path}: {answer.text[:500]}"
        return answer

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.call("GET", path, **kwargs).json()

    def submit(self, kind: str, params: dict[str, Any], **extra: Any) -> str:
        answer = self.call("POST", "/api/v1/jobs", json={"kind": kind, "params": params, **extra})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])


def run_jobs(api: Client, quoter: Loopback, hook: WebhookReceiver, param_token: str) -> None:
    """Submit every job that uses a planted secret, and the requests refused at once."""
    login_url = quoter.base.replace("//", f"//bob:{param_token}@", 1)
    hook_url = hook.url.replace("//", f"//hook:{HOOK_PASSWORD}@", 1)
    notify = {"email": [ADDRESS], "webhook": hook_url}
    api.submit("healthcheck", {"database_uri": REFUSED_URI}, notify=notify)
    down = f"mysql://leak_user:{DOWN_PASSWORD}@127.0.0.1:{free_port()}/{DATABASE}"
    api.submit("register_metadata", {"database_uri": down}, notify={"email": [ADDRESS]})
    pg_uri = f"postgresql://leak_user:{PG_PASSWORD}@127.0.0.1:5432/{DATABASE}"
    api.submit("copy_database", {"src_uri": REFUSED_URI, "tgt_uri": pg_uri})
    api.submit("http_get", {"url": f"{login_url}/fail"}, notify={"email": [ADDRESS]})
    api.submit("wait_for_url", {"url": f"{login_url}/status", "interval": 0.5})
    answer = api.call(
        "POST", "/api/v1/notifications", json={"url": f"{login_url}/status", "address": ADDRESS}
    )
    assert answer.status_code == 201, answer.text
    api.submit(
        "remote_job", {"service": "datacheck", "params": {"db": REFUSED_URI, "token": param_token}}
    )
    peer = {"database_uri": REFUSED_URI, "token": param_token}
    for kind in ("healthcheck", "refused"):  # the peer takes one, refuses the other
        api.submit("remote_job", {"service": "peer", "kind": kind, "params": peer})
    api.submit("it_logs", {"password": param_token})
    payload = {"database_uri": REFUSED_URI, "token": param_token}
    event = {"type": "leak.check", "dataset": DATABASE, "payload": payload}
    assert api.call("POST", "/api/v1/events", json=event).status_code == 201
    # refused at once: the answers must not repeat what they refuse
    handover = {"src_uri": REFUSED_URI, "contact": ADDRESS, "comment": "leak test"}
    assert api.call("POST", "/api/v1/handovers", json=handover).status_code < 500
    raw = f"mysql://leak_user:{RAW_AT}@127.0.0.1:3306/{DATABASE}"
    for kind, params in (
        ("healthcheck", {"database_uri": raw}),
        ("healthcheck", {"database_uri": REFUSED_URI, "token": param_token}),  # not its field
        ("copy_database", {"src_uri": REFUSED_URI, "tgt_uri": REFUSED_URI}),
    ):
        answer = api.call("POST", "/api/v1/jobs", json={"kind": kind, "params": params})
        assert answer.status_code == 400, answer.text
    server = f"mysql://leak_user:{LIST_PASSWORD}@127.0.0.1:3306"
    assert api.call("GET", "/api/v1/databases", params={"server_uri": server}).status_code == 400


#: The jobs run_jobs submits (the event's one included).
SUBMITTED = 11


def all_ended(rt: Runtime) -> bool:
    """Whether every job has ended: those submitted, the processes and notifications they
    started (each made in the transaction that ended the job it follows)."""
    jobs, total = rt.store.list_jobs(limit=500, offset=0)
    return total >= SUBMITTED and all(j["status"] in TERMINAL for j in jobs)


def read_api(api: Client, rt: Runtime) -> None:
    """Every answer of the API about what ran: jobs, logs, events, handovers, services,
    users, tokens, the OpenAPI document."""
    for path in (
        "/api/v1/",
        "/api/v1/jobs?limit=500",
        f"/api/v1/jobs?q={DATABASE}",
        "/api/v1/events",
        "/api/v1/handovers",
        "/api/v1/services",
        "/api/v1/subscriptions",
        "/api/v1/kinds",
        "/api/v1/users",
        "/api/v1/tokens",
        "/api/v1/me",
        "/api/v1/datasets",
        "/api/v1/swagger.json",
    ):
        api.get(path)
    jobs, _ = rt.store.list_jobs(limit=500, offset=0)
    for job in jobs:
        for suffix in ("", "?format=email", "/logs", "/logs?format=text"):
            api.call("GET", f"/api/v1/jobs/{job['id']}{suffix}")
    for event in api.get("/api/v1/events")["items"]:
        api.get(f"/api/v1/events/{event['id']}")
    for handover in api.get("/api/v1/handovers")["items"]:
        api.get(f"/api/v1/handovers/{handover['token']}")
    for service in ("datacheck", "peer"):
        api.get(f"/api/v1/services/{service}")
    for user in ("ada", "bob"):
        api.get(f"/api/v1/users/{user}")


def read_pages(base: str, rt: Runtime, exposure: Exposure) -> None:
    """Every page, logged in as the admin over real HTTP: first a server's databases
    asked for before logging in (sent to the login, then back)."""
    browser = requests.Session()

    def page(path: str, **kwargs: Any) -> str:
        answer = browser.get(base + path, timeout=30, **kwargs)
        exposure.add(f"page {path} ({answer.status_code})", answer.text)
        assert answer.status_code < 500, f"{path}: {answer.text[:500]}"
        return answer.text

    server = f"mysql://leak_user:{LIST_PASSWORD}@127.0.0.1:3306"
    login = page("/handovers/new", params={"server_uri": server})
    form = {"csrf_token": input_value(login, "csrf_token"), "name": "ada"}
    form.update(password=ADMIN_PASSWORD, next=html.unescape(input_value(login, "next") or ""))
    answer = browser.post(f"{base}/login", data=form, timeout=30)
    exposure.add(f"page after the login ({answer.status_code})", answer.text)
    assert answer.url.startswith(f"{base}/handovers/new?"), answer.text  # 400: it refuses
    jobs, _ = rt.store.list_jobs(limit=500, offset=0)
    paths = ["/", "/jobs", "/events", "/handovers", "/datasets", "/outbox", "/api/docs"]
    paths += ["/jobs/new", "/jobs/new?kind=healthcheck", "/notifications/new", "/events/new"]
    paths += ["/handovers/new", "/handovers/bulk"]
    for job in jobs:
        paths += [f"/jobs/{job['id']}", f"/jobs/new?again={job['id']}"]
    for path in paths:
        page(path)
    for event in re.findall(r'href="/events/([0-9a-f-]{36})"', page("/events")):
        page(f"/events/{event}")
    for mail in re.findall(r'href="/outbox/([^"]+)"', page("/outbox")):
        page(f"/outbox/{mail}")


#: Runs each command of argv[1] (JSON) as ``prodinf`` does, in one process: its outputs.
CLI = """
import gc, json, sys, warnings
from click.testing import CliRunner
from prodinf.cli import main
from prodinf.config import get_settings
warnings.simplefilter("ignore")
done = []
for args in json.loads(sys.argv[1]):
    get_settings.cache_clear()
    result = CliRunner().invoke(main, args)
    done.append([args, result.exit_code, result.output])
    gc.collect()  # each command's runtime: its store connections closed
print(json.dumps(done))
"""


def run_cli(settings: Settings, rt: Runtime, exposure: Exposure) -> None:
    """``prodinf config``, ``show``, ``logs``, ``user list``, ``token list``, ``handovers``
    with the deployment's environment."""
    jobs, _ = rt.store.list_jobs(limit=500, offset=0)
    commands = [["config"], ["config", "--json"], ["show", "--limit", "500"], ["show", "--json"]]
    commands += [["user", "list"], ["token", "list"], ["handovers"]]
    for job in jobs:
        commands += [["show", job["id"]], ["show", job["id"], "--json"], ["logs", job["id"]]]
    ran = subprocess.run(
        [sys.executable, "-c", CLI, json.dumps(commands)],
        env=env_for(settings, COLUMNS="400"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    exposure.add("prodinf's standard error", ran.stderr)
    assert ran.returncode == 0, ran.stderr[-3000:]
    for args, code, output in json.loads(ran.stdout):
        exposure.add(f"prodinf {' '.join(args)}", output)
        assert code == 0, f"prodinf {' '.join(args)}: {output}"


def test_no_planted_secret_shows_anywhere(
    deployment: Settings,
    portal: Flask,
    smtp_login: AuthSmtp,
    quoter: Loopback,
    hook: WebhookReceiver,
    processes: Processes,
    home: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="prodinf")
    rt: Runtime = portal.extensions["prodinf"]
    users = Users(rt.store)
    users.add("ada", "admin", ADMIN_PASSWORD)
    users.add("bob", "submitter")
    api_token, _ = users.create_token("ada", note="leak test")
    param_token, _ = users.create_token("bob")

    processes.worker(deployment, queues=deployment.queue_jobs, name="jobs")
    processes.worker(
        deployment, queues=deployment.queue_email, module="prodinf.email_tasks", name="email"
    )
    processes.worker(
        deployment, queues=deployment.queue_event, module="prodinf.event_tasks", name="event"
    )
    exposure = Exposure()
    port = urlsplit(str(deployment.public_url)).port  # where mails' links point
    with contextmanager(serve)(portal, port or 0) as base:
        api = Client(base, api_token, exposure)
        run_jobs(api, quoter, hook, param_token)
        wait_until(lambda: all_ended(rt), 45, "every job to end", interval=0.3, logs=processes.logs)
        read_api(api, rt)
        read_pages(base, rt, exposure)
    run_cli(deployment, rt, exposure)

    # the jobs ran: they reached what they were told to use, and failed
    jobs, _ = rt.store.list_jobs(limit=500, offset=0)
    failing = ("healthcheck", "register_metadata", "copy_database", "http_get", "remote_job")
    assert {j["status"] for j in jobs if j["kind"] in (*failing, "event")} == {"failed"}
    assert {j["kind"] for j in jobs} >= {*failing, "event", "job_notification", "it_logs"}
    asked = {r.path for r in quoter.seen()}
    assert asked >= {"/dc/runs", "/peer/api/v1/jobs", "/peer/api/v1/jobs/p1", "/fail", "/status"}
    assert smtp_login.inbox.count() >= 3 and hook.count() >= 1

    for message in smtp_login.inbox.messages:
        exposure.add(f"mail {message['Subject']!r}", mail_text(message))
    for eml in sorted((home / "outbox").glob("*.eml")) if (home / "outbox").is_dir() else []:
        exposure.add(f"outbox {eml.name}", eml.read_text(errors="replace"))
    for call in hook.calls:
        exposure.add("webhook call", f"{call.headers} {call.body.decode(errors='replace')}")
    processes.stop_all()
    for log in sorted(processes.log_dir.glob("*.log")):
        exposure.add(f"log {log.name}", log.read_text(errors="replace"))
    for record in caplog.records:
        if not record.name.startswith("mail.log"):  # aiosmtpd's own (the test's server)
            exposure.add(f"log record {record.name}", logging.Formatter().format(record))
    for column, value in store_rows(rt.store.engine):
        exposure.add(f"store {column}", value)

    inputs = frozenset({"prodinf_jobs.params", "prodinf_jobs.notify", "prodinf_events.payload"})
    planted = [
        Secret("the database password", DB_PASSWORD, inputs),
        Secret("an unreachable database's password", DOWN_PASSWORD, inputs),
        Secret("the PostgreSQL password", PG_PASSWORD, inputs),
        Secret("the head of a password with '@'", RAW_AT.split("@")[0]),
        Secret("the tail of a password with '@'", RAW_AT.split("@")[1]),
        Secret("a server URI's password", LIST_PASSWORD),
        Secret("the store's password", STORE_PASSWORD),
        Secret("the SMTP password", SMTP_PASSWORD),
        Secret("the service's URL password", SERVICE_PASSWORD),
        Secret("the service's token", SERVICE_TOKEN),
        Secret("the peer's token", PEER_TOKEN),
        Secret("the peer's webhook secret", PEER_SECRET),
        Secret("the webhook URL's password", HOOK_PASSWORD, inputs),
        Secret("the admin's password", ADMIN_PASSWORD),
        Secret("the API token", api_token),
        Secret("the token given as a param", param_token, inputs),
    ]
    with rt.store.engine.connect() as conn:
        hashes = [r[0] for r in conn.exec_driver_sql("SELECT password_hash FROM prodinf_users")]
        hashes += [r[0] for r in conn.exec_driver_sql("SELECT digest FROM prodinf_tokens")]
    logins = {SERVICE_PASSWORD: "svcuser", SMTP_PASSWORD: "prodinf-mailer", param_token: "bob"}
    searched = []
    for secret in planted:
        forms = forms_of(secret.value)
        if secret.value in logins:  # sent as a login: basic auth, SMTP AUTH PLAIN
            forms |= basic_forms(logins[secret.value], secret.value)
        searched.append((secret, forms))
    stored = frozenset({"prodinf_users.password_hash", "prodinf_tokens.digest"})
    searched += [(Secret("a password hash or token digest", h, stored), {h}) for h in hashes if h]
    leaks = exposure.found(searched)
    assert not leaks, "secrets shown:\n" + "\n".join(sorted(set(leaks)))
    assert len(exposure.places) > 100  # the places were read
