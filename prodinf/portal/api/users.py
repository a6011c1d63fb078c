"""``/api/v1/users``, ``/api/v1/tokens`` and ``/api/v1/me``: who may use prodinf (admins)."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_restx import Namespace, Resource

from prodinf.exceptions import ValidationError
from prodinf.portal.access import acting_user, identify, users
from prodinf.portal.api.jobs import json_object
from prodinf.portal.api.openapi import END, ERROR, arg, array, nullable, obj, text
from prodinf.store.users import MIN_PASSWORD, ROLES, parse_expiry

ns = Namespace("users", path="/", description="Users and API tokens (admins)")

error = ERROR
NAME = {
    "type": "string",
    "pattern": f"^[A-Za-z0-9][A-Za-z0-9._@-]{{0,99}}{END}",
    "description": "1-100 letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
}
ROLE = {"type": "string", "enum": list(ROLES)}
PASSWORD = {
    "type": "string",
    "minLength": MIN_PASSWORD,
    "maxLength": 1000,
    "description": f"To log in to the pages ({MIN_PASSWORD} characters or more)",
}
USER = obj(
    {
        "name": {"type": "string"},
        "role": ROLE,
        "disabled": {"type": "boolean"},
        "has_password": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
    },
    ["name", "role", "disabled", "has_password", "created_at"],
)
TOKEN = obj(
    {
        "id": {"type": "string"},
        "user": {"type": "string"},
        "note": nullable({"type": "string"}),
        "read_only": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
        "expires_at": nullable({"type": "string", "format": "date-time"}),
        "revoked_at": nullable({"type": "string", "format": "date-time"}),
        "last_used_at": nullable({"type": "string", "format": "date-time"}),
    },
    ["id", "user", "note", "read_only", "created_at", "expires_at", "revoked_at"],
)
user = ns.schema_model("User", USER)
user_list = ns.schema_model("UserList", array(USER))
new_user = ns.schema_model(
    "NewUser",
    obj({"name": NAME, "role": ROLE, "password": nullable(PASSWORD)}, ["name", "role"]),
)
change = ns.schema_model(
    "UserChange",
    obj(
        {"role": nullable(ROLE), "disabled": {"type": "boolean"}, "password": nullable(PASSWORD)},
        closed=True,
    ),
)
token = ns.schema_model("Token", TOKEN)
token_list = ns.schema_model("TokenList", array(TOKEN))
new_token = ns.schema_model(
    "NewToken",
    obj(
        {
            "user": {"type": "string", "description": "The user's name"},
            "read_only": {"type": "boolean", "default": False},
            "expires": nullable(
                {
                    "type": "string",
                    # 1 to 5 digits, not all 0, and a unit (the server strips spaces)
                    "pattern": "^(?:(?:[0-9]{0,4}[1-9]|[0-9]{0,3}[1-9][0-9]|[0-9]{0,2}[1-9][0-9]{2}"
                    "|[0-9]?[1-9][0-9]{3}|[1-9][0-9]{4})[dhm]|never)$",
                    "description": "90d (the default), 12h, 30m or never",
                }
            ),
            "note": nullable(text(200)),
        },
        ["user"],
    ),
)
made_token = ns.schema_model(
    "MadeToken",
    {
        **TOKEN,
        "properties": {
            **TOKEN["properties"],
            "token": {"type": "string", "description": "The token: shown this once"},
        },
        "required": [*TOKEN["required"], "token"],
    },
)
me = ns.schema_model(
    "Me",
    obj(
        {
            "name": nullable({"type": "string", "description": "null without authentication"}),
            "role": ROLE,
            "auth": {"type": "string", "enum": ["users", "none"]},
        },
        ["name", "role", "auth"],
    ),
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
    @ns.response(200, "Every user", user_list)
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
    @ns.response(200, "The user", user)
    def get(self, name: str) -> dict[str, Any]:
        """One user."""
        return users().get(name).to_dict()

    @ns.expect(change)
    @ns.response(200, "The user, changed", user)
    @ns.response(400, "A bad field, named", error)
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
    @ns.doc(params={"user": arg("Only this user's tokens")})
    @ns.response(200, "The tokens", token_list)
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
    @ns.response(200, "The token's record", token)
    def get(self, token_id: str) -> dict[str, Any]:
        """One token's record."""
        return users().token(token_id).to_dict()

    @ns.response(200, "Revoked", token)
    def delete(self, token_id: str) -> dict[str, Any]:
        """Revoke a token: it stops working at once."""
        return users().revoke(token_id).to_dict()


@ns.route("/me")
@ns.response(401, "No valid token", error)
class Me(Resource):  # type: ignore[misc]
    @ns.response(200, "Who", me)
    def get(self) -> dict[str, Any]:
        """Who this token is, and its role (a read-only token acts as a viewer)."""
        found, role = identify()
        if found is None:  # authentication off: anyone is anything
            return {"name": acting_user(), "role": "admin", "auth": "none"}
        return {"name": found.name, "role": role, "auth": "users"}
