"""The built-in check types a catalogue entry can use, each working on SQLite,
PostgreSQL and MariaDB/MySQL.

An entry in ``healthchecks.yaml`` names a ``type`` and gives its options; the
factory here checks the options when the catalogue loads (so a typo stops prodinf
at start) and returns the function that runs the check. Every check is SQL run in
the database: counts and at most ten example rows come back, never whole tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import ColumnElement, String, and_, literal, or_, select, text

from prodinf.kinds.database.checks.context import MAX_EXAMPLES, CheckContext, Finding

__all__ = ["CHECK_TYPES", "CheckFn"]

CheckFn = Callable[[CheckContext], Finding]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- reachable ------------------------------------------------------------------------------


def _reachable(options: dict[str, Any]) -> CheckFn:
    _Options.model_validate(options)

    def run(ctx: CheckContext) -> Finding:
        ctx.conn.execute(text("SELECT 1")).scalar_one()
        version = ".".join(str(p) for p in (ctx.conn.dialect.server_version_info or ()))
        server = f"{ctx.engine_name} {version}".strip()
        return Finding(0, [], f"connected to {ctx.database} ({server})")

    return run


# -- tables_present / not_empty ---------------------------------------------------------------


class _Tables(_Options):
    tables: list[str] = Field(min_length=1)


def _tables_present(options: dict[str, Any]) -> CheckFn:
    wanted = _Tables.model_validate(options).tables

    def run(ctx: CheckContext) -> Finding:
        missing = [t for t in wanted if t not in ctx.table_names()]
        message = f"missing: {', '.join(missing)}" if missing else f"all {len(wanted)} present"
        return Finding(len(missing), [{"table": t} for t in missing[:MAX_EXAMPLES]], message)

    return run


def _not_empty(options: dict[str, Any]) -> CheckFn:
    wanted = _Tables.model_validate(options).tables

    def run(ctx: CheckContext) -> Finding:
        problems: list[dict[str, Any]] = []
        for name in wanted:
            if name not in ctx.table_names():
                problems.append({"table": name, "problem": "missing"})
                continue
            # One row is enough to know: never COUNT(*) a table of millions here.
            one = ctx.conn.execute(text(f"SELECT 1 FROM {ctx.quote(name)} LIMIT 1")).first()
            if one is None:
                problems.append({"table": name, "problem": "empty"})
        names = ", ".join(f"{p['table']} ({p['problem']})" for p in problems)
        message = f"empty or missing: {names}" if problems else f"all {len(wanted)} have rows"
        return Finding(len(problems), problems[:MAX_EXAMPLES], message)

    return run


# -- foreign_keys ------------------------------------------------------------------------------

_RELATION = re.compile(r"^\s*(\w+)\.(\w+)\s*->\s*(\w+)\.(\w+)\s*$")


class _ForeignKeys(_Options):
    tables: list[str] | None = None
    relations: list[str] = Field(default_factory=list)

    @field_validator("relations")
    @classmethod
    def _relations(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _RELATION.match(item):
                raise ValueError(f"{item!r} is not 'child.column -> parent.column'")
        return value


def _foreign_keys(options: dict[str, Any]) -> CheckFn:
    spec = _ForeignKeys.model_validate(options)

    def relations(ctx: CheckContext) -> list[tuple[str, list[str], str, list[str]]]:
        found: list[tuple[str, list[str], str, list[str]]] = []
        names = sorted(ctx.table_names())
        for table in spec.tables if spec.tables is not None else names:
            if table not in ctx.table_names():
                continue
            for fk in ctx.inspector.get_foreign_keys(table):
                found.append(
                    (table, fk["constrained_columns"], fk["referred_table"], fk["referred_columns"])
                )
        for item in spec.relations:  # declared in the catalogue (e.g. MyISAM has no FKs)
            match = _RELATION.match(item)
            assert match is not None  # checked when the catalogue loaded
            child, column, parent, referred = match.groups()
            found.append((child, [column], parent, [referred]))
        return found

    def run(ctx: CheckContext) -> Finding:
        total = 0
        examples: list[dict[str, Any]] = []
        broken: list[str] = []
        checked = relations(ctx)
        for child_name, columns, parent_name, referred in checked:
            child = ctx.table(child_name)
            parent = ctx.table(parent_name).alias("parent")
            joined = child.outerjoin(
                parent,
                and_(*[child.c[c] == parent.c[r] for c, r in zip(columns, referred, strict=True)]),
            )
            label = f"{child_name}.{','.join(columns)} -> {parent_name}.{','.join(referred)}"
            shown = list(child.primary_key.columns) or [child.c[c] for c in columns]
            shown += [child.c[c] for c in columns if child.c[c] not in shown]
            orphans = (
                select(literal(label).label("relation"), *shown)
                .select_from(joined)
                .where(parent.c[referred[0]].is_(None), *[child.c[c].is_not(None) for c in columns])
                .order_by(*shown)
            )
            count = ctx.count(orphans)
            if count:
                total += count
                broken.append(f"{label} ({count})")
                if len(examples) < MAX_EXAMPLES:
                    examples += ctx.examples(orphans, limit=MAX_EXAMPLES - len(examples))
        message = (
            f"{total} orphan rows: {'; '.join(broken)}"
            if total
            else f"no orphan rows in {len(checked)} foreign keys"
        )
        return Finding(total, examples, message)

    return run


# -- no_nulls ------------------------------------------------------------------------------------


class _Columns(_Options):
    columns: dict[str, list[str]] = Field(min_length=1)


def _no_nulls(options: dict[str, Any]) -> CheckFn:
    wanted = _Columns.model_validate(options).columns

    def run(ctx: CheckContext) -> Finding:
        total = 0
        examples: list[dict[str, Any]] = []
        bad: list[str] = []
        for table_name, columns in wanted.items():
            if table_name not in ctx.table_names():
                total += 1
                bad.append(f"{table_name} (missing table)")
                examples.append({"table": table_name, "problem": "missing table"})
                continue
            table = ctx.table(table_name)
            for name in columns:
                if name not in table.c:
                    total += 1
                    bad.append(f"{table_name}.{name} (missing column)")
                    examples.append({"table": table_name, "column": name, "problem": "missing"})
                    continue
                column = table.c[name]
                empty: ColumnElement[bool] = column.is_(None)
                if isinstance(column.type, String):  # '' is only comparable with text
                    empty = or_(empty, column == "")
                keys = [c for c in table.primary_key.columns if c is not column]
                query = (
                    select(literal(f"{table_name}.{name}").label("column"), *keys, column)
                    .where(empty)
                    .order_by(*keys)
                )
                count = ctx.count(query)
                if count:
                    total += count
                    bad.append(f"{table_name}.{name} ({count})")
                    if len(examples) < MAX_EXAMPLES:
                        examples += ctx.examples(query, limit=MAX_EXAMPLES - len(examples))
        message = f"NULL or empty values: {'; '.join(bad)}" if bad else "no NULL or empty values"
        return Finding(total, examples[:MAX_EXAMPLES], message)

    return run


# -- meta_keys -----------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_NAME_PARTS = ("dataset", "type", "release", "assembly", "database")


class _KeyRule(_Options):
    equals: str | int | None = None
    pattern: str | None = None

    @field_validator("equals")
    @classmethod
    def _equals(cls, value: str | int | None) -> str | None:
        if value is None:
            return None
        for part in _PLACEHOLDER.findall(str(value)):
            if part not in _NAME_PARTS:
                raise ValueError(f"{{{part}}} is not one of {', '.join(_NAME_PARTS)}")
        return str(value)

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"bad regular expression: {exc}") from None
        return value


class _MetaKeys(_Options):
    table: str = "meta"
    keys: dict[str, _KeyRule | None] = Field(min_length=1)


def _meta_keys(options: dict[str, Any]) -> CheckFn:
    spec = _MetaKeys.model_validate(options)

    def expected(ctx: CheckContext, template: str) -> str | None:
        if not _PLACEHOLDER.search(template):
            return template
        if ctx.dataset is None:
            return None
        parts = {k: "" if v is None else str(v) for k, v in ctx.dataset.as_dict().items()}
        return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], template)

    def run(ctx: CheckContext) -> Finding:
        if spec.table not in ctx.table_names():
            return Finding(1, [{"table": spec.table, "problem": "missing"}], f"no {spec.table}")
        meta = ctx.table(spec.table)
        key, value = meta.c.meta_key, meta.c.meta_value
        shown = [c for c in meta.primary_key.columns if c is not key and c is not value]
        problems: list[dict[str, Any]] = []
        total = 0
        for name, rule in spec.keys.items():
            if not ctx.count(select(key).where(key == name)):
                total += 1
                problems.append({"meta_key": name, "problem": "missing"})
                continue
            if rule is None or (rule.equals is None and rule.pattern is None):
                continue
            conditions: list[ColumnElement[bool]] = [value.is_(None)]
            want = None
            if rule.equals is not None:
                want = expected(ctx, str(rule.equals))
                if want is None:
                    total += 1
                    problems.append(
                        {
                            "meta_key": name,
                            "problem": f"the database name matches no naming rule, so the "
                            f"expected {rule.equals} is unknown",
                        }
                    )
                    continue
                conditions.append(value != want)
            if rule.pattern is not None:
                conditions.append(~value.regexp_match(rule.pattern))
            wrong = select(*shown, key, value).where(key == name, or_(*conditions))
            count = ctx.count(wrong)
            if count:
                total += count
                for row in ctx.examples(wrong, limit=MAX_EXAMPLES):
                    why = f"expected {want!r}" if want is not None else f"not {rule.pattern!r}"
                    problems.append({**row, "problem": why})
        summary = ", ".join(f"{p['meta_key']} ({p['problem']})" for p in problems[:MAX_EXAMPLES])
        message = f"bad meta keys: {summary}" if total else f"all {len(spec.keys)} keys valid"
        return Finding(total, problems[:MAX_EXAMPLES], message)

    return run


# -- sql -------------------------------------------------------------------------------------------


class _Sql(_Options):
    query: str = Field(min_length=1, description="SELECT of the problem rows.")
    what: str = "problem rows"


def _sql(options: dict[str, Any]) -> CheckFn:
    spec = _Sql.model_validate(options)
    query = spec.query.strip().rstrip(";")
    if not query.lower().startswith(("select", "with")):
        raise ValueError("query must be a SELECT of the problem rows")

    def run(ctx: CheckContext) -> Finding:
        return ctx.problems(query, what=spec.what)

    return run


#: Check type -> factory(options) -> check function. Factories raise ``ValueError``
#: (pydantic's included) for bad options.
CHECK_TYPES: dict[str, Callable[[dict[str, Any]], CheckFn]] = {
    "reachable": _reachable,
    "tables_present": _tables_present,
    "not_empty": _not_empty,
    "foreign_keys": _foreign_keys,
    "no_nulls": _no_nulls,
    "meta_keys": _meta_keys,
    "sql": _sql,
}
