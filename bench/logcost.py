"""What the observation log costs a run, in CPU: the log's own work replayed on the statements a
real full sync wrote, timed in process.

    python -m bench.logcost STORE RECORDS

The log's work in a run (run/sink.py) is, per record, its full number parsed and one statement
built and canonically encoded per mirror asked, and, per group, the statements appended
(store/observations.py: compressed, leaf and subtree hashes, two executemany).  `measure` reads
every statement of the store's log, parses it (not timed), then does exactly that work again into
a fresh store beside it, in groups of GROUP_RECORDS records within batches of BATCH_RECORDS as
the sink does, and signs a checkpoint: once into the empty log (a full sync's), once more into
the log that now holds them (a re-sync's: as many statements, into larger b-trees).  It returns
the CPU (time.process_time) per record of each.  The harness divides them by figures 6a and 6b,
measured in the same session: "observation log: X% of the full sync's CPU, Y% of the
re-sync's".
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from itertools import groupby
from pathlib import Path

from pithsync.base.clock import utcnow
from pithsync.core import numbers
from pithsync.core.note import NoteSigner
from pithsync.core.observation import parse_statement, statement
from pithsync.store import Store
from pithsync.store.observations import Leaf

GROUP_RECORDS = 64  # a worker's message of records, the most one group holds (run/workers.py)
# A real run's batch ends at 1,000 records or after a second (RecordSink, store.group); a full
# sync here writes 300-400 records a second, so the replay commits at least as often as a run.
BATCH_RECORDS = 250


def measure(db_path: Path | str, records: int) -> dict:
    """The log's CPU per record, replayed on the statements of the store at `db_path`: once into
    an empty log (the full sync), then once more into that log (the re-sync), each pass ending
    with a signed checkpoint as a run does.

    Returns:
        {"records", "statements", "full_cpu_s", "resync_cpu_s", "full_ms_per_record",
        "resync_ms_per_record"}.
    """
    source = Store.open(str(db_path))
    try:
        parsed = [parse_statement(s) for s in source.log_statements(0, source.log_size())]
    finally:
        source.close()
    by_record = [list(g) for _, g in groupby(parsed, key=lambda s: str(s.pith_number))]
    signer = NoteSigner("bench.example/logcost", bytes(32))
    with tempfile.TemporaryDirectory(dir=Path(db_path).parent) as tmp:
        store = Store.open(str(Path(tmp) / "log.db"))
        try:
            full_s, resync_s = (_append_all(store, by_record, signer) for _ in range(2))
        finally:
            store.close()
    per = max(1, records)
    return {
        "records": records,
        "statements": len(parsed),
        "full_cpu_s": full_s,
        "resync_cpu_s": resync_s,
        "full_ms_per_record": full_s / per * 1000,
        "resync_ms_per_record": resync_s / per * 1000,
    }


def _append_all(store: Store, by_record: list[list], signer: NoteSigner) -> float:
    """Every record's statements appended as a run's sink does, then a checkpoint signed: the
    CPU seconds it took."""
    started = time.process_time()
    for at in range(0, len(by_record), GROUP_RECORDS):
        with store.group(batch_records=BATCH_RECORDS):
            now = utcnow()
            leaves = [
                leaf for seen in by_record[at : at + GROUP_RECORDS] for leaf in _leaves(seen, now)
            ]
            store.append_statements(leaves)
    store.sign_checkpoint(signer)
    return time.process_time() - started


def _leaves(seen: list, now: str) -> list[Leaf]:
    """One record's statements built again as the sink builds them (observation_leaves)."""
    pith = numbers.parse_full(str(seen[0].pith_number))
    return [
        Leaf(
            str(pith),
            s.mirror,
            statement(
                s.observer,
                pith,
                s.mirror,
                s.fetched,
                s.events,
                s.state_sha256,
                s.mirror_status,
                now,
            ).encode(),
        )  # fmt: skip
        for s in seen
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.logcost", description=__doc__)
    ap.add_argument("store", type=Path)
    ap.add_argument("records", type=int)
    args = ap.parse_args(argv)
    print(json.dumps(measure(args.store, args.records), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
