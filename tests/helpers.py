"""Shared helpers and constants for the protocol-core tests (imported by test modules)."""

from __future__ import annotations

import base64
import copy
from pathlib import Path

import pithsync
from pithsync.core.canonical import canon_sha256, without
from pithsync.core.plan import record_columns
from pithsync.core.verify import EVENT_HASH_EXCLUDES
from pithsync.testing import forge

SEED_DIR = Path(pithsync.__file__).parent / "data" / "seeds"

# PROTOCOL.md, "The seeds".
EXPECTED_PITH = {
    "000_919069ef98e1b946.txt": "pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ22",
    "001_48f7170eadf0f997.txt": "pith:2026:D43WT376NFJ6FYAJUONUGVGFFS",
    "002_c29682bb9f15fda1.txt": "pith:2026:CNPMIFD42NONUMCBYNP4XLPY53",
    "003_6e91d627b8b42126.txt": "pith:2026:7EWU5DCQS5YPYOCE7L36SQEXQI",
    "004_e70a4c243637bb3a.txt": "pith:2026:MVBWYJXHQT5HUHVFAKRI63NKTK",
}
STATE_SEED = "001_48f7170eadf0f997.txt"
BUNDLE_SEEDS = tuple(n for n in EXPECTED_PITH if n != STATE_SEED)
SEED_NAMES = tuple(EXPECTED_PITH)

# A key that is never pinned anywhere (distinct key_id from every pinned key).
UNPINNED_KEY = forge.ForgeKey.from_seed("unpinned-2026", "never pinned by anyone")
# A second, pinnable signer for supersedes / multi-key tests.
OTHER_KEY = forge.ForgeKey.from_seed("other-signer-2026", "a second pinned signer")


def codes(report) -> list[str]:
    return [r.code for r in report.reasons]


def flip_b64(signature_b64: str, byte: int = 0) -> str:
    """The same signature with one bit flipped (still valid base64 of 64 bytes)."""
    raw = bytearray(base64.b64decode(signature_b64))
    raw[byte] ^= 0x01
    return base64.b64encode(bytes(raw)).decode("ascii")


def rehash_state(state: dict) -> dict:
    state["state_sha256"] = canon_sha256(without(state, "state_sha256"))
    return state


def rehash_event(event: dict) -> dict:
    """Recompute content_sha256 and event_id, leaving the (now stale) signature alone."""
    digest = canon_sha256(without(event, *EVENT_HASH_EXCLUDES))
    event["content_sha256"] = digest
    event["event_id"] = "sha256:" + digest
    return event


def other_suffix(suffix: str) -> str:
    """A different, syntactically valid 26-char suffix."""
    first = "A" if suffix[0] != "A" else "B"
    return first + suffix[1:]


def forged(i: int = 7, n_events: int = 3) -> forge.ForgedRecord:
    """A fresh forged record: record_created + (n_events - 1) chained graph snapshots."""
    fr = forge.forge_record(i, n_events)
    return forge.ForgedRecord(fr.record, copy.deepcopy(fr.events))


# What schema 8 kept that schema 9 does not: the journal's prev_sha256, and these columns.
SCHEMA_8_JOURNAL = """CREATE TABLE "journal" ("seq" INTEGER PRIMARY KEY, "run_id" TEXT NOT NULL,
 "at" TEXT NOT NULL, "kind" TEXT NOT NULL, "pith_number" TEXT, "mirror" TEXT, "status" TEXT,
 "detail" TEXT, "prev_sha256" TEXT NOT NULL, "entry_sha256" TEXT NOT NULL)"""
SCHEMA_8_COLUMNS = (
    ("event_sources", "first_seen"),
    ("event_sources", "last_seen"),
    ("validators", "updated_at"),
    ("verified_copies", "first_seen"),
)

SCHEMA_8_HEX = (  # hashes schema 8 kept as hex
    ("validators", ("document_sha256",)),
    ("mirror_status", ("bundle_sha256", "state_sha256")),
    ("verified_copies", ("bundle_sha256", "state_sha256", "trust_id")),
)


def store_as_schema8(conn, at: str = "2026-01-01T00:00:00.000000Z") -> None:
    """Rewrite a store as schema 8 and earlier kept it: the journal with each entry's
    prev_sha256 (the entry before it's hash) and its hashes in hex, the columns schema 9
    dropped, set to `at`, and the hashes it packed as hex.  The caller sets the version."""
    rows = conn.execute(
        "select seq, run_id, at, kind, pith_number, mirror, status, detail, entry_sha256"
        " from journal order by seq"
    ).fetchall()
    conn.execute("drop table journal")
    conn.execute(SCHEMA_8_JOURNAL)
    prev = "0" * 64
    for *fields, sha in rows:
        sha = sha.hex() if isinstance(sha, bytes) else sha
        conn.execute("insert into journal values (?,?,?,?,?,?,?,?,?,?)", [*fields, prev, sha])
        prev = sha
    for table, column in SCHEMA_8_COLUMNS:
        conn.execute(f"alter table {table} add column {column} text")
        conn.execute(f"update {table} set {column} = ?", [at])
    conn.create_function("hex_of", 1, lambda v: v.hex() if isinstance(v, bytes) else v)
    for table, columns in SCHEMA_8_HEX:
        conn.execute(f"update {table} set " + ", ".join(f"{c} = hex_of({c})" for c in columns))


def store_bodies_as_schema3(conn) -> None:
    """Rewrite a store as schema 3 and earlier kept it: documents and evidence bodies as the raw
    bytes, events and states as text (what the schema 5 migration compresses), and every table
    with a rowid, beside schema 8's journal and columns (store_as_schema8).  The rest has not
    changed since; the caller sets the schema version."""
    from pithsync.store import bodies

    store_as_schema8(conn)
    conn.create_function("raw", 1, lambda b: None if b is None else bodies.expand(b))
    conn.create_function("text", 1, lambda b: None if b is None else bodies.expand_text(b))
    for table, sql in conn.execute(
        "select name, sql from sqlite_master where type = 'table' and sql like '%WITHOUT ROWID'"
    ).fetchall():
        indexes = [
            r[0]
            for r in conn.execute(
                "select sql from sqlite_master where type = 'index' and tbl_name = ?"
                " and sql is not null",
                [table],
            )
        ]
        conn.execute(f'alter table "{table}" rename to "{table}_new"')
        conn.execute(sql.replace(" WITHOUT ROWID", "").replace('"body" BLOB', '"body" TEXT'))
        conn.execute(f'insert into "{table}" select * from "{table}_new"')
        conn.execute(f'drop table "{table}_new"')
        for index in indexes:
            conn.execute(index)
    conn.execute("update documents set body = raw(body)")
    conn.execute("update evidence set body = raw(body)")
    conn.execute("update events set body = text(body)")
    conn.execute("update records set state = text(state)")
    # Schema 3's records kept the canonical record and aliases beside the state, and its aliases
    # an index on the value.
    derived = ("canonical_record", "canonical_sha256", "source_aliases")
    for i, column in enumerate(derived):
        conn.create_function(f"derive_{i}", 1, lambda t, i=i: t and record_columns(t)[i])
        conn.execute(f"alter table records add column {column} text")
        conn.execute(f"update records set {column} = derive_{i}(state)")
    conn.execute("drop index aliases_lower_value")
    conn.execute("create index idx_aliases_alias_value on aliases (alias_value)")


def log_as_schema8(conn, run_of=lambda index: "schema-8") -> None:
    """Rewrite a store's observation log as schema 8 kept it: `log_statements`, a row a leaf
    with its record, mirror, run (`run_of(leaf index)`) and statement compressed alone (zstd
    level 1, the statements' dictionary, checksum), indexed on (pith_number, mirror).  The
    caller sets the schema version."""
    import zstandard

    from pithsync.store import bodies

    alone = zstandard.ZstdCompressor(
        level=1,
        dict_data=bodies.dictionary(bodies.STATEMENTS),
        write_checksum=True,
        write_content_size=True,
        write_dict_id=True,
    )
    names = dict(conn.execute("select id, mirror from log_mirrors"))
    leaves = []
    for first, pith, mirrors, blob in conn.execute("select * from log_checks order by 1"):
        ids = [int.from_bytes(mirrors[i : i + 2], "big") for i in range(0, len(mirrors), 2)]
        for i, data in enumerate(bodies.expand_statements(blob, len(ids))):
            index = first + i
            leaves.append((index, pith, names[ids[i]], run_of(index), alone.compress(data)))
    conn.execute("drop table log_checks")
    conn.execute("drop table log_mirrors")
    conn.execute(
        "create table log_statements (leaf_index integer primary key,"
        " pith_number text not null, mirror text not null, run_id text not null,"
        " statement blob not null)"
    )
    conn.execute("create index log_statements_record on log_statements (pith_number, mirror)")
    conn.executemany("insert into log_statements values (?, ?, ?, ?, ?)", leaves)
