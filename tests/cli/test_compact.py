"""`pithsync compact`: what a migration from an older schema frees goes back to the disk, and
every stored byte stays as it was."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

from helpers import log_as_schema8, store_as_schema8
from synctools import json_lines, make_config, pull, run_cli, write_config

from pithsync.base.exits import ExitCode
from pithsync.store import run_lock
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under root, by its path below it."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


async def _exported(conf, db: str, www: Path) -> dict[str, bytes]:
    code, out = await run_cli(
        "--config", conf, "--db", db, "export", www, "--base-url", "https://m.test"
    )  # fmt: skip
    assert code == 0, out
    return _tree(www / "pith")


async def test_compact_returns_what_a_migration_freed_and_keeps_every_stored_byte(tmp_path):
    records = [forge.forge_record(70 + i, 2) for i in range(40)]
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        for mirror in (a, b):
            for r in records:
                mirror.put_record(r.bundle())
        cfg = make_config(tmp_path / "store", [a.spec(), b.spec()])
        for _ in range(3):  # a journal and a log of three checks a record
            await pull(cfg, *[r.pith_number for r in records])
    conf = write_config(tmp_path / "pithsync.toml", [])
    db = cfg.db_path
    # A store schema 8 wrote: the migrations rebuild its journal and its log, and leave the old
    # tables' pages free in the file.
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        store_as_schema8(conn)
        log_as_schema8(conn)
        conn.execute("update meta set value = '8' where key = 'schema_version'")
    code, out = await run_cli("--db", db, "--json", "status")
    assert code == 0, out
    size = json.loads(out)["store"]
    assert size["free_bytes"] > 0, size
    hint = "`pithsync compact` returns the free pages to the disk"
    code, out = await run_cli("--db", db, "status")
    assert code == 0, out
    assert (hint in out) == (size["free_bytes"] * 10 >= size["bytes"])  # a tenth free: say so
    code, journal_before = await run_cli("--db", db, "journal", "--json")
    assert code == 0, journal_before
    code, status_before = await run_cli("--db", db, "--json", "status")
    assert code == 0, status_before
    exported_before = await _exported(conf, db, tmp_path / "www-before")

    code, out = await run_cli("--db", db, "--json", "compact")
    assert code == 0, out
    done = json.loads(out)
    assert done["free_bytes_before"] == size["free_bytes"]
    assert done["bytes_before"] - done["bytes_after"] >= done["free_bytes_before"], done

    # Nothing stored changed: the journal goes on with the compact run, and verifies.
    code, out = await run_cli("--db", db, "journal", "--json")
    assert code == 0, out
    before, after = json_lines(journal_before), json_lines(out)
    assert after[: len(before)] == before
    assert [(e["kind"], e["detail"].get("command")) for e in after[len(before) :]] == [
        ("run_started", "compact"),
        ("run_finished", None),
    ]
    assert {k: after[-1]["detail"][k] for k in done if k != "path"} == {
        k: v for k, v in done.items() if k != "path"
    }
    code, out = await run_cli("--db", db, "journal", "verify")
    assert code == 0 and "intact" in out
    code, status_after = await run_cli("--db", db, "--json", "status")
    assert code == 0, status_after
    assert json.loads(status_after)["records"] == json.loads(status_before)["records"]
    assert json.loads(status_after)["store"]["free_bytes"] < size["free_bytes"]
    code, out = await run_cli("--db", db, "status")
    assert code == 0 and hint not in out
    assert await _exported(conf, db, tmp_path / "www-after") == exported_before


async def test_compact_needs_a_store_and_the_run_lock(tmp_path):
    missing = tmp_path / "nothing.db"
    code, _ = await run_cli("--db", missing, "compact")
    assert code == ExitCode.USAGE and not missing.exists()  # creates no store

    record = forge.forge_record(90, 1)
    async with MirrorServer("a") as a:
        a.put_record(record.bundle())
        cfg = make_config(tmp_path / "store", [a.spec()])
        await pull(cfg, record.pith_number)
    conf = write_config(tmp_path / "pithsync.toml", [], extra="[store]\nlock_timeout_s = 0\n")
    with run_lock(cfg.db_path, 2.0):  # a sync is running
        code, _ = await run_cli("--config", conf, "--db", cfg.db_path, "compact")
    assert code == ExitCode.STORE
    code, _ = await run_cli("--config", conf, "--db", cfg.db_path, "compact")
    assert code == ExitCode.OK
