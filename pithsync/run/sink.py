"""Where a run's examined records go: the store (their rows, alerts, schedule and observation
statements, in one transaction per group), then the caller.  The one place a record is
committed, whichever process examined it (see workers.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from pithsync.base.clock import utcnow
from pithsync.base.exits import StoreError
from pithsync.base.logfmt import log_event
from pithsync.config import Config
from pithsync.core import numbers
from pithsync.core.errors import InvalidPithNumber
from pithsync.core.observation import MalformedStatement, statement
from pithsync.core.plan import (
    RecordWrite,
)
from pithsync.core.status import Verdict
from pithsync.observer import load_or_create
from pithsync.run import alerting
from pithsync.run.results import (
    RecordResult,
    Target,
    failed_result,
    internal_error,
    suffix_of,
)
from pithsync.run.scheduling import RunClock, RunSchedule
from pithsync.store import Store
from pithsync.store.observations import Leaf
from pithsync.store.peers import SplitViewFound

log = logging.getLogger("pithsync.sync")


def observation_leaves(observer: str, write: RecordWrite, observed_at: str) -> list[Leaf]:
    """The observation statements of one record's check, one per mirror asked, as log leaves.
    None for a record without a verified full number (a statement names one).  A statement
    over the size caps (core.observation) is left out and logged: the record's rows still go."""
    try:
        pith = numbers.parse_full(write.pith_number)
    except InvalidPithNumber:
        return []
    leaves = []
    for o in write.observations:
        stated = statement(
            observer, pith, o.mirror, o.fetched, o.events, o.state_sha256, o.status, observed_at
        )
        try:
            leaves.append(Leaf(write.pith_number, o.mirror, stated.encode()))
        except MalformedStatement as exc:
            log_event(
                log, logging.WARNING, "statement_skipped",
                record=write.pith_number, mirror=o.mirror, error=str(exc),
            )  # fmt: skip
    return leaves


def _split_views(group, leaves: list[Leaf], now: str) -> list[SplitViewFound]:
    """The split views of a group's records, each beside this observer's statement of the
    same check (the leaf just appended for that record and mirror)."""
    mine = {(leaf.pith_number, leaf.mirror): leaf.statement for leaf in leaves}
    found = []
    for _, write in group:
        for mirror, seen in write.split_views:
            statement = mine.get((write.pith_number, mirror))
            if statement is not None:
                found.append(SplitViewFound(write.pith_number, mirror, statement, seen, now))
    return found


class RecordSink:
    """Where examined records go, in this order: the store (with their alerts and observation
    statements, in one transaction), the log, the caller.  The one place a record is
    committed, whichever process examined it (see run/workers.py)."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        *,
        on_record: Callable[[RecordResult], None] | None = None,
        batch_records: int = 1000,
        keep_results: bool = True,
        schedule: RunSchedule | None = None,
        observer: str | None = None,
    ):
        """`observer`: the observer key's name, which statements carry (None: the store's
        observer key, made if need be)."""
        self.cfg = cfg
        self.store = store
        # Each record's next schedule, written in its group; by default at the wall clock.
        self.schedule = schedule or RunSchedule(cfg.schedule.policy(), RunClock.starting())
        self.observer = observer or load_or_create(store.path, cfg.observer.name).name
        self.on_record = on_record
        self.batch_records = batch_records
        self.keep_results = keep_results  # False: results go only to on_record (large runs)
        self.results: dict[str, RecordResult] = {}
        self.skipped = 0  # targets the run's deadline left unchecked
        self._store_failed: str | None = None

    def commit(self, run_id: str, result: RecordResult, write: RecordWrite | None) -> None:
        self.commit_many(run_id, [(result, write)])

    def commit_many(
        self, run_id: str, records: list[tuple[RecordResult, RecordWrite | None]]
    ) -> None:
        """Records examined together (a worker's message): written as one group, then each
        logged and handed on, in order."""
        if self._store_failed is not None:
            # The run is stopping (exit 4); records still finishing in the same turn of the
            # event loop must not write into the batch that is about to be rolled back.
            raise StoreError(self._store_failed)

        pending = [(result, write) for result, write in records if write is not None]
        if pending:
            try:
                self._write_groups(run_id, pending)
            except StoreError as exc:
                self._store_failed = str(exc)
                raise
            except Exception as exc:  # a bug must not stop the other records
                if len(records) > 1:  # the group was taken back whole: find the record it is in
                    for one in records:
                        self.commit_many(run_id, [one])
                    return
                result = records[0][0]
                log_event(
                    log,
                    logging.ERROR,
                    "record_failed",
                    exc_info=True,
                    record=result.pith_number,
                    error=repr(exc),
                )
                records = [
                    (
                        failed_result(
                            Target(suffix_of(result.pith_number), result.pith_number),
                            internal_error(exc),
                        ),
                        None,
                    )
                ]
        for result, write in records:
            # Journald hears about records that need attention; -v shows every record.
            level = logging.DEBUG if result.verdict is Verdict.IN_SYNC else logging.INFO
            # The mirrors' list is not built for a line nobody logs.
            if write is not None and log.isEnabledFor(level):
                mirrors = ",".join(f"{m.name}:{m.status.value}" for m in result.mirrors)
                log_event(
                    log,
                    level,
                    "record_checked",
                    record=result.pith_number,
                    verdict=result.verdict.value,
                    events=result.event_count,
                    mirrors=mirrors,
                )
            if self.keep_results:
                self.results[result.pith_number] = result
            if self.on_record is not None:
                self.on_record(result)

    def _write_groups(self, run_id: str, pending: list[tuple[RecordResult, RecordWrite]]) -> None:
        """Each group in one savepoint: the records' rows, then each record's alerts in order
        (they read the rows just written, and the alerts opened before them)."""
        for group in self.store.groups(pending):
            with self.store.group(batch_records=self.batch_records):
                self.schedule.plan(self.store, group)
                self.store.write_rows(run_id, [write for _, write in group])
                for result, _ in group:
                    alerting.record_alerts(self.cfg, self.store, run_id, result)
                now = utcnow()
                leaves = [
                    leaf for _, w in group for leaf in observation_leaves(self.observer, w, now)
                ]
                self.store.append_statements(leaves)
                self.store.record_split_views(run_id, _split_views(group, leaves, now))

    def skip(self, target: Target) -> None:
        """A target the run's budget left unchecked: nothing is written, it stays due."""
        self.skipped += 1

    def finish(self) -> None:
        self.store.commit_batch()

    def abort(self) -> None:
        self.store.rollback_batch()
