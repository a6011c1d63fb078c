"""Typed checksums on a real PostgreSQL: rows hashed by their columns' types.

Given two PostgreSQL databases built alike; when their tables are measured with
``typed=True`` (``hash_record_extended``, allowed by ``typed_hashes`` only between
servers of one major version); then they agree, row order does not matter, a
changed value is seen in its table only, and a table with a column type that has
no hash of its own (JSON, arrays) is hashed as text, still agreeing and still
seeing a change. A typed sum is not a text one: both sides must use one form.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, NullPool, text

from prodinf.databases import DatabaseURI
from prodinf.databases.checksum import table_stats, typed_hashes
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


def test_typed_checksums_agree_see_a_change_and_not_row_order(
    pair: tuple[Engine, Engine],
) -> None:
    a, b = pair
    # Given two PostgreSQL databases built alike, on one server (one version)
    assert typed_hashes(a, b)
    typed = table_stats(a, typed=True)
    assert table_stats(b, typed=True) == typed
    # A typed sum is another checksum than the text one (both sides must agree on it)
    assert typed["gene"] != table_stats(a)["gene"]

    # When the rows of a table are written again in another physical order
    with b.begin() as conn:
        conn.execute(text("CREATE TABLE meta2 AS SELECT * FROM meta ORDER BY meta_id DESC"))
        conn.execute(text("DELETE FROM meta"))
        conn.execute(text("INSERT INTO meta SELECT * FROM meta2"))
        conn.execute(text("DROP TABLE meta2"))
    # Then nothing differs
    assert table_stats(b, typed=True) == typed

    # When one value changes (a text column to NULL, a date by a day)
    with b.begin() as conn:
        conn.execute(text("UPDATE gene SET description = NULL WHERE gene_id = 7"))
        conn.execute(text("UPDATE exon SET release_date = release_date + 1 WHERE exon_id = 3"))
    # Then exactly those tables differ
    after = table_stats(b, typed=True)
    assert sorted(n for n in after if after[n] != typed[n]) == ["exon", "gene"]


def test_a_column_without_a_hash_of_its_own_is_hashed_as_text(
    pair: tuple[Engine, Engine],
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
    typed = table_stats(a, ["notes", "gene"], typed=True)
    # Then the table is measured (as text: what it would be without typed) and agrees
    assert typed["notes"] == table_stats(a, ["notes"])["notes"]
    assert typed["gene"] != table_stats(a, ["gene"])["gene"]
    assert table_stats(b, ["notes", "gene"], typed=True) == typed
    # And a change inside the JSON is seen
    with b.begin() as conn:
        conn.execute(text("UPDATE notes SET doc = '{\"a\": 2}' WHERE id = 1"))
    assert table_stats(b, ["notes"], typed=True)["notes"] != typed["notes"]


def test_typed_hashes_only_between_postgresql_servers(
    pair: tuple[Engine, Engine], datasets: Datasets
) -> None:
    a, _ = pair
    sqlite = DatabaseURI.parse(datasets.uri("sqlite")).create_engine(poolclass=NullPool)
    try:
        assert typed_hashes(a, a)
        assert not typed_hashes(a, sqlite)
    finally:
        sqlite.dispose()
