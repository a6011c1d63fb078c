"""Naming rules: database names read as dataset, type, release and assembly; a bad
rules file stops prodinf at start with a message naming the setting and the rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prodinf.config import Settings
from prodinf.databases.naming import DEFAULT_NAMING_RULES, NamingRules, load_naming_rules
from prodinf.exceptions import ValidationError
from prodinf.kinds.rules_files import check_rules_files

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("database", "expected"),
    [
        ("homo_sapiens_core_115_38", ("homo_sapiens", "core", 115, "38", "species")),
        ("mus_musculus_variation_115_39", ("mus_musculus", "variation", 115, "39", "species")),
        (
            "canis_lupus_familiaris_otherfeatures_114_31",
            ("canis_lupus_familiaris", "otherfeatures", 114, "31", "species"),
        ),
        (
            "bacteria_1_collection_core_62_115_1",
            ("bacteria_1_collection", "core", 115, "1", "collection"),
        ),
        ("ensembl_compara_115", ("ensembl_compara", "compara", 115, None, "shared")),
        ("ensembl_ontology_115", ("ensembl_ontology", "ontology", 115, None, "shared")),
    ],
)
def test_the_shipped_rules_read_ensembl_names(database: str, expected: tuple[object, ...]) -> None:
    """Given an Ensembl database name, then the shipped rules read its dataset, type,
    release and assembly, naming the rule that matched.
    """
    name = load_naming_rules().parse(database)

    assert (name.dataset, name.type, name.release, name.assembly, name.rule) == expected
    assert name.database == database


@pytest.mark.parametrize("database", ["prodinf", "homo_sapiens_core", "Homo_sapiens_core_115_38"])
def test_a_name_no_rule_matches_is_refused_naming_the_rules(database: str) -> None:
    """Given a name no rule matches, then match finds nothing and parse refuses it, naming
    the rules it tried.
    """
    rules = load_naming_rules()

    assert rules.match(database) is None
    with pytest.raises(ValidationError) as caught:
        rules.parse(database)
    assert database in caught.value.message
    assert "species, collection, shared" in caught.value.message


def test_the_shipped_rules_are_the_config_example() -> None:
    # Given the rules prodinf ships, then they are config/naming.yaml.
    # The packaged copy (used from a wheel) is what config/naming.yaml shows users.
    assert DEFAULT_NAMING_RULES.read_text() == (ROOT / "config" / "naming.yaml").read_text()


def test_a_rule_can_fix_the_type_and_assembly() -> None:
    """Given a rule that fixes the type and the assembly, then a name it matches gets them."""
    rules = NamingRules.from_document(
        {
            "rules": [
                {
                    "name": "mart",
                    "pattern": r"(?P<dataset>\w+?)_mart_(?P<release>\d+)",
                    "type": "mart",
                    "assembly": "GRCh38",
                }
            ]
        }
    )

    name = rules.parse("genes_mart_115")

    assert (name.dataset, name.type, name.release, name.assembly) == (
        "genes",
        "mart",
        115,
        "GRCh38",
    )


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"rules": [{"name": "r", "pattern": "(?P<dataset>"}]}, "rule 'r': bad regular expression"),
        (
            {"rules": [{"name": "r", "pattern": r"(?P<dataset>\w+)_(?P<type>\w+)"}]},
            "rule 'r': the pattern lacks the named group(s) (?P<release>...)",
        ),
        (
            {"rules": [{"name": "r", "pattern": r"(?P<dataset>\w+)_(?P<release>\d+)"}]},
            "(?P<type>...) (or a fixed `type:`)",
        ),
        ({"rules": [{"name": "r", "pattern": "x", "flavour": 1}]}, "unknown keys ['flavour']"),
        ({"rules": []}, "`rules` is empty"),
        ({"patterns": []}, "a list under `rules`"),
        ("just text", "a list under `rules`"),
        ({"rules": [{"name": "r"}]}, "`pattern` must be a non-empty string"),
    ],
)
def test_bad_rules_are_refused_saying_what_is_wrong(document: object, fragment: str) -> None:
    """Given a bad rules document, when it is loaded, then the error names the file and
    what is wrong.
    """
    with pytest.raises(ValidationError) as caught:
        NamingRules.from_document(document, "my-rules.yaml")

    assert fragment in caught.value.message
    assert caught.value.message.startswith("my-rules.yaml: ")


def test_a_bad_rules_file_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    """Given PRODINF_NAMING_RULES naming a file with a bad pattern, when the rules files
    are checked, then the error names the setting and the rule.
    """
    bad = tmp_path / "naming.yaml"
    bad.write_text("rules:\n  - name: broken\n    pattern: '(?P<dataset>[a-z'\n")

    with pytest.raises(ValidationError) as caught:
        check_rules_files(Settings(naming_rules=bad))

    assert caught.value.field == "PRODINF_NAMING_RULES"
    assert caught.value.message.startswith("invalid setting PRODINF_NAMING_RULES: ")
    assert "rule 'broken': bad regular expression" in caught.value.message


def test_a_missing_rules_file_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    """Given PRODINF_NAMING_RULES naming no file, then the error names the setting."""
    with pytest.raises(ValidationError, match="cannot read naming rules") as caught:
        check_rules_files(Settings(naming_rules=tmp_path / "nowhere.yaml"))

    assert caught.value.field == "PRODINF_NAMING_RULES"


def test_an_edited_rules_file_is_read_again(tmp_path: Path) -> None:
    """Given a rules file read once, when it is edited, then the new rules are read."""
    path = tmp_path / "naming.yaml"
    path.write_text("rules:\n  - {name: a, pattern: '(?P<dataset>x)_(?P<type>t)_(?P<release>1)'}\n")
    assert load_naming_rules(path).rules[0].name == "a"

    path.write_text("rules:\n  - {name: b, pattern: '(?P<dataset>x)_(?P<type>t)_(?P<release>2)'}\n")
    os.utime(path, ns=(1, 10**18))  # a different modification time, whatever the clock

    assert load_naming_rules(path).rules[0].name == "b"


def test_prodinf_refuses_to_start_with_bad_rules(home: Path, tmp_path: Path) -> None:
    """Given PRODINF_NAMING_RULES naming a file with a pattern that lacks (?P<release>),
    when a prodinf command starts (as a shell runs it),
    then it exits 1 with one line naming the setting and the rule, and no traceback."""
    bad = tmp_path / "naming.yaml"
    bad.write_text("rules:\n  - name: mine\n    pattern: '(?P<dataset>\\w+)_(?P<type>\\w+)'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODINF_")}
    env.update(PRODINF_HOME=str(home), PRODINF_NAMING_RULES=str(bad))

    done = subprocess.run(
        [sys.executable, "-m", "prodinf.cli", "config"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("Error: invalid setting PRODINF_NAMING_RULES: "), done.stderr
    assert "rule 'mine'" in done.stderr
    assert "(?P<release>...)" in done.stderr
