"""Remote services: where work runs besides this prodinf's own kinds, from
``config/services.yaml``.

The file (``PRODINF_SERVICES``; unset means the shipped example) is read and checked
when prodinf starts, like the other rules files: an unknown field, a bad type, URL or
JSON pointer, a status word in two vocabularies, a template that does not compile, or
a token written where the *name* of its environment variable belongs stops it with a
message naming the entry and what is wrong. Each entry is one of::

    - name: staging-prodinf           # unique; 1-60 letters, digits, '_', '.', '-'
      type: prodinf                   # another prodinf: /api/v1/jobs + a signed callback
      url: https://staging-prodinf.example.org
      token_env: STAGING_PRODINF_TOKEN        # the variable holding its API token
      secret_env: STAGING_PRODINF_WEBHOOK_SECRET   # its PRODINF_WEBHOOK_SECRET

    - name: datacheck
      type: http                      # a job service of another contract
      url: https://datacheck.example.org/api
      token_env: DATACHECK_TOKEN
      submit: {method: POST, path: /runs, body: {db: "{{ params.database }}"}}
      job_id: /job/ref                # JSON pointers (RFC 6901) into its answers
      status_url: "/runs/{{ job_id }}"
      status: /state
      pending: [incomplete, running]  # its words, matched exactly
      succeeded: [complete]
      failed: [failed, dc-run-error]
      result: /output
      message: /error

Both types also take ``auth_header``, ``auth_scheme``, ``poll_interval``, ``deadline``
and ``timeout`` (docs/services.rst describes every field). Tokens and secrets are never
in the file, and no URL password, token or secret is shown anywhere: URLs go through
:func:`prodinf.redact.redact_text`, and :func:`describe_service` says only whether a
variable is set.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core.core_schema import ValidationInfo

from prodinf.exceptions import PermanentError, ValidationError
from prodinf.redact import redact, redact_text
from prodinf.remote.pointer import check_pointer
from prodinf.rulesfile import check_name, load_rules_file, named_entries
from prodinf.status import StepStatus
from prodinf.templating import check_templates

__all__ = [
    "DEFAULT_SERVICES",
    "STATES",
    "HttpService",
    "ProdinfService",
    "RemoteState",
    "Service",
    "Services",
    "Submit",
    "auth_headers",
    "describe_service",
    "load_services",
    "secret_of",
    "token_of",
]

#: The example shipped with prodinf (a copy of ``config/services.yaml``).
DEFAULT_SERVICES = Path(__file__).parent / "defaults" / "services.yaml"

#: Where a remote job stands. Each is also the name of the :class:`HttpService` field
#: listing the service's own words for it.
RemoteState = Literal[StepStatus.PENDING, StepStatus.SUCCEEDED, StepStatus.FAILED]
STATES: tuple[RemoteState, ...] = (StepStatus.PENDING, StepStatus.SUCCEEDED, StepStatus.FAILED)

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
# RFC 9110 token: what a header name (and an auth scheme) may be made of.
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
# Headers that carry credentials: a token is given with token_env, never in the file.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


def _env_name(value: str) -> str:
    # The message never repeats the value: it may be the token itself.
    if not _ENV_NAME.match(value):
        raise ValueError(
            "must be the NAME of an environment variable (A-Z, 0-9 and _, such as "
            "DATACHECK_TOKEN) that holds the value, never the value itself"
        )
    return value


def _base_url(value: str) -> str:
    # The message never repeats the URL: it may carry a password.
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        raise ValueError("is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL with a host, such as https://jobs.example.org")
    if parts.query or parts.fragment:
        raise ValueError("must be a base URL, without a query or fragment")
    return value.strip().rstrip("/")


EnvName = Annotated[str, AfterValidator(_env_name)]
Pointer = Annotated[str, AfterValidator(check_pointer)]
BaseUrl = Annotated[str, AfterValidator(_base_url)]


class _Service(BaseModel):
    """What every service has: a name, a base URL, how to authenticate and how long to wait."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Unique; 1-60 letters, digits, '_', '.' or '-'.")
    url: BaseUrl = Field(description="Base URL; a password in it is masked everywhere.")
    token_env: EnvName | None = Field(
        default=None, description="Name of the environment variable holding the API token."
    )
    auth_header: str = Field(
        default="Authorization", validate_default=True, description="Header carrying the token."
    )
    auth_scheme: str = Field(
        default="Bearer", description="Word before the token; empty: the bare token."
    )
    poll_interval: float = Field(default=30.0, gt=0, description="Seconds between polls.")
    deadline: float = Field(
        default=86400.0, gt=0, description="Seconds from submission after which waiting fails."
    )
    timeout: float = Field(default=30.0, gt=0, description="Seconds one HTTP request may take.")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_name(name)

    @field_validator("auth_header")
    @classmethod
    def _header_name(cls, value: str, info: ValidationInfo) -> str:
        if not _TOKEN.match(value):
            raise ValueError("must be an HTTP header name (letters, digits, '-')")
        url, token_env = info.data.get("url"), info.data.get("token_env")
        if value.lower() == "authorization" and token_env and url and urlsplit(url).username:
            # requests would send the URL's user:password there, replacing the token
            raise ValueError(
                "the url's user:password goes in Authorization (basic auth): the token of "
                "token_env needs another header, or the url no user"
            )
        return value

    @field_validator("auth_scheme")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value and not _TOKEN.match(value):
            raise ValueError("must be one word (Bearer, Token), or empty for the bare token")
        return value

    @property
    def masked_url(self) -> str:
        """``url`` as it may be shown: any password replaced by ``***``."""
        return redact_text(self.url)

    def url_for(self, path: str) -> str:
        """``path`` under ``url`` (a leading ``/`` or not is the same); an absolute
        http(s) URL is kept as it is."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.url}/{path.lstrip('/')}" if path.strip("/") else self.url


class ProdinfService(_Service):
    """Another prodinf: jobs go to its ``/api/v1/jobs`` with a signed completion webhook."""

    type: Literal["prodinf"] = "prodinf"
    secret_env: EnvName | None = Field(
        default=None,
        description="Name of the environment variable holding the secret it signs its "
        "webhooks with (its PRODINF_WEBHOOK_SECRET).",
    )


class Submit(BaseModel):
    """How an :class:`HttpService` takes a job: the request to send."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["POST", "PUT"] = Field(default="POST", description="POST or PUT.")
    path: str = Field(default="", description="Template of the path under the service's url.")
    body: Any = Field(default=None, description="JSON sent; every string is a template.")

    @field_validator("path")
    @classmethod
    def _path_compiles(cls, path: str) -> str:
        check_templates(path, "path")
        return path

    @field_validator("body")
    @classmethod
    def _body_compiles(cls, body: Any) -> Any:
        check_templates(body, "body")
        return body


class HttpService(_Service):
    """A job service of another contract, driven as its configuration says."""

    type: Literal["http"] = "http"
    submit: Submit = Field(description="The request that submits a job.")
    job_id: Pointer = Field(description="Where the job id is in the submit answer.")
    status_url: str = Field(description="Template of the job's status URL (sees job_id, params).")
    status: Pointer = Field(description="Where the status is in the status answer.")
    pending: list[str] = Field(min_length=1, description="Statuses meaning: keep waiting.")
    succeeded: list[str] = Field(min_length=1, description="Statuses meaning: it succeeded.")
    failed: list[str] = Field(min_length=1, description="Statuses meaning: it failed.")
    result: Pointer | None = Field(
        default=None, description="Where the result is; unset: the whole status answer."
    )
    message: Pointer | None = Field(
        default=None, description="Where the service's error text is, on failure."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Static extra headers.")

    @field_validator("status_url")
    @classmethod
    def _status_url_compiles(cls, template: str) -> str:
        if not template.strip():
            raise ValueError("must not be empty")
        check_templates(template, "status_url")
        return template

    @field_validator(StepStatus.SUCCEEDED, StepStatus.FAILED)
    @classmethod
    def _disjoint(cls, words: list[str], info: ValidationInfo) -> list[str]:
        for state in STATES:
            earlier = info.data.get(state)
            if state == info.field_name or not isinstance(earlier, list):
                continue
            for word in words:
                if word in earlier:
                    raise ValueError(f"{word!r} is in both {state} and {info.field_name}")
        return words

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        auth = str(info.data.get("auth_header", "")).lower()
        for name, value in headers.items():
            if not _TOKEN.match(name):
                raise ValueError(f"{name!r} is not an HTTP header name")
            if name.lower() in _CREDENTIAL_HEADERS or name.lower() == auth:
                raise ValueError(
                    f"{name!r} carries a credential: give the token with token_env instead"
                )
            if "\r" in value or "\n" in value:
                raise ValueError(f"{name}: a header value cannot hold a line break")
        return headers

    def state_of(self, status: str) -> RemoteState | None:
        """The state ``status`` (the service's word) stands for, or None if it is unknown."""
        for state in STATES:
            if status in getattr(self, state):
                return state
        return None


#: A service of the file, told apart by its ``type``.
Service = Annotated[ProdinfService | HttpService, Field(discriminator="type")]
_TYPES: dict[str, type[ProdinfService] | type[HttpService]] = {
    "prodinf": ProdinfService,
    "http": HttpService,
}


class Services(BaseModel):
    """The services of one file, in its order."""

    model_config = ConfigDict(extra="forbid")

    services: list[Service]
    source: str = "<memory>"

    @cached_property
    def by_name(self) -> dict[str, ProdinfService | HttpService]:
        return {s.name: s for s in self.services}

    @classmethod
    def from_document(cls, document: Any, source: str = "<memory>") -> Services:
        """Services from a parsed YAML document; ``ValidationError`` names the entry."""

        def one(item: dict[str, Any], label: str) -> ProdinfService | HttpService:
            if "type" not in item:
                raise ValidationError("type: Field required (prodinf or http)")
            model = _TYPES.get(item["type"]) if isinstance(item["type"], str) else None
            if model is None:
                raise ValidationError(f"type: must be 'prodinf' or 'http', not {item['type']!r}")
            return model.model_validate(item)

        entries = named_entries(document, source, "services", "service", one)
        return cls(services=entries, source=source)


def load_services(path: Path | str | None) -> Services:
    """The services of ``path`` (the shipped example when unset), checked; cached until
    the file changes.

    :raises ValidationError: the file is missing or wrong; the message names the file,
        the entry and the field (``<file>: service 'dc': job_id: ...``).
    """
    return load_rules_file(path, DEFAULT_SERVICES, "services", "services", Services.from_document)


def _from_env(service: ProdinfService | HttpService, variable: str, field: str) -> str:
    value = os.environ.get(variable, "")
    if not value:
        raise PermanentError(
            f"service {service.name!r}: the environment variable {variable} ({field}) is not set",
            field=field,
            service=service.name,
        )
    return value


def token_of(service: ProdinfService | HttpService) -> str | None:
    """The API token of ``service``, from the variable its ``token_env`` names; None
    when it names none.

    :raises PermanentError: the variable is not set (or empty); the message names the
        variable, never a value.
    """
    if service.token_env is None:
        return None
    return _from_env(service, service.token_env, "token_env")


def secret_of(service: ProdinfService) -> str | None:
    """The secret ``service`` signs its webhooks with, from the variable its
    ``secret_env`` names; None when it names none.

    :raises PermanentError: the variable is not set (or empty).
    """
    if service.secret_env is None:
        return None
    return _from_env(service, service.secret_env, "secret_env")


def auth_headers(service: ProdinfService | HttpService) -> dict[str, str]:
    """The headers every request to ``service`` carries: an http service's static
    ``headers``, and ``auth_header: auth_scheme token`` when ``token_env`` is set.

    :raises PermanentError: ``token_env`` names a variable that is not set.
    """
    headers = dict(service.headers) if isinstance(service, HttpService) else {}
    token = token_of(service)
    if token is not None:
        scheme = service.auth_scheme
        headers[service.auth_header] = f"{scheme} {token}" if scheme else token
    return headers


def _is_set(variable: str | None) -> bool:
    return bool(variable and os.environ.get(variable))


def describe_service(service: ProdinfService | HttpService) -> dict[str, Any]:
    """``service`` as it may be shown (``GET /api/v1/services``): the names of the
    variables that hold its token and secret and whether each is set, never a value;
    its URL masked; static header names only."""
    shown: dict[str, Any] = {
        "name": service.name,
        "type": service.type,
        "url": service.masked_url,
        "token_env": service.token_env,
        "token_set": _is_set(service.token_env),
        "auth_header": service.auth_header,
        "auth_scheme": service.auth_scheme,
        "poll_interval": service.poll_interval,
        "deadline": service.deadline,
        "timeout": service.timeout,
    }
    if isinstance(service, ProdinfService):
        shown["secret_env"] = service.secret_env
        shown["secret_set"] = _is_set(service.secret_env)
        return shown
    shown.update(
        {
            "submit": {
                "method": service.submit.method,
                "path": redact_text(service.submit.path),
                "body": redact(service.submit.body),
            },
            "job_id": service.job_id,
            "status_url": redact_text(service.status_url),
            "status": service.status,
            "pending": service.pending,
            "succeeded": service.succeeded,
            "failed": service.failed,
            "result": service.result,
            "message": service.message,
            "headers": sorted(service.headers),
        }
    )
    return shown
