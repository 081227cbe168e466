"""The shape of the code, checked: imports point one way, layers stay apart, modules stay small.

Every `import` of a culex module counts, wherever it is written (also under `TYPE_CHECKING` and
inside functions): a cycle through a type annotation is still two modules that cannot be
understood one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import culex

PACKAGE = Path(culex.__file__).parent
# Longer than this, a module is a room too big to find one's way in (ARCHITECTURE.md).
MAX_MODULE_LINES = 600


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The culex modules `path` imports (`from .x import y` counts as culex.<pkg>.x, or as
    culex.<pkg>.x.y when that is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("culex"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if not target.startswith("culex"):
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
    return found - {name}


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {name: imports_of(path) & MODULES.keys() for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
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
                    work.append((child, iter(sorted(graph[child]))))
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


def test_the_graph_sees_the_imports_it_must() -> None:
    """The parser is what the other checks rely on: it must find relative and absolute,
    module and name imports."""
    assert "culex.core.connection" in GRAPH["culex.core.handlers"]
    assert "culex.protocol.publish" in GRAPH["culex.core.handlers"]
    assert "culex.core.broker" in GRAPH["culex.server.app"]
    assert "culex.protocol.codec" in GRAPH["culex.protocol.topics"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_anywhere_in_culex() -> None:
    assert cycles(GRAPH) == []


def layer_violations(layer: str, allowed: tuple[str, ...]) -> list[str]:
    return [f"{name} imports {target}" for name, targets in GRAPH.items()
            if name.startswith(layer) for target in sorted(targets)
            if not target.startswith((layer, *allowed))]


def test_protocol_and_storage_import_nothing_of_culex_beyond_themselves() -> None:
    assert layer_violations("culex.protocol", ()) == []
    assert layer_violations("culex.storage", ()) == []


def test_the_core_knows_nothing_of_the_server_and_reads_no_clock() -> None:
    """Sockets, the event loop and the clock are the server's: the core is driven by calls
    with the time passed in."""
    assert layer_violations("culex.core", ("culex.protocol", "culex.storage", "culex.auth",
                                           "culex")) == []
    assert [f"{name} imports {target}" for name, targets in GRAPH.items()
            if name.startswith("culex.core") for target in sorted(targets)
            if target.startswith(("culex.server", "culex.bench", "culex.cli",
                                  "culex.config", "culex.logs"))] == []
    io = {"socket", "asyncio", "selectors", "ssl", "time", "threading"}
    for name, path in MODULES.items():
        # The cluster's sans-I/O part too: its Redis I/O is the server's.
        if not name.startswith(("culex.core", "culex.cluster")):
            continue
        top_level: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                top_level.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                top_level.add(node.module.split(".")[0])
        assert not top_level & io, f"{name} imports {sorted(top_level & io)}"


def test_no_module_is_over_the_size_a_reader_can_hold() -> None:
    long = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: lines for name, lines in long.items() if lines > MAX_MODULE_LINES} == {}
