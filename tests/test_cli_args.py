"""The command line's arguments: what is refused (exit 2, with a message saying what is
expected), what every option's help says, and the help itself."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from helpers import BUNDLE_SEEDS, EXPECTED_PITH
from pithsync import cli

REPO = Path(__file__).resolve().parent.parent


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def program(*argv, cwd) -> subprocess.CompletedProcess:
    """The real `pithsync` program, with no operator configuration or store from the environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("PITHSYNC_CONFIG", "PITHSYNC_DB")}
    return subprocess.run(
        [sys.executable, "-m", "pithsync", *map(str, argv)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def walk(parser: argparse.ArgumentParser, prog: str = "pithsync"):
    """(prog, parser) for the parser and every subparser below it."""
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, f"{prog} {name}")


# -- unreadable files -----------------------------------------------------------------------------


def test_verify_reports_an_unreadable_file_and_verifies_the_others(tmp_path, seed_paths, capsys):
    missing = tmp_path / "nope.json"
    files = [seed_paths[BUNDLE_SEEDS[0]], str(missing), str(tmp_path), seed_paths[BUNDLE_SEEDS[1]]]
    code, out, err = run(["verify", *files], capsys)
    assert code == 2
    header, *rows = out.splitlines()
    assert header.split() == ["STATUS", "KIND", "PITH_NUMBER", "FILE", "REASONS"]
    assert [r.split("  ")[0] for r in rows] == ["ok", "unreadable", "unreadable", "ok"]
    assert rows[1].split("  ")[3:] == [str(missing), "No such file or directory"]
    assert rows[2].split("  ")[3:] == [str(tmp_path), "Is a directory"]
    assert f"cannot read {missing}: No such file or directory" in err


def test_verify_json_has_an_unreadable_entry(tmp_path, seed_paths, capsys):
    missing = tmp_path / "nope.json"
    code, out, _ = run(["verify", "--json", str(missing), seed_paths[BUNDLE_SEEDS[0]]], capsys)
    assert code == 2
    bad, good = json.loads(out)["files"]
    assert set(bad) == set(good) == {"file", "kind", "status", "pith_number", "reasons", "notes"}
    assert bad["status"] == "unreadable" and bad["file"] == str(missing)
    reason = {"status": "unreadable", "code": "cannot_read", "message": "No such file or directory"}
    assert bad["reasons"] == [reason]
    assert good["status"] == "ok" and good["pith_number"] == EXPECTED_PITH[BUNDLE_SEEDS[0]]


def test_verify_unreadable_wins_over_a_file_that_is_not_ok(tmp_path, seed_paths, capsys):
    """Exit 2 before 1: the input must be fixed before the verdict on it means anything."""
    malformed = tmp_path / "bad.json"
    malformed.write_bytes(b"not json")
    code, out, _ = run(["verify", str(malformed), str(tmp_path / "nope.json")], capsys)
    assert code == 2
    assert [r.split("  ")[0] for r in out.splitlines()[1:]] == ["malformed", "unreadable"]
    assert run(["verify", str(malformed), seed_paths[BUNDLE_SEEDS[0]]], capsys)[0] == 1


def test_import_stores_the_readable_files_and_reports_the_unreadable(tmp_path, seed_paths, capsys):
    db = tmp_path / "store.db"
    missing = tmp_path / "nope.json"
    first, second = BUNDLE_SEEDS[0], BUNDLE_SEEDS[1]
    code, out, err = run(
        ["--db", db, "import", seed_paths[first], str(missing), seed_paths[second]], capsys
    )
    assert code == 2
    lines = out.splitlines()
    assert lines[0].startswith("imported ") and lines[2].startswith("imported ")
    assert lines[1] == f"unreadable  -  -  {missing}  No such file or directory"
    assert f"cannot read {missing}" in err
    code, out, _ = run(["--db", db, "status", "--json"], capsys)
    assert code == 0
    stored = {r["pith_number"] for r in json.loads(out)["records"]}
    assert stored == {EXPECTED_PITH[first], EXPECTED_PITH[second]}
    # The run was finished with its outcome, not left open by an exception.
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        query = "select exit_code, summary from runs where command = 'import'"
        runs = conn.execute(query).fetchall()
    assert [(code, json.loads(summary)) for code, summary in runs] == [
        (2, {"imported": 2, "rejected": 0, "unreadable": 1})
    ]


def test_import_json_marks_the_unreadable_file_not_imported(tmp_path, seed_paths, capsys):
    db = tmp_path / "store.db"
    missing = tmp_path / "nope.json"
    argv = ["--db", db, "import", "--json", str(missing), seed_paths[BUNDLE_SEEDS[0]]]
    code, out, _ = run(argv, capsys)
    assert code == 2
    bad, good = json.loads(out)["files"]
    assert bad["imported"] is False and bad["status"] == "unreadable"
    assert good["imported"] is True and good["status"] == "ok"

