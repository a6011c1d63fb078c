"""The snapshot id a copy hands to its readers goes into SQL text: only a real id does."""

from __future__ import annotations

import pytest

from prodinf.databases.snapshot import set_snapshot


def test_a_snapshot_id_makes_its_statement() -> None:
    # As pg_export_snapshot() returns them
    assert set_snapshot("00000003-0000001B-1") == "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'"


@pytest.mark.parametrize("given", ["", "x", "1-2'; DROP TABLE gene; --", "00000003 0000001B"])
def test_anything_else_is_refused_before_it_reaches_sql(given: str) -> None:
    with pytest.raises(ValueError, match="not a snapshot id"):
        set_snapshot(given)
