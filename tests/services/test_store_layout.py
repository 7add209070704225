"""The store is a package by subject behind a small facade (layout.md): small modules, a
Store class that only delegates, and nothing outside the package reaching into its privates."""

from __future__ import annotations

import ast
from pathlib import Path

import pithsync
import pithsync.store
from pithsync.store import Store

STORE_DIR = Path(pithsync.store.__file__).parent
REPO = Path(pithsync.__file__).parent.parent
DDL = {"_schema_v1"}  # the schema's table definitions may be long


def oversized(directory: Path) -> list[str]:
    """Modules over 500 lines, classes over 300, functions over 60 (but the DDL) in a folder."""
    found = []
    for path in sorted(directory.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 500:
            found.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                size = node.end_lineno - node.lineno + 1
                limit = 300 if isinstance(node, ast.ClassDef) else 60
                if size > limit and node.name not in DDL:
                    found.append(f"{path.name}: {node.name} is {size} lines")
    return found


def test_store_modules_classes_and_functions_stay_small():
    assert oversized(STORE_DIR) == []


def test_the_facade_keeps_the_names_callers_import():
    for name in pithsync.store.__all__:
        assert hasattr(pithsync.store, name), name
    for method in (
        "open",
        "open_reader",
        "write_record",
        "write_records",
        "write_rows",
        "group",
        "groups",
        "apply_alert_decision",
        "journal",
        "verify_journal",
        "alerts",
        "record",
        "records",
        "resolve",
        "tracked",
        "untrack",
        "begin_run",
        "finish_run",
        "commit_batch",
        "rollback_batch",
        "transaction",
    ):
        assert callable(getattr(Store, method)), method


def _private_store_uses(path: Path) -> list[str]:
    """`from pithsync.store[.x] import _name`, and `store._name` on a variable named store."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pithsync.store"):
            found += [f"{path.name}: imports {a.name}" for a in node.names if a.name[0] == "_"]
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in ("store", "Store")
        ):
            found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_nothing_outside_the_store_reaches_into_its_private_names():
    outside = [p for p in (REPO / "pithsync").rglob("*.py") if STORE_DIR not in p.parents]
    outside += sorted((REPO / "tests").glob("*.py"))
    found = [use for p in outside for use in _private_store_uses(p)]
    assert found == []


def callable_imports(directory: Path) -> list[str]:
    """Modules of a folder that import Callable: the type of a function handed in to run."""
    found = []
    for path in sorted(directory.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and any(a.name == "Callable" for a in node.names):
                found.append(path.name)
    return found


def test_the_store_is_handed_no_callbacks():
    # The run calls the store; the store never runs code it was given (the alert path used to
    # hand the record's write a callback that decided and wrote its alerts).
    assert callable_imports(STORE_DIR) == []
