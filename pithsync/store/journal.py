"""The journal: append-only entries, each hash-chained to the one before, with the chain's head
kept in `meta` so that a removed tail is detected too."""

from __future__ import annotations

import json
from typing import NamedTuple

import sqlite_utils

from pithsync.core.canonical import canon, sha256hex

GENESIS = "0" * 64
_HASHED = ("seq", "run_id", "at", "kind", "pith_number", "mirror", "status", "detail")
_HASHED += ("prev_sha256",)
_COLUMNS = (*_HASHED, "entry_sha256")
_INSERT = f"insert into journal ({','.join(_COLUMNS)}) values ({','.join('?' * len(_COLUMNS))})"
# What json.dumps(detail, sort_keys=True) writes, without building an encoder on every call.
_DETAIL_JSON = json.JSONEncoder(sort_keys=True)

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
    """The hash of a journal row (any mapping with the journal's columns)."""
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
    seq, prev = head
    rows = []
    for kind, pith_number, mirror, status, detail in entries:
        seq += 1
        detail_json = _DETAIL_JSON.encode(detail or {})
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
        entry_sha256 = _entry_sha256(fields)
        rows.append((*fields.values(), entry_sha256))
        prev = entry_sha256
    new_head = Head(seq, prev)
    db.conn.executemany(_INSERT, rows)
    db.conn.execute(
        "insert into meta (key, value) values ('journal_head', ?)"
        " on conflict(key) do update set value = excluded.value",
        [str(new_head)],
    )
    return new_head


def entries(db: sqlite_utils.Database, since: str | None = None) -> list[dict]:
    """Every journal entry in order, or those at or after `since`."""
    if since:
        return list(db.query("select * from journal where at >= ? order by seq", [since]))
    return list(db.query("select * from journal order by seq"))


def verify(db: sqlite_utils.Database) -> list[str]:
    """Problems found in the journal's hash chain (empty when intact)."""
    problems: list[str] = []
    prev, expected_seq = GENESIS, 1
    for row in db.query("select * from journal order by seq"):
        seq = row["seq"]
        if seq != expected_seq:
            problems.append(f"entry {expected_seq} is missing (next is {seq})")
        if row["prev_sha256"] != prev:
            problems.append(f"entry {seq}: prev_sha256 does not match entry {seq - 1}")
        if journal_entry_sha256(row) != row["entry_sha256"]:
            problems.append(f"entry {seq}: content does not match its entry_sha256 (edited)")
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
