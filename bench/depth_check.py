"""strictjson's nesting check: orjson's indented form against the plain walk, interleaved
(`python -m bench.depth_check [N] [REPS]`)."""

import gc
import statistics
import sys
import time

from bench.verifytime import assess_all, forged_documents, fresh_assessor
from pithsync.core import strictjson

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
REPS = int(sys.argv[2]) if len(sys.argv) > 2 else 11
docs = forged_documents(N)
parsed = [strictjson.loads(d) for _, bb, sb in docs for d in (bb, sb)]


def timed_assess() -> float:
    assessor = fresh_assessor()
    gc.collect()
    t = time.perf_counter()
    assess_all(assessor, docs)
    return time.perf_counter() - t


def check_all(fn):
    t = time.perf_counter()
    for v in parsed:
        fn(v, strictjson.MAX_DEPTH)
    return time.perf_counter() - t


variants = {"indented": strictjson._check_depth_indented, "walk": strictjson._check_depth}
res = {f"{w}/{v}": [] for w in ("assess", "check") for v in variants}
for rep in range(REPS):
    for v in ["indented", "walk"] if rep % 2 == 0 else ["walk", "indented"]:
        strictjson._check_depth_indented = variants[v]
        res[f"assess/{v}"].append(timed_assess())
        res[f"check/{v}"].append(check_all(variants[v]))
strictjson._check_depth_indented = variants["indented"]
pairs = [w / i for w, i in zip(res["assess/walk"], res["assess/indented"], strict=True)]
for k, v in res.items():
    print(
        f"{k:16} median {statistics.median(v) / N * 1e6:7.1f} us/record "
        f"({', '.join(f'{x:.3f}' for x in v)})"
    )
print(
    f"assess walk/indented per pair: median {statistics.median(pairs):.3f} "
    f"({', '.join(f'{p:.2f}' for p in pairs)})"
)
