"""The command line's arguments: what is refused (exit 2, with a message saying what is
expected), what every option's help says, and the help itself."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import BUNDLE_SEEDS, EXPECTED_PITH

from pithsync import __version__, cli

REPO = Path(__file__).resolve().parents[2]


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


# -- help ---------------------------------------------------------------------------------------


def test_every_argument_and_option_of_every_command_has_help():
    missing = []
    seen = []
    for prog, parser in walk(cli.build_parser()):
        seen.append(prog)
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{prog}: {action.option_strings or action.dest}")
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:  # the one-line help in the command list
                    if not choice.help:
                        missing.append(f"{prog} {choice.dest}: no summary")
    assert not missing, missing
    expected = {"pithsync verify", "pithsync pull", "pithsync journal verify", "pithsync demo"}
    assert expected <= set(seen)


def test_bare_pithsync_prints_the_help_on_stdout_and_exits_2(tmp_path):
    proc = program(cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout.startswith("usage: pithsync")
    for command in ("verify", "pull", "sync", "journal", "import", "demo"):
        assert f"\n    {command} " in proc.stdout
    assert "no command given" in proc.stderr


def test_global_options_without_a_command_also_print_the_help(capsys):
    code, out, err = run(["--json"], capsys)
    assert code == 2 and out.startswith("usage: pithsync") and "no command given" in err


def test_top_level_help_lists_every_exit_code_and_an_example(tmp_path):
    proc = program("--help", cwd=tmp_path)
    assert proc.returncode == 0
    text = proc.stdout
    assert "exit codes:" in text
    for code in cli.ExitCode:
        assert f"\n  {int(code)}  " in text, f"exit code {int(code)} not in --help"
    example = text.split("example:\n", 1)[1].splitlines()[0]
    assert example.strip().startswith("pithsync ") and " pull pith:" in example


def test_journal_verify_has_its_own_help(capsys):
    code, out, _ = run(["journal", "verify", "--help"], capsys)
    assert code == 0
    assert out.startswith("usage: pithsync journal verify")
    assert "hash chain" in out and "--since" not in out


def test_demo_offers_only_the_options_it_honours(capsys):
    code, out, _ = run(["demo", "--help"], capsys)
    assert code == 0
    assert "--json" in out and "--verbose" in out and "--quiet" in out and "--keep" in out
    assert "--config" not in out and "--db" not in out


@pytest.mark.parametrize(
    "argv", [["demo", "--db", "x.db"], ["--db", "x.db", "demo"], ["--config", "c.toml", "demo"]]
)
def test_demo_refuses_store_and_config_options(argv, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2
    assert "--db" in err and "--config" in err
    assert not Path("x.db").exists()


# -- refused arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["-v", "-q", "verify"],
        ["-v", "verify", "-q"],
        ["verify", "-q", "--verbose"],
        ["--quiet", "verify", "-vv"],
    ],
)
def test_verbose_and_quiet_together_are_refused(argv, seed_paths, capsys):
    code, out, err = run([*argv, seed_paths[BUNDLE_SEEDS[0]]], capsys)
    assert code == 2
    assert "-v/--verbose and -q/--quiet cannot be combined" in err
    assert out == ""  # nothing was verified


def test_verbose_or_quiet_alone_are_fine(seed_paths, capsys):
    assert run(["-v", "verify", seed_paths[BUNDLE_SEEDS[0]]], capsys)[0] == 0
    assert run(["verify", "-q", seed_paths[BUNDLE_SEEDS[0]]], capsys)[0] == 0


@pytest.mark.parametrize("command", ["pull", "sync"])
@pytest.mark.parametrize("depth", ["-1", "-5", "two", "1.5"])
def test_depth_must_be_a_whole_number_not_negative(command, depth, capsys):
    refs = ["pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ22"] if command == "pull" else []
    code, _, err = run(["--db", "store.db", command, "--depth", depth, *refs], capsys)
    assert code == 2
    assert "--depth" in err and ">= 0" in err
    assert not Path("store.db").exists()  # refused before anything was opened


def test_depth_zero_and_more_parse():
    parser = cli.build_parser()
    assert parser.parse_args(["sync", "--depth", "0"]).depth == 0
    assert parser.parse_args(["pull", "--depth", "3", "x"]).depth == 3


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01", "12/01/2026", "now"])
def test_journal_since_must_be_an_iso_time(since, capsys):
    code, out, err = run(["--db", "store.db", "journal", "--since", since], capsys)
    assert code == 2 and out == ""
    assert "not an ISO date or time" in err and "2026-12-01T10:00:00Z" in err


@pytest.mark.parametrize("since", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_journal_since_out_of_range_is_refused(since, capsys):
    code, out, err = run(["--db", "store.db", "journal", "--since", since], capsys)
    assert code == 2 and out == ""
    assert "out of range" in err


@pytest.mark.parametrize(
    ("since", "stored"),
    [
        ("2026-12-01", "2026-12-01T00:00:00.000000Z"),
        ("2026-12-01T10:00:00Z", "2026-12-01T10:00:00.000000Z"),
        ("2026-12-01T10:00:00", "2026-12-01T10:00:00.000000Z"),
        ("2026-12-01T12:00:00+02:00", "2026-12-01T10:00:00.000000Z"),
        ("2026-12-01T10:00:00.25Z", "2026-12-01T10:00:00.250000Z"),
    ],
)
def test_journal_since_is_read_in_the_journals_own_format(since, stored):
    assert cli.build_parser().parse_args(["journal", "--since", since]).since == stored


def _journal(db, capsys, *extra) -> list[dict]:
    code, out, err = run(["--db", db, "journal", "--json", *extra], capsys)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]  # JSON Lines, one entry a line


def test_journal_since_a_whole_second_includes_entries_within_it(tmp_path, seed_paths, capsys):
    """The journal stores `at` with microseconds; `--since ...T10:00:29Z` must include an entry
    at 10:00:29.5 (as text, "29Z" sorts after "29.5").  An offset means the same instant."""
    db = tmp_path / "store.db"
    assert run(["--db", db, "import", seed_paths[BUNDLE_SEEDS[0]]], capsys)[0] == 0
    entries = _journal(db, capsys)
    assert entries
    last = datetime.strptime(entries[-1]["at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    last = last.replace(tzinfo=UTC)
    second = last.replace(microsecond=0)
    expected = [e["seq"] for e in entries if e["at"] >= second.strftime("%Y-%m-%dT%H:%M:%S")]
    assert expected
    in_utc = second.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [e["seq"] for e in _journal(db, capsys, "--since", in_utc)] == expected
    in_cest = second.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert [e["seq"] for e in _journal(db, capsys, "--since", in_cest)] == expected
    day = second.date().isoformat()
    assert [e["seq"] for e in _journal(db, capsys, "--since", day)] == [e["seq"] for e in entries]
    tomorrow = (second + timedelta(days=1)).date().isoformat()
    assert _journal(db, capsys, "--since", tomorrow) == []


def test_journal_lists_and_journal_verify_checks(tmp_path, seed_paths, capsys):
    db = tmp_path / "store.db"
    assert run(["--db", db, "import", seed_paths[BUNDLE_SEEDS[0]]], capsys)[0] == 0
    code, out, _ = run(["--db", db, "journal"], capsys)
    assert code == 0 and out.splitlines()[0].startswith("1 ")
    code, out, _ = run(["--db", db, "journal", "verify"], capsys)
    assert code == 0 and out.startswith("journal ok:")
    code, out, _ = run(["journal", "verify", "--db", db, "--json"], capsys)
    assert code == 0 and json.loads(out)["ok"] is True
    code, _, err = run(["--db", db, "journal", "--since", "2026-01-01", "verify"], capsys)
    assert code == 2 and "--since does not apply" in err


# -- unreadable files -----------------------------------------------------------------------------


def test_verify_reports_an_unreadable_file_and_verifies_the_others(tmp_path, seed_paths, capsys):
    missing = tmp_path / "nope.json"
    files = [seed_paths[BUNDLE_SEEDS[0]], str(missing), str(tmp_path), seed_paths[BUNDLE_SEEDS[1]]]
    code, out, err = run(["verify", *files], capsys)
    assert code == 2
    header, *rows = out.splitlines()
    assert header.split() == ["status", "kind", "pith_number", "file", "reasons"]
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


# -- what a command imports -----------------------------------------------------------------

# Run in a fresh interpreter: the command's output (stdout), then the top-level packages the
# process imported (one JSON line on stderr's last line).
IMPORTS_OF_A_COMMAND = """\
import json, sys
from pithsync.cli import main
code = main(sys.argv[1:])
loaded = sorted({name.split(".")[0] for name in sys.modules} | set(sys.modules))
print(json.dumps({"exit": code, "modules": loaded}), file=sys.stderr)
"""


def imports_of(*argv, cwd) -> tuple[int, str, set[str]]:
    """(exit status, stdout, every module imported) of `pithsync ARGV` in a fresh interpreter,
    with stdout a pipe (not a terminal) and no operator configuration from the environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("PITHSYNC_CONFIG", "PITHSYNC_DB")}
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS_OF_A_COMMAND, *map(str, argv)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["exit"], done.stdout, set(report["modules"])


def test_version_imports_only_the_standard_library_and_pithsync_base(tmp_path):
    code, out, modules = imports_of("--version", cwd=tmp_path)
    assert code == 0 and out == f"pithsync {__version__}\n"
    heavy = {"aiohttp", "sqlite_utils", "nacl", "rich", "anyio", "uvloop", "orjson", "sqlite3"}
    assert modules & heavy == set()
    ours = {m for m in modules if m.startswith("pithsync.")}
    assert ours <= {"pithsync.base", "pithsync.base.exits", "pithsync.cli", "pithsync.cli.parser"}
    # Not even the configuration or the log setup: both wait until a command runs.
    assert "pithsync.config" not in modules and "logging" not in modules


def test_a_usage_error_imports_no_command_dependency(tmp_path):
    code, _, modules = imports_of("pull", "--depth", "-1", cwd=tmp_path)
    assert code == 2
    assert modules & {"aiohttp", "sqlite_utils", "nacl", "rich", "pithsync.config"} == set()


def test_status_imports_the_store_but_no_http_client_nor_rich(tmp_path, seed_paths, capsys):
    db = tmp_path / "store.db"
    assert run(["--db", db, "import", seed_paths[BUNDLE_SEEDS[0]]], capsys)[0] == 0
    code, out, modules = imports_of("--db", db, "status", cwd=tmp_path)
    assert code == 0 and EXPECTED_PITH[BUNDLE_SEEDS[0]] in out
    assert {"sqlite_utils", "pithsync.store", "pithsync.config"} <= modules  # it did read the store
    assert (
        modules & {"aiohttp", "rich", "anyio", "uvloop", "pithsync.run", "pithsync.fetch"} == set()
    )
    code, out, modules = imports_of(
        "--db", db, "status", EXPECTED_PITH[BUNDLE_SEEDS[0]], cwd=tmp_path
    )
    assert code == 0 and out.startswith(EXPECTED_PITH[BUNDLE_SEEDS[0]])
    assert modules & {"aiohttp", "rich", "anyio", "uvloop", "pithsync.run"} == set()
