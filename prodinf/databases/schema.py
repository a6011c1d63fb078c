"""Copying a database's schema to another server, of the same engine or another one.

The source is reflected with SQLAlchemy. Tables are created on the target with
their columns and primary keys only, so rows load fast; secondary indexes and
foreign keys are added once the data is in (``add_indexes``, ``add_foreign_keys``),
without re-validating rows (MariaDB with ``foreign_key_checks=0``, PostgreSQL
``NOT VALID``): a copy reproduces what the source holds, orphans included.
SQLite cannot add a foreign key to an existing table, so there they are declared
with the table (SQLite does not enforce them while loading by default).

Same engine: column types are kept exactly as reflected. Across engines each type
goes through its generic SQLAlchemy equivalent, widened where the target would
lose data (see ``adapt_type``); a type with no equivalent fails the copy clearly.
Views, triggers and routines are not copied.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    ForeignKeyConstraint,
    Index,
    MetaData,
    Numeric,
    String,
    Table,
    UniqueConstraint,
    inspect,
    text,
    types,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import AddConstraint, CreateIndex

from prodinf.exceptions import PermanentError

__all__ = [
    "adapt_type",
    "add_foreign_keys",
    "add_indexes",
    "add_primary_key",
    "add_primary_keys",
    "create_indexes",
    "plan_indexes",
    "reflect",
    "reset_sequences",
    "target_metadata",
]

_PG_NAME_MAX = 63


def reflect(engine: Engine) -> MetaData:
    """The source's tables, columns, keys and indexes."""
    md = MetaData()
    md.reflect(engine)
    return md


def adapt_type(type_: Any, target: str, where: str) -> Any:
    """The type a column of ``type_`` gets on a ``target`` engine of another kind.

    ``where`` (``table.column``) names the column in the error for a type that has
    no equivalent.
    """
    unsigned = bool(getattr(type_, "unsigned", False))
    try:
        generic = type_.as_generic()
    except NotImplementedError:
        raise PermanentError(
            f"column {where} has type {type_!r}, which has no equivalent on {target}"
        ) from None
    if isinstance(generic, types.Enum):
        # A PostgreSQL enum needs a named type; the values fit a string.
        generic = String(max((len(v) for v in generic.enums), default=1))
    if isinstance(generic, types.String):
        generic.collation = None
    if isinstance(generic, types.Integer) and unsigned and target != "mysql":
        generic = Numeric(20, 0) if isinstance(generic, types.BigInteger) else BigInteger()
    if target == "mysql":
        return _for_mysql(generic)
    return generic


def _for_mysql(generic: Any) -> Any:
    # MariaDB's TEXT, BLOB, DATETIME and DECIMAL defaults are narrower than elsewhere.
    if isinstance(generic, types.Text) or (
        isinstance(generic, types.String) and not generic.length
    ):
        return mysql.LONGTEXT()
    if isinstance(generic, types._Binary):
        return mysql.LONGBLOB()
    if isinstance(generic, types.DateTime):
        return mysql.DATETIME(fsp=6)
    if isinstance(generic, types.Float):
        # PostgreSQL reflects DOUBLE PRECISION with precision 53, which MariaDB's
        # DOUBLE(M) would read as a display width needing a scale.
        single = generic.precision is not None and generic.precision <= 24
        return mysql.FLOAT() if single else mysql.DOUBLE()
    if (
        isinstance(generic, types.Numeric)
        and not isinstance(generic, types.Float)
        and generic.precision is None
    ):
        return mysql.DECIMAL(65, 30)
    return generic


def _is_sequence_default(column: Column[Any]) -> bool:
    default = column.server_default
    arg = getattr(default, "arg", None)
    return "nextval(" in str(getattr(arg, "text", arg) or "")


def target_metadata(source: MetaData, target: str, same_engine: bool) -> MetaData:
    """Tables for the ``target`` engine: columns and primary keys (SQLite: foreign keys too).

    PostgreSQL tables get no primary key yet: a heap loads twice as fast without an
    index to keep up, and ``add_primary_keys`` sorts it in once (as ``pg_dump`` does).
    MariaDB keeps its key from the start: InnoDB stores rows in key order.
    """
    md = MetaData()
    defer = target == "postgresql"
    for table in source.sorted_tables:
        columns = []
        for col in table.columns:
            where = f"{table.name}.{col.name}"
            type_ = col.type if same_engine else adapt_type(col.type, target, where)
            sequence = _is_sequence_default(col)
            default = None
            if same_engine and col.server_default is not None and not sequence:
                default = col.server_default.arg  # type: ignore[attr-defined]
            columns.append(
                Column(
                    col.name,
                    type_,
                    primary_key=col.primary_key and not defer,
                    nullable=col.nullable,
                    autoincrement=False if defer else True if sequence else col.autoincrement,
                    server_default=default,
                )
            )
        options: dict[str, Any] = {}
        if target == "mysql":
            options = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}
            if same_engine:
                options.update({k: v for k, v in table.kwargs.items() if k.startswith("mysql_")})
        constraints: list[Any] = []
        if target == "sqlite":
            constraints = [_fk_copy(fk) for fk in table.foreign_key_constraints]
        Table(table.name, md, *columns, *constraints, **options)
    return md


def _fk_copy(fk: ForeignKeyConstraint) -> ForeignKeyConstraint:
    return ForeignKeyConstraint(
        list(fk.column_keys),
        [f"{e.column.table.name}.{e.column.name}" for e in fk.elements],
        name=fk.name,
        ondelete=fk.ondelete,
        onupdate=fk.onupdate,
    )


def _generates_ids(table: Table, col: Column[Any]) -> bool:
    """Whether the source fills ``col`` itself (SERIAL, AUTO_INCREMENT, SQLite's rowid)."""
    if _is_sequence_default(col) or col.autoincrement is True:
        return True
    # Reflected "auto": a lone integer key, which SQLite fills as its rowid.
    key = list(table.primary_key.columns)
    return col.autoincrement == "auto" and key == [col] and isinstance(col.type, types.Integer)


def add_primary_keys(conn: Connection, source: MetaData, have: Collection[str] = ()) -> list[str]:
    """PostgreSQL: add each table's primary key (and identity column) once the rows are in,
    but for the tables in ``have`` (given theirs already: not looked at again).

    Returns the tables given a key. Elsewhere the keys came with the tables.
    """
    tables = [t for t in source.sorted_tables if t.name not in have]
    return [t.name for t in tables if add_primary_key(conn, t)]


def add_primary_key(conn: Connection, table: Table) -> bool:
    """PostgreSQL: add ``table``'s primary key (and identity column) unless it has one.

    Its sequence, if any, is moved past the copied ids. Returns whether a key was added.
    """
    if conn.dialect.name != "postgresql":
        return False
    key = list(table.primary_key.columns)
    if not key or inspect(conn).get_pk_constraint(table.name)["constrained_columns"]:
        return False
    quote = conn.dialect.identifier_preparer.quote
    cols = ", ".join(quote(c.name) for c in key)
    name = table.primary_key.name
    if isinstance(name, str) and name and name.upper() != "PRIMARY":
        # The key's index built first, under a lock that lets others read the table
        # (its checksum, taken meanwhile), then made the key under the source's name.
        conn.execute(text(f"CREATE UNIQUE INDEX {quote(name)} ON {quote(table.name)} ({cols})"))
        conn.execute(
            text(
                f"ALTER TABLE {quote(table.name)} ADD CONSTRAINT {quote(name)} "
                f"PRIMARY KEY USING INDEX {quote(name)}"
            )
        )
    else:
        conn.execute(text(f"ALTER TABLE {quote(table.name)} ADD PRIMARY KEY ({cols})"))
    for col in key:
        if _generates_ids(table, col):
            conn.execute(
                text(
                    f"ALTER TABLE {quote(table.name)} ALTER COLUMN {quote(col.name)} "
                    "ADD GENERATED BY DEFAULT AS IDENTITY"
                )
            )
    reset_sequences(conn, [table])
    return True


def add_indexes(conn: Connection, source: MetaData, target: MetaData) -> list[str]:
    """Create the source's secondary indexes and unique constraints missing on the target.

    Returns the names created (see ``plan_indexes``).
    """
    created: list[str] = []
    for table, indexes in plan_indexes(conn, source, target).items():
        created += create_indexes(conn, table, indexes)
    return created


def plan_indexes(conn: Connection, source: MetaData, target: MetaData) -> dict[str, list[Index]]:
    """The source's secondary indexes and unique constraints missing on the target, by table.

    On PostgreSQL an index name is unique per schema, so a name already taken
    (MariaDB names FK indexes after the column) gets the table's name in front.
    Planned for every table at once, so that the tables can then be indexed in
    any order, or at the same time, under the same names.
    """
    insp = inspect(conn)
    dialect = conn.dialect.name
    taken: set[str] = set()
    have: dict[str, set[tuple[str, ...]]] = {}
    # One query each for every table (an inspector's per-table calls are one query each).
    found: list[tuple[str, Sequence[Any]]] = [
        *((name, ix) for (_, name), ix in insp.get_multi_indexes().items()),
        *((name, uq) for (_, name), uq in insp.get_multi_unique_constraints().items()),
    ]
    for name, entries in found:
        have.setdefault(name, set()).update(tuple(e["column_names"]) for e in entries)
        taken |= {str(e["name"]) for e in entries}
    planned: dict[str, list[Index]] = {}
    for table in source.sorted_tables:
        tgt = target.tables[table.name]
        wanted: list[tuple[str | None, list[str], bool]] = [
            (_name(i.name), [c.name for c in i.columns], bool(i.unique)) for i in table.indexes
        ]
        wanted += [
            (_name(u.name), [c.name for c in u.columns], True)
            for u in table.constraints
            if isinstance(u, UniqueConstraint)
        ]
        for wanted_name, cols, unique in wanted:
            if not cols or tuple(cols) in have.get(table.name, set()):
                continue
            index_name = str(wanted_name or f"ix_{table.name}_{'_'.join(cols)}")
            if dialect != "mysql" and index_name in taken:
                index_name = f"{table.name}_{index_name}"
            index_name = index_name[:_PG_NAME_MAX]
            index = Index(index_name, *[tgt.c[c] for c in cols], unique=unique)
            planned.setdefault(table.name, []).append(index)
            taken.add(index_name)
            have.setdefault(table.name, set()).add(tuple(cols))
    return planned


def create_indexes(conn: Connection, table: str, indexes: list[Index]) -> list[str]:
    """Create ``indexes`` on ``table``; returns their names.

    MariaDB builds them all in one ``ALTER TABLE``: one pass over the rows for every
    index instead of one each.
    """
    if not indexes:
        return []
    if conn.dialect.name == "mysql":
        quote = conn.dialect.identifier_preparer.quote
        clauses = [
            f"ADD {'UNIQUE ' if i.unique else ''}INDEX {quote(str(i.name))} "
            f"({', '.join(quote(c.name) for c in i.columns)})"
            for i in indexes
        ]
        conn.execute(text(f"ALTER TABLE {quote(table)} {', '.join(clauses)}"))
    else:
        for index in indexes:
            conn.execute(CreateIndex(index))
    return [str(i.name) for i in indexes]


def _name(name: Any) -> str | None:
    return str(name) if isinstance(name, str) else None


def add_foreign_keys(conn: Connection, source: MetaData, target: MetaData) -> list[str]:
    """Add the source's foreign keys missing on the target, without checking existing rows.

    Returns ``table(columns)`` of each key added. Nothing to do on SQLite, where
    they were declared with the tables.
    """
    dialect = conn.dialect.name
    if dialect == "sqlite":
        return []
    insp = inspect(conn)
    if dialect == "mysql":
        conn.execute(text("SET SESSION foreign_key_checks = 0"))
    added: list[str] = []
    for table in source.sorted_tables:
        existing = {
            (tuple(fk["constrained_columns"]), fk["referred_table"])
            for fk in insp.get_foreign_keys(table.name)
        }
        tgt = target.tables[table.name]
        clauses: list[str] = []
        for fk in table.foreign_key_constraints:
            referred = fk.elements[0].column.table.name
            if (tuple(fk.column_keys), referred) in existing:
                continue
            copy = _fk_copy(fk)
            tgt.append_constraint(copy)
            ddl = str(AddConstraint(copy).compile(dialect=conn.dialect))
            if dialect == "postgresql":
                ddl += " NOT VALID"
            clauses.append(ddl)
            added.append(f"{table.name}({', '.join(fk.column_keys)})")
        if dialect == "mysql" and clauses:
            # One ALTER TABLE for all of a table's keys: each one is a change of the
            # table's definition, committed (and flushed) on its own.
            alter = f"ALTER TABLE {conn.dialect.identifier_preparer.format_table(tgt)} "
            conn.execute(text(alter + ", ".join(c.removeprefix(alter) for c in clauses)))
        else:
            for ddl in clauses:
                conn.execute(text(ddl))
    return added


def reset_sequences(conn: Connection, tables: Iterable[Table]) -> None:
    """PostgreSQL: move each serial column's sequence past the copied ids."""
    if conn.dialect.name != "postgresql":
        return  # MariaDB and SQLite move AUTO_INCREMENT past inserted ids themselves
    quote = conn.dialect.identifier_preparer.quote
    for table in tables:
        for col in table.primary_key.columns:
            if not isinstance(col.type, types.Integer):
                continue
            seq = conn.scalar(
                text("SELECT pg_get_serial_sequence(:t, :c)"),
                {"t": quote(table.name), "c": col.name},
            )
            if seq:
                conn.execute(
                    text(
                        f"SELECT setval(:s, COALESCE(MAX({quote(col.name)}), 1), "
                        f"MAX({quote(col.name)}) IS NOT NULL) FROM {quote(table.name)}"
                    ),
                    {"s": seq},
                )
