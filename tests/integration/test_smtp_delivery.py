"""Mail delivery to a real SMTP server: aiosmtpd on 127.0.0.1, in a thread of the test
process, answering as each test scripts it; and TLS with a certificate made here.

Given a mail and a server that accepts, refuses, asks for a login or speaks TLS; when
``deliver`` sends the mail; then the server holds exactly what was sent, or the error
says what the server said, transient (4xx, down, silent, hung up) or permanent (5xx,
refused login, untrusted certificate), and never the password. A server that is down,
silent or hangs up is a real socket that does just that.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import logging
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
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from prodinf.config import Settings
from prodinf.exceptions import PermanentError, RemoteUnavailable
from prodinf.mail import deliver, render_url_report
from tests.loopback import free_port
from tests.mails import PASSWORD, URL, a_mail

pytestmark = pytest.mark.integration

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
    """Given a mail with a text body only, when it is delivered, then the server gets
    one message that is one text/plain part."""
    handler, settings = smtpd()

    deliver(a_mail(), settings)

    [got] = handler.received
    message = got.message
    assert message.get_content_type() == "text/plain"
    assert message.get_content() == "Your report is ready.\n"


def test_mail_from_with_a_name_is_the_sender(smtpd: Start) -> None:
    """Given PRODINF_MAIL_FROM with a display name, when a mail is delivered, then the
    envelope sender is the bare address and the From header keeps the name."""
    handler, settings = smtpd(smtp={"mail_from": "prodinf <noreply@example.org>"})

    deliver(a_mail(), settings)

    [got] = handler.received
    assert got.mail_from == "noreply@example.org"
    assert got.message["From"] == "prodinf <noreply@example.org>"


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
    """Given a server that refuses a recipient, the sender or the message, when a mail
    is delivered, then the error quotes the server's reply, is permanent for a 5xx and
    transient for a 4xx, and nothing was received."""
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
    """Given STARTTLS asked for and a server that does not offer it, when a mail is
    delivered, then it fails permanently naming STARTTLS, and nothing was sent."""
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
    """Given a server that asks for a login, and PRODINF_SMTP_USER and _PASSWORD set,
    when a mail is delivered, then prodinf logs in as that user and the mail arrives."""
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


# -- TLS (a certificate made with the cryptography package, one of the test extras) -------------


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
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
    """Given an SSL server whose certificate the client does not trust, when a mail is
    delivered, then it fails permanently saying so, and nothing was sent."""
    cert, key = self_signed(tmp_path)  # not in the client's trusted CAs
    handler, settings = smtpd(ssl_context=server_context(cert, key), smtp={"smtp_tls": "ssl"})

    with pytest.raises(PermanentError) as caught:
        deliver(a_mail(), settings)

    assert "certificate is not trusted" in caught.value.message
    assert handler.received == []


# -- the summary mail, through SMTP ----------------------------------------------------------------


def test_summary_mail_goes_through_smtp_intact(smtpd: Start) -> None:
    """Given a summary mail about a document holding markup and a URL with a password,
    when it is delivered, then it arrives with its subject, the markup escaped in the
    HTML part, and no password."""
    handler, settings = smtpd()
    document = {"status": "done", "comment": "<script>alert(1)</script>"}
    subject, text, html = render_url_report(URL, "done", document, "complete", None)

    deliver(a_mail(subject=subject, text=text, html=html), settings)

    [got] = handler.received
    message = got.message
    assert message["Subject"] == subject
    html_part = message.get_body(preferencelist=("html",))
    assert html_part is not None
    assert "&lt;script&gt;" in html_part.get_content()
    assert PASSWORD not in got.content.decode()
