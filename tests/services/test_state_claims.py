"""The verified facts kept about stored state documents (store/claims.py): what each claims and
its size, written when its bytes verify and by the schema 9 migration for older stores; and a
304's stored bytes, read only when the record leaves the quick check."""

from __future__ import annotations

import contextlib
import json
import sqlite3

import pytest
from synctools import make_config, pull, serve_bad_copy

from pithsync.core.compare import Fetched, MirrorCopy, Retrieval
from pithsync.core.plan import NOT_MODIFIED, FetchedCopy, StateClaim
from pithsync.core.results import Target
from pithsync.run.fetching import RecordFetcher
from pithsync.run.readahead import ReadAhead
from pithsync.store import SCHEMA_VERSION, Store, StoreError, bodies
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer


def claims_from_bytes(db_path: str) -> dict[str, StateClaim]:
    """What each stored state document's own bytes claim, read and parsed the slow way."""
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute("select sha256, body from documents where kind = 'state'").fetchall()
    out = {}
    for sha, blob in rows:
        body = bodies.expand(blob, sha)
        out[sha] = StateClaim(json.loads(body)["state_sha256"], len(body))
    return out


def kept_claims(db_path: str) -> dict[str, StateClaim]:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute("select sha256, state_sha256, size from state_claims").fetchall()
    return {sha: StateClaim(claim, size) for sha, claim, size in rows}


async def test_every_verified_state_has_its_claim_kept_and_the_migration_keeps_the_same(tmp_path):
    records = [forge.forge_record(i, n_events=2 + i % 2) for i in range(960, 964)]
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        for r in records:
            a.put_record(r.bundle())
        serve_bad_copy(b, records[0], "lying_state_json")  # kept as evidence, never claimed
        for r in records[1:]:
            b.put_record(r.bundle(upto=1))  # an older state: verified, claims another merge
        cfg = make_config(tmp_path, [a.spec(), b.spec()])
        await pull(cfg, *(r.pith_number for r in records))
    expected = claims_from_bytes(cfg.db_path)
    assert len(expected) == 2 * len(records) - 1  # a's states and b's older ones; no lie
    assert kept_claims(cfg.db_path) == expected
    with contextlib.closing(sqlite3.connect(cfg.db_path)) as conn:
        kept_as_evidence = {sha for (sha,) in conn.execute("select body_sha256 from evidence")}
    assert kept_as_evidence and not kept_as_evidence & kept_claims(cfg.db_path).keys()
    with contextlib.closing(sqlite3.connect(cfg.db_path)) as conn, conn:  # a store of schema 8
        conn.execute("drop table state_claims")
        conn.execute("update meta set value = '8' where key = 'schema_version'")
    with contextlib.closing(Store.open(cfg.db_path)) as store:
        assert store.schema_version() == SCHEMA_VERSION
        # What the quick check of a record reads: the claim of each stored state its validators
        # name, without the bytes.
        read_ahead = ReadAhead(store, list(cfg.mirrors), cfg.trust.trust_id)
        known = read_ahead.known_for(Target(records[1].suffix, records[1].pith_number))
    assert kept_claims(cfg.db_path) == expected
    assert known.record.state_claims == {
        sha: claim for sha, claim in expected.items() if sha in known.stored
    }
    assert len(known.record.state_claims) == 2  # a's state and b's older one


async def test_the_bytes_a_304_stands_for_are_read_only_when_asked_and_must_be_there(tmp_path):
    record = forge.forge_record(965)
    async with MirrorServer("a") as a:
        a.put_record(record.bundle())
        cfg = make_config(tmp_path, [a.spec()])
        await pull(cfg, record.pith_number)
    with contextlib.closing(Store.open(cfg.db_path)) as store:
        (sha,) = store.db.execute("select sha256 from documents where kind = 'state'").fetchone()
        url = a.base_url + "/state.json"

        def copy(digest: str) -> FetchedCopy:
            doc = Fetched(Retrieval.FOUND, url, None, code=NOT_MODIFIED, stored_sha256=digest)
            return FetchedCopy(MirrorCopy(a.base_url, doc, doc), [])

        fetcher = RecordFetcher(None, store)
        (read,) = fetcher.with_bodies([copy(sha)])
        assert read.copy.state.body == store.document_body(sha)
        assert read.copy.state.sha256 == sha and read.copy.bundle.body == read.copy.state.body
        with pytest.raises(StoreError, match="lost the stored document"):
            fetcher.with_bodies([copy("ab" * 32)])
