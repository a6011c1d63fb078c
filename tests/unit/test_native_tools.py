"""Which ``psql`` a native PostgreSQL copy runs.

Given Debian's layout, where ``psql`` on the PATH is ``pg_wrapper`` (a Perl script
costing 25 ms of CPU a start, two starts a table) and each installed version's
client lives in ``/usr/lib/postgresql/<version>/bin``; then the newest client is
run directly, as the wrapper itself picks it for ``psql``. Elsewhere the ``psql``
on the PATH is run as it is. The folders are real files in a temporary tree.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from prodinf.databases import native


def executable(path: Path, text: str = "#!/bin/sh\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    clients = tmp_path / "lib" / "postgresql"
    for version in ("9.6", "13", "15"):
        executable(clients / version / "bin" / "psql")
    monkeypatch.setattr(native, "DEBIAN_CLIENTS", str(clients))
    native._newest_debian_client.cache_clear()
    yield tmp_path
    native._newest_debian_client.cache_clear()


def test_debians_wrapper_is_skipped_for_the_newest_client(
    layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given psql on the PATH is a link to pg_wrapper
    wrapper = executable(layout / "share" / "pg_wrapper", "#!/usr/bin/perl\n")
    (layout / "bin").mkdir()
    (layout / "bin" / "psql").symlink_to(wrapper)
    monkeypatch.setenv("PATH", str(layout / "bin"))
    # Then the newest version's own psql is run (15, not 9.6 by text order)
    assert native.psql_tool() == str(layout / "lib" / "postgresql" / "15" / "bin" / "psql")


def test_a_psql_that_is_no_wrapper_is_run_as_it_is(
    layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = executable(layout / "opt" / "bin" / "psql")
    monkeypatch.setenv("PATH", str(own.parent))
    assert native.psql_tool() == str(own)
    monkeypatch.setenv("PATH", str(layout / "nowhere"))
    assert native.psql_tool() is None
    assert not native.native_tools("postgresql")
