"""The package's import graph: no cycles (function-local imports counted), and the one-way flow
of docs/design.md §1 (readers never import the writer; the engine knows nothing of sweeps or the CLI)."""

import ast
from pathlib import Path

import ramsweep

PACKAGE = Path(ramsweep.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its body (top level or in a function)."""
    files = {module_name(f): f for f in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                root = ".".join([*base, node.module] if node.module else base) if node.level else node.module or ""
                targets = [root] + [f"{root}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                # a module importing its own parent package (its __init__ has already run) is no edge
                if target and target != mod and not mod.startswith(target + "."):
                    graph[mod].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def reaches(graph, start: str, target: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == target:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph[node])
    return False


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_data_flows_one_way():
    graph = import_graph()
    readers = ("ramsweep.sweep.status", "ramsweep.report.tables", "ramsweep.serve", "ramsweep.serve.app")
    for reader in readers:
        assert not reaches(graph, reader, "ramsweep.sweep.runner"), f"{reader} imports the writer"
        assert not reaches(graph, reader, "ramsweep.sweep.executors"), f"{reader} imports the executors"
    for engine_module in (m for m in graph if m.startswith("ramsweep.engine")):
        for upper in ("ramsweep.sweep", "ramsweep.cli", "ramsweep.report", "ramsweep.sets"):
            assert not any(t.startswith(upper) for t in graph[engine_module]), f"{engine_module} imports {upper}"
    assert graph["ramsweep"] == set(), "the package root imports nothing of its own at import time"


def test_the_benchmark_scripts_still_import():
    """The benchmarks are run by hand, not by CI: a renamed function must not rot them unseen."""
    import importlib.util
    import sys

    folder = PACKAGE.parent / "benchmarks"
    sys.path.insert(0, str(folder))  # they import each other (gpu.py uses engine.py's reference)
    try:
        for path in sorted(folder.glob("*.py")):
            spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
            module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # as an import would: dataclasses look there
            try:
                spec.loader.exec_module(module)
            finally:
                del sys.modules[spec.name]
    finally:
        sys.path.remove(str(folder))
