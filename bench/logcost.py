"""What the observation log costs a run, in CPU: the log's own work replayed on the statements a
real full sync wrote, timed in process.

    python -m bench.logcost STORE RECORDS

The log's work in a run (run/sink.py) is, per record, its full number parsed and one statement
built and canonically encoded per mirror asked, and, per group, the statements appended
(store/observations.py: compressed, leaf and subtree hashes, two executemany).  `measure` reads
every statement of the store's log, parses it (not timed), then does exactly that work again into
a fresh store beside it, in groups of GROUP_RECORDS records within batches of BATCH_RECORDS as
the sink does, and returns its CPU (time.process_time) per record.  The run signs one checkpoint
at its end (a root and one Ed25519 signature): not counted, it does not grow with the records.
The harness divides this by figure 6a and 6b, measured in the same session: "observation log:
X% of the full sync's CPU, Y% of the re-sync's" (a re-sync appends as many statements).
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
from pithsync.core.observation import parse_statement, statement
from pithsync.store import Store
from pithsync.store.observations import Leaf

GROUP_RECORDS = 64  # a worker's message of records, the most one group holds (run/workers.py)
BATCH_RECORDS = 1000  # RecordSink's default


def measure(db_path: Path | str, records: int) -> dict:
    """The log's CPU per record, replayed on the statements of the store at `db_path`.

    Returns:
        {"records", "statements", "cpu_s", "cpu_ms_per_record"}.
    """
    source = Store.open(str(db_path))
    try:
        parsed = [parse_statement(s) for s in source.log_statements(0, source.log_size())]
    finally:
        source.close()
    by_record = [list(g) for _, g in groupby(parsed, key=lambda s: str(s.pith_number))]
    with tempfile.TemporaryDirectory(dir=Path(db_path).parent) as tmp:
        store = Store.open(str(Path(tmp) / "log.db"))
        try:
            started = time.process_time()
            for at in range(0, len(by_record), GROUP_RECORDS):
                with store.group(batch_records=BATCH_RECORDS):
                    now = utcnow()
                    leaves = [
                        leaf
                        for seen in by_record[at : at + GROUP_RECORDS]
                        for leaf in _leaves(seen, now)
                    ]
                    store.append_statements("bench", leaves)
            store.commit_batch()
            cpu_s = time.process_time() - started
        finally:
            store.close()
    return {
        "records": records,
        "statements": len(parsed),
        "cpu_s": cpu_s,
        "cpu_ms_per_record": cpu_s / max(1, records) * 1000,
    }


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
