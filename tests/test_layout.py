"""The shape of src/raysweep: data flows one way (no import cycle), modules stay small, internals stay in compat."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import raysweep

PACKAGE = Path(raysweep.__file__).parent
MAX_LINES = 400
#: Private Ray/MLflow names (``ray._private``, ``mlflow.x._y``, the callback's private util, a client's URIs).
_PRIVATE = re.compile(
    r"\bray(\.\w+)*\._\w+|_MLflowLoggerUtil|\.mlflow_util\b|\bmlflow(\.\w+)*\._\w+|\._registry_uri|\._tracking_client"
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the raysweep modules it imports anywhere in its file (inside functions too)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target not in (name, "raysweep"):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, as the path around it (found by depth-first search)."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b", "a"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c", "a"]]),
    ],
)
def test_cycle_finder(graph, expected):
    assert cycles(graph) == expected


def test_no_import_cycle_among_raysweep_modules():
    found = cycles(import_graph())
    assert not found, "import cycles (data must flow one way): " + "; ".join(" -> ".join(c) for c in found)


def test_no_module_over_the_line_limit():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    large = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not large, f"modules over {MAX_LINES} lines: {large}; split them by concern"


def test_private_ray_and_mlflow_names_only_in_compat():
    users = sorted(name for name, path in _modules().items() if _PRIVATE.search(path.read_text()))
    assert users in ([], ["raysweep.compat"]), f"private Ray/MLflow internals outside raysweep.compat: {users}"
