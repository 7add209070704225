"""The run: one orchestrator for a sync of many records, in one process or several.

It plays python-tuf's `Updater` role: the only place that strings the steps together, with
each step a plain call a reader can follow.  Per record: fetch -> verify -> compare (the
engine, over the pure core) -> store, with the record's alerts in the same transaction (the
sink) -> the caller's `on_record` (output).  After the records: the run's row and summary,
alert delivery and metrics (after.py).  A large run forks worker processes (workers.py) that
fetch, verify and compare; the parent alone stores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pithsync.base.exits import ExitCode, exit_code_for_verdicts
from pithsync.base.logfmt import log_event
from pithsync.config import Config
from pithsync.fetch import Fetcher
from pithsync.peers import PeerHead, check_peers
from pithsync.run import workers
from pithsync.run.after import after_run
from pithsync.run.engine import RecordSink, SyncEngine, rare_gc_passes, run_event_loop
from pithsync.run.results import RecordResult, RunTally, Target
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


def _examine(
    cfg: Config,
    store: Store,
    run_id: str,
    targets: list[Target],
    sink: RecordSink,
    peers: list[PeerHead],
) -> None:
    """Every target examined and handed to `sink`: by worker processes, or in this one."""
    processes = workers.worker_count(cfg, targets, store.path)
    pool = None
    if processes:
        pool = workers.WorkerPool.start(cfg, store, run_id, targets, processes, peers=peers)

    async def in_process() -> None:
        async with Fetcher(cfg.crawl, SyncEngine.policy_for(cfg)) as fetcher:
            engine = SyncEngine(cfg, store, fetcher, sink=sink, peers=peers)
            await engine.run(run_id, targets)

    with rare_gc_passes():
        if pool is not None:
            pool.collect(sink)
        else:
            run_event_loop(in_process)


def sync_records(
    cfg: Config,
    store: Store,
    targets: list[Target],
    command: str,
    *,
    on_record: Callable[[RecordResult], None] | None = None,
) -> RunOutcome:
    """Sync `targets` from every mirror: verify, compare, store, alert.  The peers' logs are
    checked first, and their statements are part of each record's comparison.

    Args:
        cfg: the configuration (mirrors, pinned keys, crawl limits, alerts).
        store: the store, opened for writing under the run lock.
        targets: the records to sync.
        command: what the run is called in the journal (`pull`, `sync`).
        on_record: called with each record's result once it is committed, in completion order.

    Returns:
        The run's id, its exit code (from the verdicts) and its counts.

    Raises:
        StoreError: the store failed; what was committed before stays committed.
    """
    run_id = store.begin_run(command)
    tally = RunTally()

    def committed(result: RecordResult) -> None:
        tally.add(result)
        if on_record is not None:
            on_record(result)

    sink = RecordSink(cfg, store, on_record=committed, keep_results=False)
    heads = run_event_loop(lambda: _check_peers(cfg, store, run_id)) if cfg.peers else []
    _examine(cfg, store, run_id, targets, sink, heads)
    code = exit_code_for_verdicts(v for v, n in tally.by_verdict.items() if n)
    summary = tally.summary()
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
    after_run(cfg, store, run_id, tally)
    return RunOutcome(run_id, code, tally)
