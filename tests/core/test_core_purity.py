"""The protocol core is pure: no I/O libraries, no clock, no store, no CLI
(pithsync/core/__init__.py)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import pithsync.core

CORE_DIR = Path(pithsync.core.__file__).parent
CORE_FILES = sorted(CORE_DIR.glob("*.py"))
EXPECTED_MODULES = {
    "events",
    "canonical",
    "errors",
    "keys",
    "merge",
    "numbers",
    "status",
    "strictjson",
    "urls",
    "verify",
}

# Must not be loaded at all when the whole core is imported.
FORBIDDEN_LOADED = (
    "aiohttp",
    "sqlite3",
    "sqlite_utils",
    "pithsync.cli",
    "pithsync.store",
    "pithsync.config",
    "anyio",
    "tenacity",
    "rich",
)
# Must not be imported by any core source file (the stdlib ones above are loaded by the
# interpreter anyway, so only a static scan can catch them).
FORBIDDEN_IMPORTS = (
    "aiohttp",
    "sqlite3",
    "sqlite_utils",
    "time",
    "datetime",
    "os",
    "socket",
    "ssl",
    "http",
    "urllib",
    "subprocess",
    "asyncio",
    "random",
    "anyio",
    "tenacity",
    "rich",
    "requests",
)


def _matches(module: str, names) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def imported_modules(source: str, filename: str = "<src>") -> set[str]:
    """Every module a source file imports, statically: import/from-import statements (relative
    ones resolved inside pithsync.core) and __import__/importlib.import_module with literals."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = (
                    ["pithsync", "core"][: 3 - node.level]
                    if node.level <= 2
                    else ["<beyond-top-level>"]
                )
                module = ".".join(parts + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else None
            )
            if (
                name in ("__import__", "import_module")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add(node.args[0].value)
    return found


def _violations(modules: set[str]) -> set[str]:
    bad = {m for m in modules if _matches(m, FORBIDDEN_IMPORTS)}
    # Within pithsync, the core may only import the core.
    bad |= {
        m
        for m in modules
        if _matches(m, ("pithsync",))
        and m != "pithsync"
        and not _matches(m, ("pithsync.core", "pithsync.__version__"))
    }
    bad |= {m for m in modules if m.startswith("<beyond-top-level>")}
    return bad


def test_core_package_is_complete():
    assert {p.stem for p in CORE_FILES} >= EXPECTED_MODULES | {"__init__"}


def test_importing_the_whole_core_loads_no_shell_modules():
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import pithsync.core as core\n"
        "names = [m.name for m in pkgutil.iter_modules(core.__path__)]\n"
        "for n in names: importlib.import_module('pithsync.core.' + n)\n"
        "print(json.dumps({'imported': names, 'modules': sorted(sys.modules)}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=CORE_DIR.parent.parent,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result["imported"]) >= EXPECTED_MODULES  # it really imported the core
    loaded = set(result["modules"])
    assert "pithsync.core.verify" in loaded and "pithsync.core.merge" in loaded
    leaked = sorted(m for m in loaded if _matches(m, FORBIDDEN_LOADED))
    assert leaked == [], f"the core pulled in {leaked}"


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_sources_have_no_forbidden_imports(path):
    modules = imported_modules(path.read_text(encoding="utf-8"), str(path))
    assert _violations(modules) == set(), f"{path.name} imports {sorted(_violations(modules))}"


def test_scan_sees_the_imports_it_should():
    # The scanner must find what is there, so that the test above cannot pass by accident.
    verify_imports = imported_modules((CORE_DIR / "verify.py").read_text(encoding="utf-8"))
    assert {
        "pithsync.core.merge",
        "pithsync.core.keys",
        "pithsync.core.canonical",
    } <= verify_imports
    assert "hashlib" in imported_modules((CORE_DIR / "canonical.py").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "source",
    [
        "import os",
        "import os.path",
        "from os import path",
        "import time as t",
        "from datetime import datetime",
        "import socket",
        "import sqlite3",
        "from sqlite_utils import Database",
        "import aiohttp",
        "from aiohttp import ClientSession",
        "from pithsync import cli",
        "from pithsync.cli import main",
        "import pithsync.store",
        "from .. import config",
        "from ..cli import main",
        "from ..store import Store",
        "from ... import anything",
        "def f():\n    import time\n",
        "x = __import__('os')",
        "import importlib\nimportlib.import_module('aiohttp')",
    ],
)
def test_scanner_flags_forbidden_imports(source):
    assert _violations(imported_modules(source)), source


@pytest.mark.parametrize(
    "source",
    [
        "import json",
        "from pithsync.core.errors import PithError",
        "from .errors import PithError",
        "from . import numbers",
        "import hashlib, base64",
    ],
)
def test_scanner_allows_pure_imports(source):
    assert _violations(imported_modules(source)) == set()
