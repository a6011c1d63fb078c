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

from collections.abc import Iterable
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
    "add_primary_keys",
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


def add_primary_keys(conn: Connection, source: MetaData) -> list[str]:
    """PostgreSQL: add each table's primary key (and identity column) once the rows are in.

    Returns the tables given a key. Elsewhere the keys came with the tables.
    """
    if conn.dialect.name != "postgresql":
        return []
    insp = inspect(conn)
    quote = conn.dialect.identifier_preparer.quote
    added: list[str] = []
    for table in source.sorted_tables:
        key = list(table.primary_key.columns)
        if not key or insp.get_pk_constraint(table.name)["constrained_columns"]:
            continue
        cols = ", ".join(quote(c.name) for c in key)
        conn.execute(text(f"ALTER TABLE {quote(table.name)} ADD PRIMARY KEY ({cols})"))
        for col in key:
            if _generates_ids(table, col):
                conn.execute(
                    text(
                        f"ALTER TABLE {quote(table.name)} ALTER COLUMN {quote(col.name)} "
                        "ADD GENERATED BY DEFAULT AS IDENTITY"
                    )
                )
        added.append(table.name)
    return added


def add_indexes(conn: Connection, source: MetaData, target: MetaData) -> list[str]:
    """Create the source's secondary indexes and unique constraints missing on the target.

    Returns the names created. On PostgreSQL an index name is unique per schema,
    so a name already taken (MariaDB names FK indexes after the column) gets the
    table's name in front.
    """
    insp = inspect(conn)
    dialect = conn.dialect.name
    taken: set[str] = set()
    have: dict[str, set[tuple[str, ...]]] = {}
    for name in insp.get_table_names():
        have[name] = {tuple(i["column_names"]) for i in insp.get_indexes(name)}  # type: ignore[arg-type]
        have[name] |= {tuple(u["column_names"]) for u in insp.get_unique_constraints(name)}
        taken |= {str(i["name"]) for i in insp.get_indexes(name)}
        taken |= {str(u["name"]) for u in insp.get_unique_constraints(name)}
    created: list[str] = []
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
            conn.execute(CreateIndex(index))
            taken.add(index_name)
            have.setdefault(table.name, set()).add(tuple(cols))
            created.append(index_name)
    return created


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
        for fk in table.foreign_key_constraints:
            referred = fk.elements[0].column.table.name
            if (tuple(fk.column_keys), referred) in existing:
                continue
            copy = _fk_copy(fk)
            tgt.append_constraint(copy)
            ddl = str(AddConstraint(copy).compile(dialect=conn.dialect))
            if dialect == "postgresql":
                ddl += " NOT VALID"
            conn.execute(text(ddl))
            added.append(f"{table.name}({', '.join(fk.column_keys)})")
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
