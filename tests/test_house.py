"""The shape of the package: no two modules import each other (docs/ARCHITECTURE.md, floors).

Every import counts, at the top of a module or inside a function (a local import is still a
cycle, only a hidden one), and so does a module imported by its name (importlib, cli's table)."""
import ast
from pathlib import Path

import ecpi_beam

PACKAGE = Path(ecpi_beam.__file__).parent


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["ecpi_beam", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


# calls that import the module they name: importlib's and cli's table of console scripts
IMPORTING_CALLS = {"import_module", "__import__", "_dispatch"}


def _called_name(call: ast.Call) -> str:
    return getattr(call.func, "attr", None) or getattr(call.func, "id", "")


def imports_of(path: Path, modules) -> set[str]:
    """The package's modules that `path` imports (statically, or by a string naming one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from ecpi_beam.io import fs` imports the module io.fs
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
        elif isinstance(node, ast.Call) and _called_name(node) in IMPORTING_CALLS:
            found |= {arg.value for arg in node.args
                      if isinstance(arg, ast.Constant) and arg.value in modules}
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_local_and_string_imports():
    graph = import_graph()
    assert "ecpi_beam.run" in graph["ecpi_beam.cli"]  # by name, through importlib
    assert "ecpi_beam.simu.scenario" in graph["ecpi_beam.simu.orbit"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_two_modules_import_each_other():
    assert cycles(import_graph()) == []


def test_nothing_imports_the_console_scripts():
    graph = import_graph()
    assert [name for name, imported in graph.items() if "ecpi_beam.cli" in imported] == []


def test_the_failure_log_has_one_home():
    """failures.jsonl and its dead letters are named and written by io/failures.py alone."""
    owners = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                    if '"failures.jsonl"' in path.read_text(encoding="utf-8")
                    or '".ecpi-failures"' in path.read_text(encoding="utf-8"))
    assert owners == ["io/failures.py"]
