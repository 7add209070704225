"""The schedule wired into the store and the run: sync takes only the due records, in priority
order; intervals adapt; a run cut by its budget loses nothing; pull ignores the schedule; the
coverage figures reach status, the metrics and the log."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import time

import anyio
import pytest
from synctools import make_config, run_cli, write_config

from pithsync.config import ScheduleConfig
from pithsync.core.schedule import DAY, HOUR
from pithsync.run import scheduling, sync_records
from pithsync.run.results import Target
from pithsync.run.scheduling import RunClock, due_targets
from pithsync.store import Store
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer

REAL = ScheduleConfig()  # 1 h .. 7 d, as deployed
REAL_TOML = '[schedule]\nmin_interval = "1h"\nmax_interval = "7d"\n'


def _schedule(db_path) -> dict[str, dict]:
    with sqlite3.connect(db_path) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("select * from schedule")
        return {r["pith_number"]: dict(r) for r in rows}


def _set(db_path, sql: str, params=()) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute(sql, params)


def _checked_in(db_path, run_id: str) -> list[str]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "select pith_number from journal where run_id = ? and kind = 'record_outcome'",
            [run_id],
        )
        return [r[0] for r in rows]


def _last_run(db_path, command: str) -> tuple[str, dict]:
    with sqlite3.connect(db_path) as conn:
        run_id, summary = conn.execute(
            "select run_id, summary from runs where command = ? order by started_at desc limit 1",
            [command],
        ).fetchone()
    return run_id, json.loads(summary)


async def _run(cfg, command: str, now: float, targets: list[Target] | None = None):
    """sync_records in a thread (it runs its own event loop beside the test's mirrors), at the
    clock value `now`; a `sync` takes the records due then."""

    def call():
        store = Store.open(cfg.db_path)
        try:
            clock = RunClock.starting(now)
            chosen = due_targets(store, now) if targets is None else targets
            return sync_records(cfg, store, chosen, command, clock=clock)
        finally:
            store.close()

    return await anyio.to_thread.run_sync(call)


def _targets(records) -> list[Target]:
    return [Target(r.suffix, r.pith_number, 0) for r in records]


async def test_sync_takes_only_due_records_in_priority_order(tmp_path, monkeypatch):
    records = [forge.forge_record(i) for i in range(1, 6)]
    async with MirrorServer("a") as a:
        for r in records:
            a.put_record(r.bundle())
        cfg = make_config(tmp_path, [a.spec()], schedule=REAL)
        now = time.time()
        await _run(cfg, "pull", now, _targets(records))
        rotation, attention, discovered, never, not_due = (r.pith_number for r in records)
        # Each record's last check as a class of core.schedule ranks it; one is not due.
        _set(cfg.db_path, "update schedule set next_due = ?", [now - 10])
        _set(cfg.db_path, "update schedule set next_due = ? where pith_number = ?",
             [now - 500, rotation])  # fmt: skip
        _set(cfg.db_path, "update schedule set last_outcome = 'diverged' where pith_number = ?",
             [attention])  # fmt: skip
        _set(cfg.db_path, "update schedule set discovered_at = ? where pith_number = ?",
             [now + 1, discovered])  # fmt: skip
        _set(cfg.db_path, "update schedule set last_checked = null where pith_number = ?",
             [never])  # fmt: skip
        _set(cfg.db_path, "update schedule set next_due = ? where pith_number = ?",
             [now + HOUR, not_due])  # fmt: skip
        store = Store.open(cfg.db_path)
        try:
            order = [t.pith_number for t in due_targets(store, now + 60)]
        finally:
            store.close()
        assert order == [never, attention, discovered, rotation]
        monkeypatch.setattr(scheduling, "DUE_PAGE", 2)  # a limit across pages
        store = Store.open(cfg.db_path)
        try:
            for limit in (1, 3, 4, 9):
                taken = [t.pith_number for t in due_targets(store, now + 60, limit)]
                assert taken == order[:limit]
        finally:
            store.close()
        a.clear_log()
        outcome = await _run(cfg, "sync", now + 60)
        fetched = {req.path for req in a.requests}
    assert sorted(_checked_in(cfg.db_path, outcome.run_id)) == sorted(order)
    assert not any(forge.forge_record(5).suffix in p for p in fetched)
    assert int(outcome.code) == 0


async def test_interval_adapts_end_to_end(tmp_path):
    record = forge.forge_record(1, n_events=3)
    async with MirrorServer("a") as a:
        a.put_record(record.bundle(upto=2))
        cfg = make_config(tmp_path, [a.spec()], schedule=REAL)
        t0 = 1_900_000_000.0
        await _run(cfg, "pull", t0, _targets([record]))
        row = _schedule(cfg.db_path)[record.pith_number]
        assert row["interval"] == 7 * DAY and row["last_outcome"] == "in_sync"
        assert t0 + 6 * DAY < row["next_due"] <= t0 + 7 * DAY + 60

        a.put_record(record.bundle())  # a new event: the record changed
        t1 = t0 + 8 * DAY
        await _run(cfg, "sync", t1)
        row = _schedule(cfg.db_path)[record.pith_number]
        assert (row["interval"], row["last_outcome"]) == (HOUR, "changed")
        assert row["next_due"] <= t1 + HOUR + 60

        assert (await _run(cfg, "sync", t1 + HOUR / 2)).tally.records == 0  # not due yet
        seen = []
        t = t1
        for _ in range(3):
            t = _schedule(cfg.db_path)[record.pith_number]["next_due"] + 1
            await _run(cfg, "sync", t)
            row = _schedule(cfg.db_path)[record.pith_number]
            seen.append(row["interval"])
            assert row["last_outcome"] == "in_sync" and row["next_due"] > t
    assert seen == [3 * HOUR, 9 * HOUR, 27 * HOUR]  # unchanged: growth 3 per check
    assert row["unchanged_checks"] == 3


async def test_run_cut_at_a_random_moment_loses_nothing(tmp_path):
    seed = random.randrange(1 << 32)
    print(f"budget seed {seed}")
    rng = random.Random(seed)
    budget = rng.uniform(0.05, 1.5)
    records = [forge.forge_record(i) for i in range(1, 13)]
    async with MirrorServer("a") as a:
        for r in records:
            a.put_record(r.bundle())
        conf = write_config(tmp_path, [a.spec()], schedule=REAL_TOML)
        db = tmp_path / "pithsync.db"
        base = ["--config", conf, "--db", db]
        code, _ = await run_cli(*base, "pull", *(r.pith_number for r in records))
        assert code == 0
        _set(db, "update schedule set next_due = 0")  # every record due
        before = _schedule(db)
        a.fault("delay", seconds=0.15)  # every request answers slowly
        code, _ = await run_cli(*base, "sync", "--max-duration", f"{budget:.3f}")
        assert code == 0, f"seed {seed}"
        cut_run, summary = _last_run(db, "sync")
        after = _schedule(db)
        checked = set(_checked_in(db, cut_run))
        for pith, row in after.items():
            if pith in checked:  # committed whole, with its schedule advanced
                assert row["next_due"] > time.time() and row["last_checked"] > 0, seed
                assert row["last_checked"] > before[pith]["last_checked"], seed
            else:  # untouched, still due
                assert row == before[pith], seed
        left = set(after) - checked
        assert summary["left_due"] == len(left) and summary["cut"] is bool(left), seed
        code, _ = await run_cli(*base, "journal", "verify")
        assert code == 0, seed

        a.clear_faults()
        code, _ = await run_cli(*base, "sync")
        assert code == 0
        rest_run, _ = _last_run(db, "sync")
    assert set(_checked_in(db, rest_run)) == left, f"seed {seed}"


async def test_a_budgeted_sync_takes_no_more_due_records_than_it_can_start(tmp_path):
    # One process, one record in flight, 4 requests a second for 1 s: at most
    # ceil((4 x 1 + 1) / 2) = 3 records can be finished, and 1 more started, so the run reads 4
    # of the 12 due records; every other one is left due and counted, and the next run takes
    # the next ones in order.
    records = [forge.forge_record(i) for i in range(1, 13)]
    async with MirrorServer("a") as a:
        for r in records:
            a.put_record(r.bundle())
        extra = "max_requests_per_s = 4\nconcurrency = 1\nprocesses = 1\n"
        conf = write_config(tmp_path, [a.spec()], schedule=REAL_TOML, extra=extra)
        db = tmp_path / "pithsync.db"
        base = ["--config", conf, "--db", db]
        code, _ = await run_cli(*base, "pull", *(r.pith_number for r in records))
        assert code == 0
        _set(db, "update schedule set next_due = 0")  # every record due
        store = Store.open(db)
        try:
            order = [t.pith_number for t in due_targets(store, time.time())]
        finally:
            store.close()
        a.clear_log()
        code, _ = await run_cli(*base, "sync", "--max-duration", "1")
        fetched = {req.path for req in a.requests}
        run_id, summary = _last_run(db, "sync")
    assert code == 0
    checked = _checked_in(db, run_id)
    assert len(checked) <= 4 and set(checked) <= set(order[:4])
    assert summary["left_due"] == 12 - len(checked) and summary["cut"] is True
    untaken = {n.rsplit(":", 1)[1] for n in order[4:]}
    assert not any(s in path for path in fetched for s in untaken)


async def test_pull_ignores_the_schedule(tmp_path):
    record = forge.forge_record(1)
    async with MirrorServer("a") as a:
        a.put_record(record.bundle())
        cfg = make_config(tmp_path, [a.spec()], schedule=REAL)
        now = time.time()
        await _run(cfg, "pull", now, _targets([record]))
        first = _schedule(cfg.db_path)[record.pith_number]
        assert first["next_due"] > now + DAY  # not due for days
        a.clear_log()
        await _run(cfg, "pull", now + 10, _targets([record]))
        assert a.requests  # fetched all the same
    again = _schedule(cfg.db_path)[record.pith_number]
    assert again["last_checked"] > first["last_checked"]


async def test_status_metrics_and_log_show_coverage(tmp_path):
    records = [forge.forge_record(i) for i in range(1, 4)]
    handler = _Collect()
    logging.getLogger("pithsync.sync").addHandler(handler)
    try:
        async with MirrorServer("a") as a:
            for r in records:
                a.put_record(r.bundle())
            prom = tmp_path / "pithsync.prom"
            conf = write_config(
                tmp_path, [a.spec()], schedule=REAL_TOML,
                extra=f'[metrics]\ntextfile = "{prom}"\n',
            )  # fmt: skip
            db = tmp_path / "pithsync.db"
            base = ["--config", conf, "--db", db]
            code, _ = await run_cli(*base, "pull", *(r.pith_number for r in records))
            assert code == 0
            assert not [m for m in handler.messages if "coverage_behind" in m]
            code, out = await run_cli(*base, "status", "--json")
            cov = json.loads(out)["coverage"]
            assert (cov["tracked"], cov["due"], cov["overdue"]) == (3, 0, 0)
            assert cov["oldest_check"] is not None

            old = time.time() - 8 * DAY  # two records last checked longer ago than 7 d
            two = [records[0].pith_number, records[1].pith_number]
            _set(db, "update schedule set last_checked = ?, next_due = ? where pith_number in"
                 " (?, ?)", [old, old + 7 * DAY, *two])  # fmt: skip
            code, out = await run_cli(*base, "status", "--json")
            cov = json.loads(out)["coverage"]
            assert (cov["tracked"], cov["due"], cov["overdue"]) == (3, 2, 2)
            code, _ = await run_cli(*base, "sync", "--max-duration", "0.000001")
            assert code == 0
            text = prom.read_text()
    finally:
        logging.getLogger("pithsync.sync").removeHandler(handler)
    assert "pithsync_records_tracked 3" in text
    assert "pithsync_records_overdue 2" in text and "pithsync_records_due 2" in text
    behind = [m for m in handler.messages if "event=coverage_behind" in m]
    assert behind and "overdue=2" in behind[0] and "tracked=3" in behind[0]


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(self.format(record))


@pytest.mark.parametrize("text,seconds", [("90", 90.0), ("30m", 1800.0), ("7d", 7 * DAY)])
def test_durations(text, seconds):
    from pithsync.config import parse_duration

    assert parse_duration(text, "x") == seconds


async def test_an_old_store_gets_its_schedule_from_its_last_checks(tmp_path):
    records = [forge.forge_record(i) for i in range(1, 4)]
    async with MirrorServer("a") as a:
        for r in records:
            a.put_record(r.bundle())
        cfg = make_config(tmp_path, [a.spec()], schedule=REAL)
        await _run(cfg, "pull", time.time(), _targets(records))
    checked, diverged, never = (r.pith_number for r in records)
    # The store as schema 3 left it: no schedule; one check diverged, one record never checked.
    with sqlite3.connect(cfg.db_path) as conn:
        conn.execute("drop table schedule")
        conn.execute("update meta set value = '3' where key = 'schema_version'")
        conn.execute("update record_checks set checked_at = '2026-01-01T00:00:00.000000Z'")
        conn.execute("update record_checks set verdict = 'diverged' where pith_number = ?",
                     [diverged])  # fmt: skip
        conn.execute("delete from record_checks where pith_number = ?", [never])
    Store.open(cfg.db_path).close()
    rows = _schedule(cfg.db_path)
    at = 1767225600.0  # 2026-01-01T00:00:00Z
    assert rows[checked]["last_checked"] == pytest.approx(at)
    assert at + 6 * DAY < rows[checked]["next_due"] <= at + 7 * DAY
    assert rows[diverged]["next_due"] == pytest.approx(at + HOUR)
    assert rows[never]["last_checked"] is None and rows[never]["next_due"] <= time.time()


def test_workers_are_handed_no_chunk_past_the_deadline():
    from pithsync.run.scheduling import Deadline
    from pithsync.run.workers import Supply

    targets = _targets([forge.forge_record(i) for i in range(1, 40)])
    spent = Supply(targets, Deadline(time.monotonic() - 1))
    assert spent.hand_out(0) == [] and spent.cut and spent.handed_out() == []
    running = Supply(targets, Deadline(time.monotonic() + 3600))
    assert running.hand_out(0) == targets[:16] and not running.cut
