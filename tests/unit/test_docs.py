"""The user-facing docs say what the code does: the configuration reference and the env example."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from prodinf.config import Settings

ROOT = Path(__file__).resolve().parents[2]
ENTRY = re.compile(r"^``PRODINF_(\w+)``\n    Default: (.+?)\.(?: |$)", re.MULTILINE)


def documented() -> dict[str, str]:
    text = (ROOT / "docs" / "configuration.rst").read_text(encoding="utf-8")
    return {name.lower(): default for name, default in ENTRY.findall(text)}


def shown(value: Any) -> str | None:
    """How the reference writes a default; None when it describes it in words."""
    if value is None or value == []:
        return "unset"
    if isinstance(value, SecretStr | Path):  # a secret; a folder found where it runs
        return None
    if isinstance(value, bool):
        return f"``{str(value).lower()}``"
    return f"``{value}``"


def test_every_setting_is_documented_with_its_default() -> None:
    """Given the settings class, then docs/configuration.rst documents each setting with
    the code's default.
    """
    docs = documented()
    for name, field in Settings.model_fields.items():
        assert name in docs, f"PRODINF_{name.upper()} is missing from docs/configuration.rst"
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        expected = shown(default)
        if expected is not None:
            assert docs[name].startswith(expected), (
                f"PRODINF_{name.upper()}: docs say {docs[name]!r}, the code's default is {expected}"
            )


def test_no_documented_setting_is_unknown_to_the_code() -> None:
    """Given docs/configuration.rst, then every setting it documents exists in the code."""
    stale = set(documented()) - set(Settings.model_fields)
    assert not stale, f"docs/configuration.rst documents settings the code lacks: {stale}"


def test_the_env_example_only_sets_real_settings() -> None:
    """Given config/prodinf.env.example, then every variable it sets is a setting."""
    text = (ROOT / "config" / "prodinf.env.example").read_text(encoding="utf-8")
    names = re.findall(r"^#?\s*PRODINF_(\w+)=", text, re.MULTILINE)
    assert names
    unknown = {n.lower() for n in names} - set(Settings.model_fields)
    assert not unknown, f"config/prodinf.env.example sets unknown settings: {unknown}"


def test_the_readme_starts_with_the_two_commands() -> None:
    """Given the README, then it starts with the command to run prodinf and the one to
    test it.
    """
    head = (ROOT / "README.rst").read_text(encoding="utf-8").split("\n\n", 5)[:5]
    assert "    pip install -e . && prodinf up" in head
    assert "    pip install -e '.[test]' && pytest" in head


def test_the_architecture_shows_the_layers_exactly_as_the_contract_states_them() -> None:
    """Given the import-linter layers contract, then docs/architecture.rst shows the same
    layers, in the same order.
    """
    contract = next(
        c
        for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
            "contracts"
        ]
        if c["type"] == "layers"
    )
    text = (ROOT / "docs" / "architecture.rst").read_text(encoding="utf-8")
    block = text.split(".. code-block:: text\n\n", 1)[1].split("\n\n", 1)[0]
    # Each line: an optional layer-group name, then the layer as the contract writes it.
    shown = [re.sub(r"^\s*(?:[a-z]+\s{2,})?", "", line).strip() for line in block.splitlines()]

    assert shown == contract["layers"]
