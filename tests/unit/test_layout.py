"""The shape of the code: layers, no import cycle, one home for statuses, small modules.

These read the source, not the running code: they hold what docs/architecture.rst
promises about where things live.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

from prodinf.status import JobStatus, StepStatus

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "prodinf"
#: Migrations are history: they keep the values they were written with.
MIGRATIONS = PACKAGE / "store" / "migrations"
STATUS_MODULE = PACKAGE / "status.py"
STATUS_VALUES = frozenset(JobStatus) | frozenset(StepStatus)


def sources() -> Iterator[Path]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if MIGRATIONS not in path.parents:
            yield path


def test_the_layers_contract_holds() -> None:
    """Given the layers and the no-cycle contract declared in pyproject.toml,
    when import-linter checks them (imports inside functions included),
    then both are kept."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "lint-imports is installed with the test extras"

    done = subprocess.run(
        [lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_no_module_imports_itself_back() -> None:
    """Given the import graph of prodinf (imports in functions and under TYPE_CHECKING
    too), then no module imports itself back: no cycle."""
    graph = grimp.build_graph("prodinf", cache_dir=None)
    cycles = _cycles({m: graph.find_modules_directly_imported_by(m) for m in graph.modules})

    assert cycles == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    """Given a graph with a cycle and one without, then the finder finds the cycle only."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def status_literals(path: Path, root: Path = ROOT) -> list[str]:
    """Where ``path`` spells a job or step status as a bare string.

    Not counted: docstrings, members of a ``StrEnum`` (a named constant), and keys
    (of a dict display or a subscript), which name a field rather than a status.
    """
    tree = ast.parse(path.read_text(), str(path))
    exempt: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            exempt.add(id(body[0].value))
        if isinstance(node, ast.ClassDef) and any(
            getattr(base, "id", getattr(base, "attr", None)) == "StrEnum" for base in node.bases
        ):
            exempt.update(id(inner) for inner in ast.walk(node))
        if isinstance(node, ast.Dict):
            exempt.update(id(key) for key in node.keys if key is not None)
        if isinstance(node, ast.Subscript):
            exempt.add(id(node.slice))
    return [
        f"{path.relative_to(root)}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in STATUS_VALUES
        and id(node) not in exempt
    ]


def test_statuses_are_spelled_only_in_the_status_module() -> None:
    """Given the package's modules, then none but prodinf/status.py spells a status."""
    found = [hit for path in sources() if path != STATUS_MODULE for hit in status_literals(path)]

    assert found == []


def test_the_status_check_sees_a_bare_status(tmp_path: Path) -> None:
    """Given a module with statuses in a docstring, an enum, a key and a comparison, then
    the check reports the comparison only.
    """
    module = tmp_path / "m.py"
    module.write_text(
        '"""Docstring: waiting."""\n'
        "from enum import StrEnum\n"
        "class Seen(StrEnum):\n    PENDING = 'pending'\n"
        "done = {'failed': 1}['failed']\n"
        "if status == 'waiting':\n    pass\n"
    )

    assert status_literals(module, tmp_path) == ["m.py:6: 'waiting'"]


def test_queues_are_named_only_by_settings() -> None:
    """Given the package's modules, then none but config.py looks a queue name up:
    ``Settings.queue_for`` is the one place a logical queue becomes a configured one."""
    found = [
        str(path.relative_to(ROOT))
        for path in sources()
        if "queues.get(" in path.read_text() and path != PACKAGE / "config.py"
    ]

    assert found == []


@pytest.mark.parametrize(
    ("folder", "most"),
    [(PACKAGE, 500), (ROOT / "tests", 800)],
    ids=["prodinf", "tests"],
)
def test_no_module_is_too_long(folder: Path, most: int) -> None:
    """Given the package and the tests, then no module is longer than its limit."""
    long = {
        str(path.relative_to(ROOT)): lines
        for path in folder.rglob("*.py")
        if MIGRATIONS not in path.parents and (lines := len(path.read_text().splitlines())) > most
    }

    assert long == {}
