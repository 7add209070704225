"""The run: one orchestrator for a sync of many records, in one process or several.

It plays python-tuf's `Updater` role: the only place that strings the steps together, with
each step a plain call a reader can follow.  Per record: fetch -> verify -> compare (the
engine, over the pure core) -> store, with the record's alerts in the same transaction (the
sink), each mirror's observation statement appended to the observation log beside them -> the
caller's `on_record` (output).  After the records: a checkpoint of the log signed with the
observer key, the run's row and summary, alert delivery and metrics (after.py).  A large run
forks worker processes (workers.py) that fetch, verify and compare; the parent alone stores.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from pithsync.base.exits import ExitCode, StoreError, exit_code_for_verdicts
from pithsync.base.logfmt import log_event
from pithsync.config import Config
from pithsync.core.note import NoteSigner
from pithsync.core.schedule import Coverage
from pithsync.fetch import Fetcher
from pithsync.observer import load_or_create
from pithsync.peers import PeerHead, check_peers
from pithsync.run import workers
from pithsync.run.after import after_run
from pithsync.run.engine import SyncEngine, rare_gc_passes, run_event_loop
from pithsync.run.results import RecordResult, RunTally, Target
from pithsync.run.scheduling import Deadline, RunClock, RunSchedule
from pithsync.run.sink import RecordSink
from pithsync.store import Store

log = logging.getLogger("pithsync.sync")


@dataclass(frozen=True)
class RunOutcome:
    """What a finished run leaves its caller: its id, exit code and counts."""

    run_id: str
    code: ExitCode
    tally: RunTally


async def _check_peers(cfg: Config, store: Store, run_id: str) -> list[PeerHead]:
    """The peers' logs checked before the records (a peer never fails the run: peers.py)."""
    async with Fetcher(cfg.crawl, SyncEngine.policy_for(cfg)) as fetcher:
        return await check_peers(cfg, store, fetcher, run_id)


def sync_records(
    cfg: Config,
    store: Store,
    targets: list[Target],
    command: str,
    *,
    on_record: Callable[[RecordResult], None] | None = None,
    clock: RunClock | None = None,
    max_duration: float | None = None,
    not_taken: int = 0,
) -> RunOutcome:
    """Sync `targets` from every mirror: verify, compare, store (with each record's next
    schedule), alert.  The peers' logs are checked first, and their statements are part of
    each record's comparison.

    Args:
        cfg: the configuration (mirrors, pinned keys, crawl limits, alerts, schedule).
        store: the store, opened for writing under the run lock.
        targets: the records to sync.
        command: what the run is called in the journal (`pull`, `sync`).
        on_record: called with each record's result once it is committed, in completion order.
        clock: the run's clock (default: the wall clock from now).
        max_duration: seconds after which no record is started (None: no limit); those in
            flight finish and are stored, the rest are left untouched.
        not_taken: due records the caller left out of `targets` because the budget cannot
            reach them (counted with those the deadline left).

    Returns:
        The run's id, its exit code (from the verdicts) and its counts.

    Raises:
        StoreError: the store failed; what was committed before stays committed.
    """
    clock = clock or RunClock.starting()
    deadline = Deadline.after(max_duration)
    signer = load_or_create(store.path, cfg.observer.name)  # a bad key file stops it first
    run_id = store.begin_run(command)
    tally = RunTally()

    def committed(result: RecordResult) -> None:
        tally.add(result)
        if on_record is not None:
            on_record(result)

    schedule = RunSchedule(cfg.schedule.policy(), clock)
    sink = RecordSink(
        cfg, store, on_record=committed, keep_results=False, schedule=schedule,
        observer=signer.name,
    )  # fmt: skip
    heads = run_event_loop(lambda: _check_peers(cfg, store, run_id)) if cfg.peers else []
    kept_back = _run_signed(cfg, store, run_id, targets, sink, signer, deadline, heads)
    left = None if deadline is None else sink.skipped + kept_back + not_taken
    code = _finish(cfg, store, run_id, command, tally, left)
    coverage = store.coverage(clock.now(), cfg.schedule.max_interval)
    _warn_if_behind(cfg, coverage)
    after_run(cfg, store, run_id, tally, coverage)
    return RunOutcome(run_id, code, tally)


def _run_signed(
    cfg: Config,
    store: Store,
    run_id: str,
    targets: list[Target],
    sink: RecordSink,
    signer: NoteSigner,
    deadline: Deadline | None,
    peers: list[PeerHead],
) -> int:
    """The run's records, in this process or in workers (asking `peers` about each), then a
    checkpoint of the log signed with the observer key: also when the run is cut short or
    fails after some records.

    Returns:
        How many records the workers were never handed because the deadline passed.
    """
    n = workers.worker_count(cfg, targets, store.path)
    pool = None
    if n:
        pool = workers.WorkerPool.start(cfg, store, run_id, targets, n, deadline, peers=peers)

    async def in_process() -> None:
        async with Fetcher(cfg.crawl, SyncEngine.policy_for(cfg)) as fetcher:
            engine = SyncEngine(cfg, store, fetcher, sink=sink, peers=peers)
            await engine.run(run_id, targets, deadline=deadline)

    try:
        with rare_gc_passes():
            if pool is not None:
                pool.collect(sink)
            else:
                run_event_loop(in_process)
    except BaseException:
        # What the committed records appended is signed (if the store can be written at all);
        # the run's own error is what the caller hears.
        with contextlib.suppress(StoreError, sqlite3.Error):
            store.sign_checkpoint(signer)
        raise
    store.sign_checkpoint(signer)
    return pool.kept_back() if pool is not None else 0


def _warn_if_behind(cfg: Config, coverage: Coverage) -> None:
    """A warning when some tracked record went unchecked longer than max_interval."""
    if coverage.behind:
        log_event(
            log, logging.WARNING, "coverage_behind", tracked=coverage.tracked, due=coverage.due,
            overdue=coverage.overdue, never_checked=coverage.never_checked,
            oldest_check_age_s=_seconds(coverage.oldest_check_age),
            max_interval_s=_seconds(cfg.schedule.max_interval),
        )  # fmt: skip


def _finish(
    cfg: Config, store: Store, run_id: str, command: str, tally: RunTally, left: int | None
) -> ExitCode:
    """The run's exit code, row and journal entry, and its log line; `left`: the records a
    budget left unchecked (None: the run had no budget)."""
    code = exit_code_for_verdicts(v for v, n in tally.by_verdict.items() if n)
    summary: dict[str, int | bool] = dict(tally.summary())
    if left is not None:
        summary.update(cut=left > 0, left_due=left)
    store.finish_run(run_id, int(code), summary)
    log_event(
        log,
        logging.INFO,
        "run_finished",
        run=run_id,
        command=command,
        records=tally.records,
        **{str(k): n for k, n in summary.items()},
        exit=int(code),
    )
    return code


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
