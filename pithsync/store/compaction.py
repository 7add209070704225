"""The conversions that made the store smaller, for the migrations that run them (store.schema):
schema 5's (bodies compressed, text-keyed tables WITHOUT ROWID, records' derived columns
dropped) and schema 9's (hashes as their 32 bytes, columns nothing reads dropped)."""

from __future__ import annotations

import sqlite3

from pithsync.base.exits import StoreError
from pithsync.core.plan import record_columns
from pithsync.store import hashes, records

# Tables keyed by text that schema 5 rebuilds WITHOUT ROWID: the key is then the table's own
# b-tree, instead of a copy in an index beside a rowid table (bench/README.md, "The store's
# size").  records (large rows, read by rowid in tests and tools) and evidence (an integer key)
# stay as they are.
WITHOUT_ROWID_TABLES = (
    "documents",
    "events",
    "event_sources",
    "mirror_status",
    "validators",
    "verified_copies",
    "aliases",
    "record_checks",
)
# The bodies schema 5 compresses (store/bodies.py): (table, column, the SQL type they had).
# Events and states were text; a state the schema 3 migration renumbered in the same migration
# is a blob already, and is left as it is.
COMPRESSED_BODIES = (
    ("documents", "body", "blob"),
    ("events", "body", "text"),
    ("records", "state", "text"),
    ("evidence", "body", "blob"),
)


# Columns of `records` that schema 5 drops: each follows exactly from the record's merged state
# (core.plan.record_columns), which the migration checks on every row before it drops them.
DERIVED_FROM_STATE = ("canonical_record", "canonical_sha256", "source_aliases")


def drop_columns_derived_from_state(conn: sqlite3.Connection) -> None:
    """Drop `DERIVED_FROM_STATE` from `records`, once every row's state gives them exactly.

    Raises:
        StoreError: a row holds a record or aliases its state does not (nothing is dropped).
    """
    have = {row[1] for row in conn.execute("pragma table_info(records)")}
    if not set(DERIVED_FROM_STATE) <= have:
        return  # dropped already (a store whose version was set back by hand)
    rows = conn.execute(
        f"select pith_number, state, {', '.join(DERIVED_FROM_STATE)} from records"
        f" where coalesce(state, {', '.join(DERIVED_FROM_STATE)}) is not null"
    )
    for pith, state, *stored in rows:
        try:
            derived = record_columns(records.stored_text(state)) if state is not None else None
        except (ValueError, KeyError, TypeError):  # a state that is not a merged state
            derived = None
        if derived != tuple(stored):
            raise StoreError(
                f"cannot migrate the store to schema 5: record {pith} holds a canonical record"
                " or aliases that its state does not; the store is left as it was"
            )
    for column in DERIVED_FROM_STATE:
        conn.execute(f"alter table records drop column {column}")


def rebuild_without_rowid(conn: sqlite3.Connection, table: str) -> None:
    """`table` as a WITHOUT ROWID table with the same columns, rows and indexes."""
    create, indexes = None, []
    for kind, sql in conn.execute(
        "select type, sql from sqlite_master where tbl_name = ? and sql is not null", [table]
    ):
        if kind == "table":
            create = sql
        else:
            indexes.append(sql)
    if create is None or create.rstrip().upper().endswith("WITHOUT ROWID"):
        return  # not there, or rebuilt already (a store whose version was set back by hand)
    new = f"{table}_v5"
    create = create.replace(f'CREATE TABLE "{table}"', f'CREATE TABLE "{new}"', 1)
    if table == "events":  # its body was declared TEXT; it holds a blob now
        create = create.replace('"body" TEXT', '"body" BLOB', 1)
    conn.execute(f"{create} WITHOUT ROWID")
    conn.execute(f'insert into "{new}" select * from "{table}"')
    conn.execute(f'drop table "{table}"')
    conn.execute(f'alter table "{new}" rename to "{table}"')
    for sql in indexes:
        conn.execute(sql)


# What schema 9 changes in the widest tables: columns it drops (written on every check, read
# by nothing) and hashes it keeps as their 32 bytes (store/hashes.py; readers get the hex).
V9_TABLES = {  # table: (columns dropped, hashes packed)
    "event_sources": (("first_seen", "last_seen"), ()),
    "validators": (("updated_at",), ("document_sha256",)),
    "verified_copies": (("first_seen",), ("bundle_sha256", "state_sha256", "trust_id")),
    "mirror_status": ((), ("bundle_sha256", "state_sha256")),
}


def pack_hashes_and_drop_unread(conn: sqlite3.Connection) -> None:
    """Schema 9's change to V9_TABLES: the columns dropped, the hashes packed (a column dropped
    already, by a store whose version was set back by hand, is passed over)."""
    conn.create_function("pithsync_packed", 1, hashes.packed, deterministic=True)
    for table, (dropped, packed) in V9_TABLES.items():
        have = {row[1] for row in conn.execute(f"pragma table_info({table})")}
        for column in (c for c in dropped if c in have):
            conn.execute(f"alter table {table} drop column {column}")
        for column in packed:
            conn.execute(f"update {table} set {column} = pithsync_packed({column})")
