"""Verification alone, as a sync does it: `Assessor.assess` of N forged records (bundle and
state), five times on a fresh Verifier, CPU microseconds a record, sorted.  Run it from two
checkouts in turn to compare them: `(cd A && .venv/bin/python -m bench.assess_timing A)`, then B,
several times over; the minimum of each run is the figure (bench/README.md, "The redesign")."""

import gc
import sys
import time

from bench.verifytime import assess_all, forged_documents, fresh_assessor

N = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
docs = forged_documents(N)


def once() -> float:
    assessor = fresh_assessor()
    gc.collect()
    t = time.process_time()
    assess_all(assessor, docs)
    return (time.process_time() - t) / N * 1e6


print(sys.argv[1], " ".join(f"{x:.0f}" for x in sorted(once() for _ in range(5))))
