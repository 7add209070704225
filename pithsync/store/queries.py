"""The read side of the Store facade: each query method a one-line call to the module that
holds the query (reads, alerts, journal, publishing), on the store's connection."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlite_utils

from pithsync.core.schedule import Coverage, ScheduleState
from pithsync.core.tlog import Tile
from pithsync.store import (
    alerts,
    connection,
    journal,
    observations,
    peers,
    publishing,
    reads,
    schedule,
)
from pithsync.store.schedule import DueKey


class StoreQueries:
    """Queries on `self.db`; `Store` adds the opening and the writing."""

    db: sqlite_utils.Database
    path: str

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

    def size(self) -> tuple[int, int]:
        """The store's bytes on disk (its file and WAL), and how many of them are free pages."""
        return connection.file_bytes(self.path), connection.free_bytes(self.db)

    # -- records (reads) ----------------------------------------------------------------------
    def record(self, pith_number: str) -> dict | None:
        """See reads.record."""
        return reads.record(self.db, pith_number)

    def record_summary(self, pith_number: str) -> dict | None:
        """A record's summary (see reads.record_summaries), or None."""
        return reads.record_summaries(self.db, [pith_number]).get(pith_number)

    def record_summaries(self, pith_numbers: list[str]) -> dict[str, dict]:
        """See reads.record_summaries."""
        return reads.record_summaries(self.db, pith_numbers)

    def tracked(self) -> list[str]:
        """See reads.tracked."""
        return reads.tracked(self.db)

    # -- the schedule ---------------------------------------------------------------------------
    def schedule_states(self, pith_numbers: list[str]) -> dict[str, ScheduleState]:
        """See schedule.load_states."""
        return schedule.load_states(self.db, pith_numbers)

    def take_due(
        self, now: float, limit: int, after: DueKey | None = None
    ) -> list[tuple[str, ScheduleState, DueKey]]:
        """See schedule.take_due."""
        return schedule.take_due(self.db, now, limit, after)

    def due_count(self, now: float) -> int:
        """See schedule.due_count."""
        return schedule.due_count(self.db, now)

    def coverage(self, now: float, max_interval: float) -> Coverage:
        """See schedule.coverage."""
        return schedule.coverage(self.db, now, max_interval)

    def records(self) -> list[dict]:
        """See reads.records."""
        return reads.records(self.db)

    def last_check(self, pith_number: str) -> tuple[str | None, str | None]:
        """See reads.last_check."""
        return reads.last_check(self.db, pith_number)

    def stored_events(self, pith_number: str) -> dict[str, dict]:
        """See reads.stored_events."""
        return reads.stored_events(self.db, pith_number)

    def event_ids(self, pith_numbers: list[str]) -> dict[str, tuple[str, ...]]:
        """See reads.event_ids."""
        return reads.event_ids(self.db, pith_numbers)

    def mirror_statuses(self, pith_number: str) -> list[dict]:
        """See reads.mirror_statuses."""
        return reads.mirror_statuses(self.db, pith_number)

    def mirror_verdicts(self, pith_numbers: list[str]) -> dict[str, dict[str, reads.MirrorVerdict]]:
        """See reads.mirror_verdicts."""
        return reads.mirror_verdicts(self.db, pith_numbers)

    def validators_for(self, urls: list[str]) -> dict[str, dict]:
        """See reads.validators_for."""
        return reads.validators_for(self.db, urls)

    def validators_with_bodies(self, urls: list[str]) -> tuple[dict[str, dict], dict[str, bytes]]:
        """validators_for(urls), and the stored bytes (document_bodies) each of them names."""
        validators = reads.validators_for(self.db, urls)
        shas = [v["document_sha256"] for v in validators.values() if v.get("document_sha256")]
        return validators, reads.document_bodies(self.db, shas)

    def document_bodies(self, shas: list[str]) -> dict[str, bytes]:
        """See reads.document_bodies."""
        return reads.document_bodies(self.db, shas)

    def document_body(self, sha256: str) -> bytes | None:
        """The stored bytes of one document (see reads.document_bodies), or None."""
        return reads.document_bodies(self.db, [sha256]).get(sha256)

    def verified_pairs(self, pith_numbers: list[str], trust_id: str) -> dict[str, set]:
        """See reads.verified_pairs."""
        return reads.verified_pairs(self.db, pith_numbers, trust_id)

    def numbers_for_suffixes(self, suffixes: list[str]) -> dict[str, str]:
        """See reads.numbers_for_suffixes."""
        return reads.numbers_for_suffixes(self.db, suffixes)

    def resolve(self, text: str) -> list[str]:
        """See reads.resolve."""
        return reads.resolve(self.db, text)

    # -- publishing (serve, export, evidence files, metrics) ------------------------------------
    def records_with_state(self) -> list[tuple[str, str]]:
        """See publishing.records_with_state."""
        return publishing.records_with_state(self.db)

    def document_index(self, kind: str) -> dict[str, list[str]]:
        """See publishing.document_index."""
        return publishing.document_index(self.db, kind)

    def stored_event_ids(self, pith_number: str) -> set[str]:
        """See publishing.stored_event_ids."""
        return publishing.stored_event_ids(self.db, pith_number)

    def document_first_seen(self, sha256: str) -> str | None:
        """See publishing.document_first_seen."""
        return publishing.document_first_seen(self.db, sha256)

    def best_bundle(
        self, pith_number: str, shas: list[str] | None = None
    ) -> tuple[str, bytes, dict] | None:
        """See publishing.best_bundle."""
        return publishing.best_bundle(self.db, pith_number, shas)

    def verified_documents(self, pith_number: str, kind: str) -> list[tuple[str, bytes]]:
        """See publishing.verified_documents."""
        return publishing.verified_documents(self.db, pith_number, kind)

    def evidence_for(self, pith_number: str) -> list[dict]:
        """See publishing.evidence_for."""
        return publishing.evidence_for(self.db, pith_number)

    def run(self, run_id: str) -> dict | None:
        """See publishing.run."""
        return publishing.run(self.db, run_id)

    def last_finished_run(self, *, success: bool) -> dict | None:
        """See publishing.last_finished_run."""
        return publishing.last_finished_run(self.db, success=success)

    def status_overview(self, limit: int = 100) -> publishing.StatusOverview:
        """See publishing.status_overview (call it inside `snapshot()` for one state)."""
        return publishing.status_overview(self.db, limit)

    # -- alerts and the journal -------------------------------------------------------------
    def unreachable_counts(self, pith_number: str) -> dict[str, int]:
        """See alerts.unreachable_counts."""
        return alerts.unreachable_counts(self.db, pith_number)

    def open_alerts_for(self, pith_number: str, mirrors: list[str]) -> list[dict]:
        """See alerts.open_alerts_for."""
        return alerts.open_alerts_for(self.db, pith_number, mirrors)

    def pending_notifications(self, channel: str, limit: int = 1000) -> list[dict]:
        """See alerts.pending_notifications."""
        return alerts.pending_notifications(self.db, channel, limit)

    def alerts(self, open_only: bool = False) -> list[dict]:
        """See alerts.alerts."""
        return alerts.alerts(self.db, open_only)

    def open_alert_counts(self) -> dict[str, int]:
        """See alerts.open_alert_counts."""
        return alerts.open_alert_counts(self.db)

    def undelivered_counts(self) -> dict[str, int]:
        """See alerts.undelivered_counts."""
        return alerts.undelivered_counts(self.db)

    def journal(self, since: str | None = None) -> list[dict]:
        """See journal.entries."""
        return journal.entries(self.db, since)

    def verify_journal(self) -> list[str]:
        """See journal.verify."""
        return journal.verify(self.db)

    # -- the observation log (reads) ----------------------------------------------------------
    def log_size(self) -> int:
        """How many statements the observation log holds."""
        return observations.read_head(self.db).size

    def observer_checkpoint(self) -> bytes | None:
        """The latest signed checkpoint note of the observation log, or None."""
        latest = observations.latest_checkpoint(self.db)
        return None if latest is None else latest[1]

    def observed_record(self, pith_number) -> dict | None:
        """A record's `log/records` object (see observations.observed_record), or None."""
        return observations.observed_record(self.db, str(pith_number))

    def observed_numbers(self) -> list[str]:
        """The records with a statement under the latest checkpoint."""
        latest = observations.latest_checkpoint(self.db)
        return [] if latest is None else observations.observed_numbers(self.db, latest[0])

    def log_tile(self, tile: Tile) -> bytes:
        """A hash tile of the log (TileError when the log does not hold all of it)."""
        return observations.tile(self.db, tile)

    def log_entries(self, tile: Tile) -> bytes:
        """An entry bundle of the log (TileError when the log does not hold all of it)."""
        return observations.entries(self.db, tile)

    def log_statements(self, start: int, end: int) -> list[bytes]:
        """The statements of leaves [start, end)."""
        return observations.statements(self.db, start, end)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The inclusion proof of leaf `index` in the log's tree of `size` leaves."""
        return observations.inclusion_proof(self.db, index, size)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """The consistency proof between the log's trees of `old` and `new` leaves."""
        return observations.consistency_proof(self.db, old, new)

    def statements_of(self, pith_number: str, mirror: str | None = None, limit: int = 500):
        """(leaf index, mirror, statement) of a record's statements under the latest checkpoint
        (of one mirror, or of all), newest first, at most `limit`."""
        return observations.statements_of(self.db, pith_number, mirror, limit)

    def log_root(self, size: int) -> bytes:
        """The root hash of the log's tree of `size` leaves."""
        return observations.root_hash(self.db, size)

    # -- peers --------------------------------------------------------------------------------
    def peer_checkpoint(self, url: str) -> bytes | None:
        """The last signed checkpoint of the peer at `url` found consistent (peers.py)."""
        return peers.last_checkpoint(self.db, url)

    def peer_rewrites(self, url: str | None = None) -> list[dict]:
        """The rewrites of peers' logs found, each with both signed checkpoints."""
        return peers.rewrites(self.db, url)

    def split_views(self, pith_number: str) -> list[dict]:
        """The split views kept for a record, each with both statements, newest first."""
        return peers.split_views(self.db, pith_number)

    def open_alert_in(self, scope: str) -> bool:
        """Whether an alert of `scope` is open."""
        return peers.open_alert(self.db, scope)
