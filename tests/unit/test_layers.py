"""The package's import structure: layers flow one way and nothing imports in a circle.

The contract is in pyproject.toml (``[tool.importlinter]``) and drawn in docs/architecture.md
("Layers"); ``make lint`` runs ``lint-imports`` in CI. These tests check the same from pytest,
plus what import-linter does not: no cycle at all (within a layer too), and that the picture in
the docs lists exactly the contract's layers, in order.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]


def contract_layers() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    [contract] = [c for c in config["contracts"] if c["type"] == "layers"]
    return list(contract["layers"])


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_imports_in_a_circle() -> None:
    # Imports inside functions count (they are still a dependency); TYPE_CHECKING ones do not.
    graph = grimp.build_graph("orchestra", exclude_type_checking_imports=True)
    assert cycles(graph) == []


def test_the_cycle_finder_finds_cycles() -> None:
    graph = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d"), ("p.d", "p.e")]:
        graph.add_import(importer=a, imported=b)
    graph.add_module("p.lonely")
    assert cycles(graph) == [["p.a", "p.b", "p.c"]]


def test_lint_imports_keeps_the_layer_contract() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    p = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True,
                       timeout=300, check=False)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "Contracts: 1 kept, 0 broken." in p.stdout


def test_the_docs_draw_the_contract_layers_in_order() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    drawn = []
    for line in block.splitlines():
        names = re.findall(r"orchestra(?:\.[A-Za-z_]+)*", line)
        if names:
            drawn.append(" | ".join(names))
    assert drawn == contract_layers()
