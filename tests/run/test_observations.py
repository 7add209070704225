"""Observation statements (issue #17): each run appends, for each record and each mirror it
asked, one statement of what that mirror served, in the record's transaction; then signs a
checkpoint of the log with the observer key."""

from __future__ import annotations

import hashlib

from synctools import run_cli, write_config

from pithsync.core import merkle
from pithsync.core.observation import Fetch, parse_statement
from pithsync.core.tlog import open_checkpoint
from pithsync.observer import load_or_create
from pithsync.store import Store
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer, bundle_path, state_path, well_known_path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def log_of(db: str):
    """Every statement parsed, and the latest checkpoint opened with the observer's key."""
    store = Store.open_reader(db)
    try:
        raw = store.log_statements(0, store.log_size())
        note = store.observer_checkpoint()
    finally:
        store.close()
    signer = load_or_create(db)
    checkpoint, _ = open_checkpoint(note, [signer.verifier_key], origin=signer.name)
    assert checkpoint.size == len(raw)
    assert checkpoint.root_hash == merkle.root([merkle.leaf_hash(s) for s in raw])
    return [parse_statement(s) for s in raw], signer


async def test_a_statement_per_mirror_then_a_signed_checkpoint(tmp_path):
    record = forge.forge_record(3, n_events=3)
    missing = forge.forge_record(4, n_events=2)
    bundle, stale = record.bundle(), record.bundle(upto=2)
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(bundle)
        a.put_record(missing.bundle())
        b.put_record(stale)
        conf = write_config(tmp_path, [a.spec(), b.spec()])
        db = str(tmp_path / "s.db")
        code, _ = await run_cli(
            "--config", conf, "--db", db, "pull", record.pith_number, missing.pith_number
        )
        assert code == 1
        statements, signer = log_of(db)
        assert len(statements) == 4  # two records, two mirrors each
        by = {(str(s.pith_number), s.mirror): s for s in statements}
        assert {s.observer for s in statements} == {signer.name}

        ok = by[record.pith_number, a.base_url]
        body = forge.dumps(bundle)
        assert ok.mirror_status == "ok"
        assert ok.fetched == (
            Fetch(a.base_url + bundle_path(record.suffix), 200, sha(body)),
            Fetch(a.base_url + state_path(record.suffix), 200, sha(forge.dumps(bundle["state"]))),
        )
        assert ok.events == tuple(sorted(e["event_id"] for e in bundle["events"]))
        assert ok.state_sha256 == bundle["state"]["state_sha256"]

        lagging = by[record.pith_number, b.base_url]
        assert lagging.mirror_status == "stale"
        assert lagging.events == tuple(sorted(e["event_id"] for e in stale["events"]))
        assert lagging.state_sha256 == stale["state"]["state_sha256"]

        absent = by[missing.pith_number, b.base_url]
        assert absent.mirror_status == "missing"
        assert (absent.events, absent.state_sha256) == ((), None)
        assert absent.fetched == (
            Fetch(b.base_url + bundle_path(missing.suffix), 404, None),
            Fetch(b.base_url + well_known_path(missing.suffix), 404, None),
            Fetch(b.base_url + state_path(missing.suffix), 404, None),
        )


async def test_a_resync_answered_304_states_the_stored_copies(tmp_path):
    record = forge.forge_record(5, n_events=3)
    bundle = record.bundle()
    async with MirrorServer("a") as a:
        a.put_record(bundle)
        conf = write_config(tmp_path, [a.spec()])
        db = str(tmp_path / "s.db")
        assert (await run_cli("--config", conf, "--db", db, "pull", record.pith_number))[0] == 0
        first, _ = log_of(db)
        assert (await run_cli("--config", conf, "--db", db, "sync"))[0] == 0
        assert a.count(status=304) == 2  # the quick check's path: both documents unchanged
        statements, _ = log_of(db)
    assert len(first) == 1 and len(statements) == 2
    again = statements[1]
    assert [f.status for f in again.fetched] == [304, 304]
    assert [f.sha256 for f in again.fetched] == [f.sha256 for f in first[0].fetched]
    assert (again.events, again.state_sha256) == (first[0].events, first[0].state_sha256)
    assert again.mirror_status == "ok" and again.observed_at > first[0].observed_at


async def test_nothing_appended_nothing_signed(tmp_path):
    async with MirrorServer("a") as a:
        conf = write_config(tmp_path, [a.spec()])
        db = str(tmp_path / "s.db")
        Store.open(db).close()
        assert (await run_cli("--config", conf, "--db", db, "sync"))[0] == 0  # nothing tracked
    store = Store.open_reader(db)
    try:
        assert store.log_size() == 0 and store.observer_checkpoint() is None
    finally:
        store.close()


async def test_a_bad_key_file_stops_the_run_before_it_writes(tmp_path):
    import os

    record = forge.forge_record(6, n_events=2)
    async with MirrorServer("a") as a:
        a.put_record(record.bundle())
        conf = write_config(tmp_path, [a.spec()])
        db = str(tmp_path / "s.db")
        load_or_create(db)
        os.chmod(db + ".observer-key", 0o644)
        code, _ = await run_cli("--config", conf, "--db", db, "pull", record.pith_number)
        assert code == 4 and a.count() == 0
    store = Store.open_reader(db)
    try:
        assert store.record(record.pith_number) is None
    finally:
        store.close()
