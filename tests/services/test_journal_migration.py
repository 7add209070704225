"""The schema 9 migration (issue 16) converts a schema 8 store exactly: its journal, with the
`mirror_outcome` entries schema 8 wrote, prints what it printed and verifies, a tampered entry
is still reported, `serve` and `export` answer the stored bytes, and the chain goes on across
the migration with one `record_outcome` per record check."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import uuid

import aiohttp
import sqlite_utils
from helpers import SCHEMA_8_COLUMNS, SCHEMA_8_HEX, store_as_schema8
from synctools import json_lines, make_config, pull, run_cli, serve_bad_copy, serving, write_config

from pithsync.publishing.server import build_app
from pithsync.store import SCHEMA_VERSION, Store, journal
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer, bundle_path


def _schema_8_journal(db_path: str) -> list[dict]:
    """What schema 8's `journal --json` printed: every row, its detail parsed."""
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("select * from journal order by seq").fetchall()
    return [{**dict(r), "detail": json.loads(r["detail"] or "{}")} for r in rows]


def _hashes_read(store: Store, numbers: list[str], trust_id: str) -> dict:
    """Every hash a reader gets from the tables whose hashes schema 9 packs."""
    urls = [v for (v,) in store.db.execute("select url from validators")]
    return {
        "validators": store.validators_for(urls),
        "mirror_status": {p: store.mirror_statuses(p) for p in numbers},
        "verified_pairs": store.verified_pairs(numbers, trust_id),
    }


async def test_the_schema_9_migration_keeps_the_journal_and_what_is_served(tmp_path):
    record, other = forge.forge_record(41, 3), forge.forge_record(42, 2)
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        for mirror in (a, b):
            mirror.put_record(other.bundle())
        a.put_record(record.bundle())
        serve_bad_copy(b, record, "tampered")
        cfg = make_config(tmp_path / "store", [a.spec(), b.spec()])
        conf = write_config(tmp_path / "pithsync.toml", [a.spec(), b.spec()])
        await pull(cfg, record.pith_number, other.pith_number)
        numbers = [record.pith_number, other.pith_number]
        with contextlib.closing(Store.open_reader(cfg.db_path)) as store:
            kept = _hashes_read(store, numbers, cfg.trust.trust_id)
        assert all(kept["validators"].values()) and all(kept["verified_pairs"].values())
        # The store as schema 8 kept it, with a check journaled as schema 8 journaled one.
        with contextlib.closing(sqlite3.connect(cfg.db_path)) as conn, conn:
            store_as_schema8(conn)
            conn.execute("update meta set value = '8' where key = 'schema_version'")
        old_check = [
            ("mirror_outcome", record.pith_number, a.base_url, "ok", {"reasons": []}),
            ("mirror_outcome", record.pith_number, b.base_url, "tampered", {"reasons": ["x"]}),
            ("record_outcome", record.pith_number, None, "diverged", {"new_events": 0}),
        ]
        db = sqlite_utils.Database(cfg.db_path)
        with db.conn:
            journal.append_schema_8(db, uuid.uuid4().hex, old_check, "2026-02-01T00:00:00Z")
        db.close()
        printed = _schema_8_journal(cfg.db_path)
        tampered = str(tmp_path / "tampered.db")
        shutil.copy(cfg.db_path, tampered)
        with contextlib.closing(sqlite3.connect(tampered)) as conn, conn:
            edited = printed[-2]["seq"]  # b's mirror_outcome
            conn.execute("update journal set detail = '{\"reasons\": []}' where seq = ?", [edited])
            conn.execute("update journal set entry_sha256 = 'not a sha256' where seq = 1")

        # Read by a new pithsync: migrated, and printed as schema 8 printed it.
        code, out = await run_cli("--db", cfg.db_path, "journal", "--json")
        assert code == 0
        assert json_lines(out) == printed
        assert [list(e) for e in json_lines(out)] == [list(e) for e in printed]  # key order
        code, out = await run_cli("--db", cfg.db_path, "journal", "verify")
        assert code == 0 and f"{len(printed)} entries, hash chain intact" in out
        with contextlib.closing(sqlite3.connect(cfg.db_path)) as conn:
            version = conn.execute("select value from meta where key = 'schema_version'")
            assert version.fetchone() == (str(SCHEMA_VERSION),)
            hashes = conn.execute("select distinct typeof(entry_sha256) from journal").fetchall()
            assert hashes == [("blob",)]
            for table, column in (("journal", "prev_sha256"), *SCHEMA_8_COLUMNS):
                assert column not in {r[1] for r in conn.execute(f"pragma table_info({table})")}
            for table, columns in SCHEMA_8_HEX:  # kept as 32 bytes, read back as the same hex
                for column in columns:
                    types = conn.execute(f"select distinct typeof({column}) from {table}")
                    assert set(types) <= {("blob",), ("null",)}, (table, column)
        with contextlib.closing(Store.open_reader(cfg.db_path)) as store:
            assert _hashes_read(store, numbers, cfg.trust.trust_id) == kept

        # The tampered copy: both edits still reported, by seq.
        code, out = await run_cli("--db", tampered, "journal", "verify", "--json")
        report = json.loads(out)
        assert code == 1 and not report["ok"]
        assert any(p.startswith("entry 1:") for p in report["problems"]), report
        assert any(p.startswith(f"entry {edited}:") for p in report["problems"]), report

        # What verified is served and exported byte for byte.
        bundles = {r.suffix: forge.dumps(r.bundle()) for r in (record, other)}
        async with serving(build_app(cfg, refresh_s=0)) as base, aiohttp.ClientSession() as http:
            for suffix, body in bundles.items():
                async with http.get(base + bundle_path(suffix)) as resp:
                    assert resp.status == 200 and await resp.read() == body, suffix
        www = tmp_path / "www"
        code, out = await run_cli(
            "--config", conf, "--db", cfg.db_path, "export", www, "--base-url", "https://m.test"
        )
        assert code == 0, out
        for suffix, body in bundles.items():
            assert (www / "pith" / suffix / "bundle.json").read_bytes() == body

        # The chain goes on from the migrated entries: one record_outcome per record check.
        code, _ = await run_cli("--config", conf, "--db", cfg.db_path, "pull", record.pith_number)
        assert code == 1  # b still serves a tampered copy
    code, out = await run_cli("--db", cfg.db_path, "journal", "--json")
    entries = json_lines(out)
    assert entries[: len(printed)] == printed
    assert [e["kind"] for e in entries[len(printed) :]] == [
        "run_started",
        "record_outcome",
        "run_finished",
    ]
    assert entries[len(printed)]["prev_sha256"] == printed[-1]["entry_sha256"]
    mirrors = entries[len(printed) + 1]["detail"]["mirrors"]
    assert {m["mirror"]: m["status"] for m in mirrors} == {a.base_url: "ok", b.base_url: "tampered"}
    code, out = await run_cli("--db", cfg.db_path, "journal", "verify")
    assert code == 0 and "intact" in out
