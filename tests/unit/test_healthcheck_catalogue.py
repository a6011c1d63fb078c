"""The healthcheck catalogue: YAML entries checked at load, Python checks from plugins,
selection by group and name, checks that break, and the report's HTML.

Checks run on small real SQLite databases built by ``build_core_like``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from prodinf.config import Settings
from prodinf.databases.naming import load_naming_rules
from prodinf.databases.uri import DatabaseURI
from prodinf.exceptions import PermanentError, ValidationError
from prodinf.kinds.database.checks import (
    DEFAULT_CATALOGUE,
    Catalogue,
    CheckContext,
    Finding,
    healthcheck,
    load_catalogue,
    render_report,
)
from prodinf.kinds.database.checks import catalogue as catalogue_module
from prodinf.kinds.database.healthcheck import run_check, run_healthchecks
from prodinf.kinds.rules_files import check_rules_files
from tests.sample_data import build_core_like

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def core_sqlite(tmp_path_factory: pytest.TempPathFactory) -> DatabaseURI:
    folder = tmp_path_factory.mktemp("core")
    uri = DatabaseURI.parse(f"sqlite:///{folder}/homo_sapiens_core_115_38.sqlite")
    build_core_like(uri, genes=30)
    return uri


@pytest.fixture
def conn(core_sqlite: DatabaseURI) -> Iterator[Connection]:
    engine = core_sqlite.create_engine()
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def context(conn: Connection, database: str = "homo_sapiens_core_115_38") -> CheckContext:
    dataset = load_naming_rules().match(database)
    return CheckContext(conn, engine_name="sqlite", database=database, dataset=dataset)


@pytest.fixture
def clean_python_checks() -> Iterator[None]:
    saved = dict(catalogue_module._PYTHON_CHECKS)
    yield
    catalogue_module._PYTHON_CHECKS.clear()
    catalogue_module._PYTHON_CHECKS.update(saved)


# -- the shipped catalogue ---------------------------------------------------------------------


def test_the_shipped_catalogue_is_the_config_example_and_loads() -> None:
    """Given the catalogue prodinf ships, then it is the config example, and it loads with
    its groups and checks in order.
    """
    assert DEFAULT_CATALOGUE.read_text() == (ROOT / "config" / "healthchecks.yaml").read_text()
    catalogue = load_catalogue()

    assert catalogue.groups == ["core", "generic", "meta"]
    assert catalogue.names == [
        "reachable",
        "core_tables_present",
        "core_tables_not_empty",
        "foreign_keys",
        "core_columns_set",
        "meta_keys",
    ]


def test_every_shipped_check_passes_on_a_good_core_database(conn: Connection) -> None:
    """Given a good core-like database, when every shipped check runs, then each passes
    with no problem row.
    """
    ctx = context(conn)
    for spec in load_catalogue().checks:
        outcome = run_check(ctx, spec)
        assert outcome["passed"], outcome
        assert outcome["count"] == 0 and outcome["examples"] == []


# -- bad catalogues are refused at load ---------------------------------------------------------


def entry(**overrides: Any) -> dict[str, Any]:
    return {"checks": [{"name": "c", "group": "g", "type": "reachable", **overrides}]}


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        (entry(type="magic"), "check 'c': `type` must be one of reachable, tables_present"),
        (entry(type="not_empty"), "check 'c': options.tables: Field required"),
        (entry(type="not_empty", options={"tables": []}), "options.tables"),
        (entry(options={"x": 1}), "options.x: Extra inputs are not permitted"),
        (
            entry(type="meta_keys", options={"keys": {"k": {"pattern": "("}}}),
            "options.keys.k.pattern",
        ),
        (
            entry(type="meta_keys", options={"keys": {"k": {"equals": "{species}"}}}),
            "{species} is not one of dataset, type, release, assembly, database",
        ),
        (
            entry(type="foreign_keys", options={"relations": ["gene.x => y.z"]}),
            "is not 'child.column -> parent.column'",
        ),
        (entry(type="sql", options={"query": "DELETE FROM gene"}), "must be a SELECT"),
        (entry(engines=["oracle"]), "engines must be among mysql, postgresql, sqlite"),
        (entry(colour="red"), "unknown keys ['colour']"),
        (entry(group=""), "needs a `group`"),
        ({"checks": [{"name": "a", "group": "g", "type": "reachable"}] * 2}, "declared twice"),
        ({"check": []}, "a list under `checks`"),
    ],
)
def test_a_bad_entry_is_refused_naming_it(document: Any, fragment: str) -> None:
    """Given a catalogue with a bad entry, when it is loaded, then the error names the file
    and what is wrong.
    """
    with pytest.raises(ValidationError) as caught:
        Catalogue.from_document(document, "mine.yaml")

    assert caught.value.message.startswith("mine.yaml: ")
    assert fragment in caught.value.message


def test_a_bad_catalogue_file_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    """Given PRODINF_HEALTHCHECKS naming a bad file, when the rules files are checked (as
    prodinf starts), then the error names the setting and the check.
    """
    bad = tmp_path / "healthchecks.yaml"
    bad.write_text("checks:\n  - {name: c, group: g, type: not_empty}\n")

    with pytest.raises(ValidationError) as caught:
        check_rules_files(Settings(healthchecks=bad))

    assert caught.value.field == "PRODINF_HEALTHCHECKS"
    assert "check 'c': options.tables: Field required" in caught.value.message


# -- selection ----------------------------------------------------------------------------------


def test_groups_and_names_select_checks_in_catalogue_order() -> None:
    """Given groups and names, then the checks they select come in catalogue order; given
    none, then all do.
    """
    catalogue = load_catalogue()

    assert [c.name for c in catalogue.select(["meta"], ["reachable"])] == ["reachable", "meta_keys"]
    assert len(catalogue.select()) == len(catalogue.checks)


@pytest.mark.parametrize(
    ("groups", "names", "field"),
    [(["nope"], [], "params.groups"), ([], ["nope"], "params.names")],
)
def test_an_unknown_group_or_name_is_refused_naming_the_field(
    groups: list[str], names: list[str], field: str
) -> None:
    """Given an unknown group or name, when checks are selected, then the error names the
    field and the value.
    """
    with pytest.raises(ValidationError) as caught:
        load_catalogue().select(groups, names)

    assert caught.value.field == field
    assert "'nope'" in caught.value.message


# -- Python checks from plugins -----------------------------------------------------------------


@pytest.mark.usefixtures("clean_python_checks")
def test_a_python_check_joins_the_catalogue_and_runs_in_sql(conn: Connection) -> None:
    """Given a check written in Python with @healthcheck, when the catalogue takes the
    Python checks, then it is selected by its group and runs, with counted examples.
    """

    @healthcheck("long_genes", group="plugin", applies_to=["core"])
    def long_genes(ctx: CheckContext) -> Finding:
        """No gene is longer than 1 base (every one is, so each is a problem)."""
        return ctx.problems(
            "SELECT gene_id, seq_region_end - seq_region_start AS span FROM gene "
            "WHERE seq_region_end - seq_region_start > 1 ORDER BY gene_id",
            what="long genes",
        )

    catalogue = load_catalogue().with_python_checks()
    spec = catalogue.select(["plugin"])[0]
    outcome = run_check(context(conn), spec)

    assert spec.description.startswith("No gene is longer")
    assert (outcome["passed"], outcome["count"], outcome["message"]) == (False, 30, "30 long genes")
    assert len(outcome["examples"]) == 10
    assert outcome["examples"][0]["gene_id"] == 1


@pytest.mark.usefixtures("clean_python_checks")
def test_a_check_that_breaks_fails_alone_and_says_why(conn: Connection) -> None:
    """Given a check whose SQL breaks and one after it, when both run, then the first fails
    saying why, and the second still runs on the same connection.
    """

    @healthcheck("broken", group="plugin")
    def broken(ctx: CheckContext) -> Finding:
        return ctx.problems("SELECT some_column FROM no_such_table")

    @healthcheck("after_broken", group="plugin")
    def after(ctx: CheckContext) -> Finding:
        return ctx.problems("SELECT gene_id FROM gene WHERE gene_id < 0")

    ctx = context(conn)
    specs = load_catalogue().with_python_checks().select(["plugin"])
    first, second = (run_check(ctx, spec) for spec in specs)

    assert first["passed"] is False
    assert first["message"].startswith("could not run: OperationalError: no such table")
    assert second["passed"] is True  # the connection is still usable


@pytest.mark.usefixtures("clean_python_checks")
def test_the_same_name_twice_is_refused() -> None:
    """Given a Python check registered twice, or under a name the catalogue has, then it
    is refused saying so.
    """

    @healthcheck("twice", group="g")
    def one(ctx: CheckContext) -> Finding:
        return Finding(0)

    with pytest.raises(ValueError, match="registered twice"):

        @healthcheck("twice", group="g")
        def other(ctx: CheckContext) -> Finding:
            return Finding(0)

    @healthcheck("reachable", group="g")
    def clash(ctx: CheckContext) -> Finding:
        return Finding(0)

    with pytest.raises(ValidationError, match=r"both .* and a plugin: \['reachable'\]"):
        load_catalogue().with_python_checks()


def test_checks_for_other_types_and_engines_are_skipped_with_a_reason() -> None:
    """Given a check for core databases, then it applies to one, and says why it skips
    another type or a name no rule matches.
    """
    spec = load_catalogue().select(names=["meta_keys"])[0]

    assert spec.skip_reason("core", "sqlite") is None
    assert spec.skip_reason("variation", "sqlite") == (
        "applies to core, otherfeatures, not variation"
    )
    assert "matches no naming rule" in (spec.skip_reason(None, "mysql") or "")


def test_meta_values_are_checked_against_the_name_and_patterns(conn: Connection) -> None:
    """Given a meta_keys check with expected values, when it runs on a database named for
    another release, then each wrong, mismatched or missing key is a problem, and a name
    no rule matches says so.
    """
    catalogue = Catalogue.from_document(
        {
            "checks": [
                {
                    "name": "m",
                    "group": "meta",
                    "type": "meta_keys",
                    "options": {
                        "keys": {
                            "schema_version": {"equals": "{release}"},
                            "species.production_name": {"pattern": "^[0-9]+$"},
                            "nope.key": None,
                        }
                    },
                }
            ]
        }
    )
    spec = catalogue.checks[0]

    wrong_release = run_check(context(conn, "homo_sapiens_core_116_38"), spec)
    assert wrong_release["count"] == 3
    problems = {e["meta_key"]: e["problem"] for e in wrong_release["examples"]}
    assert problems == {
        "schema_version": "expected '116'",
        "species.production_name": "not '^[0-9]+$'",
        "nope.key": "missing",
    }

    unnamed = run_check(context(conn, "my_database"), spec)
    first = unnamed["examples"][0]
    assert first["meta_key"] == "schema_version"
    assert "matches no naming rule" in first["problem"]


# -- the report ---------------------------------------------------------------------------------


def test_the_html_report_escapes_what_the_database_holds() -> None:
    """Given a result whose examples hold markup, when the report is rendered, then the
    HTML escapes it and the text shows it as text.
    """
    result = {
        "database": "mysql://u:***@h/db",
        "database_name": "db",
        "dataset": None,
        "passed": False,
        "summary": {"run": 1, "passed": 0, "failed": 1, "skipped": 0, "seconds": 0.5},
        "checks": [
            {
                "name": "c",
                "group": "g",
                "description": "",
                "passed": False,
                "count": 1,
                "examples": [{"value": "<script>alert(1)</script>"}],
                "message": "1 problem rows",
            }
        ],
        "skipped": [],
    }

    report = render_report(result)

    assert report["subject"] == "Healthchecks FAILED on db: 1 of 1 (c)"
    assert "<script>" not in report["html"]
    assert "&lt;script&gt;" in report["html"]
    assert "value=<script>alert(1)</script>" in report["text"]  # text is shown as text


def test_a_script_runs_the_catalogue_without_a_job(core_sqlite: DatabaseURI, home: Path) -> None:
    """Given a good core-like database, when a script calls run_healthchecks (as
    bench/copy.py does), then the checks run and pass, with a report.
    """
    # As bench/copy.py does: the plain function behind the kind's step
    result = run_healthchecks(core_sqlite.masked(), Settings(home=home), groups=["core"])

    assert result["passed"] is True
    # (a plugin loaded by another test may add Python checks after these)
    assert [c["name"] for c in result["checks"]][:3] == [
        "core_tables_present",
        "core_tables_not_empty",
        "core_columns_set",
    ]
    assert result["summary"]["seconds"] > 0
    assert result["report"]["subject"].startswith("Healthchecks passed on homo_sapiens_core_115_38")


def test_selecting_only_checks_that_do_not_apply_is_an_error(home: Path, tmp_path: Path) -> None:
    """Given a database of unknown type (its name matches no rule), when only checks that
    do not apply are selected, then it is a permanent error saying why for each.
    """
    # A database whose name matches no naming rule: its type is unknown
    uri = DatabaseURI.parse(f"sqlite:///{tmp_path}/scratch.sqlite")
    build_core_like(uri, genes=10)

    with pytest.raises(PermanentError) as caught:
        run_healthchecks(uri, Settings(home=home), groups=["meta"])

    assert caught.value.message.startswith("none of the selected checks applies to scratch (")
    assert "meta_keys: the database name matches no naming rule" in caught.value.message
