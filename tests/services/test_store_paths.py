"""Where the store is (issue 14): reading creates nothing, writing creates the store but never a
directory, a store that cannot be written can still be read, and the run lock holds for every
path that reaches the same store (a symlink too)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import threading

import pytest
from synctools import write_config

from pithsync import cli
from pithsync.store import StoreError, run_lock
from pithsync.testing import forge

RECORD = forge.forge_record(141, n_events=2)

READ_COMMANDS = [
    ["status"],
    ["status", RECORD.pith_number],
    ["journal"],
    ["journal", "verify"],
    ["alerts"],
    ["evidence", RECORD.pith_number, "--out", "EXPORT"],
    ["serve", "--bind", "127.0.0.1:0"],
    ["export", "EXPORT", "--base-url", "https://m.example"],
]


def main(*argv) -> tuple[int, str, str]:
    """cli.main in process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def imported_store(tmp_path) -> str:
    """A store holding RECORD, written by `pithsync import`, closed (no -wal or -shm left)."""
    bundle = tmp_path / "bundle.json"
    bundle.write_bytes(forge.dumps(RECORD.bundle()))
    conf = write_config(tmp_path, [])
    (tmp_path / "store").mkdir()
    db = str(tmp_path / "store" / "pithsync.db")
    code, _, err = main("--config", conf, "--db", db, "-q", "import", bundle)
    assert code == 0, err
    return db


@pytest.mark.parametrize("argv", READ_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_read_commands_on_a_path_without_a_store_create_nothing_and_exit_2(tmp_path, argv):
    conf = write_config(tmp_path, [])
    missing_dir = tmp_path / "nonexistent" / "dir"
    argv = [str(tmp_path / "export") if a == "EXPORT" else a for a in argv]
    for db in (missing_dir / "x.db", tmp_path / "x.db"):  # no directory; a directory, no file
        code, _, err = main("--config", conf, "--db", db, *argv)
        assert code == cli.ExitCode.USAGE, err
        assert f"no store at {db} (run `pithsync pull` or `pithsync import` first)" in err
        assert "Traceback" not in err
    assert not (tmp_path / "nonexistent").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pithsync.toml"]


@pytest.mark.parametrize("command", ["pull", "sync", "import"])
def test_write_commands_create_the_store_but_not_its_directory(tmp_path, command):
    bundle = tmp_path / "bundle.json"
    bundle.write_bytes(forge.dumps(RECORD.bundle()))
    conf = write_config(tmp_path, [])
    args = {"pull": [RECORD.pith_number], "sync": [], "import": [bundle]}[command]
    db = tmp_path / "typo" / "pithsync.db"
    code, _, err = main("--config", conf, "--db", db, "-q", command, *args)
    assert code == cli.ExitCode.USAGE, err
    assert f"no directory for a store at {db}: create {db.parent} first" in err
    assert not db.parent.exists()
    # In an existing directory the store is created.
    code, _, err = main("--config", conf, "--db", tmp_path / "pithsync.db", "-q", "import", bundle)
    assert code == 0, err
    code, out, err = main("--config", conf, "--db", tmp_path / "pithsync.db", "--json", "status")
    assert code == 0, err
    assert [r["pith_number"] for r in json.loads(out)["records"]] == [RECORD.pith_number]


def test_a_store_whose_wal_and_shm_files_cannot_be_created_can_still_be_read(tmp_path):
    db = imported_store(tmp_path)
    assert not os.path.exists(db + "-wal") and not os.path.exists(db + "-shm")
    # Root writes anywhere, so the sibling is made impossible to create: a directory of its name.
    os.mkdir(db + "-shm")
    conf = str(tmp_path / "pithsync.toml")
    code, out, err = main("--config", conf, "--db", db, "--json", "status")
    assert code == 0, err
    assert [r["pith_number"] for r in json.loads(out)["records"]] == [RECORD.pith_number]
    code, out, err = main("--config", conf, "--db", db, "journal", "verify")
    assert code == 0 and "intact" in out, err
    export = ["-q", "export", tmp_path / "out", "--base-url", "https://m.example"]
    code, _, err = main("--config", conf, "--db", db, *export)
    assert code == 0, err
    exported = tmp_path / "out" / "pith" / RECORD.suffix / "bundle.json"
    assert exported.read_bytes() == forge.dumps(RECORD.bundle())
    # Writing still fails as a store error (exit 4), and the store is unchanged.
    code, _, err = main("--config", conf, "--db", db, "-q", "import", tmp_path / "bundle.json")
    assert code == cli.ExitCode.STORE, err
    with sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True) as conn:
        assert conn.execute("select count(*) from runs").fetchone()[0] == 1


def _open_count(path: str) -> int:
    """How many descriptors of this process are open on `path`."""
    fd_dir = "/proc/self/fd"
    count = 0
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(OSError):
            count += os.readlink(os.path.join(fd_dir, fd)) == path
    return count


def test_the_run_lock_holds_through_a_symlink_to_the_store(tmp_path):
    db = imported_store(tmp_path)
    link = str(tmp_path / "link.db")
    os.symlink(db, link)
    lock_file = os.path.realpath(db) + ".lock"
    with run_lock(db, 1):
        # Through the symlink, the same lock: a hasty run gives up...
        with pytest.raises(StoreError, match="another pithsync run holds"):
            with run_lock(link, 0.2):
                pass
        # ...and a patient one waits for it, then runs.
        events: list[str] = []
        failures: list[BaseException] = []

        def second_run() -> None:
            try:
                with run_lock(link, 120, poll_s=0.01):
                    events.append("second has the lock")
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                failures.append(exc)

        waiter = threading.Thread(target=second_run)
        waiter.start()
        while _open_count(lock_file) < 2 and waiter.is_alive():  # it opened the lock: waiting
            threading.Event().wait(0.01)
        assert not events and not failures, (events, failures)
        events.append("first releases")
    waiter.join(120)
    assert not failures, failures
    assert events == ["first releases", "second has the lock"]
    assert not os.path.exists(link + ".lock")
