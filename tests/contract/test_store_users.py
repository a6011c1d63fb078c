"""The job store contract for users and tokens, on every backend."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from prodinf.exceptions import Conflict, NotFound, ValidationError
from prodinf.store import JobStore
from prodinf.store.models import TOKENS, USERS
from prodinf.store.users import Users

PASSWORD = "correct horse battery"


def test_users_log_in_and_tokens_hold_until_expired_revoked_or_disabled(
    any_store: JobStore,
) -> None:
    users = Users(any_store)
    ada = users.add("ada", "admin", PASSWORD)
    users.add("sue", "submitter")  # tokens only
    assert (ada.role, ada.has_password) == ("admin", True)
    with pytest.raises(Conflict):
        users.add("ada", "viewer")
    with pytest.raises(ValidationError) as bad:
        users.add("x y", "viewer")
    assert bad.value.field == "name"
    with pytest.raises(ValidationError):
        users.add("bob", "superuser")

    # passwords: kept as argon2id, never as given
    assert users.login("ada", PASSWORD) is not None
    assert users.login("ada", "not the password") is None
    assert users.login("sue", "") is None and users.login("nobody", PASSWORD) is None
    with any_store.engine.connect() as conn:
        kept = conn.scalar(select(USERS.c.password_hash).where(USERS.c.name == "ada"))
    assert kept.startswith("$argon2id$") and PASSWORD not in kept

    # tokens: shown once, kept as a digest; valid until expired, revoked or disabled
    token, made = users.create_token("sue", note="ci", expires_in=timedelta(days=1))
    assert token.startswith("prodinf_") and made.id in token and len(token) > 60
    with any_store.engine.connect() as conn:
        digests = list(conn.scalars(select(TOKENS.c.digest)))
    assert token not in "".join(digests)
    found = users.authenticate(token)
    assert found is not None and found[0].name == "sue" and found[1].note == "ci"
    assert users.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert users.token(made.id).last_used_at is not None

    users.set_disabled("sue", True)
    assert users.authenticate(token) is None
    users.set_disabled("sue", False)
    assert users.authenticate(token) is not None
    users.revoke(made.id)
    assert users.authenticate(token) is None

    short, _ = users.create_token("sue", expires_in=timedelta(seconds=-1))
    assert users.authenticate(short) is None
    forever, kept_token = users.create_token("ada", expires_in=None, read_only=True)
    assert kept_token.expires_at is None and kept_token.read_only
    assert users.authenticate(forever) is not None
    assert [t.user for t in users.tokens("ada")] == ["ada"]
    with pytest.raises(NotFound):
        users.create_token("nobody")

    assert users.set_role("sue", "operator").role == "operator"
    assert [u.name for u in users.all()] == ["ada", "sue"]
