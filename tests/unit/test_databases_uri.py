"""Database URIs, checksums and sample datasets, without servers (SQLite only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import NullPool, text

from prodinf.databases import DatabaseURI, table_stats
from prodinf.databases import uri as uri_module
from prodinf.engine.registry import registry
from prodinf.exceptions import ValidationError
from prodinf.kinds.database import copy as _copy  # noqa: F401  (registers copy_database)
from tests.sample_data import build_core_like, dataset_uri

SECRET = "mysql://user:S3cret-pw@db.example:3306/homo_sapiens_core_115_38"


@pytest.mark.parametrize(
    ("written", "engine", "driver", "database"),
    [
        ("mysql://u@h/db_1", "mysql", "mysql+pymysql", "db_1"),
        ("mariadb://u@h:3307/db", "mysql", "mysql+pymysql", "db"),
        ("postgres://u@h/db", "postgresql", "postgresql+psycopg", "db"),
        ("postgresql://u@h:5433/db", "postgresql", "postgresql+psycopg", "db"),
        ("sqlite:////data/x/core_db.sqlite", "sqlite", "sqlite", "core_db"),
    ],
)
def test_each_scheme_gets_its_driver(written: str, engine: str, driver: str, database: str) -> None:
    """Given a database URI as a user writes it, then it is parsed to its engine, the
    driver prodinf installs for it, and its database.
    """
    uri = DatabaseURI.parse(written)
    assert uri.engine_name == engine
    assert uri.url.drivername == driver
    assert uri.database == database


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("nothing", "expected mysql://"),
        ("oracle://u:pw@h/db", "unsupported scheme"),
        ("mysql://u@h", "database name"),
        ("mysql://u@h/bad;name", "database name"),
        ("mysql:///db", "names no host"),
        ("sqlite://", "file path"),
        ("sqlite:///:memory:", "file path"),
    ],
)
def test_a_bad_uri_names_the_field_and_never_repeats_the_password(
    written: str, problem: str
) -> None:
    """Given a bad URI with a password, when it is parsed for a field, then the error names
    the field and the problem, never the password.
    """
    with pytest.raises(ValidationError) as caught:
        DatabaseURI.parse(written.replace("pw", "S3cret-pw"), field="src_uri")
    assert caught.value.field == "src_uri"
    assert problem in caught.value.message
    assert "S3cret" not in caught.value.message


def test_the_password_is_masked_everywhere_but_secret() -> None:
    """Given a URI with a password, then every way of showing it masks the password, and
    only secret() gives it back.
    """
    uri = DatabaseURI.parse(SECRET)
    for shown in (uri.masked(), str(uri), repr(uri), uri.server().masked()):
        assert "S3cret" not in shown
        assert "user:***@db.example:3306" in shown
    assert "S3cret-pw" in uri.secret()


def test_server_and_sibling_databases() -> None:
    """Given a URI, then server() drops the database (or names the admin one), and
    with_database names a sibling, refusing a bad name.
    """
    uri = DatabaseURI.parse(SECRET)
    assert uri.server().url.database is None
    assert DatabaseURI.parse("postgresql://u@h/db").server().database == "postgres"
    assert uri.with_database("other_db").database == "other_db"
    assert dataset_uri("sqlite:////tmp/a/x.sqlite", "y") == "sqlite:////tmp/a/y.sqlite"
    with pytest.raises(ValidationError):
        uri.with_database("no good")


def test_copy_params_name_the_bad_field() -> None:
    """Given copy_database params with one bad field, when validated, then the error names
    that field.
    """
    kind = registry.get("copy_database")
    good = {"src_uri": "sqlite:////tmp/a.sqlite", "tgt_uri": "sqlite:////tmp/b.sqlite"}
    assert kind.validate(good).overwrite is False
    for params, field in [
        ({**good, "src_uri": "ftp://x"}, "params.src_uri"),
        ({**good, "tgt_uri": good["src_uri"]}, "params.tgt_uri"),
        ({**good, "batch_rows": 0}, "params.batch_rows"),
        ({**good, "extra": 1}, "params.extra"),
    ]:
        with pytest.raises(ValidationError) as caught:
            kind.validate(params)
        assert caught.value.field == field


def test_sqlite_lifecycle(tmp_path: Path) -> None:
    """Given a SQLite URI in a folder that does not exist, then it can be created (empty),
    and dropped.
    """
    uri = DatabaseURI.parse(f"sqlite:///{tmp_path / 'sub' / 'd.sqlite'}")
    assert not uri.exists()
    uri.create()
    assert uri.exists() and uri.table_names() == []
    uri.drop()
    assert not uri.exists()


def test_checksums_see_any_change_and_not_row_order(tmp_path: Path) -> None:
    """Given two databases built alike, then their checksums agree on both methods; when
    rows are reordered, they still agree; when a value changes, only that table differs.
    """
    a = DatabaseURI.parse(f"sqlite:///{tmp_path / 'a.sqlite'}")
    b = DatabaseURI.parse(f"sqlite:///{tmp_path / 'b.sqlite'}")
    counts = build_core_like(a, genes=60, seed=3)
    assert build_core_like(b, genes=60, seed=3) == counts
    engine_a = a.create_engine(poolclass=NullPool)
    engine_b = b.create_engine(poolclass=NullPool)
    for portable in (False, True):
        assert table_stats(engine_a, portable=portable) == table_stats(engine_b, portable=portable)
    before = table_stats(engine_b)
    assert {name: s.rows for name, s in before.items()} == counts
    with engine_b.begin() as conn:
        # Same rows in another physical order: the checksum does not change.
        conn.execute(text("CREATE TABLE meta2 AS SELECT * FROM meta ORDER BY meta_id DESC"))
        conn.execute(text("DELETE FROM meta"))
        conn.execute(text("INSERT INTO meta SELECT * FROM meta2"))
        conn.execute(text("DROP TABLE meta2"))
    assert table_stats(engine_b)["meta"] == before["meta"]
    with engine_b.begin() as conn:
        conn.execute(text("UPDATE gene SET description = NULL WHERE gene_id = 7"))
        conn.execute(text("UPDATE exon SET phase = phase WHERE exon_id = 1"))  # no change
    after = table_stats(engine_b)
    assert [n for n in after if after[n] != before[n]] == ["gene"]
    engine_a.dispose()
    engine_b.dispose()


def test_a_sample_refuses_a_database_with_tables(tmp_path: Path) -> None:
    """Given a database that already has tables, when a sample is built into it, then it
    is refused.
    """
    uri = f"sqlite:///{tmp_path / 'c.sqlite'}"
    build_core_like(uri, genes=20)
    with pytest.raises(Exception, match="already has tables"):
        build_core_like(uri, genes=20)


def test_load_drivers_imports_the_installed_drivers_once_for_the_process() -> None:
    # Given a new interpreter, where nothing has imported a database driver yet
    script = (
        "import sys\n"
        "from prodinf.databases.uri import load_drivers\n"
        "names = ('psycopg', 'pymysql')\n"
        "print([n for n in names if n in sys.modules])\n"
        "print(load_drivers())\n"
        "print([n for n in names if n in sys.modules])\n"
    )
    # When it loads the drivers (as a worker does as it starts, before its pool forks)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    # Then both installed drivers are imported in it, and neither was before
    before, loaded, after = done.stdout.splitlines()
    assert before == "[]"
    assert loaded == after == "['psycopg', 'pymysql']"


def test_load_drivers_skips_a_driver_not_installed_but_not_a_broken_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given one driver that is not installed, and one installed that needs a module
    # that is not
    (tmp_path / "prodinf_broken_driver.py").write_text("import prodinf_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(uri_module, "DRIVER_MODULES", ("prodinf_no_such_driver", "pymysql"))
    # When the drivers are loaded, then the missing one is skipped
    assert uri_module.load_drivers() == ["pymysql"]
    # and the broken one says what it misses
    monkeypatch.setattr(uri_module, "DRIVER_MODULES", ("prodinf_broken_driver",))
    with pytest.raises(ModuleNotFoundError, match="prodinf_missing_dependency"):
        uri_module.load_drivers()
