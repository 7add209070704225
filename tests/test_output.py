"""What commands print (issue 14): a reader that goes away (`| head -1`) never costs a run what
it verified; every log line is logfmt; --json shapes; terminal tables and progress."""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import sqlite3
import subprocess
import sys

import anyio
import pytest

from synctools import json_lines, serve_bad_copy, write_config

from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer, refused_spec

RECORDS = [forge.forge_record(4000 + i, 2) for i in range(400)]
TAMPERED = set(range(0, 400, 8))  # record index -> mirror b serves a tampered copy: diverged
SMALL_PIPE = 4096  # the least a Linux pipe holds: the output below is many times more


def _pithsync_with_early_close(*argv: str, timeout: float = 300) -> tuple[int, str, str]:
    """The real `pithsync` program with stdout a pipe that is closed once its first line has
    been read (as `| head -1` does); returns (exit status, first line, stderr)."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, getattr(fcntl, "F_SETPIPE_SZ", 1031), SMALL_PIPE)
    proc = subprocess.Popen([sys.executable, "-m", "pithsync", *argv], stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    first = b""
    with os.fdopen(read_end, "rb", buffering=0) as reader:
        while b"\n" not in first:
            chunk = reader.read(256)
            if not chunk:
                break
            first += chunk
    # The reader is closed now; the program still has most of its output to write.
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"pithsync {argv} did not finish within {timeout} s")
    return proc.returncode, first.decode().split("\n", 1)[0], err.decode()


def _store(db: str) -> dict:
    conn = sqlite3.connect(db)
    try:
        return {
            "records": {r[0] for r in conn.execute("select pith_number from records where state_sha256 is not null")},
            "runs": conn.execute("select command, finished_at, exit_code from runs order by started_at").fetchall(),
            "kinds": [r[0] for r in conn.execute("select kind from journal order by seq")],
            "alerts": conn.execute("select count(*) from alerts").fetchone()[0],
        }
    finally:
        conn.close()


def _journal_ok(db: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pithsync", "--db", db, "--json", "journal", "verify"], capture_output=True, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["ok"] is True, proc.stdout


def _assert_quiet_stop(code: int, err: str) -> None:
    assert code == 141, err[-3000:]
    assert "Traceback" not in err and "BrokenPipe" not in err, err[-3000:]


@pytest.fixture
async def mirrors():
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        for i, r in enumerate(RECORDS):
            a.put_record(r.bundle())
            if i in TAMPERED:
                serve_bad_copy(b, r, "tampered")
            else:
                b.put_record(r.bundle())
        yield a, b


@pytest.mark.parametrize("processes", [1, 2], ids=["one process", "worker processes"])
async def test_a_reader_that_goes_away_costs_the_run_nothing(tmp_path, mirrors, processes):
    a, b = mirrors
    conf = write_config(tmp_path, [a.spec(), b.spec()], extra=f"processes = {processes}\n")
    db = str(tmp_path / "s.db")
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(r.pith_number for r in RECORDS))
    every = {r.pith_number for r in RECORDS}

    def run(*argv):
        return _pithsync_with_early_close("--config", conf, "--db", db, *argv)

    # --json streams while the run goes on: the reader is gone long before the run ends.
    code, first, err = await anyio.to_thread.run_sync(run, "--json", "pull", "--from", str(listing))
    _assert_quiet_stop(code, err)
    assert json.loads(first)["pith_number"] in every
    stored = _store(db)
    assert stored["records"] == every
    assert [(c, bool(f), x) for c, f, x in stored["runs"]] == [("pull", True, 1)]  # finished, diverged
    assert stored["kinds"][0] == "run_started" and stored["kinds"][-1] == "run_finished"
    assert stored["kinds"].count("record_outcome") == len(RECORDS)
    assert stored["alerts"] == len(TAMPERED)
    _journal_ok(db)

    # Plain rows, and a sync over every tracked record.
    code, first, err = await anyio.to_thread.run_sync(run, "sync")
    _assert_quiet_stop(code, err)
    assert first.split() == ["pith_number", "verdict", "events", "mirrors"]
    stored = _store(db)
    assert [(c, bool(f)) for c, f, _ in stored["runs"]] == [("pull", True), ("sync", True)]
    assert stored["kinds"][-1] == "run_finished" and stored["kinds"].count("record_outcome") >= 2 * len(TAMPERED)
    _journal_ok(db)

    # The commands that only read: the same quiet stop, plain and --json.
    for argv in (["journal"], ["--json", "journal"], ["status"], ["alerts"], ["--json", "alerts"]):
        code, first, err = await anyio.to_thread.run_sync(run, *argv)
        _assert_quiet_stop(code, err)
        assert first, argv
    _journal_ok(db)
