"""Users and API tokens (``prodinf_users``, ``prodinf_tokens``: migration 0012).

A user has a name, one role and, to log in to the pages, a password kept as an
argon2id hash. A token is ``prodinf_<id>_<secret>``: 256 random bits behind a visible
prefix that leak scanners can match, shown once when it is made; the store keeps its
id and the SHA-256 of the whole token, so a stolen store gives no usable token. A
token belongs to a user, may be read-only, expires (90 days unless told) and can be
revoked; a disabled user's tokens stop working with them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from prodinf.exceptions import Conflict, NotFound, ValidationError
from prodinf.store.models import TOKENS, USERS
from prodinf.store.repository import JobStore
from prodinf.store.types import utcnow

__all__ = [
    "ROLES",
    "TOKEN_PREFIX",
    "Token",
    "User",
    "Users",
    "at_least",
    "parse_expiry",
]

#: The roles, each allowed what the ones before it are: ``viewer`` reads everything
#: but secrets; ``submitter`` also submits, and cancels, retries, stops and restarts
#: its own work; ``operator`` does that to anyone's; ``admin`` also manages users and
#: tokens and sees tracebacks.
ROLES = ("viewer", "submitter", "operator", "admin")
#: What every token starts with (for leak scanners).
TOKEN_PREFIX = "prodinf_"
#: Days a token holds unless told otherwise.
DEFAULT_TOKEN_DAYS = 90
#: The shortest password taken.
MIN_PASSWORD = 12
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
_TOKEN = re.compile(rf"^{TOKEN_PREFIX}([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")
_hasher = PasswordHasher()
#: Verified against when a name is unknown, so an unknown name takes as long as a bad
#: password (no telling which names exist from the time an answer takes).
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))
#: A token's ``last_used_at`` is written at most this often (not a write per request).
_USED_EVERY = timedelta(minutes=1)


def at_least(role: str, needed: str) -> bool:
    """Whether ``role`` is allowed what ``needed`` is."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    disabled: bool
    has_password: bool
    created_at: datetime

    def may(self, needed: str) -> bool:
        return not self.disabled and at_least(self.role, needed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "disabled": self.disabled,
            "has_password": self.has_password,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Token:
    id: str
    user: str
    note: str | None
    read_only: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": self.id,
            "user": self.user,
            "note": self.note,
            "read_only": self.read_only,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
        }


def parse_expiry(text: str | None, field: str = "expires") -> timedelta | None:
    """``90d``, ``12h``, ``30m`` or ``never`` (``None``); unset means 90 days."""
    if text is None:
        return timedelta(days=DEFAULT_TOKEN_DAYS)
    if text == "never":
        return None
    match = re.fullmatch(r"(\d{1,5})([dhm])", text.strip())
    if match is None or int(match[1]) == 0:
        raise ValidationError(
            f"{field} must be a number of days, hours or minutes (90d, 12h, 30m) or never",
            field=field,
        )
    unit = {"d": "days", "h": "hours", "m": "minutes"}[match[2]]
    return timedelta(**{unit: int(match[1])})


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValidationError(
            "a user name is 1-100 letters, digits, '.', '_', '@' or '-', starting with a "
            "letter or digit",
            field="name",
        )
    return name


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}", field="role")
    return role


def _check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise ValidationError(
            f"a password has at least {MIN_PASSWORD} characters", field="password"
        )
    if len(password) > 1000:
        raise ValidationError("a password has at most 1000 characters", field="password")
    return password


class Users:
    """Reads and writes of users and tokens in the job store."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    # -- users ----------------------------------------------------------------------------

    def add(self, name: str, role: str, password: str | None = None) -> User:
        """A new user; ``Conflict`` if the name is taken."""
        now = utcnow()
        values = {
            "name": _check_name(name),
            "role": _check_role(role),
            "password_hash": _hasher.hash(_check_password(password)) if password else None,
            "disabled": False,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self.store.transaction() as conn:
                conn.execute(USERS.insert().values(**values))
        except IntegrityError:
            raise Conflict(f"there is a user {name!r} already", field="name") from None
        return self.get(name)

    def get(self, name: str) -> User:
        with self.store.engine.connect() as conn:
            row = conn.execute(select(USERS).where(USERS.c.name == name)).first()
        if row is None:
            raise NotFound(f"no user {name!r}: prodinf user list names them", field="name")
        return _user(row)

    def all(self) -> list[User]:
        with self.store.engine.connect() as conn:
            return [_user(r) for r in conn.execute(select(USERS).order_by(USERS.c.name))]

    def count(self) -> int:
        return len(self.all())

    def _update(self, name: str, **values: Any) -> User:
        with self.store.transaction() as conn:
            done = conn.execute(
                update(USERS).where(USERS.c.name == name).values(updated_at=utcnow(), **values)
            )
        if not done.rowcount:
            raise NotFound(f"no user {name!r}: prodinf user list names them", field="name")
        return self.get(name)

    def set_role(self, name: str, role: str) -> User:
        return self._update(name, role=_check_role(role))

    def set_password(self, name: str, password: str) -> User:
        return self._update(name, password_hash=_hasher.hash(_check_password(password)))

    def set_disabled(self, name: str, disabled: bool) -> User:
        return self._update(name, disabled=disabled)

    def login(self, name: str, password: str) -> User | None:
        """The user ``name`` if ``password`` is theirs and they are not disabled."""
        with self.store.engine.connect() as conn:
            row = conn.execute(select(USERS).where(USERS.c.name == name)).first()
        stored = row.password_hash if row is not None and row.password_hash else _DUMMY
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or not row.password_hash or row.disabled:
            return None
        if _hasher.check_needs_rehash(stored):
            self._update(name, password_hash=_hasher.hash(password))
        return _user(row)

    # -- tokens ---------------------------------------------------------------------------

    def create_token(
        self,
        name: str,
        *,
        read_only: bool = False,
        expires_in: timedelta | None = timedelta(days=DEFAULT_TOKEN_DAYS),
        note: str | None = None,
    ) -> tuple[str, Token]:
        """A new token of user ``name``: the token (shown once, never kept) and its record."""
        user = self.get(name)
        if note is not None and len(note) > 200:
            raise ValidationError("a note has at most 200 characters", field="note")
        token_id = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        now = utcnow()
        with self.store.transaction() as conn:
            conn.execute(
                TOKENS.insert().values(
                    id=token_id,
                    user_id=user.id,
                    digest=_digest(token),
                    note=note,
                    read_only=read_only,
                    created_at=now,
                    expires_at=now + expires_in if expires_in is not None else None,
                )
            )
        return token, self.token(token_id)

    def token(self, token_id: str) -> Token:
        with self.store.engine.connect() as conn:
            row = conn.execute(_TOKEN_QUERY.where(TOKENS.c.id == token_id)).first()
        if row is None:
            raise NotFound(f"no token {token_id!r}: prodinf token list names them", field="id")
        return _token(row)

    def tokens(self, name: str | None = None) -> list[Token]:
        query = _TOKEN_QUERY.order_by(TOKENS.c.created_at)
        if name is not None:
            query = query.where(USERS.c.name == name)
        with self.store.engine.connect() as conn:
            return [_token(r) for r in conn.execute(query)]

    def revoke(self, token_id: str) -> Token:
        with self.store.transaction() as conn:
            conn.execute(
                update(TOKENS)
                .where(TOKENS.c.id == token_id, TOKENS.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return self.token(token_id)

    def authenticate(self, token: str) -> tuple[User, Token] | None:
        """The user and token a presented token is, if it is valid now: well formed,
        known, its digest equal, not expired or revoked, its user not disabled."""
        match = _TOKEN.match(token or "")
        if match is None:
            return None
        with self.store.engine.connect() as conn:
            row = conn.execute(
                select(TOKENS, USERS.c.name.label("user_name"))
                .join(USERS, USERS.c.id == TOKENS.c.user_id)
                .where(TOKENS.c.id == match[1])
            ).first()
            if row is None or not hmac.compare_digest(row.digest, _digest(token)):
                return None
            user = conn.execute(select(USERS).where(USERS.c.id == row.user_id)).one()
        now = utcnow()
        if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
            return None
        if user.disabled:
            return None
        if row.last_used_at is None or now - row.last_used_at > _USED_EVERY:
            with self.store.transaction() as conn:
                conn.execute(update(TOKENS).where(TOKENS.c.id == row.id).values(last_used_at=now))
        return _user(user), _token(row)


_TOKEN_QUERY = select(TOKENS, USERS.c.name.label("user_name")).join(
    USERS, USERS.c.id == TOKENS.c.user_id
)


def _user(row: Any) -> User:
    return User(
        row.id, row.name, row.role, bool(row.disabled), bool(row.password_hash), row.created_at
    )


def _token(row: Any) -> Token:
    return Token(
        row.id,
        row.user_name,
        row.note,
        bool(row.read_only),
        row.created_at,
        row.expires_at,
        row.revoked_at,
        row.last_used_at,
    )
