"""Masking of URL passwords in every shape a user writes them (issue 14: a password with
an unencoded ``@`` was half shown)."""

from __future__ import annotations

import base64
import json

import pytest

from prodinf.databases import DatabaseURI
from prodinf.exceptions import ValidationError
from prodinf.redact import redact, redact_text, secret_values, url_credentials


@pytest.mark.parametrize(
    ("written", "shown", "password"),
    [
        # an unencoded "@" in the password: the whole password goes, the host stays
        ("mysql://user:S3cret@Pass99@host/db", "mysql://user:***@host/db", "S3cret@Pass99"),
        (
            "mysql://user:S3cret@Pass@99@host:3306/db",
            "mysql://user:***@host:3306/db",
            "S3cret@Pass@99",
        ),
        # a ":" in the password
        ("mysql://user:S3c:ret:99@host/db", "mysql://user:***@host/db", "S3c:ret:99"),
        # "@" written as %40
        ("mysql://user:S3cret%40Pass99@host/db", "mysql://user:***@host/db", "S3cret%40Pass99"),
        # no user, with and without an "@" in the password
        ("redis://:S3cretPass99@host:6379/0", "redis://:***@host:6379/0", "S3cretPass99"),
        ("mysql://:S3cret@Pass99@host/db", "mysql://:***@host/db", "S3cret@Pass99"),
        # IPv6 hosts
        (
            "postgresql://u:S3cret@Pass99@[::1]:5432/db",
            "postgresql://u:***@[::1]:5432/db",
            "S3cret@Pass99",
        ),
        (
            "postgresql://u:S3c:ret@[2001:db8::7]/db",
            "postgresql://u:***@[2001:db8::7]/db",
            "S3c:ret",
        ),
        # a "/" in the password
        ("mysql://u:S3c/ret99@host/db", "mysql://u:***@host/db", "S3c/ret99"),
    ],
)
def test_every_shape_of_url_password_is_masked_whole(
    written: str, shown: str, password: str
) -> None:
    """Given a URL whose password holds @, :, %40 or /, has no user, or whose host is IPv6,
    when it is masked alone, in a sentence, in JSON, and as a DatabaseURI, then no part of
    the password shows and the host does."""
    sentence = f"could not connect to {written}: refused"
    document = {"src_uri": written, "notes": [f"copy of {written}"]}

    assert redact_text(written) == shown
    assert redact_text(sentence) == f"could not connect to {shown}: refused"
    assert password not in json.dumps(redact(document))
    assert password in secret_values(document)


def test_urls_without_a_password_are_left_alone() -> None:
    """Given URLs with a user but no password, or an "@" in a path or query, when masked,
    then nothing changes."""
    for text in (
        "mysql://user@host/db",
        "https://example.org/jobs?contact=me@example.org",
        "https://example.org/~me/@latest",
        "mail me@example.org",
    ):
        assert redact_text(text) == text


def test_several_urls_in_one_token_are_each_masked() -> None:
    """Given two URLs with no space between them (a failover list), when masked, then both
    passwords go and both hosts stay."""
    text = "amqp://u:S3cret@Pass99@rabbit-1//;amqp://u:Pa@ss2@rabbit-2//"

    assert redact_text(text) == "amqp://u:***@rabbit-1//;amqp://u:***@rabbit-2//"


@pytest.mark.parametrize(
    "password", ["S3cret@Pass99", "S3c:ret@99", "S3cret%40Pass99", "S3c/ret99", "S3cret"]
)
@pytest.mark.parametrize("host", ["db.example.org:3306", "[::1]:5432", "[2001:db8::7]"])
def test_a_database_uri_never_shows_its_password(password: str, host: str) -> None:
    """Given a database URI with the password written encoded (as SQLAlchemy renders it),
    then masked(), str() and repr() show the host and none of the password; written with
    a raw "@", it is refused at parsing, saying to write %40, without repeating it."""
    encoded = password.replace("@", "%40").replace(":", "%3A").replace("/", "%2F")
    uri = DatabaseURI.parse(f"postgresql://u:{encoded}@{host}/db")
    for shown in (uri.masked(), str(uri), repr(uri)):
        assert f"u:***@{host}/db" in shown
        for part in password.replace("%40", "@").split("@"):
            assert part not in shown
    if "@" in password:
        with pytest.raises(ValidationError) as caught:
            DatabaseURI.parse(f"mysql://u:{password}@{host}/db", field="src_uri")
        assert "%40" in caught.value.message
        assert caught.value.field == "src_uri"
        assert "S3c" not in caught.value.message


@pytest.mark.parametrize(
    ("echoed", "shown"),
    [
        ("{'Authorization': 'Basic dXNlcjpwdw=='}", "{'Authorization': 'Basic ***'}"),
        ('{"authorization": "Bearer prodinf_0a1b_xyz"}', '{"authorization": "Bearer ***"}'),
        ("Proxy-Authorization: Digest abc123", "Proxy-Authorization: Digest ***"),
        ("X-Api-Key: k-3f9a1c sent", "X-Api-Key: *** sent"),
        ("Authorization=Token s3cret-1", "Authorization=Token ***"),
    ],
)
def test_a_request_header_a_server_echoes_is_masked(echoed: str, shown: str) -> None:
    """Given a credential header quoted back by a server (in its error, in a document),
    when masked, then its value goes and its scheme stays; as a JSON key, it goes too."""
    assert redact_text(echoed) == shown
    assert redact({"Authorization": "Basic dXNlcjpwdw==", "X-Api-Key": "k"}) == {
        "Authorization": "***",
        "X-Api-Key": "***",
    }


def test_a_url_gives_its_credentials_in_each_form_they_are_sent() -> None:
    """Given a URL with a user and an encoded password, then its credentials are the
    password as written, decoded and inside the basic-auth value; and redact masks each
    of them wherever a document holds them."""
    url = "http://bob:p%40ss-w0rd@127.0.0.1:8080/status"
    basic = base64.b64encode(b"bob:p@ss-w0rd").decode()
    found = url_credentials(url)

    assert set(found) == {"p%40ss-w0rd", "p@ss-w0rd", basic.rstrip("=")}
    document = {"status": "failed", "said": [f"login bob:p@ss-w0rd with {basic}"]}
    assert json.dumps(redact(document, secrets=found)).count("***") == 2
    assert "p@ss" not in json.dumps(redact(document, secrets=found))
    assert url_credentials("http://bob@host/x") == url_credentials("http://host:x/") == []
