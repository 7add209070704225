"""Verification alone, as a sync does it: `Assessor.assess` of N forged records (bundle and
state), five times on a fresh Verifier, CPU microseconds a record, sorted.  Run it from two
checkouts in turn to compare them: `(cd A && .venv/bin/python bench/assess_timing.py A)`, then B,
several times over; the minimum of each run is the figure (bench/README.md, "The redesign")."""

import gc
import sys
import time

from pithsync.core.compare import Assessor, Fetched, MirrorCopy, Retrieval
from pithsync.core.keys import TrustStore
from pithsync.core.verify import Verifier
from pithsync.testing import forge

N = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
docs = []
for i in range(N):
    r = forge.forge_record(i)
    b = r.bundle()
    docs.append((r.suffix, forge.dumps(b), forge.dumps(b["state"])))
trust = TrustStore([forge.TEST_KEY.pinned()])
base = "http://127.0.0.1:1"


def once():
    a = Assessor(Verifier(trust))
    gc.collect()
    t = time.process_time()
    for s, bb, sb in docs:
        a.assess(
            MirrorCopy(
                base,
                Fetched(Retrieval.FOUND, f"{base}/{s}/b", bb),
                Fetched(Retrieval.FOUND, f"{base}/{s}/s", sb),
            ),
            s,
        )
    return (time.process_time() - t) / N * 1e6


print(sys.argv[1], " ".join(f"{x:.0f}" for x in sorted(once() for _ in range(5))))
