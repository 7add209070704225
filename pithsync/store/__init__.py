"""The verified store: one SQLite file, written through sqlite-utils.

Verified data (documents, events, record states) and evidence of bad copies live in separate
tables; the only path into the verified tables is a record's write plan (core.plan), written
by `Store.write_rows`.  Beside them, an append-only journal whose entries are hash-chained.

`Store` is a facade: each subject is a module of small functions that take the connection.

    schema       the tables and the migrations        connection   opening, pragmas, savepoint
    records      writing records, their numbers       batch        groups and the open batch
    reads        what a sync and record commands read  journal      the hash-chained journal
    alerts       alert rows and their outbox          publishing   what serve/export/evidence read
    lock         one run at a time per store          schedule     when each record is due
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import sqlite_utils

from pithsync.base.clock import utcnow
from pithsync.base.exits import NoStoreError, StoreError, StoreLocked, WrongNumberError
from pithsync.core.alerting import Decision
from pithsync.core.note import NoteSigner
from pithsync.core.plan import EncodedState, MirrorRow, RecordWrite
from pithsync.core.tlog import Checkpoint, sign_checkpoint
from pithsync.store import alerts, journal, observations, peers, records, schema
from pithsync.store.batch import Batch, groups
from pithsync.store.connection import (
    connect,
    connect_reader,
    explain_error,
    read_only_hint,
    savepoint,
    vacuum,
)
from pithsync.store.journal import GENESIS, Entry, journal_entry_sha256
from pithsync.store.lock import run_lock
from pithsync.store.queries import StoreQueries
from pithsync.store.schema import HEAL_RUN_ID, SCHEMA_VERSION

__all__ = [
    "GENESIS",
    "HEAL_RUN_ID",
    "SCHEMA_VERSION",
    "EncodedState",
    "MirrorRow",
    "NoStoreError",
    "RecordWrite",
    "Store",
    "StoreError",
    "StoreLocked",
    "WrongNumberError",
    "explain_error",
    "journal_entry_sha256",
    "run_lock",
    "utcnow",
]

T = TypeVar("T")


class Store(StoreQueries):
    """The store at `path` through the connection `db` (open one with `open` or `open_reader`).
    Writes go through one group at a time (`group`, `write_rows`), inside a batch a run keeps
    open (`commit_batch`); the reads and the alerts' writes delegate to their modules."""

    def __init__(self, db: sqlite_utils.Database, path: str):
        self.db = db
        self.path = path
        self._batch = Batch()
        self._any_open_alert: bool | None = None  # None: not known, ask the table

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str) -> Store:
        """The store for writing (pull, sync, import): creates the file, and its schema, if it
        is not there yet; never its directory (a missing one is a mistyped path)."""
        directory = os.path.dirname(os.path.abspath(path))
        if path != ":memory:" and not os.path.isdir(directory):
            raise NoStoreError(f"no directory for a store at {path}: create {directory} first")
        db = connect(path)
        try:
            schema.migrate(db)
        except sqlite3.DatabaseError as exc:
            hint = read_only_hint(path)
            raise StoreError(f"cannot open store {path}: {exc}{hint}") from None
        return cls(db, path)

    @classmethod
    def open_reader(cls, path: str) -> Store:
        """The store through a read-only SQLite connection: never writes; an older schema is
        upgraded first (see _upgrade).  What `serve`, `export`, the read-only commands and the
        sync worker processes read through.  A path that holds no store raises NoStoreError."""
        if path == ":memory:" or not Path(path).is_file():
            raise NoStoreError.at(path)
        db = connect_reader(path)
        try:
            version = schema.readable_version(db, path)
        except BaseException:
            db.close()
            raise
        if version < SCHEMA_VERSION:
            db.close()
            cls._upgrade(path, version)
            return cls.open_reader(path)
        return cls(db, path)

    @classmethod
    def _upgrade(cls, path: str, version: int) -> None:
        """Bring an older store to this schema before reading it (migrations may run for a
        read-only command, see schema); a store that cannot be written stays unreadable here."""
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
        if self._batch.is_open:
            raise StoreError("cannot disconnect in the middle of a batch")
        self.db.close()
        try:
            yield
        finally:
            self.db = connect(self.path)

    def close(self) -> None:
        """Close the connection (an open batch is rolled back by SQLite)."""
        self.db.close()

    def schema_version(self) -> int:
        """The store's schema version (0: none)."""
        return schema.schema_version(self.db)

    def compact(self) -> None:
        """Return the store's free pages to the disk: see connection.vacuum (what it needs,
        what it raises)."""
        vacuum(self.db, self.path)

    # -- transactions, groups and batches -------------------------------------------------------
    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """One atomic unit: a transaction, or a savepoint inside the open one (see savepoint)."""
        return savepoint(self.db, self.path)

    @staticmethod
    def groups(pairs: Iterable[tuple[T, RecordWrite]]) -> Iterator[list[tuple[T, RecordWrite]]]:
        """(anything, RecordWrite) pairs cut where a record repeats (see batch.groups)."""
        return groups(pairs)

    @contextlib.contextmanager
    def group(self, *, batch_records: int = 1, batch_seconds: float = 1.0) -> Iterator[None]:
        """One group of records, atomically: what the block writes (`write_rows`, then the
        records' alerts) commits or rolls back whole.

        With batch_records > 1, groups accumulate in one open transaction (each a savepoint in
        it) until that many records are written or batch_seconds pass; commit_batch() ends it.
        A crash loses the open batch whole, never part of a group.  Fewer commits keep a large
        run's writes cheap; the savepoint keeps one record's failure from costing the batch.
        """
        if batch_records > 1 and not self._batch.is_open:
            self._batch.begin(self.db)
        try:
            with savepoint(self.db, self.path):
                yield
        except BaseException:
            self._batch.drop_group()
            raise
        self._batch.keep_group()
        if self._batch.due(batch_records, batch_seconds):
            self.commit_batch()

    def commit_batch(self) -> None:
        """End the batch of groups written so far (see group)."""
        if self._batch.is_open:
            self._batch.end()
            try:
                self.db.commit()
            except sqlite3.OperationalError as exc:
                self.db.rollback()
                raise StoreError(explain_error(exc, self.path)) from None

    def rollback_batch(self) -> None:
        """Take back the open batch, every group in it."""
        if self._batch.is_open:
            self._batch.end()
            self._any_open_alert = None
            self.db.rollback()

    def _append_journal(self, run_id: str, entries: list[Entry], at: str) -> None:
        """Journal entries, chained to the head the open batch knows (else read from meta)."""
        head = self._batch.journal_head if self._batch.is_open else None
        head = journal.append(self.db, run_id, entries, at, head)
        if self._batch.is_open:
            self._batch.journal_head = head

    # -- writing --------------------------------------------------------------------------------
    def write_rows(self, run_id: str, writes: list[RecordWrite]) -> None:
        """Every row of a group of records (no record twice), and their journal entries, inside
        `group()`: see records.write_rows."""
        now = utcnow()
        entries = records.write_rows(
            self.db, run_id, writes, now, self._batch.mirrors, discovered_at=time.time()
        )
        self._append_journal(run_id, entries, now)
        self._batch.group.extend(writes)

    def append_statements(self, leaves: Sequence[observations.Leaf]) -> None:
        """Observation statements as the log's next leaves, inside `group()` beside the rows of
        their records: committed with them or not at all (see observations.append)."""
        if leaves:
            head = self._batch.log_head if self._batch.is_open else None
            head = observations.append(self.db, leaves, head)
            if self._batch.is_open:
                self._batch.log_head = head

    def sign_checkpoint(self, signer: NoteSigner) -> bytes | None:
        """Sign and keep a checkpoint of the log as committed, when it grew since the last
        one; returns the signed note, None when there is nothing new to sign."""
        self.commit_batch()
        with self.transaction():
            size = observations.read_head(self.db).size
            latest = observations.latest_checkpoint(self.db)
            if size == 0 or (latest is not None and latest[0] >= size):
                return None
            root_hash = observations.root_hash(self.db, size)
            note = sign_checkpoint(Checkpoint(signer.name, size, root_hash), [signer])
            observations.add_checkpoint(self.db, size, note, utcnow())
        return note

    def write_records(
        self,
        run_id: str,
        writes: list[RecordWrite],
        *,
        batch_records: int = 1,
        batch_seconds: float = 1.0,
    ) -> None:
        """Records' results, in order, a group at a time (see group); no alerts."""
        for group in groups((None, w) for w in writes):
            with self.group(batch_records=batch_records, batch_seconds=batch_seconds):
                self.write_rows(run_id, [w for _, w in group])

    def write_record(
        self, run_id: str, w: RecordWrite, *, batch_records: int = 1, batch_seconds: float = 1.0
    ) -> None:
        """All of one record's results, atomically (see write_records)."""
        self.write_records(run_id, [w], batch_records=batch_records, batch_seconds=batch_seconds)

    def untrack(self, run_id: str, pith_number: str) -> bool:
        """Stop syncing a record; everything stored about it stays.  False if it was not tracked."""
        with self.transaction():
            entries = records.untrack(self.db, pith_number)
            self._append_journal(run_id, entries, utcnow())
        return bool(entries)

    def begin_run(self, command: str) -> str:
        """Record the start of a run of `command`; returns its run_id."""
        run_id = uuid.uuid4().hex
        with self.transaction():
            self.db["runs"].insert({"run_id": run_id, "command": command, "started_at": utcnow()})
            entry = ("run_started", None, None, None, {"command": command})
            self._append_journal(run_id, [entry], utcnow())
        return run_id

    def finish_run(self, run_id: str, exit_code: int, summary: dict) -> None:
        """Commit the open batch and record the run's end."""
        self.commit_batch()
        with self.transaction():
            ended = {
                "finished_at": utcnow(),
                "exit_code": exit_code,
                "summary": json.dumps(summary),
            }
            self.db["runs"].update(run_id, ended)
            entry = ("run_finished", None, None, str(exit_code), summary)
            self._append_journal(run_id, [entry], utcnow())

    # -- peers ----------------------------------------------------------------------------------
    def record_peer_check(
        self, run_id: str, entry: Entry, checkpoint: tuple[str, bytes, int] | None = None
    ) -> None:
        """A peer checked at the start of a run: its journal entry (kind, None, peer url,
        status, detail) and, when consistent, its new checkpoint (name, note, size)."""
        now = utcnow()
        with self.transaction():
            if checkpoint is not None:
                name, note, size = checkpoint
                peers.save_checkpoint(self.db, name, entry[2] or "", note, size, now, run_id)
            self._append_journal(run_id, [entry], now)

    def record_split_views(self, run_id: str, found: Sequence[peers.SplitViewFound]) -> None:
        """Split views found, kept as their proof, inside `group()` beside their records."""
        if found:
            peers.save_split_views(self.db, run_id, list(found))

    def record_peer_rewrite(
        self, run_id: str, entry: Entry, rewrite: tuple[str, str, bytes, bytes], decision: Decision,
        channels: Sequence[str],
    ) -> None:  # fmt: skip
        """A rewritten peer log: the rewrite with both signed checkpoints (name, how, old, new),
        its journal entry and its alert (`decision`), in one transaction."""
        now = utcnow()
        name, how, old, new = rewrite
        with self.transaction():
            url, message = entry[2] or "", str((entry[4] or {}).get("message", ""))
            peers.save_rewrite(self.db, name, url, how, message, old, new, now, run_id)
            self._append_journal(run_id, [entry], now)
            if decision:
                self.apply_alert_decision(decision, channels, now, run_id)

    # -- alerts and their outbox: written in a record's group, beside its evidence --------------
    def apply_alert_decision(
        self, decision: Decision, channels: Sequence[str], now: str, run_id: str
    ) -> list[dict]:
        """Write a record's alert decision (see alerts.apply_decision)."""
        if decision.resolve:
            self._any_open_alert = None
        if decision.open:
            self._any_open_alert = True
        return alerts.apply_decision(self.db, decision, channels, now, run_id)

    def any_open_alert(self) -> bool:
        """Whether any alert is open; kept up to date by this Store, so that a run of records in
        sync asks the table once, not once per record."""
        if self._any_open_alert is None:
            self._any_open_alert = alerts.any_open(self.db)
        return self._any_open_alert

    def insert_alert(self, kind, scope, pith_number, mirror, fingerprint, opened_at, run_id) -> int:
        """Open an alert (see alerts.insert_alert)."""
        self._any_open_alert = True
        args = (kind, scope, pith_number, mirror, fingerprint, opened_at, run_id)
        return alerts.insert_alert(self.db, *args)

    def resolve_alert(self, alert_id: int, resolved_at: str, run_id: str, payload: dict) -> None:
        """Resolve an open alert (see alerts.resolve_alert)."""
        self._any_open_alert = None
        alerts.resolve_alert(self.db, alert_id, resolved_at, run_id, payload)

    def mark_delivered(self, outbox_id: int, at: str) -> None:
        """A notification was delivered."""
        with self.transaction():
            alerts.mark_delivered(self.db, outbox_id, at)

    def mark_failed(self, outbox_id: int, at: str, error: str) -> None:
        """A delivery attempt failed; the notification stays queued."""
        with self.transaction():
            alerts.mark_failed(self.db, outbox_id, at, error)

    def set_alert_payload(self, alert_id: int, payload: dict) -> None:
        """See alerts.set_alert_payload."""
        alerts.set_alert_payload(self.db, alert_id, payload)

    def enqueue_notification(self, alert_id, event, channels, payload, created_at) -> None:
        """See alerts.enqueue_notification."""
        alerts.enqueue_notification(self.db, alert_id, event, channels, payload, created_at)
