"""The verified store: one SQLite file, written through sqlite-utils.

Verified data (documents, events, record states) and evidence of bad copies live in separate
tables; the only path into the verified tables is `write_record`, fed by the comparison.  Beside
them, an append-only journal whose entries are hash-chained, with the head kept in `meta` so a
removed tail is detected too.  The schema lives here and only here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import sqlite_utils

from pithsync.base.clock import utcnow
from pithsync.base.exits import NoStoreError, StoreError, StoreLocked, WrongNumberError
from pithsync.core import numbers
from pithsync.core.canonical import canon, sha256hex
from pithsync.core.merge import merge_state
from pithsync.core.plan import EncodedState, MirrorRow, RecordWrite, _derived_number, number_of

SCHEMA_VERSION = 3
GENESIS = "0" * 64
# What json.dumps(detail, sort_keys=True) writes, without building an encoder on every call.
_DETAIL_JSON = json.JSONEncoder(sort_keys=True)
# What runs inside a record's write, after its rows (alerts.on_record gives one).
Extra = Callable[[sqlite_utils.Database], None]


def _schema_v1(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["mirrors"].create({"name": str, "base_url": str, "configured": int, "first_seen": str, "last_seen": str}, pk="base_url")
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
    db["aliases"].create({"alias_kind": str, "alias_value": str, "pith_number": str}, pk=("alias_kind", "alias_value"))
    db["aliases"].create_index(["alias_value"])
    # Exact bytes received, content-addressed; only documents that verified.
    db["documents"].create({"sha256": str, "kind": str, "pith_number": str, "body": bytes, "size": int, "first_seen": str}, pk="sha256")
    db["events"].create({"event_id": str, "pith_number": str, "event_type": str, "body": str, "first_seen": str}, pk="event_id")
    db["events"].create_index(["pith_number"])
    # last_seen: the last run that fetched a copy containing the event from that mirror; a copy
    # answered 304 is not fetched again (its mirror_status row says when it was last confirmed).
    db["event_sources"].create({"event_id": str, "mirror": str, "first_seen": str, "last_seen": str}, pk=("event_id", "mirror"))
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
    db["validators"].create({"url": str, "etag": str, "last_modified": str, "document_sha256": str, "updated_at": str}, pk="url")
    # Bad copies, kept apart from verified data, as evidence.
    db["evidence"].create(
        {"id": int, "pith_number": str, "mirror": str, "url": str, "status": str, "reasons": str, "body_sha256": str, "body": bytes, "observed_at": str, "run_id": str},
        pk="id",
    )
    db["evidence"].create_index(["pith_number"])
    db["runs"].create({"run_id": str, "command": str, "started_at": str, "finished_at": str, "exit_code": int, "summary": str}, pk="run_id")
    db["journal"].create(
        {"seq": int, "run_id": str, "at": str, "kind": str, "pith_number": str, "mirror": str, "status": str, "detail": str, "prev_sha256": str, "entry_sha256": str},
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
        {"id": int, "alert_id": int, "event": str, "channel": str, "payload": str, "created_at": str, "attempts": int, "last_attempt_at": str, "last_error": str, "delivered_at": str},
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
        {"bundle_sha256": str, "state_sha256": str, "trust_id": str, "pith_number": str, "first_seen": str},
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
    Store(db, "")._heal_numbers(HEAL_RUN_ID)


HEAL_RUN_ID = "migration-3"  # the journal's run_id for what the schema 3 migration renumbered
# version -> function that brings the schema from version-1
MIGRATIONS = {1: _schema_v1, 2: _schema_v2, 3: _schema_v3}


class Store:
    def __init__(self, db: sqlite_utils.Database, path: str):
        self.db = db
        self.path = path
        self._batch_started: float | None = None
        self._batch_records = 0
        self._mirrors_in_batch: set[tuple[str, bool]] = set()  # mirrors rows written in the open batch
        self._any_open_alert: bool | None = None  # None: not known, ask the table
        # The journal's (seq, entry_sha256) as written in the open batch: while the batch holds
        # the write lock no other connection can move it, so it need not be read per record.
        self._journal_head: tuple[int, str] | None = None

    # -- opening --------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str) -> "Store":
        """The store for writing (pull, sync, import): creates the file, and its schema, if it
        is not there yet; never its directory (a missing one is a mistyped path)."""
        directory = os.path.dirname(os.path.abspath(path))
        if path != ":memory:" and not os.path.isdir(directory):
            raise NoStoreError(f"no directory for a store at {path}: create {directory} first")
        store = cls(_connect(path), path)
        try:
            store._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open store {path}: {exc}{_read_only_hint(path)}") from None
        return store

    @classmethod
    def open_reader(cls, path: str) -> "Store":
        """The store through a read-only SQLite connection: never migrates, never writes.  What
        `serve`, `export`, the read-only commands and the sync worker processes read through.
        Creates nothing: a path that holds no store raises NoStoreError."""
        if path == ":memory:" or not Path(path).is_file():
            raise NoStoreError.at(path)
        store = cls(_connect(path, read_only=True), path)
        try:
            version = store.schema_version()
        except sqlite3.OperationalError as exc:
            store.close()
            if not _cannot_open(exc):
                raise StoreError(f"cannot open store {path} read-only: {exc}") from None
            # A WAL store needs its -wal and -shm files, even to read, and they cannot be
            # created here (a read-only file system or directory): nothing can write the file
            # through this path either, so read it as immutable.
            store = cls(_connect(path, read_only=True, immutable=True), path)
            try:
                version = store.schema_version()
            except sqlite3.DatabaseError as exc:
                store.close()
                raise StoreError(f"cannot open store {path} read-only: {exc}") from None
        except sqlite3.DatabaseError as exc:
            store.close()
            raise StoreError(f"cannot open store {path} read-only: {exc}") from None
        if version == 0 or version > SCHEMA_VERSION:
            store.close()
            raise StoreError(f"{path} is not a pithsync store (no schema)" if version == 0 else f"store schema {version} is newer than this pithsync ({SCHEMA_VERSION})")
        if version < SCHEMA_VERSION:
            store.close()
            cls._upgrade(path, version)
            return cls.open_reader(path)
        return store

    @classmethod
    def _upgrade(cls, path: str, version: int) -> None:
        """Bring an older store to this schema before reading it.  Migrations only add what
        the new code reads (and heal what old code wrote wrongly, with a journal entry), so a
        read-only command may run them; a store that cannot be written stays unreadable here."""
        try:
            cls.open(path).close()
        except (StoreError, sqlite3.Error) as exc:
            raise StoreError(
                f"store {path} has schema {version}, this pithsync reads {SCHEMA_VERSION}, and it"
                f" cannot be upgraded here ({exc}): run `pithsync sync` where it is writable"
            ) from None

    @contextlib.contextmanager
    def disconnected(self) -> Iterator[None]:
        """No connection open while the block runs: SQLite state must not cross a fork()
        (sqlite.org/howtocorrupt.html), so sync workers are forked inside this."""
        if self._batch_started is not None:
            raise StoreError("cannot disconnect in the middle of a batch")
        self.db.close()
        try:
            yield
        finally:
            self.db = _connect(self.path)

    def close(self) -> None:
        self.db.close()

    def _migrate(self) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(f"store schema {version} is newer than this pithsync ({SCHEMA_VERSION})")
        with self.db.atomic():
            for v in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[v](self.db)
                self.db["meta"].upsert({"key": "schema_version", "value": str(v)}, pk="key")

    def schema_version(self) -> int:
        if not self.db["meta"].exists():
            return 0
        row = self.db.execute("select value from meta where key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def commit_batch(self) -> None:
        """End the batch of records written so far (see write_record)."""
        if self._batch_started is not None:
            self._batch_started = None
            self._batch_records = 0
            self._mirrors_in_batch.clear()
            self._journal_head = None
            try:
                self.db.commit()
            except sqlite3.OperationalError as exc:
                self.db.rollback()
                raise StoreError(explain_error(exc, self.path)) from None

    def rollback_batch(self) -> None:
        if self._batch_started is not None:
            self._batch_started = None
            self._batch_records = 0
            self._mirrors_in_batch.clear()
            self._any_open_alert = None
            self._journal_head = None
            self.db.rollback()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit: a transaction, or a savepoint inside the open one (a record inside its
        batch).  The savepoint always has the same name (SQLite releases the innermost of that
        name): sqlite_utils' atomic() names each one with 16 random bytes, a getrandom() call and
        two statements SQLite compiles anew, for every record."""
        conn = self.db.conn
        try:
            if not conn.in_transaction:
                with self.db.atomic():
                    yield
                return
            conn.execute("SAVEPOINT pithsync")
            try:
                yield
            except BaseException:
                if conn.in_transaction:  # an error can end the whole transaction, savepoints included
                    conn.execute("ROLLBACK TO pithsync")
                    conn.execute("RELEASE pithsync")
                raise
            conn.execute("RELEASE pithsync")
        except sqlite3.OperationalError as exc:
            raise StoreError(explain_error(exc, self.path)) from None

    # -- reading ----------------------------------------------------------------------------
    def record(self, pith_number: str) -> dict | None:
        cur = self.db.conn.execute("select * from records where pith_number = ?", [pith_number])
        row = cur.fetchone()
        return dict(zip((d[0] for d in cur.description), row)) if row else None

    def record_summary(self, pith_number: str) -> dict | None:
        """A record's row without its (large) state and record JSON: what a sync decides on."""
        return self.record_summaries([pith_number]).get(pith_number)

    def record_summaries(self, pith_numbers: list[str]) -> dict[str, dict]:
        return {
            r[0]: {"tracked": r[1], "event_count": r[2], "state_sha256": r[3], "has_state": bool(r[4])}
            for r in self._in("select pith_number, tracked, event_count, state_sha256, state is not null from records where pith_number in ({})", pith_numbers)
        }

    def _in(self, sql: str, values: list, *before: object) -> Iterator[tuple]:
        """Rows of `sql`, whose one `in ({})` is filled with `values` 500 at a time (SQLite's
        limit on parameters is not reached); `before` are bound ahead of them."""
        for i in range(0, len(values), 500):
            chunk = values[i : i + 500]
            yield from self.db.conn.execute(sql.format(",".join("?" * len(chunk))), [*before, *chunk])

    def tracked(self) -> list[str]:
        return [r["pith_number"] for r in self.db.query("select pith_number from records where tracked = 1 order by pith_number")]

    def records(self) -> list[dict]:
        """Every stored record, by pith number, with its last check (verdict and time, None
        before the first) and `tracked` as a bool."""
        rows = list(
            self.db.query(
                "select r.pith_number, r.event_count, r.state_sha256, r.tracked, r.updated_at,"
                " c.verdict as last_verdict, c.checked_at as last_checked from records r"
                " left join record_checks c on c.pith_number = r.pith_number"
                " order by r.pith_number"
            )
        )
        for r in rows:
            r["tracked"] = bool(r["tracked"])
        return rows

    def last_check(self, pith_number: str) -> tuple[str | None, str | None]:
        """(verdict, checked_at) of a record's last check, or (None, None)."""
        row = self.db.execute(
            "select verdict, checked_at from record_checks where pith_number = ?", [pith_number]
        ).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def untrack(self, run_id: str, pith_number: str) -> bool:
        """Stop syncing a record; everything stored about it stays.  False if it was not tracked."""
        with self.transaction():
            cur = self.db.conn.execute(
                "update records set tracked = 0 where pith_number = ? and tracked = 1",
                [pith_number],
            )
            if cur.rowcount == 0:
                return False
            self._journal(run_id, "record_untracked", pith_number)
        return True

    def records_with_state(self) -> list[tuple[str, str]]:
        """(pith_number, suffix) of every record that has a merged state, by suffix."""
        return self.db.execute("select pith_number, suffix from records where state is not null order by suffix").fetchall()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one consistent state of the store, even while a sync commits."""
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("ROLLBACK")

    def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite's PRAGMA data_version)."""
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    def stored_events(self, pith_number: str) -> dict[str, dict]:
        return {eid: json.loads(body) for eid, body in self.db.conn.execute("select event_id, body from events where pith_number = ?", [pith_number])}

    def mirror_statuses(self, pith_number: str) -> list[dict]:
        rows = list(self.db.query("select * from mirror_status where pith_number = ? order by name", [pith_number]))
        for r in rows:
            r["reasons"] = json.loads(r["reasons"] or "[]")
        return rows

    def mirror_verdicts(self, pith_numbers: list[str]) -> dict[str, dict[str, tuple[str, str | None, str | None]]]:
        """pith_number -> mirror base_url -> (status, bundle sha256, state sha256) of the record's last check."""
        out: dict[str, dict] = {}
        for pith, mirror, status, bundle_sha, state_sha in self._in("select pith_number, mirror, status, bundle_sha256, state_sha256 from mirror_status where pith_number in ({})", pith_numbers):
            out.setdefault(pith, {})[mirror] = (status, bundle_sha, state_sha)
        return out

    def validators_for(self, urls: list[str]) -> dict[str, dict]:
        return {
            url: {"url": url, "etag": etag, "last_modified": lm, "document_sha256": sha}
            for url, etag, lm, sha in self._in("select url, etag, last_modified, document_sha256 from validators where url in ({})", urls)
        }

    def validators_with_bodies(self, urls: list[str]) -> tuple[dict[str, dict], dict[str, bytes]]:
        """validators_for(urls), and the stored bytes (document_bodies) each of them names."""
        validators = self.validators_for(urls)
        return validators, self.document_bodies([v["document_sha256"] for v in validators.values() if v.get("document_sha256")])

    def document_bodies(self, shas: list[str]) -> dict[str, bytes]:
        """sha256 -> exact bytes, from verified documents or from evidence (a bad copy served
        again unchanged is still that bad copy)."""
        wanted = sorted(set(shas))
        out = {sha: bytes(body) for sha, body in self._in("select sha256, body from documents where sha256 in ({})", wanted)}
        missing = [x for x in wanted if x not in out]
        out.update((sha, bytes(body)) for sha, body in self._in("select body_sha256, body from evidence where body is not null and body_sha256 in ({}) group by body_sha256", missing))
        return out

    def verified_pairs(self, pith_numbers: list[str], trust_id: str) -> dict[str, set[tuple[str, str]]]:
        """pith_number -> the (bundle sha256, state sha256) pairs that verified together under `trust_id`."""
        out: dict[str, set] = {}
        for pith, bundle_sha, state_sha in self._in("select pith_number, bundle_sha256, state_sha256 from verified_copies where trust_id = ? and pith_number in ({})", pith_numbers, trust_id):
            out.setdefault(pith, set()).add((bundle_sha, state_sha))
        return out

    def document_body(self, sha256: str) -> bytes | None:
        return self.document_bodies([sha256]).get(sha256)

    def numbers_for_suffixes(self, suffixes: list[str]) -> dict[str, str]:
        return dict(self._in("select suffix, pith_number from records where suffix in ({})", suffixes))

    def resolve(self, text: str) -> list[str]:
        """Full numbers of the stored records that `text` names: a suffix prefix, or an alias."""
        ref = None
        try:
            ref = numbers.parse_ref(text)
        except Exception:
            pass
        if ref is not None:
            # An equality or a range, which use the suffix index (LIKE scanned every record: 0.6 ms
            # a lookup at 5,000 records).  Suffixes are upper-case base32: all sort below "~".
            if ref.is_prefix:
                found = [r[0] for r in self.db.execute("select pith_number from records where suffix >= ? and suffix < ?", [ref.suffix, ref.suffix + "~"])]
            else:
                found = list(self.numbers_for_suffixes([ref.suffix]).values())
            if found:
                return sorted(found)
        value = text.strip()
        for candidate in {value, value.lower()}:
            rows = self.db.execute("select distinct pith_number from aliases where alias_value = ? or lower(alias_value) = ?", [candidate, candidate]).fetchall()
            if rows:
                return sorted(r[0] for r in rows)
        return []

    def evidence_for(self, pith_number: str) -> list[dict]:
        rows = list(self.db.query("select * from evidence where pith_number = ? order by id", [pith_number]))
        for r in rows:
            r["reasons"] = json.loads(r["reasons"] or "[]")
        return rows

    # -- runs and the journal -------------------------------------------------------------
    def begin_run(self, command: str) -> str:
        run_id = uuid.uuid4().hex
        with self.transaction():
            self.db["runs"].insert({"run_id": run_id, "command": command, "started_at": utcnow()})
            self._journal(run_id, "run_started", detail={"command": command})
        return run_id

    def finish_run(self, run_id: str, exit_code: int, summary: dict) -> None:
        self.commit_batch()
        with self.transaction():
            self.db["runs"].update(run_id, {"finished_at": utcnow(), "exit_code": exit_code, "summary": json.dumps(summary)})
            self._journal(run_id, "run_finished", status=str(exit_code), detail=summary)

    def _journal(self, run_id: str, kind: str, pith_number: str | None = None, mirror: str | None = None, status: str | None = None, detail: dict | None = None) -> None:
        self._journal_many(run_id, [(kind, pith_number, mirror, status, detail)], utcnow())

    _JOURNAL_COLUMNS = ("seq", "run_id", "at", "kind", "pith_number", "mirror", "status", "detail", "prev_sha256", "entry_sha256")

    def _journal_many(self, run_id: str, entries: list[tuple], at: str) -> None:
        """Append entries (kind, pith_number, mirror, status, detail), each chained to the last.
        Must run inside a transaction: the head moves with the entries or not at all."""
        head = self._journal_head if self._batch_started is not None else None
        if head is None:
            row = self.db.conn.execute("select value from meta where key = 'journal_head'").fetchone()
            head = (0, GENESIS) if row is None else (int(row[0].split(":")[0]), row[0].split(":")[1])
        seq, prev = head
        rows = []
        for kind, pith_number, mirror, status, detail in entries:
            seq += 1
            detail_json = _DETAIL_JSON.encode(detail or {})
            fields = {"seq": seq, "run_id": run_id, "at": at, "kind": kind, "pith_number": pith_number, "mirror": mirror, "status": status, "detail": detail_json, "prev_sha256": prev}
            entry_sha256 = _entry_sha256(fields)
            rows.append((seq, run_id, at, kind, pith_number, mirror, status, detail_json, prev, entry_sha256))
            prev = entry_sha256
        self.db.conn.executemany(f"insert into journal ({','.join(self._JOURNAL_COLUMNS)}) values ({','.join('?' * len(self._JOURNAL_COLUMNS))})", rows)
        self.db.conn.execute("insert into meta (key, value) values ('journal_head', ?) on conflict(key) do update set value = excluded.value", [f"{seq}:{prev}"])
        if self._batch_started is not None:
            self._journal_head = (seq, prev)

    def journal(self, since: str | None = None) -> list[dict]:
        if since:
            return list(self.db.query("select * from journal where at >= ? order by seq", [since]))
        return list(self.db.query("select * from journal order by seq"))

    def verify_journal(self) -> list[str]:
        """Problems found in the journal's hash chain (empty when intact)."""
        problems: list[str] = []
        prev, expected_seq = GENESIS, 1
        for row in self.db.query("select * from journal order by seq"):
            if row["seq"] != expected_seq:
                problems.append(f"entry {expected_seq} is missing (next is {row['seq']})")
            if row["prev_sha256"] != prev:
                problems.append(f"entry {row['seq']}: prev_sha256 does not match entry {row['seq'] - 1}")
            if journal_entry_sha256(row) != row["entry_sha256"]:
                problems.append(f"entry {row['seq']}: content does not match its entry_sha256 (edited)")
            prev, expected_seq = row["entry_sha256"], row["seq"] + 1
        head = self.db.execute("select value from meta where key = 'journal_head'").fetchone()
        last = f"{expected_seq - 1}:{prev}"
        if head is None and expected_seq > 1:
            problems.append("journal head is missing from meta")
        elif head is not None and head[0] != last:
            problems.append(f"journal ends at {last.split(':')[0]} but its head says {head[0].split(':')[0]} (entries removed from the end?)")
        return problems

    # -- writing ----------------------------------------------------------------------------
    def write_record(self, run_id: str, w: RecordWrite, extra=None, *, batch_records: int = 1, batch_seconds: float = 1.0) -> None:
        """All of one record's results, atomically.  `extra(db)` runs inside it too (alerts put
        their outbox rows beside the evidence).  See write_records."""
        self.write_records(run_id, [(w, extra)], batch_records=batch_records, batch_seconds=batch_seconds)

    def write_records(self, run_id: str, writes: list[tuple[RecordWrite, Extra | None]], *, batch_records: int = 1, batch_seconds: float = 1.0) -> None:
        """Records' results, in order, each (RecordWrite, extra) written atomically with the ones
        beside it: a failure writes none of the group.  Each statement runs once for the whole
        group, with every record's rows: sqlite3's cost per statement, not SQLite's per row, was
        most of the writer's (a full sync's, alone: 227-332 -> 165-174 us a record, groups of 64).
        A record named twice starts a new group, so that each is decided against what the store
        holds.

        With batch_records > 1, groups accumulate in one open transaction (each still atomic
        within it, through a savepoint) until that many records are written or batch_seconds
        pass; commit_batch() ends it.  A crash loses the open batch whole, never part of a group."""
        group: list[tuple[RecordWrite, Extra | None]] = []
        names: set[str] = set()
        for w, extra in writes:
            if w.pith_number in names:
                self._write_group(run_id, group, batch_records, batch_seconds)
                group, names = [], set()
            group.append((w, extra))
            names.add(w.pith_number)
        if group:
            self._write_group(run_id, group, batch_records, batch_seconds)

    def _write_group(self, run_id: str, group: list[tuple[RecordWrite, Extra | None]], batch_records: int, batch_seconds: float) -> None:
        if batch_records > 1 and self._batch_started is None:
            self.db.conn.execute("BEGIN")
            self._batch_started = time.monotonic()
        try:
            with self.transaction():
                self._write_rows(run_id, group)
        except BaseException:
            self._journal_head = None  # the group's savepoint rolled its entries back
            raise
        if self._batch_started is not None:
            self._mirrors_in_batch.update((m.base_url, m.configured) for w, _ in group for m in w.mirrors)
            self._batch_records += len(group)
            if self._batch_records >= batch_records or time.monotonic() - self._batch_started >= batch_seconds:
                self.commit_batch()

    def _write_rows(self, run_id: str, group: list[tuple[RecordWrite, Extra | None]]) -> None:
        now = utcnow()
        existing = self.record_summaries([w.pith_number for w, _ in group])
        # Each mirror once per batch: a run's records name the same few mirrors over and over.
        mirrors = {(m.base_url, m.configured): m for w, _ in group for m in w.mirrors if (m.base_url, m.configured) not in self._mirrors_in_batch}
        self._many(
            "insert into mirrors (base_url, name, configured, first_seen, last_seen) values (?,?,?,?,?) "
            "on conflict(base_url) do update set last_seen = excluded.last_seen, configured = max(configured, excluded.configured)",
            [(m.base_url, m.name, int(m.configured), now, now) for m in mirrors.values()],
        )
        writes = [w for w, _ in group]
        self._many(
            "insert or ignore into documents (sha256, kind, pith_number, body, size, first_seen) values (?,?,?,?,?,?)",
            [(sha, kind, w.pith_number, body, len(body), now) for w in writes for sha, kind, body in w.documents],
        )
        self._many(
            "insert or ignore into events (event_id, pith_number, event_type, body, first_seen) values (?,?,?,?,?)",
            [(eid, w.pith_number, event_type, body, now) for w in writes for eid, (event_type, body) in w.events.items()],
        )
        self._many(
            "insert into event_sources (event_id, mirror, first_seen, last_seen) values (?,?,?,?) "
            "on conflict(event_id, mirror) do update set last_seen = excluded.last_seen",
            [(eid, mirror, now, now) for w in writes for eid, mirror in w.event_sources],
        )
        self._settle_numbers(run_id, writes, existing, now)
        self._write_states(writes, existing, now)
        # One statement, updated in place: unreachable_runs counts runs in a row that found the
        # mirror unreachable for this record, and starts again at 0 when it is reached.
        self._many(
            "insert into mirror_status (pith_number, mirror, name, status, reasons, bundle_sha256, state_sha256, checked_at, unreachable_runs) values (?,?,?,?,?,?,?,?,?) "
            "on conflict(pith_number, mirror) do update set name = excluded.name, status = excluded.status, reasons = excluded.reasons, "
            "bundle_sha256 = excluded.bundle_sha256, state_sha256 = excluded.state_sha256, checked_at = excluded.checked_at, "
            "unreachable_runs = case when excluded.unreachable_runs > 0 then mirror_status.unreachable_runs + 1 else 0 end",
            [(w.pith_number, m.base_url, m.name, m.status, json.dumps(m.reasons), m.bundle_sha256, m.state_sha256, now, 1 if m.unreachable else 0) for w in writes for m in w.mirrors],
        )
        self._many(
            "insert into evidence (pith_number, mirror, url, status, reasons, body_sha256, body, observed_at, run_id) values (?,?,?,?,?,?,?,?,?)",
            [
                (w.pith_number, ev["mirror"], ev["url"], ev["status"], json.dumps(ev["reasons"]), sha256hex(ev["body"]) if ev.get("body") is not None else None, ev.get("body"), now, run_id)
                for w in writes
                for ev in w.evidence
            ],
        )
        self._many(
            "insert or replace into validators (url, etag, last_modified, document_sha256, updated_at) values (?,?,?,?,?)",
            [(url, etag, lm, sha, now) for w in writes for url, etag, lm, sha in w.validators],
        )
        self._many(
            "insert or ignore into verified_copies (bundle_sha256, state_sha256, trust_id, pith_number, first_seen) values (?,?,?,?,?)",
            [(b, st, w.trust_id, w.pith_number, now) for w in writes for b, st in w.verified_copies],
        )
        self._many(
            "insert or replace into record_checks (pith_number, verdict, checked_at)"
            " values (?,?,?)",
            [(w.pith_number, w.verdict, now) for w in writes],
        )
        entries = []
        for w in writes:
            entries += [("mirror_outcome", w.pith_number, m.base_url, m.status, {"reasons": [r.get("code") for r in m.reasons]}) for m in w.mirrors]
            entries.append(("record_outcome", w.pith_number, None, w.verdict, w.journal_detail))
        self._journal_many(run_id, entries, now)
        # Alerts last, in the records' order: each reads only its own record's rows, and sees
        # the alerts the ones before it opened.
        for _, extra in group:
            if extra is not None:
                extra(self.db)

    def _many(self, sql: str, rows: list) -> None:
        if rows:  # most records have nothing for most tables; an empty call still costs
            self.db.conn.executemany(sql, rows)

    def _settle_numbers(
        self, run_id: str, writes: list[RecordWrite], existing: dict[str, dict], now: str
    ) -> None:
        """The store's own check that every record is kept under the number its verified record
        derives: a state under another number is refused (WrongNumberError), and a row holding
        the same suffix under another number is renumbered to the write's (journal entry
        `record_renumbered`) when that row's own record gives the write's number, or has none
        (a typed number that waited for its record); otherwise the write is refused."""
        for w in writes:
            if w.state is not None and (derived := number_of(w.state)) != w.pith_number:
                raise WrongNumberError(f"refusing to store the record {derived} as {w.pith_number}")
        new = {
            w.pith_number.split(":")[-1]: w
            for w in writes
            if w.pith_number not in existing and w.pith_number.count(":") == 2
        }
        if not new:
            return
        for suffix, old in self.numbers_for_suffixes(list(new)).items():
            w = new[suffix]
            row = self.db.conn.execute(
                "select canonical_record from records where pith_number = ?", [old]
            ).fetchone()
            if row[0] is not None:
                if (derived := _derived_number(row[0])) != w.pith_number:
                    raise WrongNumberError(
                        f"refusing to store {w.pith_number}: the stored record with suffix"
                        f" {suffix} is {derived}"
                    )
                reason = "wrong_year"  # a row an earlier version stored under a typed year
            else:
                reason = "verified" if w.state is not None else "retyped"
            self._renumber(run_id, old, w.pith_number, reason, now)
            existing.update(self.record_summaries([w.pith_number]))

    def _heal_numbers(self, run_id: str) -> None:
        """Renumber every stored record whose verified record derives another number."""
        rows = self.db.conn.execute(
            "select pith_number, canonical_record from records where canonical_record is not null"
        ).fetchall()
        for pith_number, record_json in rows:
            try:
                derived = _derived_number(record_json)
            except (ValueError, KeyError, TypeError, numbers.InvalidPithNumber):
                continue  # no number to derive: left as it is
            if derived != pith_number:
                self._renumber(run_id, pith_number, derived, "wrong_year", utcnow())

    def _renumber(self, run_id: str, old: str, new: str, reason: str, at: str) -> None:
        """Move every row of record `old` to `new`, in the open transaction, and journal it.
        The journal's earlier entries keep the number they were written with."""
        conn = self.db.conn
        moved = ("records", "aliases", "documents", "events", "evidence", "verified_copies",
                 "alerts")
        for table in moved:
            conn.execute(f"update {table} set pith_number = ? where pith_number = ?", [new, old])
        for table in ("mirror_status", "record_checks"):
            conn.execute(
                f"update or replace {table} set pith_number = ? where pith_number = ?", [new, old]
            )
        conn.execute(
            "update or ignore alerts set scope = ? where scope = ?",
            [f"record:{new}", f"record:{old}"],
        )
        row = conn.execute(
            "select canonical_record, source_aliases, state from records where pith_number = ?",
            [new],
        ).fetchone()
        if row is not None and row[2] is not None and json.loads(row[2]).get("pith_number") != new:
            # A state merged under the typed number names it, and its state_sha256 covers it.

            bodies = conn.execute("select body from events where pith_number = ?", [new])
            events = [json.loads(body) for (body,) in bodies]
            state = merge_state(new, json.loads(row[0]), json.loads(row[1]), events, {})
            conn.execute(
                "update records set state = ?, state_sha256 = ?, event_count = ?, updated_at = ?"
                " where pith_number = ?",
                [canon(state).decode(), state["state_sha256"], state["event_count"], at, new],
            )
        entry = ("record_renumbered", new, None, None, {"from": old, "reason": reason})
        self._journal_many(run_id, [entry], at)

    def _write_states(self, writes: list[RecordWrite], existing: dict[str, dict], now: str) -> None:
        new_rows, aliases = [], []
        for w in writes:
            st = w.state
            known = existing.get(w.pith_number)
            if known is None:
                if st is None and not w.tracked:
                    continue
                # A new record is one row, with its state when it has one.
                state_columns = (st.canonical_sha256, st.canonical_record, st.source_aliases, st.state, st.state_sha256, st.event_count) if st else (None, None, None, None, None, 0)
                new_rows.append((w.pith_number, w.pith_number.split(":")[-1], int(w.tracked), now, now, *state_columns))
            else:
                if w.tracked and not known["tracked"]:
                    self.db.conn.execute("update records set tracked = 1 where pith_number = ?", [w.pith_number])
                if st is None:
                    continue
                # Never roll back: the new state must contain every event the stored one counted.
                if (known.get("event_count") or 0) > st.event_count:
                    raise StoreError(f"refusing to roll {w.pith_number} back from {known['event_count']} to {st.event_count} events")
                if known.get("state_sha256") != st.state_sha256:
                    self.db.conn.execute(
                        "update records set canonical_sha256 = ?, canonical_record = ?, source_aliases = ?, state = ?, state_sha256 = ?, event_count = ?, updated_at = ? where pith_number = ?",
                        [st.canonical_sha256, st.canonical_record, st.source_aliases, st.state, st.state_sha256, st.event_count, now, w.pith_number],
                    )
            if st is not None:
                aliases += [(kind, value, w.pith_number) for kind, value in st.aliases]
        self._many(
            "insert into records (pith_number, suffix, tracked, first_seen, updated_at, canonical_sha256, canonical_record, source_aliases, state, state_sha256, event_count) values (?,?,?,?,?,?,?,?,?,?,?)",
            new_rows,
        )
        self._many("insert or ignore into aliases (alias_kind, alias_value, pith_number) values (?,?,?)", aliases)

    # -- publishing (serve, export): read-only queries ----------------------------------------
    def document_index(self, kind: str) -> dict[str, list[str]]:
        """pith_number -> sha256 of every stored verified document of `kind` ("bundle" or
        "state"), in one pass that reads no bodies (documents has no pith_number index)."""
        out: dict[str, list[str]] = {}
        for pith, sha in self.db.execute("select pith_number, sha256 from documents where kind = ? order by sha256", [kind]):
            out.setdefault(pith, []).append(sha)
        return out

    def stored_event_ids(self, pith_number: str) -> set[str]:
        return {r[0] for r in self.db.execute("select event_id from events where pith_number = ?", [pith_number])}

    def document_first_seen(self, sha256: str) -> str | None:
        row = self.db.execute("select first_seen from documents where sha256 = ?", [sha256]).fetchone()
        return row[0] if row else None

    def best_bundle(self, pith_number: str, shas: list[str] | None = None) -> tuple[str, bytes, dict] | None:
        """The stored verified bundle of `pith_number` whose events match the record's stored
        state best, as (sha256, exact bytes, parsed): the most events the store holds for the
        record (its state is their merge), then the fewest it does not, then the latest
        `built_at`, then the sha256.  `shas` narrows the candidates (from `document_index`);
        without it the documents table is scanned."""
        if shas is None:
            shas = [r[0] for r in self.db.execute("select sha256 from documents where kind = 'bundle' and pith_number = ?", [pith_number])]
        known = self.stored_event_ids(pith_number)
        best_key, best = None, None
        for sha in shas:
            row = self.db.execute("select body from documents where sha256 = ? and kind = 'bundle' and pith_number = ?", [sha, pith_number]).fetchone()
            if row is None:
                continue
            body = bytes(row[0])
            try:
                bundle = json.loads(body)
                ids = {e["event_id"] for e in bundle["events"] if isinstance(e, dict) and isinstance(e.get("event_id"), str)}
            except (ValueError, KeyError, TypeError):
                continue  # cannot happen for a verified document; never serve one that is not
            key = (len(ids & known), -len(ids - known), str(bundle.get("built_at", "")), sha)
            if best_key is None or key > best_key:
                best_key, best = key, (sha, body, bundle)
        return best

    # -- alerts and their outbox (pithsync/alerts.py) -----------------------------------------
    # The first five run inside write_record's transaction (through its `extra`), so an alert
    # and its notifications commit or roll back with the evidence they report.
    def unreachable_counts(self, pith_number: str) -> dict[str, int]:
        """mirror base_url -> consecutive runs it was unreachable for this record (this run included
        when called after the record's mirror_status rows were written)."""
        return {r[0]: int(r[1] or 0) for r in self.db.execute("select mirror, unreachable_runs from mirror_status where pith_number = ?", [pith_number])}

    def open_alerts_for(self, pith_number: str, mirrors: list[str]) -> list[dict]:
        """Open alerts a record's outcome can affect: its divergence, its mirrors' unreachability."""
        scopes = [f"record:{pith_number}"] + [f"mirror:{m}" for m in mirrors]
        marks = ",".join("?" * len(scopes))
        rows = list(self.db.query(f"select * from alerts where state = 'open' and scope in ({marks}) order by id", scopes))
        for r in rows:
            r["payload"] = json.loads(r["payload"] or "{}")
        return rows

    def any_open_alert(self) -> bool:
        """Whether any alert is open; kept up to date by this Store, so that a run of records in
        sync asks the table once, not once per record."""
        if self._any_open_alert is None:
            self._any_open_alert = self.db.execute("select exists(select 1 from alerts where state = 'open')").fetchone()[0] == 1
        return self._any_open_alert

    def insert_alert(self, kind: str, scope: str, pith_number: str | None, mirror: str | None, fingerprint: str, opened_at: str, run_id: str) -> int:
        self._any_open_alert = True
        cur = self.db.execute(
            "insert into alerts (kind, scope, pith_number, mirror, fingerprint, state, opened_at, opened_run_id, payload) values (?,?,?,?,?,'open',?,?,'{}')",
            [kind, scope, pith_number, mirror, fingerprint, opened_at, run_id],
        )
        return int(cur.lastrowid)

    def set_alert_payload(self, alert_id: int, payload: dict) -> None:
        self.db.execute("update alerts set payload = ? where id = ?", [json.dumps(payload, sort_keys=True), alert_id])

    def resolve_alert(self, alert_id: int, resolved_at: str, run_id: str, payload: dict) -> None:
        self._any_open_alert = None
        self.db.execute(
            "update alerts set state = 'resolved', resolved_at = ?, resolved_run_id = ?, resolved_payload = ? where id = ? and state = 'open'",
            [resolved_at, run_id, json.dumps(payload, sort_keys=True), alert_id],
        )

    def enqueue_notification(self, alert_id: int, event: str, channels: list[str], payload: dict, created_at: str) -> None:
        body = json.dumps(payload, sort_keys=True)
        for channel in channels:
            self.db.execute(
                "insert or ignore into outbox (alert_id, event, channel, payload, created_at, attempts) values (?,?,?,?,?,0)",
                [alert_id, event, channel, body, created_at],
            )

    def pending_notifications(self, channel: str, limit: int = 1000) -> list[dict]:
        """Undelivered notifications for one channel, oldest first."""
        rows = list(self.db.query("select * from outbox where delivered_at is null and channel = ? order by id limit ?", [channel, limit]))
        for r in rows:
            r["payload"] = json.loads(r["payload"])
        return rows

    def mark_delivered(self, outbox_id: int, at: str) -> None:
        with self.transaction():
            self.db.execute("update outbox set delivered_at = ?, last_attempt_at = ?, attempts = attempts + 1 where id = ?", [at, at, outbox_id])

    def mark_failed(self, outbox_id: int, at: str, error: str) -> None:
        with self.transaction():
            self.db.execute("update outbox set last_attempt_at = ?, attempts = attempts + 1, last_error = ? where id = ?", [at, error[:1000], outbox_id])

    def alerts(self, open_only: bool = False) -> list[dict]:
        """Alerts, newest first, each with its notifications' delivery state."""
        where = "where a.state = 'open'" if open_only else ""
        rows = list(
            self.db.query(
                "select a.*, (select count(*) from outbox o where o.alert_id = a.id and o.delivered_at is null) as undelivered, "
                "(select count(*) from outbox o where o.alert_id = a.id) as notifications "
                f"from alerts a {where} order by a.id desc"
            )
        )
        for r in rows:
            r["payload"] = json.loads(r["payload"] or "{}")
            r["resolved_payload"] = json.loads(r["resolved_payload"]) if r["resolved_payload"] else None
        return rows

    def open_alert_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.execute("select kind, count(*) from alerts where state = 'open' group by kind")}

    def undelivered_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.execute("select channel, count(*) from outbox where delivered_at is null group by channel")}

    # -- evidence files and metrics (pithsync/evidence.py, pithsync/metrics.py) ----------------
    def verified_documents(self, pith_number: str, kind: str) -> list[tuple[str, bytes]]:
        """(sha256, exact bytes) of every verified document of `kind` stored for a record."""
        return [(r[0], bytes(r[1])) for r in self.db.execute("select sha256, body from documents where pith_number = ? and kind = ? order by first_seen, sha256", [pith_number, kind])]

    def run(self, run_id: str) -> dict | None:
        rows = list(self.db.query("select * from runs where run_id = ?", [run_id]))
        return rows[0] if rows else None

    def last_finished_run(self, *, success: bool) -> dict | None:
        """The latest finished crawl run (not an import); with success, the latest that exited 0."""
        cond = " and exit_code = 0" if success else ""
        rows = list(self.db.query(
            "select * from runs where finished_at is not null"
            f" and command not in ('import', 'untrack'){cond} order by finished_at desc limit 1"
        ))
        return rows[0] if rows else None


def _cannot_open(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_CANTOPEN: for a file that exists, the -wal or -shm file it needs is missing and
    cannot be created."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_CANTOPEN


def _connect(
    path: str, *, read_only: bool = False, immutable: bool = False
) -> sqlite_utils.Database:
    try:
        if read_only:
            query = "mode=ro&immutable=1" if immutable else "mode=ro"
            uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?{query}"
            conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level="DEFERRED")
        else:
            conn = sqlite3.connect(path, timeout=30, isolation_level="DEFERRED")
        # Plugins installed beside sqlite-utils do not get the verified store's connection (and
        # looking them up scanned every installed package: 10 ms of each start).
        db = sqlite_utils.Database(conn, execute_plugins=False)
        db.execute("PRAGMA busy_timeout = 30000")
        if not read_only:
            if path != ":memory:":
                # 16 KiB pages hold a bundle (about 9 kB) in its row instead of an overflow chain
                # of 4 KiB pages: parent sys time of a 5,000-record sync -30% (at 50,000 it
                # neither helps nor hurts).  Takes effect only on a new store, before WAL is
                # enabled; existing stores keep their page size.
                db.execute("PRAGMA page_size = 16384")
                db.enable_wal()
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            # Each record is a savepoint inside its batch; its undo pages go to a temp file by
            # default, which was 100k small writes per 1000 records.
            db.execute("PRAGMA temp_store = MEMORY")
            # The writer's page cache holds the indexes every record inserts into (2 MB did not:
            # 45 page reads per record at N=5000), and a longer WAL between checkpoints copies
            # the pages every record touches fewer times.  Measured: parent sys time -40%.  At
            # 50,000 records the indexes outgrow 16 MB: 32 MB took 5% off that run's time for
            # 17 MB more peak RSS (64 MB: 6%, but too close to the 300 MB budget).
            db.execute("PRAGMA cache_size = -32768")  # KiB
            # Each commit writes every page it dirtied to the WAL, and each checkpoint copies
            # them into the file: the index pages that random keys touch are rewritten batch
            # after batch.  With 64 MB between checkpoints (and batches of 1000 records, see
            # RecordSink) a 5,000-record sync writes 326 MB instead of 565 MB (/proc/self/io),
            # full sync CPU -3.5%.  The WAL file grows to about 100 MB during a large run.
            page_size = db.execute("PRAGMA page_size").fetchone()[0]
            db.execute(f"PRAGMA wal_autocheckpoint = {64 * 1024 * 1024 // page_size}")  # 64 MB of pages, whatever their size
        return db
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open store {path}: {exc}{_read_only_hint(path)}") from None
    except OSError as exc:
        raise StoreError(f"cannot open store {path}: {exc.strerror or exc}") from None


_JOURNAL_HASHED = ("seq", "run_id", "at", "kind", "pith_number", "mirror", "status", "detail", "prev_sha256")


def journal_entry_sha256(entry: dict) -> str:
    return _entry_sha256({k: entry.get(k) for k in _JOURNAL_HASHED})


def _entry_sha256(fields: dict) -> str:
    """The hash of a journal entry given exactly its _JOURNAL_HASHED fields."""
    return sha256hex(canon(fields))


def explain_error(exc: sqlite3.OperationalError, path: str) -> str:
    msg = str(exc)
    if "readonly" in msg or "read-only" in msg:
        return f"store {path} is read-only: {msg}"
    if "disk is full" in msg or "database or disk is full" in msg:
        return f"no space left for store {path}: {msg}"
    return f"store {path}: {msg}"


def _read_only_hint(path: str) -> str:
    """Why SQLite could not open a store, when it is a read-only directory (a WAL store needs to
    create its -wal and -shm files beside it, even to read)."""
    parent = os.path.dirname(os.path.abspath(path))
    if path != ":memory:" and os.path.isdir(parent) and not os.access(parent, os.W_OK):
        return f" (its directory {parent} is read-only)"
    return ""


def _lock_holder(fh) -> int | None:
    """The pid the lock's holder wrote into the lock file (informational: it may be gone)."""
    with contextlib.suppress(OSError, ValueError):
        fh.seek(0)
        return int(fh.read(32).strip())
    return None


@contextlib.contextmanager
def run_lock(db_path: str, timeout_s: float, poll_s: float = 0.1) -> Iterator[None]:
    """One sync or pull at a time per store: wait up to `timeout_s` for the lock, then give up.
    The lock is named after the store's real path, so runs that reach it through a symlink
    (or another spelling of the path) wait for each other too."""
    if db_path == ":memory:":
        yield
        return
    lock_path = f"{os.path.realpath(db_path)}.lock"
    directory = os.path.dirname(lock_path)
    if not os.path.isdir(directory):
        raise NoStoreError(f"no directory for a store at {db_path}: create {directory} first")
    try:
        fh = open(lock_path, "a+")
    except OSError as exc:
        raise StoreError(f"cannot open lock file {lock_path}: {exc.strerror or exc}") from None
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise StoreError(f"cannot lock {lock_path}: {exc.strerror}") from None
                if time.monotonic() >= deadline:
                    held = f"another pithsync run holds {lock_path}; gave up after {timeout_s:g}s"
                    raise StoreLocked(held, lock_path, timeout_s, _lock_holder(fh)) from None
                time.sleep(poll_s)
        with contextlib.suppress(OSError):  # the pid is informational: a full disk fails later, clearly
            os.ftruncate(fh.fileno(), 0)
            os.write(fh.fileno(), f"{os.getpid()}\n".encode())  # unbuffered: close() has nothing to flush
        yield
    finally:
        fh.close()
