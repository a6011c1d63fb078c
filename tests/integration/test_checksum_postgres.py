"""Typed checksums on a real PostgreSQL: values hashed by their columns' types.

Given two PostgreSQL databases built alike; when their tables are measured with
``hashes="columns"`` (each value by its type's hash) or ``"typed"`` (the whole row
by ``hash_record_extended``, the form of copies begun by an older prodinf), both
allowed by ``typed_hashes`` only between servers of one major version; then they
agree, row order does not matter, a changed value is seen in its table only, and a
table with a column type that has no hash of its own (JSON, arrays) is hashed as
text, still agreeing and still seeing a change. The forms are different sums: both
sides must use one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, NullPool, text

from prodinf.databases import DatabaseURI
from prodinf.databases.checksum import Hashes, table_stats, typed_hashes
from tests.integration.datasets import Datasets

pytestmark = pytest.mark.integration


@pytest.fixture
def pair(datasets: Datasets) -> Iterator[tuple[Engine, Engine]]:
    a, counts = datasets.build("postgresql", genes=60, seed=3)
    b, again = datasets.build("postgresql", genes=60, seed=3)
    assert again == counts
    one, two = (DatabaseURI.parse(u).create_engine(poolclass=NullPool) for u in (a, b))
    yield one, two
    one.dispose()
    two.dispose()


@pytest.mark.parametrize("hashes", ["columns", "typed"])
def test_typed_checksums_agree_see_a_change_and_not_row_order(
    pair: tuple[Engine, Engine], hashes: Hashes
) -> None:
    a, b = pair
    # Given two PostgreSQL databases built alike, on one server (one version)
    assert typed_hashes(a, b)
    typed = table_stats(a, hashes=hashes)
    assert table_stats(b, hashes=hashes) == typed
    # A typed sum is another checksum than the text one or the other typed one (both
    # sides must agree on the form)
    other: Hashes = "typed" if hashes == "columns" else "columns"
    assert typed["gene"] != table_stats(a)["gene"]
    assert typed["gene"] != table_stats(a, ["gene"], hashes=other)["gene"]

    # When the rows of a table are written again in another physical order
    with b.begin() as conn:
        conn.execute(text("CREATE TABLE meta2 AS SELECT * FROM meta ORDER BY meta_id DESC"))
        conn.execute(text("DELETE FROM meta"))
        conn.execute(text("INSERT INTO meta SELECT * FROM meta2"))
        conn.execute(text("DROP TABLE meta2"))
    # Then nothing differs
    assert table_stats(b, hashes=hashes) == typed

    # When one value changes (a text column to NULL, a date by a day)
    with b.begin() as conn:
        conn.execute(text("UPDATE gene SET description = NULL WHERE gene_id = 7"))
        conn.execute(text("UPDATE exon SET release_date = release_date + 1 WHERE exon_id = 3"))
    # Then exactly those tables differ
    after = table_stats(b, hashes=hashes)
    assert sorted(n for n in after if after[n] != typed[n]) == ["exon", "gene"]


@pytest.mark.parametrize("hashes", ["columns", "typed"])
def test_a_column_without_a_hash_of_its_own_is_hashed_as_text(
    pair: tuple[Engine, Engine], hashes: Hashes
) -> None:
    a, b = pair
    # Given a table with JSON and array columns (no typed hash for them) on both sides
    for engine in pair:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE notes (id int PRIMARY KEY, doc json, tags text[])"))
            conn.execute(
                text("INSERT INTO notes VALUES (1, '{\"a\": 1}', '{x,y}'), (2, NULL, NULL)")
            )
    # When both are measured typed
    typed = table_stats(a, ["notes", "gene"], hashes=hashes)
    # Then the table is measured (as text: what it would be without typed) and agrees
    assert typed["notes"] == table_stats(a, ["notes"])["notes"]
    assert typed["gene"] != table_stats(a, ["gene"])["gene"]
    assert table_stats(b, ["notes", "gene"], hashes=hashes) == typed
    # And a change inside the JSON is seen
    with b.begin() as conn:
        conn.execute(text("UPDATE notes SET doc = '{\"a\": 2}' WHERE id = 1"))
    assert table_stats(b, ["notes"], hashes=hashes)["notes"] != typed["notes"]


def test_hashes_by_column_see_each_type_and_a_value_moved_between_columns(
    pair: tuple[Engine, Engine],
) -> None:
    a, b = pair
    # Given a table with a column of each common type, some NULL, on both sides
    create = (
        "CREATE TABLE kinds (id bigint PRIMARY KEY, small smallint, big bigint,"
        " flag boolean, ratio real, wide double precision, amount numeric(10, 2),"
        " code char(4), name varchar(20), body text, day date, at timestamp,"
        " at_tz timestamptz, clock time, raw bytea, ident uuid)"
    )
    rows = [
        "(1, 1, 2, true, 0.5, 1e300, 12.50, 'ab', 'x', 'long text', '2024-02-29',"
        " '2024-02-29 12:00:01.5', '2024-02-29 12:00+02', '23:59:59', '\\x00ff',"
        " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')",
        "(2, 2, 1, false, NULL, NULL, NULL, NULL, NULL, NULL, 'infinity', NULL, NULL,"
        " NULL, NULL, NULL)",
    ]
    for engine in pair:
        with engine.begin() as conn:
            conn.execute(text(create))
            conn.execute(text(f"INSERT INTO kinds VALUES {', '.join(rows)}"))
    # When both are measured by column, they agree
    before = table_stats(a, ["kinds"], hashes="columns")
    assert table_stats(b, ["kinds"], hashes="columns") == before
    # Then a change of any one value is seen: each type, a NULL set or cleared, and
    # two values of one row swapped between its columns
    changes = [
        "UPDATE kinds SET small = big, big = small WHERE id = 1",
        "UPDATE kinds SET flag = NOT flag WHERE id = 2",
        "UPDATE kinds SET ratio = 0.25 WHERE id = 1",
        "UPDATE kinds SET wide = 0 WHERE id = 2",
        "UPDATE kinds SET amount = 12.51 WHERE id = 1",
        "UPDATE kinds SET code = 'ac' WHERE id = 1",
        "UPDATE kinds SET name = NULL WHERE id = 1",
        "UPDATE kinds SET body = '' WHERE id = 2",
        "UPDATE kinds SET day = '2024-03-01' WHERE id = 1",
        "UPDATE kinds SET at = at + interval '1 microsecond' WHERE id = 1",
        "UPDATE kinds SET at_tz = at_tz + interval '1 second' WHERE id = 1",
        "UPDATE kinds SET clock = '00:00' WHERE id = 1",
        "UPDATE kinds SET raw = '\\x00fe' WHERE id = 1",
        "UPDATE kinds SET ident = NULL WHERE id = 1",
    ]
    for change in changes:
        with b.begin() as conn:
            conn.execute(text(change))
        assert table_stats(b, ["kinds"], hashes="columns") != before, change
        with b.begin() as conn:  # as it was
            conn.execute(text("DELETE FROM kinds"))
            conn.execute(text(f"INSERT INTO kinds VALUES {', '.join(rows)}"))
        assert table_stats(b, ["kinds"], hashes="columns") == before
