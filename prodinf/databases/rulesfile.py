"""Moved to :mod:`prodinf.rulesfile` (foundations), so that every services package can
read its YAML file the same way; this name stays until the last importer is switched."""

from prodinf.rulesfile import load_rules_file

__all__ = ["load_rules_file"]
