"""The layers of the code base hold: no import from a lower layer to a higher one, no cycle.

Layers, lowest first (docs/architecture.md has the picture):

0. ``vigil.settings``, ``vigil.commands``: settings and command lines; import nothing of the project
   but each other;
1. ``connectors``: bytes in and out (schemas, serde, Kafka, stores, the record contract);
2. ``udfs``: what runs inside a Flink worker; ``stack``: the local services and Flink home;
3. ``jobs``: the scoring core (``jobs.core``) and the libraries under jobs/ (``jobs.simulation``,
   ``jobs.replay``, ``jobs.training``), then the job entry points (``jobs/*.py``), which never import
   one another;
4. ``benchmarks`` and the ``vigil`` command line.

Imports are read statically (every ``import`` in a module, function-level ones included); imports
under ``if TYPE_CHECKING:`` are for type checkers only and are not counted.
"""
from __future__ import annotations

import ast
from pathlib import Path

from vigil.settings import PROJECT_ROOT

PACKAGES = ("vigil", "connectors", "udfs", "stack", "jobs", "benchmarks")


def layer(module: str) -> int:
    top = module.split(".")[0]
    if module in ("vigil.settings", "vigil.commands"):
        return 0
    if top == "connectors":
        return 1
    if top in ("udfs", "stack"):
        return 2
    if top == "jobs":
        return 3
    return 4  # benchmarks, vigil's command line


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (PROJECT_ROOT / package).rglob("*.py"):
            parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports(path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    out = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(path, known) - {name} for name, path in found.items()}


def is_entry_point(module: str) -> bool:
    """A job's command-line module: a file jobs/<name>.py (not the libraries in jobs/<package>/)."""
    return (PROJECT_ROOT / Path(*module.split("."))).with_suffix(".py").parent == PROJECT_ROOT / "jobs" \
        and (PROJECT_ROOT / Path(*module.split("."))).with_suffix(".py").is_file()


def test_no_module_imports_a_higher_layer():
    wrong = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
             for m, deps in graph().items() for d in deps
             if layer(d) > layer(m) and not d.startswith(m.split(".")[0] + ".") and d != m.split(".")[0]]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_runtime_code_imports_jobs():
    wrong = [f"{m} imports {d}" for m, deps in graph().items() for d in deps
             if m.split(".")[0] in ("udfs", "connectors", "stack") and d.split(".")[0] == "jobs"]
    assert not wrong, "\n".join(sorted(wrong))


def test_job_entry_points_do_not_import_each_other():
    wrong = [f"{m} imports {d}" for m, deps in graph().items() for d in deps
             if is_entry_point(m) and is_entry_point(d)]
    wrong += [f"{m} imports the job entry point {d}" for m, deps in graph().items() for d in deps
              if not is_entry_point(m) and is_entry_point(d) and m.split(".")[0] in ("jobs", "benchmarks")]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles():
    edges = graph()
    # a package imports its own __init__ implicitly: only module-to-module edges form cycles
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(edges.get(node, ())):
            if node.startswith(dep + "."):
                continue  # a module and the package holding it
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
