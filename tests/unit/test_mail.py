"""Mail without a mail server: the outbox (embedded defaults write mail there), addresses
and headers, the summary templates, and the portal's ``/outbox`` pages (test client).

Delivery over SMTP, to a real aiosmtpd, is in ``tests/integration/test_smtp_delivery.py``;
the outbox in a real browser in ``tests/integration/test_browser.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from email import message_from_bytes, policy
from typing import Any

import pytest
from flask.testing import FlaskClient

from prodinf.config import Settings
from prodinf.exceptions import NotFound, ValidationError
from prodinf.mail import (
    OUTCOMES,
    build_message,
    deliver,
    message_id_for,
    outbox_dir,
    outbox_message,
    outbox_messages,
    outbox_name,
    render_url_report,
    validate_address,
)
from prodinf.portal import create_app
from tests.mails import PASSWORD, URL, a_mail
from tests.pages import page

# -- the outbox ------------------------------------------------------------------------------------


def test_without_smtp_host_mail_is_written_to_the_outbox(settings: Settings) -> None:
    """Given no SMTP host (embedded defaults), when a mail is delivered, then it is one file
    in the outbox, named for its Message-ID, holding the whole message.
    """
    mail = a_mail(html="<p>hi</p>", headers={"X-Prodinf-Job": "job-1"})

    message_id = deliver(mail, settings)

    [path] = outbox_dir(settings).iterdir()
    assert path == settings.home / "outbox" / outbox_name(message_id)
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert message["Message-ID"] == message_id
    assert message["X-Prodinf-Job"] == "job-1"
    assert message.get_content_type() == "multipart/alternative"


def test_outbox_delivery_is_idempotent_by_message_id(settings: Settings) -> None:
    # Given a mail delivered once
    deliver(a_mail(subject="first try"), settings)

    # When it is delivered again under the same Message-ID (a retried step)
    deliver(a_mail(subject="second try"), settings)

    # Then there is still one file, holding the latest copy, and no temporary file left
    files = sorted(p.name for p in outbox_dir(settings).iterdir())
    assert files == [outbox_name(message_id_for("job-1:summary"))]
    assert [e.subject for e in outbox_messages(settings)] == ["second try"]

    # and another Message-ID is another file
    deliver(a_mail(message_id=message_id_for("job-2:summary")), settings)
    assert len(list(outbox_dir(settings).iterdir())) == 2


def test_outbox_lists_newest_first_and_skips_corrupt_files(settings: Settings) -> None:
    # Given three mails written a second apart, and two files that are not mail
    for n in (1, 2, 3):
        deliver(a_mail(subject=f"mail {n}", message_id=message_id_for(f"job-{n}")), settings)
        path = outbox_dir(settings) / outbox_name(message_id_for(f"job-{n}"))
        os.utime(path, (1_700_000_000 + n, 1_700_000_000 + n))
    (outbox_dir(settings) / "garbage.eml").write_bytes(os.urandom(3000) + b"\xff\x00")
    (outbox_dir(settings) / "no-id.eml").write_bytes(b"Subject: hi\n\nbody\n")
    (outbox_dir(settings) / "notes.txt").write_text("not an eml")

    entries = outbox_messages(settings)

    assert [e.subject for e in entries] == ["mail 3", "mail 2", "mail 1"]
    first = entries[0]
    assert first.message_id == message_id_for("job-3")
    assert first.to == "ada@example.org"
    assert first.date is not None and first.date.utcoffset() == dt.timedelta(0)
    assert first.size == (outbox_dir(settings) / first.name).stat().st_size
    assert [e.subject for e in outbox_messages(settings, limit=2)] == ["mail 3", "mail 2"]


def test_outbox_of_a_fresh_home_is_empty(settings: Settings) -> None:
    """Given a fresh home, then the outbox lists nothing."""
    assert outbox_messages(settings) == []


@pytest.mark.parametrize(
    "message_id",
    ["<../../etc/passwd@x>", "<.hidden@x>", "<a/b@x>", "<" + "x" * 300 + "@prodinf>"],
)
def test_outbox_names_stay_in_the_folder(message_id: str) -> None:
    """Given a Message-ID that looks like a path, hidden or very long, then its file name
    stays in the folder, visible and short.
    """
    name = outbox_name(message_id)

    assert "/" not in name
    assert not name.startswith(".")
    assert name.endswith(".eml")
    assert len(name) < 160


def test_message_ids_that_sanitise_alike_get_different_files() -> None:
    """Given two Message-IDs that sanitise to the same text, then their files differ."""
    assert outbox_name("<a/b@x>") != outbox_name("<a_b@x>")
    assert outbox_name("<a_b@x>") == "a_b@x.eml"


# -- addresses, headers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["ada@example.org", "ada.lovelace+prodinf@mail.example.co.uk", "ops@localhost", "a_b@x-y.org"],
)
def test_valid_addresses(address: str) -> None:
    """Given a valid address (with spaces around it too), then it is accepted as it is."""
    assert validate_address(address) == address
    assert validate_address(f"  {address} ") == address


@pytest.mark.parametrize(
    "address",
    [
        "a@b.org\r\nBcc: x@y.org",
        "a@b.org\nBcc: x@y.org",
        "a@b.org\r",
        "ada lovelace@example.org",
        "Ada <ada@example.org>",
        "ada@example.org, bob@example.org",
        "ada@@example.org",
        "ada.example.org",
        "ada@example",
        "@example.org",
        "ada@",
        "ada@-example.org",
        "ada@example..org",
        ".ada@example.org",
        "ada.@example.org",
        "ada@exämple.org",
        '"ada"@example.org',
        "",
        "a" * 65 + "@example.org",
    ],
)
def test_invalid_addresses_are_refused_naming_the_field(address: str) -> None:
    """Given an address that is not one (or smuggles a header), then it is refused naming
    the field, in a one-line message.
    """
    with pytest.raises(ValidationError) as caught:
        validate_address(address, field="params.address")

    assert caught.value.field == "params.address"
    assert caught.value.message.startswith("params.address: ")
    assert "\r" not in caught.value.message and "\n" not in caught.value.message


def test_a_header_injection_in_a_recipient_is_refused(settings: Settings) -> None:
    """Given a recipient that smuggles a Bcc header, when the mail is delivered, then it is
    refused naming to, and nothing is written.
    """
    with pytest.raises(ValidationError) as caught:
        deliver(a_mail(to=["a@b.org\r\nBcc: x@y.org"]), settings)

    assert caught.value.field == "to"
    assert not outbox_dir(settings).exists()


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"X-Prodinf-Job": "1\r\nBcc: x@y.org"}, "headers.X-Prodinf-Job"),
        ({"Bcc": "x@y.org"}, "headers.Bcc"),
        ({"Content-Type": "text/html"}, "headers.Content-Type"),
        ({"Bad Name": "x"}, "headers.Bad Name"),
    ],
)
def test_extra_headers_cannot_inject_or_replace(
    settings: Settings, headers: dict[str, str], field: str
) -> None:
    """Given an extra header that smuggles another, or replaces one prodinf sets, or has a
    bad name, when the message is built, then it is refused naming that header.
    """
    with pytest.raises(ValidationError) as caught:
        build_message(a_mail(headers=headers), settings)

    assert caught.value.field == field


def test_a_subject_is_one_line(settings: Settings) -> None:
    """Given a subject with a line break, when the message is built, then the subject is
    one line and no header was added.
    """
    message = build_message(a_mail(subject="done\r\nBcc: x@y.org"), settings)

    assert message["Subject"] == "done Bcc: x@y.org"
    assert message["Bcc"] is None


@pytest.mark.parametrize("message_id", ["no-brackets@x", "<no-at>", "<a b@x>", "<a@x>\r\nBcc: y"])
def test_a_message_id_must_be_well_formed(settings: Settings, message_id: str) -> None:
    """Given a malformed Message-ID, when the message is built, then it is refused."""
    with pytest.raises(ValidationError) as caught:
        build_message(a_mail(message_id=message_id), settings)

    assert caught.value.field == "message_id"


def test_a_mail_needs_a_recipient(settings: Settings) -> None:
    """Given a mail to nobody, when the message is built, then it is refused naming to."""
    with pytest.raises(ValidationError) as caught:
        build_message(a_mail(to=[]), settings)

    assert caught.value.field == "to"


def test_message_ids_are_deterministic() -> None:
    """Given the same key twice and another key, then the Message-ID is the same for the
    same key, differs for another, and is well formed.
    """
    assert message_id_for("job-1:summary") == message_id_for("job-1:summary")
    assert message_id_for("job-1:summary") != message_id_for("job-2:summary")
    assert re.fullmatch(r"<[0-9a-f]{32}@prodinf>", message_id_for("job-1:summary"))


# -- the summary mail -----------------------------------------------------------------------------


def test_summary_of_a_complete_url_lists_every_field() -> None:
    """Given a complete document, when its summary is rendered, then the subject names the
    URL (password masked), and both parts list every field.
    """
    document = {
        "status": "succeeded",
        "rows": 1200,
        "ok": True,
        "note": None,
        "result": {"tables": ["a", "b"], "size": 3},
    }

    subject, text, html = render_url_report(URL, "succeeded", document, "complete", None)

    assert subject == "[prodinf] https://reporter:***@status.example.org/jobs/42: complete"
    assert "https://reporter:***@status.example.org/jobs/42 has finished." in text
    assert "Status: succeeded" in text
    assert "  rows: 1200\n" in text
    assert "  ok: true\n" in text
    assert "  note: null\n" in text
    assert (
        '    {\n      "tables": [\n        "a",\n        "b"\n      ],\n'
        '      "size": 3\n    }' in text
    )
    assert '<strong id="status">succeeded</strong>' in html
    assert '<th scope="row"' in html and ">rows</th>" in html
    assert "&#34;tables&#34;: [" in html  # pretty JSON, escaped, in a <pre>


def test_summary_escapes_html_and_masks_credentials() -> None:
    """Given a document holding markup and passwords in values, keys and the reason, when
    its summary is rendered, then no password shows, and the HTML escapes the markup.
    """
    evil = "<script>alert(1)</script>"
    document = {
        "status": "done",
        "comment": evil,
        evil: "key too",
        "source": f"postgresql://etl:{PASSWORD}@db/warehouse",
        "password": PASSWORD,
        "nested": {"dsn": f"amqp://u:{PASSWORD}@rabbit//", "html": evil},
    }

    subject, text, html = render_url_report(URL, evil, document, "complete", f"token={PASSWORD}")

    for rendered in (subject, text, html):
        assert PASSWORD not in rendered
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "postgresql://etl:***@db/warehouse" in text
    assert evil in text  # the text part is plain text: shown as it is


def test_summary_of_a_deadline_says_it_did_not_finish() -> None:
    """Given a URL still running at the deadline, then the summary says it did not finish,
    with the last status seen.
    """
    subject, text, html = render_url_report(URL, "running", {"status": "running"}, "deadline", None)

    assert subject.endswith(": did not finish")
    assert "did not finish before the deadline" in text
    assert "Last status seen: running" in text
    assert "did not finish before the deadline" in html
    assert '<strong id="status">running</strong>' in html


def test_summary_of_a_deadline_with_no_status_seen() -> None:
    """Given no status ever seen, then the deadline summary says so, with no document."""
    _, text, _ = render_url_report(URL, None, None, "deadline", None)

    assert "Last status seen: (none)" in text
    assert "document" not in text


@pytest.mark.parametrize("reason", ["answered 404", "did not answer with JSON"])
def test_summary_of_a_failed_check_says_why(reason: str) -> None:
    """Given a URL that could not be checked, then the summary says why, without the
    password.
    """
    subject, text, html = render_url_report(URL, None, None, "failed", reason)

    assert subject.endswith(": could not be checked")
    assert f"Why: {reason}" in text
    assert f'<span id="reason">{reason}</span>' in html
    assert PASSWORD not in subject + text + html


def test_summary_of_a_document_that_is_not_an_object() -> None:
    """Given a document that is a list, then the summary shows it whole."""
    document: Any = [{"step": 1}, {"step": 2}]  # what a URL may answer, whatever the type says

    _, text, html = render_url_report(URL, "done", document, "complete", None)

    assert '  document:\n    [\n      {\n        "step": 1\n' in text
    assert ">document</th>" in html


def test_summary_refuses_an_unknown_outcome() -> None:
    """Given an outcome that is not one of OUTCOMES, then rendering refuses it."""
    assert OUTCOMES == ("complete", "deadline", "failed")
    with pytest.raises(ValidationError) as caught:
        render_url_report(URL, None, None, "done", None)

    assert caught.value.field == "outcome"


# -- the portal's outbox pages --------------------------------------------------------------------


def test_outbox_page_lists_the_mail(settings: Settings, client: FlaskClient) -> None:
    # Given two mails in the outbox, one with markup in its subject
    deliver(a_mail(subject="first", message_id=message_id_for("job-1")), settings)
    deliver(
        a_mail(subject="<b>bold</b> report", message_id=message_id_for("job-2")),
        settings,
    )
    newest = outbox_name(message_id_for("job-2"))

    html = page(client, "/outbox")

    assert f'id="mail-{newest}"' in html
    assert html.index(newest) < html.index(outbox_name(message_id_for("job-1")))
    assert "&lt;b&gt;bold&lt;/b&gt; report" in html
    assert "<b>bold" not in html
    assert f'href="/outbox/{newest}"' in html
    assert "ada@example.org" in html
    assert "&lt;" + message_id_for("job-2")[1:-1] + "&gt;" in html
    assert 'href="/outbox" aria-current="page">Outbox</a>' in html


def test_outbox_page_when_empty(client: FlaskClient) -> None:
    """Given an empty outbox, when /outbox is opened, then it says so."""
    assert "No mail has been written yet." in page(client, "/outbox")


def test_outbox_message_page_shows_headers_and_text(
    settings: Settings, client: FlaskClient
) -> None:
    """Given a mail with markup in its subject and both bodies, when its page is opened,
    then the headers and the text show, escaped, and the HTML part as source only.
    """
    mail = a_mail(
        subject="<script>alert(1)</script>",
        text="Line one <i>not markup</i>\nLine two\n",
        html="<p>the html part</p>",
        headers={"X-Prodinf-Job": "job-1"},
    )
    deliver(mail, settings)

    html = page(client, f"/outbox/{outbox_name(mail.message_id)}")

    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<th scope="row">X-Prodinf-Job</th><td>job-1</td>' in html
    assert "Line one &lt;i&gt;not markup&lt;/i&gt;\nLine two" in html
    assert "&lt;p&gt;the html part&lt;/p&gt;" in html  # its source, never rendered


@pytest.mark.parametrize(
    "path",
    [
        "/outbox/..%2F..%2Fprodinf.sqlite",
        "/outbox/%2E%2E",
        "/outbox/../outbox",
        "/outbox/.hidden.eml",
        "/outbox/x.txt",
        "/outbox/missing@prodinf.eml",
        "/outbox/..%5C..%5Cx.eml",
    ],
)
def test_outbox_message_page_refuses_paths(
    settings: Settings, client: FlaskClient, path: str
) -> None:
    """Given a mail in the outbox and a secret file next to it, when a path that tries to
    leave the outbox is asked for, then it is a 404 that shows nothing.
    """
    deliver(a_mail(), settings)
    (settings.home / "secret.eml").write_text("Message-ID: <s@x>\n\nsecret\n")

    response = client.get(path)

    assert response.status_code == 404
    assert "secret" not in response.get_data(as_text=True)


def test_outbox_message_refuses_names_that_are_paths(settings: Settings) -> None:
    """Given names that are paths, then outbox_message finds nothing for them."""
    deliver(a_mail(), settings)
    for name in ("../prodinf.sqlite", "..", "/etc/passwd", "a/b.eml"):
        with pytest.raises(NotFound):
            outbox_message(settings, name)


def test_outbox_page_with_smtp_says_where_mail_goes(settings: Settings) -> None:
    """Given an SMTP host, when /outbox is opened, then it says mail goes to that server and
    there is no outbox.
    """
    smtp = settings.model_copy(update={"smtp_host": "smtp.example.org", "smtp_port": 587})
    app = create_app(smtp)
    try:
        html = page(app.test_client(), "/outbox")
    finally:
        app.extensions["prodinf"].close()

    assert "smtp.example.org:587" in html
    assert "there is no outbox" in html
