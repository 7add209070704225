"""The journal: append-only entries, each hash-chained to the one before, with the chain's head
kept in `meta` so that a removed tail is detected too.

An entry's hash covers the hash of the entry before it (`prev_sha256`, GENESIS for the first);
that value is the previous row's entry_sha256, so it is derived where the journal is read, not
stored.  entry_sha256 is stored as its 32 bytes (store.hashes: a store migrated from schema 8
keeps, as text, any value that was not a sha256 in hex, so that verify still reports it)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import NamedTuple

import sqlite_utils

from pithsync.core.canonical import canon, sha256hex
from pithsync.store.hashes import packed, unpacked

GENESIS = "0" * 64
_HASHED = ("seq", "run_id", "at", "kind", "pith_number", "mirror", "status", "detail")
_HASHED += ("prev_sha256",)
_STORED = (*_HASHED[:-1], "entry_sha256")
_INSERT = f"insert into journal ({','.join(_STORED)}) values ({','.join('?' * len(_STORED))})"
_SELECT = f"select {','.join(_STORED)} from journal"
# The detail's JSON: sorted keys, no spaces, built once rather than on every call.
_DETAIL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))

# One entry to append: (kind, pith_number, mirror, status, detail).
Entry = tuple[str, "str | None", "str | None", "str | None", "dict | None"]


class Head(NamedTuple):
    """The last entry of the chain: its seq and entry_sha256 (seq 0 and GENESIS when empty)."""

    seq: int
    entry_sha256: str

    @classmethod
    def parse(cls, text: str) -> Head:
        """The head as `meta` keeps it, "seq:entry_sha256"."""
        seq, _, sha = text.partition(":")
        return cls(int(seq), sha)

    def __str__(self) -> str:
        return f"{self.seq}:{self.entry_sha256}"


def journal_entry_sha256(entry: dict) -> str:
    """The hash of a journal entry (any mapping with the journal's fields, prev_sha256 too)."""
    return _entry_sha256({k: entry.get(k) for k in _HASHED})


def _entry_sha256(fields: dict) -> str:
    """The hash of a journal entry given exactly its hashed fields."""
    return sha256hex(canon(fields))


def read_head(db: sqlite_utils.Database) -> Head:
    """The chain's head as `meta` records it."""
    row = db.conn.execute("select value from meta where key = 'journal_head'").fetchone()
    return Head(0, GENESIS) if row is None else Head.parse(row[0])


def append(
    db: sqlite_utils.Database,
    run_id: str,
    entries: list[Entry],
    at: str,
    head: Head | None = None,
) -> Head:
    """Append `entries`, each chained to the one before, and move the head in `meta`.

    Must run inside a transaction: the head moves with the entries or not at all.

    Args:
        db: the store's writing connection.
        run_id: the run the entries belong to.
        entries: (kind, pith_number, mirror, status, detail) each.
        at: the entries' time.
        head: the chain's head when the caller knows it (an open batch holds the write lock,
            so no other connection can move it); read from `meta` when None.

    Returns:
        The new head.
    """
    if head is None:
        head = read_head(db)
    if not entries:
        return head
    chained = _chain(run_id, entries, at, head)
    rows = [(*[f[k] for k in _STORED[:-1]], packed(f["entry_sha256"])) for f in chained]
    new_head = Head(chained[-1]["seq"], chained[-1]["entry_sha256"])
    db.conn.executemany(_INSERT, rows)
    db.conn.execute(
        "insert into meta (key, value) values ('journal_head', ?)"
        " on conflict(key) do update set value = excluded.value",
        [str(new_head)],
    )
    return new_head


def append_schema_8(db: sqlite_utils.Database, run_id: str, entries: list[Entry], at: str):
    """append, to the journal as schema 8 and earlier kept it (prev_sha256 stored, hashes in
    hex, the detail's JSON with spaces): what the schema 3 migration writes."""
    if not entries:
        return
    chained = _chain(run_id, entries, at, read_head(db), spaced_detail=True)
    db["journal"].insert_all(chained)
    head = Head(chained[-1]["seq"], chained[-1]["entry_sha256"])
    db["meta"].upsert({"key": "journal_head", "value": str(head)}, pk="key")


def _chain(
    run_id: str, entries: list[Entry], at: str, head: Head, *, spaced_detail: bool = False
) -> list[dict]:
    """The entries' fields, numbered on from `head`, each with the prev_sha256 its hash covers
    and its entry_sha256; the detail's JSON as this schema writes it, or with `spaced_detail`
    as schema 8 and earlier did (json.dumps' separators)."""
    seq, prev = head
    chained = []
    for kind, pith_number, mirror, status, detail in entries:
        seq += 1
        detail_json = (
            json.dumps(detail or {}, sort_keys=True)
            if spaced_detail
            else _DETAIL_JSON.encode(detail or {})
        )
        fields = {
            "seq": seq,
            "run_id": run_id,
            "at": at,
            "kind": kind,
            "pith_number": pith_number,
            "mirror": mirror,
            "status": status,
            "detail": detail_json,
            "prev_sha256": prev,
        }
        prev = fields["entry_sha256"] = _entry_sha256(fields)
        chained.append(fields)
    return chained


def upgrade_schema_8(conn: sqlite3.Connection) -> None:
    """Rebuild a journal as schema 8 and earlier kept it into this module's (the schema 9
    migration): prev_sha256 dropped, entry_sha256 as bytes (hashes.packed), every row kept."""
    if "prev_sha256" not in {row[1] for row in conn.execute("pragma table_info(journal)")}:
        return  # rebuilt already (a store whose version was set back by hand)
    conn.create_function("pithsync_packed", 1, packed, deterministic=True)
    conn.execute(
        "create table journal_v9 (seq integer primary key, run_id text not null,"
        " at text not null, kind text not null, pith_number text, mirror text,"
        " status text, detail text, entry_sha256 blob not null)"
    )
    conn.execute(
        "insert into journal_v9 select seq, run_id, at, kind, pith_number, mirror, status,"
        " detail, pithsync_packed(entry_sha256) from journal order by seq"
    )
    conn.execute("drop table journal")
    conn.execute("alter table journal_v9 rename to journal")


def entries(db: sqlite_utils.Database, since: str | None = None) -> list[dict]:
    """Every journal entry in order, or those at or after `since`, each with the prev_sha256
    its hash covers (the entry_sha256 of the entry stored before it, GENESIS for the first).
    """
    if since:
        return list(
            _chained(db.conn, db.conn.execute(f"{_SELECT} where at >= ? order by seq", [since]))
        )
    return list(_chained(db.conn, db.conn.execute(f"{_SELECT} order by seq")))


def _chained(conn: sqlite3.Connection, rows) -> Iterator[dict]:
    """Journal rows (in _STORED's order, by seq) as entries, each with its prev_sha256."""
    next_seq, prev = None, GENESIS  # the seq after the row read last, and that row's hash
    for row in rows:
        if row[0] != next_seq:  # the row stored before it was not read here (--since, a gap)
            before = conn.execute(
                "select entry_sha256 from journal where seq < ? order by seq desc limit 1",
                [row[0]],
            ).fetchone()
            prev = GENESIS if before is None else unpacked(before[0])
        entry = dict(zip(_STORED[:-1], row, strict=False))
        entry["prev_sha256"] = prev
        entry["entry_sha256"] = prev = unpacked(row[-1])
        next_seq = row[0] + 1
        yield entry


def verify(db: sqlite_utils.Database) -> list[str]:
    """Problems found in the journal's hash chain (empty when intact)."""
    problems: list[str] = []
    prev, expected_seq = GENESIS, 1
    for row in _chained(db.conn, db.conn.execute(f"{_SELECT} order by seq")):
        seq = row["seq"]
        if seq != expected_seq:
            problems.append(f"entry {expected_seq} is missing (next is {seq})")
        if journal_entry_sha256(row) != row["entry_sha256"]:
            problems.append(
                f"entry {seq}: content does not match its entry_sha256 (edited, or the entry"
                " before it was)"
            )
        prev, expected_seq = row["entry_sha256"], seq + 1
    row = db.execute("select value from meta where key = 'journal_head'").fetchone()
    last = Head(expected_seq - 1, prev)
    if row is None and expected_seq > 1:
        problems.append("journal head is missing from meta")
    elif row is not None and row[0] != str(last):
        problems.append(
            f"journal ends at {last.seq} but its head says {row[0].partition(':')[0]}"
            " (entries removed from the end?)"
        )
    return problems
