"""The store's schema, the one place it is written down, and the migrations that bring an
older store to it.  Migrations only add what new code reads, and heal what old code wrote
wrongly (with a journal entry), so a read-only command may run them."""

from __future__ import annotations

import sqlite3
import time

import sqlite_utils

from pithsync.base.clock import utcnow
from pithsync.base.exits import StoreError
from pithsync.core.numbers import suffix_of
from pithsync.core.schedule import Outcome, SchedulePolicy, ScheduleState, after_check
from pithsync.store import bodies, compaction, journal, log_leaves, records, schedule

SCHEMA_VERSION = 10
HEAL_RUN_ID = "migration-3"  # the journal's run_id for what the schema 3 migration renumbered


def _schema_v1(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["mirrors"].create(
        {"name": str, "base_url": str, "configured": int, "first_seen": str, "last_seen": str},
        pk="base_url",
    )
    db["records"].create(
        {
            "pith_number": str,
            "suffix": str,
            "tracked": int,
            "canonical_sha256": str,
            "canonical_record": str,
            "source_aliases": str,
            "state": str,  # canonical JSON of the merge of every verified event
            "state_sha256": str,
            "event_count": int,
            "first_seen": str,
            "updated_at": str,
        },
        pk="pith_number",
    )
    db["records"].create_index(["suffix"], unique=True)
    db["aliases"].create(
        {"alias_kind": str, "alias_value": str, "pith_number": str},
        pk=("alias_kind", "alias_value"),
    )
    db["aliases"].create_index(["alias_value"])
    # Exact bytes received, content-addressed; only documents that verified.
    db["documents"].create(
        {
            "sha256": str,
            "kind": str,
            "pith_number": str,
            "body": bytes,
            "size": int,
            "first_seen": str,
        },
        pk="sha256",
    )
    db["events"].create(
        {"event_id": str, "pith_number": str, "event_type": str, "body": str, "first_seen": str},
        pk="event_id",
    )
    db["events"].create_index(["pith_number"])
    # last_seen: the last run that fetched a copy containing the event from that mirror; a copy
    # answered 304 is not fetched again (its mirror_status row says when it was last confirmed).
    db["event_sources"].create(
        {"event_id": str, "mirror": str, "first_seen": str, "last_seen": str},
        pk=("event_id", "mirror"),
    )
    db["mirror_status"].create(
        {
            "pith_number": str,
            "mirror": str,
            "name": str,
            "status": str,
            "reasons": str,
            "bundle_sha256": str,
            "state_sha256": str,
            "checked_at": str,
            "unreachable_runs": int,
        },
        pk=("pith_number", "mirror"),
    )
    db["validators"].create(
        {"url": str, "etag": str, "last_modified": str, "document_sha256": str, "updated_at": str},
        pk="url",
    )
    # Bad copies, kept apart from verified data, as evidence.
    db["evidence"].create(
        {
            "id": int,
            "pith_number": str,
            "mirror": str,
            "url": str,
            "status": str,
            "reasons": str,
            "body_sha256": str,
            "body": bytes,
            "observed_at": str,
            "run_id": str,
        },
        pk="id",
    )
    db["evidence"].create_index(["pith_number"])
    db["runs"].create(
        {
            "run_id": str,
            "command": str,
            "started_at": str,
            "finished_at": str,
            "exit_code": int,
            "summary": str,
        },
        pk="run_id",
    )
    db["journal"].create(
        {
            "seq": int,
            "run_id": str,
            "at": str,
            "kind": str,
            "pith_number": str,
            "mirror": str,
            "status": str,
            "detail": str,
            "prev_sha256": str,
            "entry_sha256": str,
        },
        pk="seq",
        not_null=["run_id", "at", "kind", "prev_sha256", "entry_sha256"],
    )
    # One row per alert.  `scope` says what it is about ("record:<pith>" for a divergence,
    # "mirror:<base_url>" for an unreachable mirror); at most one alert per (kind, scope) is open.
    db["alerts"].create(
        {
            "id": int,
            "kind": str,  # divergence | unreachable
            "scope": str,
            "pith_number": str,  # the record it is about (unreachable: the record that tripped it)
            "mirror": str,  # unreachable: the mirror's base_url
            "fingerprint": str,  # divergence: sha256 of the sorted (mirror, status) pairs
            "state": str,  # open | resolved
            "opened_at": str,
            "opened_run_id": str,
            "resolved_at": str,
            "resolved_run_id": str,
            "payload": str,  # the `opened` notification
            "resolved_payload": str,  # the `resolved` notification
        },
        pk="id",
        not_null=["kind", "scope", "state", "opened_at", "payload"],
    )
    db["alerts"].create_index(["state", "kind"])
    db.execute("create unique index alerts_one_open on alerts (kind, scope) where state = 'open'")
    # Notifications waiting for delivery, one per (alert, event, channel), written in the same
    # transaction as the evidence they report; a failed delivery stays until it succeeds.
    db["outbox"].create(
        {
            "id": int,
            "alert_id": int,
            "event": str,
            "channel": str,
            "payload": str,
            "created_at": str,
            "attempts": int,
            "last_attempt_at": str,
            "last_error": str,
            "delivered_at": str,
        },
        pk="id",
        not_null=["alert_id", "event", "channel", "payload", "created_at", "attempts"],
        foreign_keys=[("alert_id", "alerts", "id")],
    )
    db["outbox"].create_index(["alert_id", "event", "channel"], unique=True)
    db["outbox"].create_index(["delivered_at", "channel"])


def _schema_v2(db: sqlite_utils.Database) -> None:
    # Pairs of exact documents that verified together under one set of pinned keys: a mirror
    # that serves the same bytes again (a 304, or an unchanged copy) need not be re-verified.
    db["verified_copies"].create(
        {
            "bundle_sha256": str,
            "state_sha256": str,
            "trust_id": str,
            "pith_number": str,
            "first_seen": str,
        },
        pk=("bundle_sha256", "state_sha256", "trust_id"),
    )
    db["verified_copies"].create_index(["pith_number", "trust_id"])


def _schema_v3(db: sqlite_utils.Database) -> None:
    # Each record's last check: its verdict, and when.  Apart from `records`, whose large rows a
    # re-sync of an unchanged record does not rewrite.  Filled from the journal for old stores.
    db["record_checks"].create(
        {"pith_number": str, "verdict": str, "checked_at": str}, pk="pith_number"
    )
    db.execute(
        "insert into record_checks (pith_number, verdict, checked_at)"
        " select pith_number, status, at from journal where seq in"
        " (select max(seq) from journal where kind = 'record_outcome' group by pith_number)"
    )
    # Earlier versions stored a record under the number a user typed, year included, even when
    # its verified record gives another year: each such row takes its record's number now.
    now = utcnow()
    journal.append_schema_8(db, HEAL_RUN_ID, records.heal_numbers(db, now), now)


def _schema_v4(db: sqlite_utils.Database) -> None:
    # Each tracked record's revisit schedule.  An old store's checked records are due at their
    # last check plus the interval that check gives (under the default policy: the migration
    # has no configuration); records never checked are due now.
    schedule.create(db)
    policy, now = SchedulePolicy(), time.time()
    rows = db.conn.execute(
        "select r.pith_number, (julianday(c.checked_at) - 2440587.5) * 86400.0, c.verdict"
        " from records r left join record_checks c on c.pith_number = r.pith_number"
        " where r.tracked = 1"
    ).fetchall()
    states = []
    for pith, checked_at, verdict in rows:
        fresh = ScheduleState.new(suffix_of(pith), now, policy)
        if checked_at is None:
            states.append((pith, fresh))
            continue
        outcome = Outcome(verdict) if verdict in _CHECK_OUTCOMES else Outcome.IN_SYNC
        fresh = ScheduleState.new(fresh.suffix, min(now, checked_at), policy)
        states.append((pith, after_check(fresh, outcome, False, checked_at, policy)))
    schedule.write_states(db, states)


# A stored verdict that names a check's outcome (an import's `imported` is read as in sync).
_CHECK_OUTCOMES = {o.value for o in Outcome} - {Outcome.NEVER_CHECKED.value}


def _schema_v5(db: sqlite_utils.Database) -> None:
    conn = db.conn
    compaction.drop_columns_derived_from_state(conn)
    # Every body is kept as a zstd blob with the shipped dictionary, about a tenth of its bytes,
    # converted in place by one statement per table.
    conn.create_function("pithsync_compress", 1, bodies.compress, deterministic=True)
    for table, column, old_type in compaction.COMPRESSED_BODIES:
        conn.execute(
            f"update {table} set {column} = pithsync_compress({column}) where typeof({column}) = ?",
            [old_type],
        )
    # resolve looks aliases up by lower(alias_value), which an index on the value cannot answer.
    conn.execute("drop index if exists idx_aliases_alias_value")
    for table in compaction.WITHOUT_ROWID_TABLES:
        compaction.rebuild_without_rowid(conn, table)
    conn.execute("create index if not exists aliases_lower_value on aliases (lower(alias_value))")


def _schema_v6(db: sqlite_utils.Database) -> None:
    # The observation log (store/observations.py): statements (zstd, store/bodies) are the
    # leaves of an RFC 9162 tree; log_nodes holds the full aligned subtrees' hashes of the tile
    # levels 8, 16, ... (the others are folded from at most 128 below them, level 0 from the
    # statements), so proofs, tiles and roots read O(log n) small ranges; log_checkpoints the
    # signed tree heads.
    db.execute(
        "create table if not exists log_statements (leaf_index integer primary key,"
        " pith_number text not null, mirror text not null, run_id text not null,"
        " statement blob not null)"
    )
    db.execute(
        "create index if not exists log_statements_record on log_statements (pith_number, mirror)"
    )
    db.execute(
        "create table if not exists log_nodes (level integer not null, idx integer not null,"
        " hash blob not null, primary key (level, idx)) without rowid"
    )
    db.execute(
        "create table if not exists log_checkpoints (size integer primary key, note blob not null,"
        " at text not null)"
    )


def _schema_v7(db: sqlite_utils.Database) -> None:
    # Peers (issue 17): each peer's last checkpoint verified under its pinned key and found
    # consistent with the one before; and every rewrite found, with both signed checkpoints.
    db["peer_checkpoints"].create(
        {
            "url": str,
            "name": str,
            "checkpoint": bytes,  # the signed note, as served
            "size": int,
            "verified_at": str,
            "run_id": str,
        },
        pk="url",
        if_not_exists=True,
    )
    db["peer_rewrites"].create(
        {
            "id": int,
            "name": str,
            "url": str,
            "how": str,  # core.peers.Rewrite
            "message": str,
            "old_checkpoint": bytes,
            "new_checkpoint": bytes,
            "observed_at": str,
            "run_id": str,
        },
        pk="id",
        if_not_exists=True,
    )
    db["peer_rewrites"].create_index(["url"], if_not_exists=True)


def _schema_v8(db: sqlite_utils.Database) -> None:
    # Split views found (issue 17), each with what proves it offline: this observer's statement
    # of the same check (its bytes: a leaf of this store's log) and the peer's statement with
    # its leaf index, inclusion proof (concatenated 32-byte hashes) and signed checkpoint.
    db["split_views"].create(
        {
            "id": int,
            "pith_number": str,
            "mirror": str,
            "peer": str,
            "mine": bytes,
            "statement": bytes,
            "leaf_index": int,
            "proof": bytes,
            "checkpoint": bytes,
            "window_s": float,
            "observed_at": str,
            "run_id": str,
        },
        pk="id",
        if_not_exists=True,
    )
    db["split_views"].create_index(["pith_number"], if_not_exists=True)


def _schema_v9(db: sqlite_utils.Database) -> None:
    journal.upgrade_schema_8(db.conn)  # every hash kept: the chain verifies as it did
    compaction.pack_hashes_and_drop_unread(db.conn)


def _schema_v10(db: sqlite_utils.Database) -> None:
    # The observation log's statements a record check a row (store/log_leaves.py): one zstd
    # frame of the check's statements, its mirrors as ids; schema 8's run_id, which nothing
    # read, goes.  Every leaf is moved and checked byte for byte (log_nodes and checkpoints stay).
    db.execute(
        "create table if not exists log_mirrors (id integer primary key,"
        " mirror text not null unique)"
    )
    db.execute(
        "create table if not exists log_checks (first_leaf integer primary key,"
        " pith_number text not null, mirrors blob not null, statements blob not null)"
    )
    db.execute("create index if not exists log_checks_record on log_checks (pith_number, mirrors)")
    if db["log_statements"].exists():
        log_leaves.move_schema_8_leaves(db)
        db.execute("drop table log_statements")


# version -> function that brings the schema from version-1
MIGRATIONS = {
    1: _schema_v1,
    2: _schema_v2,
    3: _schema_v3,
    4: _schema_v4,
    5: _schema_v5,
    6: _schema_v6,
    7: _schema_v7,
    8: _schema_v8,
    9: _schema_v9,
    10: _schema_v10,
}


def schema_version(db: sqlite_utils.Database) -> int:
    """The schema version a store's `meta` records (0: no schema yet)."""
    if not db["meta"].exists():
        return 0
    row = db.execute("select value from meta where key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(db: sqlite_utils.Database) -> None:
    """Bring the store's schema to SCHEMA_VERSION, in one transaction.

    Raises:
        StoreError: the store's schema is newer than this pithsync.
    """
    version = schema_version(db)
    if version > SCHEMA_VERSION:
        raise StoreError(_newer(version))
    with db.atomic():
        for v in range(version + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[v](db)
            db["meta"].upsert({"key": "schema_version", "value": str(v)}, pk="key")


def readable_version(db: sqlite_utils.Database, path: str) -> int:
    """The schema version of the store a reader opened: this one, or an older one to upgrade.

    Raises:
        StoreError: the file holds no store, or one newer than this pithsync, or cannot be read.
    """
    try:
        version = schema_version(db)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open store {path} read-only: {exc}") from None
    if version == 0:
        raise StoreError(f"{path} is not a pithsync store (no schema)")
    if version > SCHEMA_VERSION:
        raise StoreError(_newer(version))
    return version


def _newer(version: int) -> str:
    return f"store schema {version} is newer than this pithsync ({SCHEMA_VERSION})"
