"""Subscriptions: which processes an event starts, from ``config/subscriptions.yaml``.

The file (``PRODINF_SUBSCRIPTIONS``; unset means the shipped example) is read and
checked when prodinf starts, like the other rules files: an unknown field, a bad type,
a bad glob, an ``after`` naming no subscription, a cycle, or a template that does not
compile stops it with a message naming the entry and what is wrong. Each entry::

    - name: check-new-core            # unique
      on: ["dataset.created", "dataset.*"]   # event types, glob patterns
      where:                          # all optional; every condition must hold
        dataset: "*_core_*"           # glob on the dataset's name
        type: core                    # the dataset's type (naming rules)
        release: 115                  # its release (a number or a list of numbers)
        payload: {server: "sta*"}     # payload fields: globs on their text
      run:
        kind: healthcheck             # a kind of this prodinf
        params: {database_uri: "{{ payload.server_uri }}/{{ dataset.name }}"}
      after: [other-subscription]     # run once those succeeded (same event)

Params are rendered with Jinja2's sandbox and strict undefined: a template sees the
event (``event.type``, ``event.id``, ``event.source``), ``dataset`` (``name``,
``type``, ``release``, ``assembly``, ...) and ``payload``, and nothing else: no
files, no shell, no attributes beyond them. A string that is one whole template
keeps the type of what it renders (``"{{ payload.release }}"`` gives a number).
"""

from __future__ import annotations

import fnmatch
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prodinf.exceptions import ValidationError
from prodinf.rulesfile import check_name, load_rules_file, named_entries
from prodinf.templating import check_templates, render_templates

__all__ = [
    "DEFAULT_SUBSCRIPTIONS",
    "Match",
    "Subscription",
    "Subscriptions",
    "load_subscriptions",
    "render",
]

#: The example shipped with prodinf (a copy of ``config/subscriptions.yaml``).
DEFAULT_SUBSCRIPTIONS = Path(__file__).parent / "defaults" / "subscriptions.yaml"
#: The kinds that run a process on a remote service, and an email or webhook.
REMOTE_KIND, NOTICE_KIND = "remote_job", "event_notice"
#: What an email or webhook of an event tells about it.
_NOTICE_FIELDS = ("id", "type", "dataset", "payload", "source")
#: Longest rendered coalescing key kept.
MAX_COALESCE_KEY = 500


class Where(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(default=None, description="Glob on the dataset's name.")
    type: str | None = Field(default=None, description="The dataset's type.")
    release: int | list[int] | None = Field(default=None, description="Its release(s).")
    payload: dict[str, str] = Field(default_factory=dict, description="Globs on payload fields.")

    def holds(self, dataset: dict[str, Any] | None, payload: dict[str, Any]) -> bool:
        """Whether every condition holds for an event's ``dataset`` and ``payload``."""
        named = dataset or {}
        if self.dataset is not None and not _glob(named.get("name"), self.dataset):
            return False
        if self.type is not None and named.get("type") != self.type:
            return False
        if self.release is not None:
            wanted = self.release if isinstance(self.release, list) else [self.release]
            if named.get("release") not in wanted:
                return False
        return all(_glob(payload.get(k), pattern) for k, pattern in self.payload.items())


class Run(BaseModel):
    """What a subscription starts: a kind here (``kind``), a job on a remote service
    (``service``, with ``kind`` for another prodinf), an email (``email``) or a
    signed webhook (``webhook``)."""

    model_config = ConfigDict(extra="forbid")

    kind: str | None = Field(default=None, description="A kind (of the service, if named).")
    service: str | None = Field(default=None, description="A service of PRODINF_SERVICES.")
    params: dict[str, Any] = Field(default_factory=dict, description="Params, as templates.")
    email: list[str] | None = Field(default=None, description="Addresses, as templates.")
    subject: str | None = Field(default=None, description="The email's subject, a template.")
    webhook: str | None = Field(default=None, description="A URL to POST to, a template.")

    @model_validator(mode="after")
    def _one_target(self) -> Run:
        targets = [
            t
            for t, given in (
                ("kind or service", self.kind is not None or self.service is not None),
                ("email", self.email is not None),
                ("webhook", self.webhook is not None),
            )
            if given
        ]
        if len(targets) != 1:
            raise ValueError(
                "give exactly one of kind (or service), email and webhook, not "
                + (" and ".join(targets) or "none")
            )
        if self.email is not None or self.webhook is not None:
            if self.params:
                raise ValueError("params go with a kind or a service, not an email or webhook")
            if self.email is not None and not self.email:
                raise ValueError("email: at least one address")
        elif self.subject is not None:
            raise ValueError("subject goes with an email")
        check_templates(self.params, "params")
        check_templates(self.email or [], "email")
        check_templates(self.subject or "", "subject")
        check_templates(self.webhook or "", "webhook")
        return self

    @property
    def target(self) -> str:
        """What it starts, in words: ``healthcheck``, ``healthcheck at staging``, ..."""
        if self.email is not None:
            return "email to " + ", ".join(self.email)
        if self.webhook is not None:
            return "webhook to " + self.webhook
        if self.service is None:
            return str(self.kind)
        return f"{self.kind} at {self.service}" if self.kind else f"a job at {self.service}"


class Coalesce(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="A template of the event; equal keys coalesce.")
    window: float = Field(gt=0, le=7 * 86400, description="Seconds the first event waits.")

    @field_validator("key")
    @classmethod
    def _compiles(cls, key: str) -> str:
        check_templates(key, "coalesce.key")
        return key


class Subscription(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    on: list[str] = Field(min_length=1, description="Event types, glob patterns.")
    where: Where = Field(default_factory=Where)
    run: Run
    after: list[str] = Field(default_factory=list)
    coalesce: Coalesce | None = None
    queue: str | None = Field(default=None, description="The queue its jobs run on.")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_name(name)

    @field_validator("queue")
    @classmethod
    def _queue(cls, queue: str | None) -> str | None:
        return None if queue is None else check_name(queue)

    @field_validator("on")
    @classmethod
    def _globs(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if not pattern.strip() or pattern.count("[") != pattern.count("]"):
                raise ValueError(f"{pattern!r} is not a glob pattern of event types")
        return patterns

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether this subscription wants ``event`` (``type``, ``dataset``, ``payload``)."""
        if not any(fnmatch.fnmatchcase(event["type"], p) for p in self.on):
            return False
        return self.where.holds(event.get("dataset"), event.get("payload") or {})

    def process(self, event: dict[str, Any], after: list[str]) -> Match:
        """The process this subscription starts for ``event``: the kind of the job that
        runs it and that job's params rendered, or why they did not render."""
        run = self.run
        kind = run.kind if run.service is None and run.kind else REMOTE_KIND
        if run.email is not None or run.webhook is not None:
            kind = NOTICE_KIND
        found = Match(
            subscription=self.name,
            kind=kind,
            target=run.target,
            params=None,
            after=after,
            queue=self.queue,
            window=self.coalesce.window if self.coalesce else None,
        )
        context = template_context(event)
        try:
            if self.coalesce is not None:
                key = render_templates(self.coalesce.key, context, "coalesce.key")
                found.coalesce_key = str(key)[:MAX_COALESCE_KEY]
            if kind == NOTICE_KIND:
                found.params = {
                    "subscription": self.name,
                    "event": {k: event.get(k) for k in _NOTICE_FIELDS},
                    "email": render_templates(run.email or [], context, "email"),
                    "subject": render_templates(run.subject, context, "subject"),
                    "webhook": render_templates(run.webhook, context, "webhook"),
                }
            elif kind == REMOTE_KIND:
                found.params = {
                    "service": run.service,
                    "kind": run.kind,
                    "params": render(run.params, event),
                }
            else:
                found.params = render(run.params, event)
        except ValidationError as exc:
            found.params, found.error = None, exc.message
        return found


class Match(BaseModel):
    """What an event starts for one subscription: the kind of the job that runs it and
    its rendered params, or why they did not render."""

    subscription: str
    kind: str
    target: str = ""
    params: dict[str, Any] | None
    after: list[str]
    error: str | None = None
    queue: str | None = None
    coalesce_key: str | None = None
    window: float | None = None


class Subscriptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscriptions: list[Subscription]
    source: str = "<memory>"

    @cached_property
    def by_name(self) -> dict[str, Subscription]:
        return {s.name: s for s in self.subscriptions}

    def matching(self, event: dict[str, Any]) -> list[Match]:
        """The processes ``event`` starts, in file order, params rendered. A subscription
        whose ``after`` names one that does not match the event depends on nothing."""
        chosen = [s for s in self.subscriptions if s.matches(event)]
        names = {s.name for s in chosen}
        found = []
        for sub in chosen:
            found.append(sub.process(event, [a for a in sub.after if a in names]))
        return found

    @classmethod
    def from_document(cls, document: Any, source: str = "<memory>") -> Subscriptions:
        """Subscriptions from a parsed YAML document; ``ValidationError`` names the entry."""

        def bad(message: str) -> ValidationError:
            return ValidationError(f"{source}: {message}", field="subscriptions")

        def one(item: dict[Any, Any], label: str) -> Subscription:
            if True in item and "on" not in item:
                # YAML 1.1 (PyYAML) reads a bare `on` key as the boolean true
                item = {("on" if k is True else k): v for k, v in item.items()}
            return Subscription.model_validate(item)

        entries = named_entries(document, source, "subscriptions", "subscription", one)
        seen = {sub.name for sub in entries}
        for sub in entries:
            for other in sub.after:
                if other not in seen:
                    raise bad(f"subscription {sub.name!r}: after: no subscription {other!r}")
        _no_cycle(entries, bad)
        return cls(subscriptions=entries, source=source)


def load_subscriptions(path: Path | str | None) -> Subscriptions:
    """The subscriptions of ``path`` (the shipped example when unset), checked."""
    return load_rules_file(
        path, DEFAULT_SUBSCRIPTIONS, "subscriptions", "subscriptions", Subscriptions.from_document
    )


def render(params: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """``params`` with every string rendered as a template of ``event``.

    :raises ValidationError: a template reads what the event does not have, or
        reaches outside it; the message names the param (``params.database_uri``).
    """
    context = template_context(event)
    return {k: render_templates(v, context, f"params.{k}") for k, v in params.items()}


def template_context(event: dict[str, Any]) -> dict[str, Any]:
    """What a template of ``event`` sees: ``event``, ``dataset`` and ``payload``."""
    return {
        "event": {k: event.get(k) for k in ("id", "type", "source", "created_at")},
        "dataset": event.get("dataset") or {},
        "payload": event.get("payload") or {},
    }


def _glob(value: Any, pattern: str) -> bool:
    return value is not None and fnmatch.fnmatchcase(str(value), pattern)


def _no_cycle(entries: list[Subscription], bad: Any) -> None:
    after = {s.name: s.after for s in entries}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join([*trail[trail.index(name) :], name])
            raise bad(f"subscription {name!r}: after: a cycle ({cycle})")
        state[name] = 1
        for other in after[name]:
            visit(other, [*trail, name])
        state[name] = 2

    for sub in entries:
        visit(sub.name, [])
