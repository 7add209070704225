"""The compressed store gives back every byte it was given: documents a real pull stored (the
seeds, and forged bundles that are large, unicode-heavy, incompressible or tiny) come back
byte-identical through `serve`, `export` and the evidence rows, the journal still verifies, a
corrupted blob is a StoreError and never other bytes, and the schema 5 migration keeps every
body of an older store exact."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import sqlite3

import aiohttp
import pytest
from helpers import BUNDLE_SEEDS, SEED_DIR, STATE_SEED, store_bodies_as_schema3
from synctools import make_config, pull, run_cli, serving, write_config

from pithsync.core import strictjson
from pithsync.core.canonical import sha256hex
from pithsync.publishing.server import build_app
from pithsync.store import SCHEMA_VERSION, Store, StoreError, bodies
from pithsync.store.reads import ALIAS_QUERY
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer, bundle_path


def odd_bundles() -> list[dict]:
    """Forged, signed bundles whose bodies test the codec: unicode, incompressible, large, tiny."""
    noise = base64.b64encode(hashlib.shake_256(b"incompressible").digest(48_000)).decode()
    payloads = [
        {"note": "Übersicht — 量子 ✓ émoji 🚀 " * 400},  # unicode-heavy
        {"note": noise},  # incompressible
        {"note": "large " * 60_000},  # about 360 KB
        {},  # as small as an event gets
    ]
    out = []
    for i, payload in enumerate(payloads):
        record = forge.make_record(9000 + i)
        created = forge.make_event(record, "record_created")
        note = forge.make_event(record, "note", payload, target=f"note:{i}")
        out.append(forge.make_bundle(record, [created, note]))
    return out


def seeds() -> dict[str, bytes]:
    return {name: (SEED_DIR / name).read_bytes() for name in (*BUNDLE_SEEDS, STATE_SEED)}


def pith_of(body: bytes) -> str:
    return strictjson.loads(body)["pith_number"]


async def pulled_store(tmp_path, a: MirrorServer, b: MirrorServer) -> tuple:
    """A store that pulled the seeds and odd bundles from `a`, and a tampered copy from `b`."""
    served: dict[str, bytes] = {}  # sha256 -> the exact bytes `a` served
    for body in seeds().values():
        doc = strictjson.loads(body)
        suffix = doc["pith_number"].rpartition(":")[2]
        if "bundle_type" in doc:
            a.put_bundle(suffix, body)
        else:
            a.put_state(suffix, body)
        served[sha256hex(body)] = body
    for bundle in odd_bundles():
        a.put_record(bundle)
        for body in (forge.dumps(bundle), forge.dumps(bundle["state"])):
            served[sha256hex(body)] = body
    good = forge.forge_record(31, 3).bundle()
    a.put_record(good)
    served[sha256hex(forge.dumps(good))] = forge.dumps(good)
    served[sha256hex(forge.dumps(good["state"]))] = forge.dumps(good["state"])
    bad = forge.dumps(forge.tampered(good))
    b.put_record(forge.tampered(good), state=good["state"])
    cfg = make_config(tmp_path / "origin", [a.spec(), b.spec()])
    numbers = sorted({pith_of(body) for body in served.values()})
    await pull(cfg, *numbers, checkpoint=True)  # as a run does: evidence cites the log
    return cfg, served, good, bad


async def test_every_body_comes_back_byte_exact_through_serve_export_and_evidence(tmp_path):
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        cfg, served, good, bad = await pulled_store(tmp_path, a, b)
    with contextlib.closing(Store.open_reader(cfg.db_path)) as store:
        # Every document stored is the served bytes, and nothing else is stored.
        stored = store.document_bodies(list(served))
        assert stored == served
        kept = {row["body"] for row in store.evidence_for(good["pith_number"]) if row["body"]}
        assert kept == {bad, forge.dumps(good["state"])}  # b's copies, exactly as it served them
        assert store.verify_journal() == []
        with sqlite3.connect(cfg.db_path) as conn:  # and the blobs really are compressed
            raw = sum(len(b) for b in served.values())
            blobs = conn.execute("select sum(length(body)) from documents").fetchone()[0]
        assert blobs < raw / 3
    bundles = {pith_of(body): body for body in served.values() if b'"bundle_type"' in body}

    async with serving(build_app(cfg, refresh_s=0)) as base, aiohttp.ClientSession() as http:
        for pith, body in bundles.items():
            async with http.get(base + bundle_path(pith.rpartition(":")[2])) as resp:
                assert resp.status == 200 and await resp.read() == body, pith

    out_dir = tmp_path / "www"
    conf = write_config(tmp_path / "origin.toml", [])
    code, out = await run_cli(
        "--config", conf, "--db", cfg.db_path, "export", out_dir, "--base-url", "https://m.test"
    )
    assert code == 0, out
    for pith, body in bundles.items():
        assert (out_dir / "pith" / pith.rpartition(":")[2] / "bundle.json").read_bytes() == body

    evidence_file = tmp_path / "evidence.json"
    code, out = await run_cli(
        "--config", conf, "--db", cfg.db_path, "evidence", good["pith_number"],
        "--out", evidence_file,
    )  # fmt: skip
    assert code == 0, out
    in_file = {base64.b64decode(s) for s in _b64_bodies(json.loads(evidence_file.read_text()))}
    assert bad in in_file
    code, out = await run_cli("--db", cfg.db_path, "journal", "verify")
    assert code == 0 and "intact" in out


def _b64_bodies(value) -> list[str]:
    """Every `body_b64` in an evidence file."""
    if isinstance(value, dict):
        found = [value["body_b64"]] if isinstance(value.get("body_b64"), str) else []
        return found + [b for v in value.values() for b in _b64_bodies(v)]
    if isinstance(value, list):
        return [b for v in value for b in _b64_bodies(v)]
    return []


@pytest.mark.parametrize("damage", ["flipped", "truncated", "other_bytes"])
async def test_a_corrupted_blob_is_a_store_error_never_other_bytes(tmp_path, damage):
    record = forge.forge_record(32, 2).bundle()
    async with MirrorServer("a") as a:
        a.put_record(record)
        cfg = make_config(tmp_path, [a.spec()])
        await pull(cfg, record["pith_number"])
    sha = sha256hex(forge.dumps(record))
    with sqlite3.connect(cfg.db_path) as conn:
        (blob,) = conn.execute("select body from documents where sha256 = ?", [sha]).fetchone()
        mid = len(blob) // 2
        edited = {
            "flipped": blob[:mid] + bytes([blob[mid] ^ 1]) + blob[mid + 1 :],
            "truncated": blob[:-5],
            "other_bytes": bodies.compress(forge.dumps(forge.tampered(record))),
        }[damage]
        conn.execute("update documents set body = ? where sha256 = ?", [edited, sha])
    with contextlib.closing(Store.open_reader(cfg.db_path)) as store:
        with pytest.raises(StoreError, match="stored body"):
            store.document_body(sha)
        with pytest.raises(StoreError, match="stored body"):
            store.best_bundle(record["pith_number"])


async def test_the_schema_5_migration_keeps_every_body_byte_exact(tmp_path):
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        cfg, served, good, bad = await pulled_store(tmp_path, a, b)
    with contextlib.closing(Store.open_reader(cfg.db_path)) as store:
        events = {p: store.stored_events(p) for p in {pith_of(x) for x in served.values()}}
        rows = {p: store.record(p) for p in events}
        aliases = {a: store.resolve(a) for p in rows for a in _alias_values(rows[p])}
        journal = store.journal()
    assert sum(1 for row in rows.values() if row["canonical_record"]) >= 7 and aliases
    with sqlite3.connect(cfg.db_path) as conn:  # back to what schema 3 wrote
        store_bodies_as_schema3(conn)
        conn.execute("update meta set value = '3' where key = 'schema_version'")
        assert conn.execute("select body from documents").fetchone()[0] in served.values()
    with contextlib.closing(Store.open(cfg.db_path)) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.document_bodies(list(served)) == served
        assert {p: store.stored_events(p) for p in events} == events
        # The record and aliases columns, dropped, are what each state gives (as a reader sees
        # them), and aliases resolve through the index on their lower case.
        assert {p: store.record(p) for p in events} == rows
        assert {a: store.resolve(a) for a in aliases} == aliases
        columns = {r[1] for r in store.db.execute("pragma table_info(records)")}
        assert not columns & {"canonical_record", "canonical_sha256", "source_aliases"}
        plan = store.db.execute("explain query plan " + ALIAS_QUERY, ["x"] * 3).fetchall()
        assert "USING INDEX aliases_lower_value" in str(plan)
        kept = {r["body"] for r in store.evidence_for(good["pith_number"]) if r["body"]}
        assert kept == {bad, forge.dumps(good["state"])}
        assert store.journal() == journal and store.verify_journal() == []
        tables = store.db.execute(
            "select name from sqlite_master where type = 'table' and sql like '%WITHOUT ROWID'"
        ).fetchall()
        assert {"documents", "events", "validators"} <= {t[0] for t in tables}


def _alias_values(row: dict) -> list[str]:
    return [a["alias_value"] for a in json.loads(row["source_aliases"] or "[]")]


async def test_the_schema_5_migration_refuses_a_record_its_state_does_not_hold(tmp_path):
    record = forge.forge_record(33, 2).bundle()
    async with MirrorServer("a") as a:
        a.put_record(record)
        cfg = make_config(tmp_path, [a.spec()])
        await pull(cfg, record["pith_number"])
    with sqlite3.connect(cfg.db_path) as conn:
        store_bodies_as_schema3(conn)
        conn.execute("update meta set value = '3' where key = 'schema_version'")
        conn.execute("update records set source_aliases = '[]'")
    with pytest.raises(StoreError, match=f"record {record['pith_number']} holds"):
        Store.open(cfg.db_path)
    with sqlite3.connect(cfg.db_path) as conn:  # and the store is as it was
        version = "select value from meta where key = 'schema_version'"
        assert conn.execute(version).fetchone() == ("3",)
        assert conn.execute("select source_aliases from records").fetchone() == ("[]",)
