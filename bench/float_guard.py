"""canon() over the values verification hands it, with the byte scan and with one regex
(`python -m bench.float_guard [N] [REPS]`)."""

import re
import statistics
import sys
import time
import types

import orjson

from bench.verifytime import assess_all, forged_documents, fresh_assessor
from pithsync.core import canonical

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
REPS = int(sys.argv[2]) if len(sys.argv) > 2 else 9
values = []
shim = types.SimpleNamespace(
    **{k: getattr(orjson, k) for k in dir(orjson) if not k.startswith("__")}
)


def dumps(v, option=None):
    values.append(v)
    return orjson.dumps(v, option=option)


shim.dumps = dumps
canonical.orjson = shim
# Forged and verified with the shim in place: every value canon encodes on the way is kept.
assess_all(fresh_assessor(), forged_documents(N))
canonical.orjson = orjson
print(f"{len(values)} values canon encoded during verification of {N} records")
SMALL_FLOAT = re.compile(rb"(?:^|[:,\[])-?0\.0000|[0-9]e-")
scan = canonical._small_float_in
PLAIN = re.compile(rb"0\.0000|[0-9]e-")
guards = {
    "scan": scan,
    "regex": lambda out: SMALL_FLOAT.search(out) is not None,
    "plain": lambda out: PLAIN.search(out) is not None,
}
print(
    "plain-regex slow paths:",
    sum(
        PLAIN.search(orjson.dumps(v, option=canonical._ORJSON_OPTIONS)) is not None for v in values
    ),
)
res = {k: [] for k in guards}
for rep in range(REPS):
    for name in ["scan", "regex", "plain"] if rep % 2 == 0 else ["plain", "regex", "scan"]:
        canonical._small_float_in = guards[name]
        t = time.perf_counter()
        for v in values:
            canonical.canon(v)
        res[name].append(time.perf_counter() - t)
canonical._small_float_in = scan
for k, v in res.items():
    print(
        f"canon with {k:5}: median {statistics.median(v) / N * 1e6:7.1f} us/record "
        f"({', '.join(f'{x:.3f}' for x in v)})"
    )
