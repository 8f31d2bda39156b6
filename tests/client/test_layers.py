"""The client's modules import each other one way only, type-only imports included.

The core is four modules (actions, timers, the channel machine, the socket
machine) and the asyncio layer two (channel, socket); the channel side
reaches its socket through a Protocol (``SocketPort``, ``SocketLink``), so
no module imports one that imports it back.
"""

from __future__ import annotations

import ast
from pathlib import Path

import phoenix_channels.client as client

PACKAGE = Path(client.__file__).parent


def imports_of(module: str) -> set[str]:
    """The sibling modules ``module`` imports anywhere in its source (``TYPE_CHECKING`` too)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_the_client_has_no_import_circle() -> None:
    modules = [p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"]
    graph = {m: imports_of(m) & set(modules) for m in modules}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        assert module not in visiting, "import circle: " + " -> ".join([*visiting, module])
        if module in done:
            return
        visiting.append(module)
        for target in sorted(graph[module]):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_channel_side_does_not_import_the_socket_side() -> None:
    assert "_socket_machine" not in imports_of("_channel_machine")
    assert "socket" not in imports_of("channel")
    assert imports_of("_actions") == set(), "the actions are a leaf of the client"
