"""A run over worker processes (shards.py) stores and reports exactly what a one-process run
does, keeps its connection limits, and survives a worker that dies or cannot read the store."""

from __future__ import annotations

import os
import sqlite3

import pytest
from synctools import json_lines, run_cli, serve_bad_copy, write_config

from pithsync.config import from_toml
from pithsync.run import readahead
from pithsync.run import workers as shards
from pithsync.run.engine import SyncEngine, Target
from pithsync.store import Store, StoreError
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer

RECORDS = [forge.forge_record(500 + i, 3) for i in range(8)]
BAD = {
    1: "tampered",
    3: "stale",
    4: "lying_state_json",
    6: "html",
}  # record index -> what mirror b serves


async def _mirrors(a: MirrorServer, b: MirrorServer) -> None:
    for i, r in enumerate(RECORDS):
        a.put_record(r.bundle())
        if i in BAD:
            serve_bad_copy(b, r, BAD[i])
        else:
            b.put_record(r.bundle())


async def _pull(
    tmp_path, name: str, mirrors, processes: int, crawl: str = ""
) -> tuple[int, dict, str]:
    conf = write_config(
        tmp_path / f"{name}.toml", mirrors, extra=f"processes = {processes}\n{crawl}"
    )
    db = tmp_path / f"{name}.db"
    code, out = await run_cli(
        "--config", conf, "--db", db, "--json", "pull", *[r.pith_number for r in RECORDS]
    )
    records = json_lines(out)  # the records examined before a store failure too
    return code, {r["pith_number"]: r for r in records}, str(db)


def _store_contents(db: str) -> dict:
    conn = sqlite3.connect(db)
    q = lambda sql: sorted(conn.execute(sql).fetchall())  # noqa: E731
    return {
        "records": q("select pith_number, event_count, state_sha256, state from records"),
        "events": q("select event_id, pith_number, body from events"),
        "documents": q("select sha256, kind, pith_number, body from documents"),
        "mirror_status": q(
            "select pith_number, mirror, status, reasons, bundle_sha256, state_sha256 "
            "from mirror_status"
        ),
        "evidence": q("select pith_number, mirror, status, body_sha256 from evidence"),
        "validators": q("select url, etag, document_sha256 from validators"),
        "journal_kinds": q(
            "select kind, pith_number, mirror, status from journal "
            "where kind != 'run_started' and kind != 'run_finished'"
        ),
        "alerts": q("select kind, scope, pith_number, mirror, state from alerts"),
    }


def _comparable(results: dict) -> dict:
    return {
        p: {**r, "mirrors": sorted(r["mirrors"], key=lambda m: m["name"])}
        for p, r in results.items()
    }


async def test_sharded_run_stores_and_reports_what_one_process_does(tmp_path):
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        await _mirrors(a, b)
        code1, one, db1 = await _pull(tmp_path, "one", [a, b], processes=1)
        code2, two, db2 = await _pull(tmp_path, "two", [a, b], processes=2)
        # Again with nothing changed: the in-sync records take the quick check (in the workers,
        # through their read-only connections), the diverged ones the full comparison.
        again1 = await _pull(tmp_path, "one", [a, b], processes=1)
        again2 = await _pull(tmp_path, "two", [a, b], processes=2)
    assert code1 == code2 == 1  # diverged records in both
    assert set(one) == {r.pith_number for r in RECORDS}
    assert _comparable(one) == _comparable(two)
    verdicts = {p: r["verdict"] for p, r in two.items()}
    assert (
        sum(v == "diverged" for v in verdicts.values()) >= 3
        and sum(v == "in_sync" for v in verdicts.values()) == 4
    )
    assert again1[0] == again2[0] == 1
    assert _comparable(again1[1]) == _comparable(again2[1])

    def outcome(results: dict) -> dict:  # messages may word it differently ("held by the store")
        return {
            p: (
                r["verdict"],
                r["state_sha256"],
                [(m["name"], m["status"], [x["code"] for x in m["reasons"]]) for m in r["mirrors"]],
            )
            for p, r in _comparable(results).items()
        }

    assert outcome(again1[1]) == outcome(one)
    # The rows may differ only in times and run ids, which are not compared.
    assert _store_contents(db1) == _store_contents(db2)
    for db in (db1, db2):
        code, out = await run_cli("--db", db, "journal", "verify")
        assert code == 0, out


async def _pull_with_a_failing_worker(
    tmp_path, monkeypatch, victim, fail
) -> tuple[set, set, dict, str]:
    """A sharded pull of RECORDS in which the worker examining `victim` calls `fail()`.  Returns
    (lost, synced, results, db), after checking that every record is reported either way."""
    real_examine = SyncEngine.examine

    async def examine(self, target, **kw):
        if target.suffix == victim.suffix:
            fail()
        return await real_examine(self, target, **kw)

    # Workers are forked from this process, so they inherit the patches; the parent never
    # examines.  One record per chunk and a short queue per worker (2 in flight, 3 waiting), so
    # that the workers share these few records out as they would a large run's.
    monkeypatch.setattr(SyncEngine, "examine", examine)
    monkeypatch.setattr(shards, "CHUNK_RECORDS", 1)
    monkeypatch.setattr(readahead, "READ_AHEAD", 2)
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        for r in RECORDS:
            a.put_record(r.bundle())
            b.put_record(r.bundle())
        code, results, db = await _pull(
            tmp_path, "failing", [a, b], processes=2, crawl="concurrency = 4\nper_host = 2\n"
        )
    assert code == 3 and set(results) == {
        r.pith_number for r in RECORDS
    }  # every record is reported
    lost = {p for p, r in results.items() if r["verdict"] == "unverifiable"}
    synced = {p for p, r in results.items() if r["verdict"] == "in_sync"}
    assert victim.pith_number in lost and lost | synced == set(results)
    store = Store.open(db)
    try:
        assert all(store.record(p)["event_count"] == 3 for p in synced)
        assert all(store.record(p) is None for p in lost)
        assert store.verify_journal() == []
    finally:
        store.close()
    return lost, synced, results, db


async def test_sharded_run_that_loses_a_worker_keeps_the_other_records(tmp_path, monkeypatch):
    monkeypatch.setattr(
        shards, "SEND_RECORDS", 1
    )  # each result sent at once: none waits in the dead worker
    lost, synced, results, _ = await _pull_with_a_failing_worker(
        tmp_path, monkeypatch, RECORDS[5], lambda: os._exit(7)
    )  # as if killed
    assert all("exited with code 7" in results[p]["error"] for p in lost)
    # The dead worker took with it at most its records in flight and its short queue; the other
    # worker took and stored everything else.
    assert len(lost) <= 5 and synced


class _WorkerCrash(BaseException):
    """Not an Exception: the engine's per-record guard lets it through and the worker's run ends."""


async def test_worker_whose_run_fails_still_delivers_the_records_it_finished(tmp_path, monkeypatch):
    def crash():
        raise _WorkerCrash("boom")

    # Results wait in the worker's outbox (up to 64 records); a worker that fails must send them
    # before it reports the failure.  The victim is taken last: by then its worker has finished
    # others and has no queue left, so only it and at most one other in flight can be lost.
    lost, _, results, _ = await _pull_with_a_failing_worker(
        tmp_path, monkeypatch, RECORDS[-1], crash
    )
    assert all("_WorkerCrash" in results[p]["error"] for p in lost)
    assert len(lost) <= 2


def test_supply_hands_out_each_chunk_once_and_knows_who_holds_it(monkeypatch):
    """Workers ask over their pipes and the parent replies with the next chunk: each chunk goes
    to one worker, the parent knows which, and a spent supply answers []."""
    import multiprocessing
    import multiprocessing.connection
    import time

    from pithsync.run.engine import run_event_loop

    monkeypatch.setattr(shards, "CHUNK_RECORDS", 3)
    ctx = multiprocessing.get_context("fork")
    targets = _targets(100)
    supply = shards.Supply(targets)
    assert len(supply.chunks) == 34 and [t for c in supply.chunks for t in c] == targets
    go = ctx.Event()  # both start taking together, however slowly the second one forks
    both_took_one = ctx.Barrier(2)  # neither takes it all while the other is still unscheduled

    def take_all(requests, replies) -> None:
        async def main() -> None:
            chunks = shards.ChunkRequests(requests, replies)
            first_take = True
            while chunk := await chunks.take():
                requests.send(("got", [t.suffix for t in chunk]))
                if first_take:
                    both_took_one.wait(30)
                    first_take = False
                time.sleep(0.002)  # as if syncing it, so that the two take turns

        go.wait(30)
        run_event_loop(main)
        os._exit(0)

    conns, procs = {}, []
    for worker in (0, 1):
        receive, send = ctx.Pipe(duplex=False)
        replies_in, replies_out = ctx.Pipe(duplex=False)
        procs.append(ctx.Process(target=take_all, args=(send, replies_in)))
        procs[-1].start()
        send.close()
        replies_in.close()
        conns[receive] = (worker, replies_out, [])
    go.set()
    open_conns = dict(conns)
    while open_conns:
        for conn in multiprocessing.connection.wait(list(open_conns), timeout=60):
            worker, replies, got = open_conns[conn]
            try:
                kind, payload = conn.recv()
            except EOFError:
                del open_conns[conn]
                continue
            if kind == "more":
                replies.send(supply.hand_out(worker))
            else:
                got.extend(payload)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    held = {w: [t.suffix for t in supply.held_by(w)] for w, _, _ in conns.values()}
    assert all(held[w] == got for w, _, got in conns.values())  # the parent knows who took what
    assert held[0] and held[1], "both workers took chunks"
    assert sorted(held[0] + held[1]) == sorted(t.suffix for t in targets)  # each once, none left
    assert supply.hand_out(0) == []  # the supply is spent


async def test_worker_that_cannot_read_the_store_stops_the_run_with_exit_4(tmp_path, monkeypatch):
    def refuse(cls, path):
        raise StoreError(f"cannot open store {path}: refused for the test")

    monkeypatch.setattr(Store, "open_reader", classmethod(refuse))
    async with MirrorServer("a") as a:
        for r in RECORDS:
            a.put_record(r.bundle())
        code, results, db = await _pull(tmp_path, "noread", [a], processes=2)
    assert code == 4 and results == {}
    store = Store.open(db)
    try:
        assert all(store.record(r.pith_number) is None for r in RECORDS)  # nothing half-written
        assert store.verify_journal() == []
    finally:
        store.close()


def _cfg(processes: int | None = None, concurrency: int = 64, per_host: int = 16):
    text = f"[crawl]\nconcurrency = {concurrency}\nper_host = {per_host}\n" + (
        f"processes = {processes}\n" if processes is not None else ""
    )
    return from_toml(text)


def _targets(n: int, depth: int = 0) -> list[Target]:
    return [Target(f"S{i}", None, depth) for i in range(n)]


def test_worker_count_forks_only_where_it_pays(monkeypatch):
    monkeypatch.setattr(shards, "_usable_cpus", lambda: 2)
    assert shards.worker_count(_cfg(), _targets(10), "x.db") == 0  # too small to pay for a fork
    assert shards.worker_count(_cfg(), _targets(2 * shards.MIN_RECORDS_PER_WORKER), "x.db") == 2
    assert (
        shards.worker_count(_cfg(), _targets(5000, depth=1), "x.db") == 0
    )  # --depth needs one queue
    assert shards.worker_count(_cfg(), _targets(5000), ":memory:") == 0
    assert shards.worker_count(_cfg(processes=1), _targets(5000), "x.db") == 0
    assert (
        shards.worker_count(_cfg(processes=3), _targets(5), "x.db") == 3
    )  # asked for: no size floor
    assert (
        shards.worker_count(_cfg(processes=3), _targets(2), "x.db") == 2
    )  # never more than records
    monkeypatch.setattr(shards, "_usable_cpus", lambda: 1)
    assert shards.worker_count(_cfg(), _targets(5000), "x.db") == 0
    monkeypatch.setattr(shards.sys, "platform", "darwin")  # fork() is only trusted on Linux
    assert shards.worker_count(_cfg(processes=2), _targets(5000), "x.db") == 0


def test_workers_share_the_connection_limits_instead_of_multiplying_them():
    shared = shards._share(_cfg(concurrency=64, per_host=16), 3)
    assert (shared.crawl.concurrency, shared.crawl.per_host) == (21, 5)
    assert 3 * shared.crawl.concurrency <= 64 and 3 * shared.crawl.per_host <= 16
    tiny = shards._share(_cfg(concurrency=2, per_host=1), 4)
    assert (tiny.crawl.concurrency, tiny.crawl.per_host) == (1, 1)  # at least one each


@pytest.mark.parametrize("processes", [1, 2])
async def test_store_failure_mid_run_stops_everything_and_exits_4(tmp_path, monkeypatch, processes):
    import multiprocessing

    real_write = Store.write_rows
    calls = {"records": 0, "after_failure": 0, "reported": 0}

    def failing_write(self, run_id, writes, **kwargs):
        if calls["records"] >= 3:
            calls["after_failure"] += 1
        calls["records"] += len(writes)
        if (
            calls["records"] >= 3 and not calls["after_failure"]
        ):  # the disk fills up at the third record
            raise StoreError("database or disk is full (for the test)")
        calls["reported"] = calls["records"]
        return real_write(self, run_id, writes, **kwargs)

    monkeypatch.setattr(Store, "write_rows", failing_write)
    async with MirrorServer("a") as a:
        for r in RECORDS:
            a.put_record(r.bundle())
        code, results, db = await _pull(tmp_path, "full", [a], processes=processes)
    assert (
        code == 4 and calls["records"] >= 3 and calls["after_failure"] == 0
    )  # nothing was written after the failure
    # stdout is still one JSON document, with the records written before the failing group
    # (one process writes record by record; workers send theirs in groups)
    assert len(results) == calls["reported"] and (processes == 2 or len(results) == 2)
    assert multiprocessing.active_children() == []  # no worker left behind
    store = Store.open(db)
    try:
        assert store.verify_journal() == []
        assert all(
            store.record(r.pith_number) is None for r in RECORDS
        )  # the open batch rolled back whole
    finally:
        store.close()


def test_worker_pipes_hold_a_whole_batch_of_records():
    import fcntl
    import multiprocessing

    receive, send = multiprocessing.get_context("fork").Pipe(duplex=False)
    try:
        shards._widen(send)
        assert fcntl.fcntl(send.fileno(), fcntl.F_GETPIPE_SZ) >= shards.PIPE_BYTES
    finally:
        receive.close()
        send.close()


@pytest.mark.parametrize("processes", [1, 2])
async def test_a_record_whose_write_hits_a_bug_costs_only_that_record(
    tmp_path, monkeypatch, processes
):
    """Workers' records are written a message at a time; a bug in one record's write (here its
    alerts) takes that group back, and the writer then finds the record: it alone is reported
    as an internal error, as in one process, and every other record is stored."""
    from pithsync.run import alerting

    victim = RECORDS[2]
    real_record_alerts = alerting.record_alerts

    def record_alerts(cfg, store, run_id, result):
        if result.pith_number == victim.pith_number:
            raise RuntimeError("alert bug")
        real_record_alerts(cfg, store, run_id, result)

    monkeypatch.setattr(alerting, "record_alerts", record_alerts)
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        await _mirrors(a, b)
        code, results, db = await _pull(tmp_path, "bug", [a, b], processes=processes)
    assert code == 1 and set(results) == {r.pith_number for r in RECORDS}
    assert (
        results[victim.pith_number]["verdict"] == "unverifiable"
        and "RuntimeError: alert bug" in results[victim.pith_number]["error"]
    )
    assert all(
        r["verdict"] == ("diverged" if i in BAD else "in_sync")
        for i, r in enumerate(results[rec.pith_number] for rec in RECORDS)
        if RECORDS[i] is not victim
    )
    store = Store.open(db)
    try:
        assert store.record(victim.pith_number) is None
        assert all(
            store.record(r.pith_number)["event_count"] == 3 for r in RECORDS if r is not victim
        )
        assert store.verify_journal() == []
    finally:
        store.close()
