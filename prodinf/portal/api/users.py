"""``/api/v1/users``, ``/api/v1/tokens`` and ``/api/v1/me``: who may use prodinf (admins)."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_restx import Namespace, Resource, fields

from prodinf.exceptions import ValidationError
from prodinf.portal.access import acting_user, identify, users
from prodinf.portal.api.jobs import json_object
from prodinf.store.users import ROLES, parse_expiry

ns = Namespace("users", path="/", description="Users and API tokens (admins)")

error = ns.model("UserError", {"message": fields.String, "field": fields.String})
user = ns.model(
    "User",
    {
        "name": fields.String(required=True, min_length=1, max_length=100),
        "role": fields.String(required=True, enum=list(ROLES)),
        "disabled": fields.Boolean,
        "has_password": fields.Boolean,
        "created_at": fields.DateTime,
    },
)
new_user = ns.model(
    "NewUser",
    {
        "name": fields.String(required=True, min_length=1, max_length=100),
        "role": fields.String(required=True, enum=list(ROLES)),
        "password": fields.String(description="To log in to the pages (12 characters or more)"),
    },
)
change = ns.model(
    "UserChange",
    {
        "role": fields.String(enum=list(ROLES)),
        "disabled": fields.Boolean,
        "password": fields.String(min_length=12),
    },
)
token = ns.model(
    "Token",
    {
        "id": fields.String,
        "user": fields.String,
        "note": fields.String,
        "read_only": fields.Boolean,
        "created_at": fields.DateTime,
        "expires_at": fields.DateTime,
        "revoked_at": fields.DateTime,
        "last_used_at": fields.DateTime,
    },
)
new_token = ns.model(
    "NewToken",
    {
        "user": fields.String(required=True),
        "read_only": fields.Boolean(default=False),
        "expires": fields.String(description="90d (the default), 12h, 30m or never"),
        "note": fields.String(max_length=200),
    },
)
made_token = ns.inherit(
    "MadeToken", token, {"token": fields.String(description="The token: shown this once")}
)
me = ns.model(
    "Me",
    {
        "name": fields.String,
        "role": fields.String(enum=list(ROLES)),
        "auth": fields.String(enum=["users", "none"]),
    },
)


def _text(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string", field=name)
    return value


@ns.route("/users")
@ns.response(401, "No valid token", error)
@ns.response(403, "Not an admin", error)
class UserList(Resource):  # type: ignore[misc]
    @ns.marshal_list_with(user)
    def get(self) -> list[dict[str, Any]]:
        """Every user, by name."""
        return [u.to_dict() for u in users().all()]

    @ns.expect(new_user)
    @ns.response(201, "Created", user)
    @ns.response(400, "A bad field, named", error)
    @ns.response(409, "The name is taken", error)
    def post(self) -> tuple[dict[str, Any], int]:
        """Add a user with a role (and a password, to log in to the pages)."""
        body = json_object()
        made = users().add(
            _text(body, "name", required=True) or "",
            _text(body, "role", required=True) or "",
            _text(body, "password"),
        )
        return made.to_dict(), 201


@ns.route("/users/<string:name>")
@ns.response(401, "No valid token", error)
@ns.response(403, "Not an admin", error)
@ns.response(404, "No such user", error)
class UserItem(Resource):  # type: ignore[misc]
    @ns.marshal_with(user)
    def get(self, name: str) -> dict[str, Any]:
        """One user."""
        return users().get(name).to_dict()

    @ns.expect(change)
    @ns.response(400, "A bad field, named", error)
    @ns.marshal_with(user)
    def patch(self, name: str) -> dict[str, Any]:
        """Change a user's role, password, or whether they are disabled."""
        body = json_object()
        unknown = sorted(set(body) - {"role", "disabled", "password"})
        if unknown:
            raise ValidationError(f"unknown field {unknown[0]!r}", field=unknown[0])
        store = users()
        found = store.get(name)
        if (role := _text(body, "role")) is not None:
            found = store.set_role(name, role)
        if (password := _text(body, "password")) is not None:
            found = store.set_password(name, password)
        if "disabled" in body:
            if not isinstance(body["disabled"], bool):
                raise ValidationError("disabled must be true or false", field="disabled")
            found = store.set_disabled(name, body["disabled"])
        return found.to_dict()


@ns.route("/tokens")
@ns.response(401, "No valid token", error)
@ns.response(403, "Not an admin", error)
class TokenList(Resource):  # type: ignore[misc]
    @ns.doc(params={"user": "Only this user's tokens"})
    @ns.marshal_list_with(token)
    def get(self) -> list[dict[str, Any]]:
        """Every token (never the token itself: its id, user, and when it ends)."""
        return [t.to_dict() for t in users().tokens(request.args.get("user") or None)]

    @ns.expect(new_token)
    @ns.response(201, "Created: the token is in the answer, this once", made_token)
    @ns.response(400, "A bad field, named", error)
    @ns.response(404, "No such user", error)
    def post(self) -> tuple[dict[str, Any], int]:
        """Make a token for a user; the answer holds it, and nothing ever shows it again."""
        body = json_object()
        read_only = body.get("read_only", False)
        if not isinstance(read_only, bool):
            raise ValidationError("read_only must be true or false", field="read_only")
        secret, made = users().create_token(
            _text(body, "user", required=True) or "",
            read_only=read_only,
            expires_in=parse_expiry(_text(body, "expires")),
            note=_text(body, "note"),
        )
        return {**made.to_dict(), "token": secret}, 201


@ns.route("/tokens/<string:token_id>")
@ns.response(401, "No valid token", error)
@ns.response(403, "Not an admin", error)
@ns.response(404, "No such token", error)
class TokenItem(Resource):  # type: ignore[misc]
    @ns.marshal_with(token)
    def get(self, token_id: str) -> dict[str, Any]:
        """One token's record."""
        return users().token(token_id).to_dict()

    @ns.marshal_with(token)
    def delete(self, token_id: str) -> dict[str, Any]:
        """Revoke a token: it stops working at once."""
        return users().revoke(token_id).to_dict()


@ns.route("/me")
@ns.response(401, "No valid token", error)
class Me(Resource):  # type: ignore[misc]
    @ns.marshal_with(me)
    def get(self) -> dict[str, Any]:
        """Who this token is, and its role (a read-only token acts as a viewer)."""
        found, role = identify()
        if found is None:  # authentication off: anyone is anything
            return {"name": acting_user(), "role": "admin", "auth": "none"}
        return {"name": found.name, "role": role, "auth": "users"}
