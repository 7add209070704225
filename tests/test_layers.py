"""The package imports one way: core <- base <- services <- run <- cli.

The graph is built from the source (every import statement, at module level and inside
functions), so an import hidden in a function to dodge a cycle counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pithsync

PACKAGE_DIR = Path(pithsync.__file__).parent

# Layers from the bottom.  A module may import its own layer and those below it, never above.
# The most specific prefix decides; every module of the package must have one.
LAYERS: dict[str, int] = {
    "pithsync.core": 0,  # the pure protocol: no I/O, no clock (tests/test_core_purity.py)
    "pithsync": 1,  # the package's face: its version, nothing else
    "pithsync.base": 1,  # shared vocabulary: exit codes and errors, the log format, the clock
    "pithsync.config": 1,
    "pithsync.fetch": 2,
    "pithsync.store": 2,
    "pithsync.delivery": 2,
    "pithsync.evidence": 2,
    "pithsync.evidence_proofs": 2,
    "pithsync.metrics": 2,
    "pithsync.observer": 2,
    "pithsync.peers": 2,
    "pithsync.publishing": 2,
    "pithsync.run": 3,
    "pithsync.testing": 3,  # the forge and the fault-injecting mirror: only tests use them
    "pithsync.cli": 4,
    "pithsync.__main__": 4,
}
LAYER_NAMES = ["core", "base", "services", "run", "cli"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    best = None
    for prefix in LAYERS:
        # The package's face is a module of its own, not a prefix of every other.
        if module == prefix or (prefix != "pithsync" and module.startswith(prefix + ".")):
            if best is None or len(prefix) > len(best):
                best = prefix
    return None if best is None else LAYERS[best]


def package_imports(path: Path) -> set[str]:
    """Every pithsync module `path` imports, anywhere in the file.  `from a import b` counts
    as an import of `a.b` when that is a module of the package, else of `a`."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    modules = {module_name(p) for p in PACKAGE_DIR.rglob("*.py")}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                parent = ".".join(base + ([node.module] if node.module else []))
            else:
                parent = node.module or ""
            for alias in node.names:
                child = f"{parent}.{alias.name}"
                found.add(child if child in modules else parent)
    return {m for m in found if m == "pithsync" or m.startswith("pithsync.")}


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): package_imports(p) for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_every_module_has_a_layer():
    unplaced = [m for m in import_graph() if layer_of(m) is None]
    assert not unplaced, f"modules with no layer in LAYERS: {unplaced}"


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_run_one_way():
    upward = []
    for module, imported in import_graph().items():
        mine = layer_of(module)
        for other in sorted(imported):
            theirs = layer_of(other)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(
                    f"{module} ({LAYER_NAMES[mine]}) imports {other} ({LAYER_NAMES[theirs]})"
                )
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_nothing_in_the_product_imports_the_test_support():
    offenders = [
        f"{m} imports {o}"
        for m, imported in import_graph().items()
        if not m.startswith("pithsync.testing")
        for o in imported
        if o.startswith("pithsync.testing")
    ]
    assert not offenders, offenders


def test_the_checks_catch_what_they_guard():
    # A graph with a cycle and an upward arrow, so that neither check can pass vacuously.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("pithsync.core.verify") == 0 and layer_of("pithsync.cli.output") == 4
    assert layer_of("pithsync.store.journal") == 2 and layer_of("elsewhere") is None
    assert layer_of("pithsync") == 1 and layer_of("pithsync.unplaced") is None


# -- sizes: a reader finds their room in minutes --------------------------------------------------

MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60
# The schema's DDL is one statement a table; splitting it would only hide the schema.
LONG_FUNCTIONS_ALLOWED = {"pithsync/store/schema.py:_schema_v1"}


def oversized(text: str, rel: str) -> list[str]:
    """What in one source file is over the size limits, as `file:name (N lines)`."""
    found = []
    if len(text.splitlines()) > MAX_MODULE_LINES:
        found.append(f"{rel} ({len(text.splitlines())} lines)")
    for node in ast.walk(ast.parse(text, rel)):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
            size = node.end_lineno - node.lineno + 1
            if size > limit and f"{rel}:{node.name}" not in LONG_FUNCTIONS_ALLOWED:
                found.append(f"{rel}:{node.name} ({size} lines)")
    return found


def test_no_module_class_or_function_over_its_size():
    found = [
        item
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        for item in oversized(
            path.read_text(encoding="utf-8"), path.relative_to(PACKAGE_DIR.parent).as_posix()
        )
    ]
    assert not found, "over the size limits:\n" + "\n".join(found)


def test_the_size_check_sees_what_is_too_long():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert oversized(f"def long():\n{body}\n", "m.py") == ["m.py:long (61 lines)"]
    assert oversized("def short():\n    pass\n", "m.py") == []
    module = "\n".join(f"x{i} = {i}" for i in range(MAX_MODULE_LINES + 1))
    assert oversized(module, "big.py") == [f"big.py ({MAX_MODULE_LINES + 1} lines)"]
