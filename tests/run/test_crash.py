"""Crash safety (issue 6): SIGKILL at random moments loses nothing and trusts nothing wrongly.

A real `python -m pithsync pull/sync` of 500 forged records against two local mirrors (one serving
stale, tampered, lying and missing copies, so evidence and alerts are produced) is killed at
moments drawn uniformly from the measured duration of one uninterrupted run.  After every kill:

* `PRAGMA integrity_check` and `foreign_key_check` are clean, and `journal verify` passes;
* nothing already committed is lost: the journal keeps its prefix, evidence, documents, alerts and
  outbox rows are never removed, delivered notifications stay delivered, no record's event count
  goes down;
* what is there is consistent: every record's state hashes to its state_sha256 and names only
  stored events; every mirror_status row agrees with the last journal entry for it (they commit
  together) and a bad copy has its evidence; every alert has its outbox rows, one per channel and
  notification (they commit with the evidence).

After each chain of kills an uninterrupted run must end with exactly the stored record states,
mirror statuses and open alerts of an uninterrupted reference run on a fresh store, with every
queued notification delivered.

20 kills by default (30-50 s on 2 shared cores); PITHSYNC_SLOW_TESTS=1 for 100
(PITHSYNC_CRASH_KILLS=N for any number).  Kill times are uniform within the measured duration of an
uninterrupted run (on a fresh store, or on a full one for chains that start from a copy of the
reference).  They come from PITHSYNC_CRASH_SEED (printed) so a failure can be replayed.

Also here: a full disk and a read-only store end with `pithsync: ...` and exit 4, not a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import reliability_counts
from synctools import ALWAYS_DUE_TOML

from pithsync import cli
from pithsync.core import merkle
from pithsync.core.canonical import canon_sha256, without
from pithsync.store import Store, bodies
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer

pytestmark = pytest.mark.slow  # real subprocesses, hundreds of records or many examples

SLOW = bool(os.environ.get("PITHSYNC_SLOW_TESTS"))
KILLS = int(os.environ.get("PITHSYNC_CRASH_KILLS", 100 if SLOW else 20))
CHAIN = 10  # kills on one store before an uninterrupted run must put it right
RECORDS = 500
SEED = int(os.environ.get("PITHSYNC_CRASH_SEED", "6006"))
BAD_STATUSES = ("stale", "tampered", "bad_signature", "state_mismatch", "malformed", "equivocation")


# -- the world: 500 records on two mirrors, b diverging on some ------------------------------------


def forge_world() -> tuple[list[forge.ForgedRecord], dict[str, dict], dict[str, bytes]]:
    """The records, what mirror a serves (all honest) and what b serves instead where it
    diverges."""
    records = [forge.forge_record(5000 + i, n_events=2) for i in range(RECORDS)]
    honest = {r.suffix: r.bundle() for r in records}
    b_overrides: dict[str, tuple[str, dict | None]] = {}
    for i, r in enumerate(records):
        if i % 10 == 3:
            b_overrides[r.suffix] = ("bundle", r.bundle(upto=1))  # stale
        elif i % 25 == 7:
            b_overrides[r.suffix] = ("tampered", forge.tampered(honest[r.suffix]))
        elif i % 50 == 11:
            b_overrides[r.suffix] = ("state", forge.lying_state(honest[r.suffix]["state"]))
        elif i % 40 == 19:
            b_overrides[r.suffix] = ("missing", None)
    return records, honest, b_overrides


def serve_world(a: MirrorServer, b: MirrorServer, records, honest, b_overrides) -> None:
    for r in records:
        a.put_record(honest[r.suffix])
        what, doc = b_overrides.get(r.suffix, (None, None))
        if what == "bundle":
            b.put_record(doc)
        elif what == "tampered":
            b.put_record(doc, state=honest[r.suffix]["state"])
        elif what == "state":
            b.put_record(honest[r.suffix], state=doc)
        elif what == "missing":
            pass
        else:
            b.put_record(honest[r.suffix])


def write_config(path: Path, a: MirrorServer, b: MirrorServer) -> str:
    text = (
        f'[[trust.keys]]\nkey_id = "{forge.TEST_KEY.key_id}"\n'
        f'public_key_b64 = "{forge.TEST_KEY.public_key_b64}"\n\n'
    )
    for m in (a, b):
        text += f'[[mirrors]]\nname = "{m.name}"\nbase_url = "{m.base_url}"\n\n'
    # Generous timeouts: the mirrors share two cores with the crawler; nothing here is a fault.
    text += (
        "[crawl]\nretries = 2\ntimeout_s = 20\ndeadline_s = 60\nfollow_hints = false\n\n"
        "[alerts]\nlog = true\n\n[store]\nlock_timeout_s = 30\n\n"
    )
    # Every sync re-checks every record, as the runs here are compared with one another.
    path.write_text(text + ALWAYS_DUE_TOML)
    return str(path)


# -- running pithsync ------------------------------------------------------------------------------


class Runner:
    def __init__(self, tmp: Path, conf: str, listing: str):
        self.tmp, self.conf, self.listing = tmp, conf, listing
        self.n = 0

    def argv(self, db: str, command: str) -> list[str]:
        what = ["pull", "--from", self.listing] if command == "pull" else ["sync"]
        return [sys.executable, "-m", "pithsync", "--config", self.conf, "--db", db, "-q", *what]

    async def start(self, db: str, command: str):
        self.n += 1
        err = open(self.tmp / f"run{self.n}.stderr", "wb")
        proc = await asyncio.create_subprocess_exec(
            *self.argv(db, command), stdout=subprocess.DEVNULL, stderr=err, cwd=self.tmp
        )
        err.close()
        return proc, self.tmp / f"run{self.n}.stderr"

    async def complete(self, db: str, command: str = "pull") -> tuple[int, float, str]:
        started = time.monotonic()
        proc, err = await self.start(db, command)
        code = await asyncio.wait_for(proc.wait(), timeout=300)
        return code, time.monotonic() - started, err.read_text(errors="replace")

    @staticmethod
    async def no_orphans(db: str, within: float = 30.0) -> None:
        """No process of the killed run (a sync worker) may outlive it: the kernel kills them
        with the parent (PR_SET_PDEATHSIG)."""
        deadline = time.monotonic() + within
        while True:
            alive = []
            for pid in os.listdir("/proc"):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if db.encode() in f.read():
                            alive.append(int(pid))
                except (OSError, ValueError):
                    continue
            if not alive:
                return
            assert time.monotonic() < deadline, (
                f"processes of the killed run are still alive: {alive}"
            )
            await asyncio.sleep(0.05)

    async def killed_at(self, db: str, command: str, after: float) -> bool:
        """Run, and SIGKILL it `after` seconds from the start; False if it ended first."""
        proc, err = await self.start(db, command)
        try:
            code = await asyncio.wait_for(proc.wait(), timeout=after)
        except TimeoutError:
            try:
                os.kill(proc.pid, signal.SIGKILL)  # our own child, by pid
            except ProcessLookupError:
                pass  # it ended on its own in the same instant (and was reaped): a kill at its end
            await proc.wait()
            await self.no_orphans(db)
            return True
        stderr = err.read_text(errors="replace")
        assert "Traceback" not in stderr, stderr[-3000:]
        assert code in (0, 1), (code, stderr[-2000:])
        return False


# -- what the store must look like -----------------------------------------------------------------


def _columns(conn, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"pragma table_info({table})")}


def snapshot(db: str) -> dict:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        snap = {
            "journal": [
                tuple(r) for r in conn.execute("select seq, entry_sha256 from journal order by seq")
            ],
            "evidence": {r[0] for r in conn.execute("select id from evidence")},
            "documents": {r[0] for r in conn.execute("select sha256 from documents")},
            "event_counts": dict(
                conn.execute("select pith_number, event_count from records where state is not null")
            ),
            "alerts": dict(conn.execute("select id, state from alerts"))
            if "state" in _columns(conn, "alerts")
            else {},
            "outbox": dict(conn.execute("select id, delivered_at from outbox")),
        }
    return snap


def assert_nothing_lost(before: dict, after: dict) -> None:
    assert after["journal"][: len(before["journal"])] == before["journal"], (
        "journal entries changed or vanished"
    )
    assert before["evidence"] <= after["evidence"], "evidence rows vanished"
    assert before["documents"] <= after["documents"], "verified documents vanished"
    for pith, n in before["event_counts"].items():
        assert after["event_counts"].get(pith, -1) >= n, f"{pith} rolled back"
    assert set(before["alerts"]) <= set(after["alerts"]), "alerts vanished"
    for alert_id, state in before["alerts"].items():
        if state == "resolved":
            assert after["alerts"][alert_id] == "resolved"
    assert set(before["outbox"]) <= set(after["outbox"]), "outbox rows vanished"
    for row_id, delivered in before["outbox"].items():
        if delivered:
            assert after["outbox"][row_id] == delivered, (
                "a delivered notification became undelivered"
            )


def journal_verify_in_process(db: str) -> None:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli.main(["--db", db, "--json", "journal", "verify"])
    doc = json.loads(buf.getvalue())
    assert code == 0 and doc["ok"], doc


def assert_log_whole(db: str) -> None:
    """The observation log after a kill: every committed statement parses back, and the tree
    the store's kept subtree hashes give is the tree of those statements (no leaf without its
    hashes, nor the reverse), as is every signed checkpoint's."""
    store = Store.open_reader(db)
    try:
        size = store.log_size()
        leaves = [merkle.leaf_hash(s) for s in store.log_statements(0, size)]
        assert len(leaves) == size
        assert store.log_root(size) == merkle.root(leaves)
        for (checkpoint_size,) in store.db.execute("select size from log_checkpoints"):
            assert store.log_root(checkpoint_size) == merkle.root(leaves[:checkpoint_size])
    finally:
        store.close()


def assert_consistent(db: str, channels: tuple[str, ...], ref_states: dict[str, str]) -> None:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("pragma integrity_check").fetchall() == [("ok",)]
        assert conn.execute("pragma foreign_key_check").fetchall() == []
        if not conn.execute("select 1 from sqlite_master").fetchone():
            return  # killed inside the first migration: it rolled back whole, nothing to check
        # Records: the state is its own hash, names only stored events, and (the mirrors never
        # change) is already the reference state.
        event_ids: dict[str, set[str]] = {}
        for pith, eid in conn.execute("select pith_number, event_id from events"):
            event_ids.setdefault(pith, set()).add(eid)
        for pith, state_json, sha in conn.execute(
            "select pith_number, state, state_sha256 from records where state is not null"
        ):
            state = json.loads(bodies.expand_text(state_json))
            assert canon_sha256(without(state, "state_sha256")) == sha == state["state_sha256"]
            assert set(state["applied_event_ids"]) <= event_ids.get(pith, set()), pith
            assert sha == ref_states[pith], f"{pith}: a state other than the reference"
        assert_log_whole(db)
        # mirror_status and its journal entry commit together; a bad copy has its evidence.
        last = {}
        for seq, pith, detail in conn.execute(
            "select seq, pith_number, detail from journal where kind = 'record_outcome'"
            " order by seq"
        ):
            outcome = json.loads(detail)
            assert "mirrors" in outcome, f"journal entry {seq}: a record_outcome without mirrors"
            for m in outcome["mirrors"]:
                last[(pith, m["mirror"])] = m["status"]
        evidence = {(p, m) for p, m in conn.execute("select pith_number, mirror from evidence")}
        for pith, mirror, status in conn.execute(
            "select pith_number, mirror, status from mirror_status"
        ):
            assert last.get((pith, mirror)) == status, (
                pith,
                mirror,
                status,
                last.get((pith, mirror)),
            )
            if status in BAD_STATUSES:
                assert (pith, mirror) in evidence, (pith, mirror, status)
        # == OUTBOX CHECK (issue 4's alerts) ===================================================
        # Active whenever the alerts table has rows: every alert has its outbox rows, written in
        # the same transaction as the evidence: one per configured channel for the `opened`
        # notification, and for `resolved` too once resolved.  Without an `event` column (an
        # older schema) at least one outbox row per alert.
        alerts = conn.execute("select id, state from alerts").fetchall()
        has_event = "event" in _columns(conn, "outbox")
        outbox: dict[int, set] = {}
        for row in conn.execute(
            f"select alert_id, {'event' if has_event else 'NULL'}, channel from outbox"
        ):
            outbox.setdefault(row[0], set()).add((row[1], row[2]))
        assert set(outbox) <= {a for a, _ in alerts}, "outbox rows for alerts that do not exist"
        for alert_id, state in alerts:
            if not has_event:
                assert outbox.get(alert_id), f"alert {alert_id} has no outbox row"
                continue
            wanted = {("opened", c) for c in channels} | (
                {("resolved", c) for c in channels} if state == "resolved" else set()
            )
            assert wanted <= outbox.get(alert_id, set()), (
                f"alert {alert_id} lacks outbox rows {wanted - outbox.get(alert_id, set())}"
            )
    journal_verify_in_process(db)


def tracked(db: str) -> int:
    if not Path(db).exists():
        return 0
    with contextlib.closing(sqlite3.connect(db)) as conn:
        try:
            return conn.execute("select count(*) from records where tracked = 1").fetchone()[0]
        except sqlite3.OperationalError:  # killed before the schema was committed
            return 0


def final_view(db: str) -> dict:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {
            "states": dict(conn.execute("select pith_number, state_sha256 from records")),
            "statuses": {
                (p, m): s
                for p, m, s in conn.execute("select pith_number, name, status from mirror_status")
            },
            "open_alerts": sorted(
                conn.execute("select kind, scope from alerts where state = 'open'").fetchall()
            )
            if "scope" in _columns(conn, "alerts")
            else [],
            "undelivered": conn.execute(
                "select count(*) from outbox where delivered_at is null"
            ).fetchone()[0],
        }


# -- the test --------------------------------------------------------------------------------------


async def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    records, honest, b_overrides = forge_world()
    listing = tmp_path / "numbers.txt"
    listing.write_text("\n".join(r.pith_number for r in records) + "\n")
    rng = random.Random(SEED)
    print(f"\ncrash test: seed={SEED} kills={KILLS} (PITHSYNC_CRASH_SEED to replay)")
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        serve_world(a, b, records, honest, b_overrides)
        runner = Runner(tmp_path, write_config(tmp_path / "pithsync.toml", a, b), str(listing))
        channels = ("log",)

        # The reference: one uninterrupted run on a fresh store.
        ref_db = str(tmp_path / "reference.db")
        ref_code, duration, stderr = await runner.complete(ref_db)
        assert "Traceback" not in stderr, stderr[-3000:]
        assert ref_code == 1  # b diverges on some records
        reference = final_view(ref_db)
        assert len(reference["states"]) == RECORDS
        assert {s for (_, m), s in reference["statuses"].items() if m == "b"} >= {
            "ok",
            "stale",
            "tampered",
            "state_mismatch",
            "missing",
        }
        assert reference["open_alerts"], "the divergent copies should have opened alerts"
        assert reference["undelivered"] == 0
        assert_consistent(ref_db, channels, reference["states"])
        # A re-sync of the full store (the timer's everyday run) is shorter: measure it too, so
        # kills on a full store are drawn from the duration of a run on a full store.  It must
        # change nothing.
        code, duration_full, stderr = await runner.complete(ref_db, "sync")
        assert code == ref_code and "Traceback" not in stderr, stderr[-3000:]
        assert final_view(ref_db) == reference
        print(
            f"crash test: one uninterrupted run takes {duration:.2f}s on a fresh store, "
            f"{duration_full:.2f}s on a full one"
        )

        kills = chains = runs = 0
        checking = 0.0
        commands = {"pull": 0, "sync": 0}
        while kills < KILLS:
            chains += 1
            db = str(tmp_path / f"chain{chains}.db")
            if chains % 2 == 0:
                # Every other chain starts from a full store (a copy of the reference), where the
                # timer's `sync` has all the work of the measured run.
                for suffix in ("", "-wal", "-shm"):
                    if Path(ref_db + suffix).exists():
                        shutil.copyfile(ref_db + suffix, db + suffix)
            before = None
            in_chain = 0
            while in_chain < CHAIN and kills < KILLS:
                # `sync` once every record is tracked (so that it has the same work as the
                # measured `pull`, and a kill time drawn from that run's duration lands inside it).
                full = tracked(db) == RECORDS
                command = "sync" if full and rng.random() < 0.5 else "pull"
                at = rng.uniform(0, duration_full if full else duration)
                commands[command] += 1
                runs += 1
                killed = await runner.killed_at(db, command, at)
                t_check = time.monotonic()
                if Path(db).exists():
                    assert_consistent(db, channels, reference["states"])
                    now = snapshot(db)
                    if before is not None:
                        assert_nothing_lost(before, now)
                    before = now
                checking += time.monotonic() - t_check
                if not killed:
                    continue  # it finished first: not a kill, but the checks above still held
                kills += 1
                in_chain += 1
                reliability_counts.add("kills")

            # An uninterrupted run puts the store exactly where the reference is.
            code, _, stderr = await runner.complete(db)
            assert "Traceback" not in stderr, stderr[-3000:]
            assert code == ref_code
            assert_consistent(db, channels, reference["states"])
            if before is not None:
                assert_nothing_lost(before, snapshot(db))
            view = final_view(db)
            assert view["states"] == reference["states"]
            assert view["statuses"] == reference["statuses"]
            assert view["open_alerts"] == reference["open_alerts"]
            assert view["undelivered"] == 0, "queued notifications were not delivered"
            proc = subprocess.run(
                [sys.executable, "-m", "pithsync", "--db", db, "journal", "verify"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode == 0 and "intact" in proc.stdout, proc.stdout + proc.stderr
        print(
            f"crash test: {kills} kills survived over {runs} runs ({commands['sync']} sync, "
            f"{commands['pull']} pull) in {chains} chains; "
            f"{checking:.1f}s spent checking after kills"
        )
    assert kills >= KILLS


async def test_the_crash_checks_catch_damage(tmp_path):
    """The checks above can fail: each kind of damage a torn write could leave is caught."""
    from synctools import make_config, pull

    records, honest, b_overrides = forge_world()
    few = records[:30]  # stale, tampered, lying state.json and missing copies among them
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        serve_world(a, b, few, honest, b_overrides)
        cfg = make_config(tmp_path, [a.spec(), b.spec()])
        await pull(cfg, *[r.pith_number for r in few])
    ref = {r.pith_number: honest[r.suffix]["state"]["state_sha256"] for r in few}
    assert_consistent(cfg.db_path, ("log",), ref)
    before = snapshot(cfg.db_path)
    assert before["outbox"] and before["evidence"], "the world should produce alerts and evidence"
    damage = {
        "an alert without its outbox row": (
            "delete from outbox where id = (select min(id) from outbox)"
        ),
        "the journal's last entry removed": (
            "delete from journal where seq = (select max(seq) from journal)"
        ),
        "a journal entry edited": "update journal set detail = '{\"edited\": 1}' where seq = 2",
        "a state that is not its hash": (
            "update records set state_sha256 = 'x' || substr(state_sha256, 2) where rowid = 1"
        ),
        "a mirror status without its journal entry": (
            "update mirror_status set status = 'ok' where status = 'stale'"
        ),
        "evidence removed": "delete from evidence",
        "a delivered notification undelivered": "update outbox set delivered_at = NULL",
    }
    with contextlib.closing(sqlite3.connect(cfg.db_path)) as conn:
        conn.execute("update outbox set delivered_at = '2026-01-01T00:00:00Z'")  # as if delivered
        conn.commit()
    before = snapshot(cfg.db_path)
    for what, sql in damage.items():
        copy = str(tmp_path / f"damaged{abs(hash(what))}.db")
        with (
            contextlib.closing(sqlite3.connect(cfg.db_path)) as src,
            contextlib.closing(sqlite3.connect(copy)) as dst,
        ):
            src.backup(dst)
            dst.execute(sql)
            dst.commit()
        with pytest.raises(AssertionError):
            assert_consistent(copy, ("log",), ref)
            assert_nothing_lost(before, snapshot(copy))
            print(f"not caught: {what}")


# -- full disk and read-only store -----------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}): full disk and "
            "read-only filesystem need one"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fsize_limit(limit: int):
    def preexec() -> None:
        signal.signal(
            signal.SIGXFSZ, signal.SIG_IGN
        )  # get EFBIG (SQLite: "disk is full"), not a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def run_cli(
    conf: str, db: str, *args: str, preexec=None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pithsync", "--config", conf, "--db", db, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec,
    )


def assert_store_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == int(cli.ExitCode.STORE), (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    json_errors = [
        json.loads(line)["error"]
        for line in proc.stderr.splitlines()
        if line.startswith('{"error": ')
    ]
    assert all(e["code"] == "store" and e["exit"] == 4 for e in json_errors), json_errors
    lines = [line for line in proc.stderr.splitlines() if line.startswith("pithsync: ")] + [
        e["message"] for e in json_errors
    ]
    assert lines, proc.stderr[-2000:]
    assert any(n in lines[-1] for n in needles), lines


@pytest.fixture
def small_world():
    records = [forge.forge_record(7000 + i, n_events=2) for i in range(120)]
    return records, {r.suffix: r.bundle() for r in records}


async def _pull_in_thread(*args, **kw):
    return await asyncio.to_thread(run_cli, *args, **kw)


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
async def test_full_disk_is_a_clear_store_error_and_nothing_is_lost(tmp_path, small_world, how):
    records, honest = small_world
    listing = tmp_path / "numbers.txt"
    listing.write_text("\n".join(r.pith_number for r in records))
    async with MirrorServer("a") as a:
        for r in records:
            a.put_record(honest[r.suffix])
        conf = tmp_path / "pithsync.toml"
        conf.write_text(
            f'[[trust.keys]]\nkey_id = "{forge.TEST_KEY.key_id}"\n'
            f'public_key_b64 = "{forge.TEST_KEY.public_key_b64}"\n\n'
            f'[[mirrors]]\nname = "a"\nbase_url = "{a.base_url}"\n\n'
            "[crawl]\nretries = 0\nfollow_hints = false\n"
        )
        with contextlib.ExitStack() as stack:
            if how == "tmpfs":
                # Room for the empty schema (about 40 tables and indexes of one 16 KiB page each)
                # and a little more: the run fills it.
                disk = stack.enter_context(tmpfs(tmp_path / "disk", "1100k"))
                preexec = None
            else:
                disk = tmp_path / "disk"
                disk.mkdir()
                preexec = _fsize_limit(1100 * 1024)
            (disk / "store").mkdir()  # pull creates the store, not its directory
            db = str(disk / "store" / "pithsync.db")
            proc = await _pull_in_thread(
                str(conf), db, "-q", "pull", "--from", str(listing), preexec=preexec
            )
            # A real ENOSPC is SQLITE_FULL; a file-size limit (EFBIG) is reported as an I/O error.
            full = ("no space left", "disk is full") if how == "tmpfs" else ("disk I/O error",)
            assert_store_error(proc, *full)
            # It filled up during the run (the run had started: its first journal entry is there),
            # and what was committed before is sound.  Records still in an uncommitted batch are
            # simply fetched again next time.
            with contextlib.closing(sqlite3.connect(db)) as conn:
                assert conn.execute("pragma integrity_check").fetchall() == [("ok",)]
                stored = dict(
                    conn.execute(
                        "select pith_number, state_sha256 from records where state is not null"
                    )
                )
                assert (
                    conn.execute(
                        "select count(*) from journal where kind = 'run_started'"
                    ).fetchone()[0]
                    >= 1
                )
            assert len(stored) < len(records), len(stored)
            by_number = {r.pith_number: honest[r.suffix]["state"]["state_sha256"] for r in records}
            assert all(by_number[p] == s for p, s in stored.items())
            journal_verify_in_process(db)
            # Another run on the still-full disk fails the same clear way.
            proc = await _pull_in_thread(
                str(conf), db, "-q", "pull", "--from", str(listing), preexec=preexec
            )
            assert_store_error(proc, *full)
            # Room again: the next run completes and nothing from before is missing.
            if how == "tmpfs":
                subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
            proc = await _pull_in_thread(str(conf), db, "-q", "pull", "--from", str(listing))
            assert proc.returncode == 0, proc.stderr[-3000:]
            with contextlib.closing(sqlite3.connect(db)) as conn:
                final = dict(conn.execute("select pith_number, state_sha256 from records"))
            assert final == by_number
            journal_verify_in_process(db)
    reliability_counts.add("faults")


@pytest.mark.parametrize("how", ["read-only mount", "immutable file"])
async def test_read_only_store_is_a_clear_store_error(tmp_path, small_world, how):
    records, honest = small_world
    records = records[:10]
    async with MirrorServer("a") as a:
        for r in records:
            a.put_record(honest[r.suffix])
        conf = tmp_path / "pithsync.toml"
        conf.write_text(
            f'[[trust.keys]]\nkey_id = "{forge.TEST_KEY.key_id}"\n'
            f'public_key_b64 = "{forge.TEST_KEY.public_key_b64}"\n\n'
            f'[[mirrors]]\nname = "a"\nbase_url = "{a.base_url}"\n\n'
            "[crawl]\nretries = 0\nfollow_hints = false\n"
        )
        numbers = [r.pith_number for r in records]
        with contextlib.ExitStack() as stack:
            if how == "read-only mount":
                disk = stack.enter_context(tmpfs(tmp_path / "disk", "16m"))
            else:
                disk = tmp_path / "disk"
                disk.mkdir()
            db = str(disk / "pithsync.db")
            proc = await _pull_in_thread(str(conf), db, "-q", "pull", *numbers[:5])
            assert proc.returncode == 0, proc.stderr
            if how == "read-only mount":
                subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
                needles = ("Read-only file system", "read-only")
            else:
                if subprocess.run(["chattr", "+i", db], capture_output=True).returncode != 0:
                    pytest.skip(
                        "chattr +i is not available here (root ignores file modes, so an "
                        "immutable file is the only read-only file)"
                    )
                stack.callback(subprocess.run, ["chattr", "-i", db], capture_output=True)
                needles = ("is read-only", "readonly")
            for args in (["-q", "pull", *numbers], ["-q", "sync"]):
                proc = await _pull_in_thread(str(conf), db, *args)
                assert_store_error(proc, *needles)
            # It can still be inspected (on the read-only mount, where its -wal and -shm files
            # cannot be created, as immutable), and it is as it was.
            proc = await _pull_in_thread(str(conf), db, "--json", "status")
            assert proc.returncode == 0, proc.stderr
            assert {r["pith_number"] for r in json.loads(proc.stdout)["records"]} == set(
                numbers[:5]
            )
            proc = await _pull_in_thread(str(conf), db, "journal", "verify")
            assert proc.returncode == 0 and "intact" in proc.stdout, proc.stderr
            out_dir = tmp_path / "exported"
            export = ["-q", "export", str(out_dir), "--base-url", "https://m.example"]
            proc = await _pull_in_thread(str(conf), db, *export)
            assert proc.returncode == 0, proc.stderr
            bundles = [out_dir / "pith" / n.split(":")[2] / "bundle.json" for n in numbers[:5]]
            assert all(b.is_file() for b in bundles)
    reliability_counts.add("faults")
