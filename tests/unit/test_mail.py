"""Mail: delivery to a real SMTP server (aiosmtpd on 127.0.0.1), the outbox, addresses,
the summary templates, and the portal's ``/outbox`` pages (test client and real Chromium).

Nothing is mocked: the SMTP server is aiosmtpd, listening on a free port in a thread;
a server that is down, silent or hangs up is a real socket that does just that.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from flask import Flask
from flask.testing import FlaskClient
from pydantic import SecretStr

from prodinf.config import Settings
from prodinf.exceptions import NotFound, PermanentError, RemoteUnavailable, ValidationError
from prodinf.mail import (
    OUTCOMES,
    Mail,
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
from tests.unit.browser import CHROMIUM, chromium, need, serve

PASSWORD = "hunter2-S3cret"

# -- a real SMTP server ------------------------------------------------------------------------


@dataclass
class Received:
    """One message as the server got it: the envelope and the bytes of the DATA."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        # As a mail client reads it: SMTP's CRLF line ends as newlines.
        parsed = message_from_bytes(self.content.replace(b"\r\n", b"\n"), policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Handler:
    """aiosmtpd handler that keeps what it receives and answers as scripted.

    ``refuse_rcpt`` maps a recipient to the reply that refuses it; ``mail_reply`` and
    ``data_reply`` replace the 250 to MAIL FROM and to the end of DATA.
    """

    refuse_rcpt: dict[str, str] = field(default_factory=dict)
    mail_reply: str = "250 OK"
    data_reply: str = "250 OK"
    received: list[Received] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.mail_reply.startswith("250"):
            envelope.mail_from = address
            envelope.mail_options.extend(options)
        return self.mail_reply

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply.startswith("250"):
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        return self.data_reply


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


Start = Callable[..., tuple[Handler, Settings]]


@pytest.fixture
def smtpd(settings: Settings) -> Iterator[Start]:
    """Start an aiosmtpd server on 127.0.0.1: ``start(handler, **controller_kwargs)`` gives
    the handler and ``settings`` pointing at the server. All are stopped at teardown."""
    controllers: list[Controller] = []

    def start(
        handler: Handler | None = None, *, smtp: dict[str, Any] | None = None, **kwargs: Any
    ) -> tuple[Handler, Settings]:
        handler = handler or Handler()
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **kwargs)
        controller.start()
        controllers.append(controller)
        updated = {"smtp_host": "127.0.0.1", "smtp_port": controller.port, "smtp_timeout": 10}
        return handler, settings.model_copy(update={**updated, **(smtp or {})})

    yield start
    for controller in controllers:
        controller.stop()


def a_mail(**changes: Any) -> Mail:
    fields: dict[str, Any] = {
        "to": ["ada@example.org"],
        "subject": "Report ready",
        "text": "Your report is ready.\n",
        "message_id": message_id_for("job-1:summary"),
    }
    return Mail(**{**fields, **changes})


# -- delivery over SMTP ---------------------------------------------------------------------------


def test_smtp_delivers_text_and_html_with_headers(smtpd: Start) -> None:
    # Given an SMTP server and a mail with both bodies and an extra header
    handler, settings = smtpd()
    mail = a_mail(
        to=["ada@example.org", "bob@example.org"],
        subject="Café report ✓",
        text="Plain body: café ✓\n",
        html="<p>HTML body: <b>café</b> ✓</p>\n",
        headers={"X-Prodinf-Job": "job-1"},
    )

    # When it is delivered
    message_id = deliver(mail, settings)

    # Then the server got one message with the envelope, headers and both parts
    assert message_id == mail.message_id
    [got] = handler.received
    assert got.mail_from == "prodinf@localhost"
    assert got.rcpt_tos == ["ada@example.org", "bob@example.org"]
    assert got.content.isascii()  # 7-bit safe for any relay
    message = got.message
    assert message["From"] == "prodinf@localhost"
    assert message["To"] == "ada@example.org, bob@example.org"
    assert message["Subject"] == "Café report ✓"
    assert message["Message-ID"] == mail.message_id
    assert message["X-Prodinf-Job"] == "job-1"
    assert message["Auto-Submitted"] == "auto-generated"
    sent_at = message["Date"].datetime
    assert abs((dt.datetime.now(dt.UTC) - sent_at).total_seconds()) < 60
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert [p.get_content_charset() for p in parts] == ["utf-8", "utf-8"]
    assert parts[0].get_content() == "Plain body: café ✓\n"
    assert parts[1].get_content() == "<p>HTML body: <b>café</b> ✓</p>\n"


def test_smtp_text_only_mail_is_one_text_part(smtpd: Start) -> None:
    handler, settings = smtpd()

    deliver(a_mail(), settings)

    message = handler.received[0].message
    assert message.get_content_type() == "text/plain"
    assert message.get_content() == "Your report is ready.\n"


def test_mail_from_with_a_name_is_the_sender(smtpd: Start) -> None:
    handler, settings = smtpd(smtp={"mail_from": "prodinf <noreply@example.org>"})

    deliver(a_mail(), settings)

    assert handler.received[0].mail_from == "noreply@example.org"
    assert handler.received[0].message["From"] == "prodinf <noreply@example.org>"


def test_server_down_is_transient(settings: Settings) -> None:
    # Given nothing listening on the port
    port = free_port()
    down = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port})

    with pytest.raises(RemoteUnavailable) as caught:
        deliver(a_mail(), down)

    assert f"127.0.0.1:{port} is unreachable" in caught.value.message
    assert not isinstance(caught.value, PermanentError)


def test_server_that_never_answers_times_out_as_transient(settings: Settings) -> None:
    # Given a socket that accepts connections (the kernel's backlog) but never greets
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        port = silent.getsockname()[1]
        slow = settings.model_copy(
            update={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_timeout": 0.5}
        )

        started = time.monotonic()
        with pytest.raises(RemoteUnavailable) as caught:
            deliver(a_mail(), slow)

    assert time.monotonic() - started < 5
    assert "did not answer within 0.5 s" in caught.value.message


def test_server_that_hangs_up_is_transient(settings: Settings) -> None:
    # Given a server that accepts each connection and closes it at once
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)

    def hang_up() -> None:
        conn, _ = listener.accept()
        conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    rude = settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": listener.getsockname()[1]}
    )
    try:
        with pytest.raises(RemoteUnavailable) as caught:
            deliver(a_mail(), rude)
    finally:
        thread.join(5)
        listener.close()

    assert "closed the connection" in caught.value.message


@pytest.mark.parametrize(
    ("handler", "error", "words"),
    [
        (
            Handler(refuse_rcpt={"ada@example.org": "550 5.1.1 no such user"}),
            PermanentError,
            "refused every recipient: ada@example.org: 550 5.1.1 no such user",
        ),
        (
            Handler(refuse_rcpt={"ada@example.org": "451 4.3.0 try again later"}),
            RemoteUnavailable,
            "refused every recipient: ada@example.org: 451 4.3.0 try again later",
        ),
        (
            Handler(mail_reply="553 5.7.1 sender not allowed"),
            PermanentError,
            "refused the sender prodinf@localhost: 553 5.7.1 sender not allowed",
        ),
        (
            Handler(data_reply="554 5.6.0 message refused"),
            PermanentError,
            "refused the message: 554 5.6.0 message refused",
        ),
        (
            Handler(data_reply="452 4.3.1 insufficient storage"),
            RemoteUnavailable,
            "refused the message: 452 4.3.1 insufficient storage",
        ),
    ],
    ids=["rcpt-550", "rcpt-451", "mail-553", "data-554", "data-452"],
)
def test_refusals_are_permanent_for_5xx_and_transient_for_4xx(
    smtpd: Start, handler: Handler, error: type[Exception], words: str
) -> None:
    _, settings = smtpd(handler)

    with pytest.raises(error) as caught:
        deliver(a_mail(), settings)

    assert words in str(caught.value)
    if error is RemoteUnavailable:
        assert not isinstance(caught.value, PermanentError)
    assert handler.received == []


def test_some_recipients_refused_still_delivers_to_the_rest(
    smtpd: Start, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a server that knows only one of two recipients
    handler, settings = smtpd(Handler(refuse_rcpt={"bob@example.org": "550 5.1.1 no such user"}))

    # When the mail goes to both, it counts as delivered (a retry would send Ada a copy)
    with caplog.at_level(logging.WARNING, logger="prodinf.mail"):
        deliver(a_mail(to=["ada@example.org", "bob@example.org"]), settings)

    assert [r.rcpt_tos for r in handler.received] == [["ada@example.org"]]
    assert "bob@example.org: 550 5.1.1 no such user" in caplog.text


def test_starttls_asked_of_a_server_without_it_never_sends_in_plain_text(smtpd: Start) -> None:
    handler, settings = smtpd(smtp={"smtp_tls": "starttls"})

    with pytest.raises(PermanentError) as caught:
        deliver(a_mail(), settings)

    assert "STARTTLS" in caught.value.message
    assert handler.received == []


# -- login -----------------------------------------------------------------------------------------


def authenticator(handler: Handler) -> Callable[..., AuthResult]:
    """An aiosmtpd authenticator that accepts ``prodinf`` / ``PASSWORD`` only."""

    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data == (b"prodinf", PASSWORD.encode())
        if ok:
            handler.logins.append(f"{mechanism}:{data.login.decode()}")
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535

    return check


def test_login_with_smtp_user(smtpd: Start) -> None:
    handler = Handler()
    _, settings = smtpd(
        handler,
        authenticator=authenticator(handler),
        auth_require_tls=False,
        smtp={"smtp_user": "prodinf", "smtp_password": SecretStr(PASSWORD)},
    )

    deliver(a_mail(), settings)

    assert [login.split(":")[1] for login in handler.logins] == ["prodinf"]
    assert len(handler.received) == 1


def test_refused_login_is_permanent_and_never_shows_the_password(
    smtpd: Start, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a server that refuses the configured password
    wrong = PASSWORD + "-old"
    handler = Handler()
    _, settings = smtpd(
        handler,
        authenticator=authenticator(handler),
        auth_require_tls=False,
        smtp={"smtp_user": "prodinf", "smtp_password": SecretStr(wrong)},
    )

    with caplog.at_level(logging.DEBUG), pytest.raises(PermanentError) as caught:
        deliver(a_mail(), settings)

    # Then the error says the login was refused, and nothing anywhere holds the password
    error = caught.value
    assert "refused the login of 'prodinf': 535" in error.message
    encoded = base64.b64encode(f"\0prodinf\0{wrong}".encode()).decode()
    for text in (str(error), repr(error), str(error.to_dict()), repr(error.__cause__), caplog.text):
        assert wrong not in text
        assert encoded not in text
    assert handler.received == []


# -- TLS (needs a certificate, made with the cryptography package when it is installed) -----------


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    pytest.importorskip(
        "cryptography",
        reason="the TLS tests make a self-signed certificate with the cryptography package, "
        "which is not installed",
    )
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_tls_to_a_trusted_server(
    smtpd: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    # Given a server with a certificate the client trusts (OpenSSL reads SSL_CERT_FILE)
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = server_context(cert, key)
    handler = Handler()
    # A STARTTLS server refuses MAIL and AUTH before the upgrade. An SSL listener speaks
    # nothing but TLS, though aiosmtpd does not count it as TLS for AUTH, hence the flag.
    tls: dict[str, Any] = (
        {"tls_context": context, "require_starttls": True}
        if mode == "starttls"
        else {"ssl_context": context, "auth_require_tls": False}
    )
    _, settings = smtpd(
        handler,
        authenticator=authenticator(handler),
        smtp={"smtp_tls": mode, "smtp_user": "prodinf", "smtp_password": SecretStr(PASSWORD)},
        **tls,
    )

    deliver(a_mail(), settings)

    # Then it logged in and sent the mail
    assert len(handler.logins) == 1
    assert len(handler.received) == 1


def test_tls_to_an_untrusted_server_is_permanent(smtpd: Start, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)  # not in the client's trusted CAs
    handler, settings = smtpd(ssl_context=server_context(cert, key), smtp={"smtp_tls": "ssl"})

    with pytest.raises(PermanentError) as caught:
        deliver(a_mail(), settings)

    assert "certificate is not trusted" in caught.value.message
    assert handler.received == []


# -- the outbox ------------------------------------------------------------------------------------


def test_without_smtp_host_mail_is_written_to_the_outbox(settings: Settings) -> None:
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
    assert outbox_messages(settings) == []


@pytest.mark.parametrize(
    "message_id",
    ["<../../etc/passwd@x>", "<.hidden@x>", "<a/b@x>", "<" + "x" * 300 + "@prodinf>"],
)
def test_outbox_names_stay_in_the_folder(message_id: str) -> None:
    name = outbox_name(message_id)

    assert "/" not in name
    assert not name.startswith(".")
    assert name.endswith(".eml")
    assert len(name) < 160


def test_message_ids_that_sanitise_alike_get_different_files() -> None:
    assert outbox_name("<a/b@x>") != outbox_name("<a_b@x>")
    assert outbox_name("<a_b@x>") == "a_b@x.eml"


# -- addresses, headers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["ada@example.org", "ada.lovelace+prodinf@mail.example.co.uk", "ops@localhost", "a_b@x-y.org"],
)
def test_valid_addresses(address: str) -> None:
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
    with pytest.raises(ValidationError) as caught:
        validate_address(address, field="params.address")

    assert caught.value.field == "params.address"
    assert caught.value.message.startswith("params.address: ")
    assert "\r" not in caught.value.message and "\n" not in caught.value.message


def test_a_header_injection_in_a_recipient_is_refused(settings: Settings) -> None:
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
    with pytest.raises(ValidationError) as caught:
        build_message(a_mail(headers=headers), settings)

    assert caught.value.field == field


def test_a_subject_is_one_line(settings: Settings) -> None:
    message = build_message(a_mail(subject="done\r\nBcc: x@y.org"), settings)

    assert message["Subject"] == "done Bcc: x@y.org"
    assert message["Bcc"] is None


@pytest.mark.parametrize("message_id", ["no-brackets@x", "<no-at>", "<a b@x>", "<a@x>\r\nBcc: y"])
def test_a_message_id_must_be_well_formed(settings: Settings, message_id: str) -> None:
    with pytest.raises(ValidationError) as caught:
        build_message(a_mail(message_id=message_id), settings)

    assert caught.value.field == "message_id"


def test_a_mail_needs_a_recipient(settings: Settings) -> None:
    with pytest.raises(ValidationError) as caught:
        build_message(a_mail(to=[]), settings)

    assert caught.value.field == "to"


def test_message_ids_are_deterministic() -> None:
    assert message_id_for("job-1:summary") == message_id_for("job-1:summary")
    assert message_id_for("job-1:summary") != message_id_for("job-2:summary")
    assert re.fullmatch(r"<[0-9a-f]{32}@prodinf>", message_id_for("job-1:summary"))


# -- the summary mail -----------------------------------------------------------------------------

URL = f"https://reporter:{PASSWORD}@status.example.org/jobs/42"


def test_summary_of_a_complete_url_lists_every_field() -> None:
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
    subject, text, html = render_url_report(URL, "running", {"status": "running"}, "deadline", None)

    assert subject.endswith(": did not finish")
    assert "did not finish before the deadline" in text
    assert "Last status seen: running" in text
    assert "did not finish before the deadline" in html
    assert '<strong id="status">running</strong>' in html


def test_summary_of_a_deadline_with_no_status_seen() -> None:
    _, text, _ = render_url_report(URL, None, None, "deadline", None)

    assert "Last status seen: (none)" in text
    assert "document" not in text


@pytest.mark.parametrize("reason", ["answered 404", "did not answer with JSON"])
def test_summary_of_a_failed_check_says_why(reason: str) -> None:
    subject, text, html = render_url_report(URL, None, None, "failed", reason)

    assert subject.endswith(": could not be checked")
    assert f"Why: {reason}" in text
    assert f'<span id="reason">{reason}</span>' in html
    assert PASSWORD not in subject + text + html


def test_summary_of_a_document_that_is_not_an_object() -> None:
    document: Any = [{"step": 1}, {"step": 2}]  # what a URL may answer, whatever the type says

    _, text, html = render_url_report(URL, "done", document, "complete", None)

    assert '  document:\n    [\n      {\n        "step": 1\n' in text
    assert ">document</th>" in html


def test_summary_refuses_an_unknown_outcome() -> None:
    assert OUTCOMES == ("complete", "deadline", "failed")
    with pytest.raises(ValidationError) as caught:
        render_url_report(URL, None, None, "done", None)

    assert caught.value.field == "outcome"


def test_summary_mail_goes_through_smtp_intact(smtpd: Start) -> None:
    handler, settings = smtpd()
    document = {"status": "done", "comment": "<script>alert(1)</script>"}
    subject, text, html = render_url_report(URL, "done", document, "complete", None)

    deliver(a_mail(subject=subject, text=text, html=html), settings)

    message = handler.received[0].message
    assert message["Subject"] == subject
    html_part = message.get_body(preferencelist=("html",))
    assert html_part is not None
    assert "&lt;script&gt;" in html_part.get_content()
    assert PASSWORD not in handler.received[0].content.decode()


# -- the portal's outbox pages --------------------------------------------------------------------


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    app.extensions["prodinf"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def page(client: FlaskClient, path: str, status: int = 200) -> str:
    response = client.get(path)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_data(as_text=True)


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
    assert "No mail has been written yet." in page(client, "/outbox")


def test_outbox_message_page_shows_headers_and_text(
    settings: Settings, client: FlaskClient
) -> None:
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
    deliver(a_mail(), settings)
    (settings.home / "secret.eml").write_text("Message-ID: <s@x>\n\nsecret\n")

    response = client.get(path)

    assert response.status_code == 404
    assert "secret" not in response.get_data(as_text=True)


def test_outbox_message_refuses_names_that_are_paths(settings: Settings) -> None:
    deliver(a_mail(), settings)
    for name in ("../prodinf.sqlite", "..", "/etc/passwd", "a/b.eml"):
        with pytest.raises(NotFound):
            outbox_message(settings, name)


def test_outbox_page_with_smtp_says_where_mail_goes(settings: Settings) -> None:
    smtp = settings.model_copy(update={"smtp_host": "smtp.example.org", "smtp_port": 587})
    app = create_app(smtp)
    try:
        html = page(app.test_client(), "/outbox")
    finally:
        app.extensions["prodinf"].close()

    assert "smtp.example.org:587" in html
    assert "there is no outbox" in html


# -- a real browser -----------------------------------------------------------------------------


@pytest.fixture
def live(app: Flask) -> Iterator[str]:
    """The app served over real HTTP on 127.0.0.1; its base URL."""
    yield from serve(app)


@pytest.mark.slow
def test_browser_renders_the_outbox(settings: Settings, live: str, tmp_path: Path) -> None:
    need(CHROMIUM, "chromium")
    subject, text, html = render_url_report(
        URL, "done", {"status": "done", "comment": "<script>alert(1)</script>"}, "complete", None
    )
    mail = a_mail(subject=subject, text=text, html=html)
    deliver(mail, settings)
    name = outbox_name(mail.message_id)

    dom = chromium(tmp_path, "--dump-dom", f"{live}/outbox")
    row = re.search(rf'<tr id="mail-{re.escape(name)}">(.*?)</tr>', dom, re.S)
    assert row, dom[-3000:]
    assert "status.example.org/jobs/42: complete" in row.group(1)
    assert "ada@example.org" in row.group(1)
    assert PASSWORD not in dom

    dom = chromium(tmp_path, "--dump-dom", f"{live}/outbox/{name}")
    text_block = re.search(r'<pre class="json mail-text" id="mail-text">(.*?)</pre>', dom, re.S)
    assert text_block, dom[-3000:]
    assert "has finished." in text_block.group(1)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text_block.group(1)
    assert "<script>alert(1)" not in dom
