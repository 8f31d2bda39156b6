"""Fail if the modules of ``src/phoenix_channels`` import each other in a circle.

Every import counts: top-level, inside functions, and under ``if TYPE_CHECKING:``
(a type-only arrow is still an arrow a reader has to follow). Relative imports
are resolved, and ``from pkg import name`` points at ``pkg.name`` when that is
a submodule, else at ``pkg`` itself. Importing ``a.b`` is not counted as an
import of the package ``a``: only explicit imports make arrows.

Run ``python tools/check_imports.py``; it prints every circle and exits 1 if
there is one (``make lint`` runs it). Standard library only.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "phoenix_channels"

def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def build_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module name -> the package's modules it imports."""
    files = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            for target in _targets(node, name, is_package, files):
                if target != name:
                    graph[name].add(target)
    return graph


def _targets(node: ast.AST, name: str, is_package: bool, files: dict[str, Path]) -> Iterable[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in files:
                yield alias.name
        return
    if not isinstance(node, ast.ImportFrom):
        return
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        if node.level > 1:
            base = base[: -(node.level - 1)]
        module = ".".join([*base, node.module] if node.module else base)
    else:
        module = node.module or ""
    if module not in files:
        return
    for alias in node.names:
        sub = f"{module}.{alias.name}"
        yield sub if sub in files else module


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        nonlocal counter
        # Iterative, so a deep graph cannot hit the recursion limit.
        work: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            if children:
                child = children.pop(0)
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, sorted(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def describe(cycle: list[str], graph: dict[str, set[str]]) -> str:
    members = set(cycle)
    arrows = [f"    {a} -> {b}" for a in cycle for b in sorted(graph[a] & members)]
    return "import circle of " + ", ".join(cycle) + ":\n" + "\n".join(arrows)


def main(argv: list[str] | None = None) -> int:
    graph = build_graph()
    cycles = find_cycles(graph)
    for cycle in cycles:
        print(describe(cycle, graph))
    if cycles:
        print(
            f"{len(cycles)} import circle(s) in src/{PACKAGE}: move the shared names to a "
            "lower module, or describe what the lower module needs with a typing.Protocol",
            file=sys.stderr,
        )
        return 1
    print(f"no import circle among {len(graph)} modules of src/{PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
