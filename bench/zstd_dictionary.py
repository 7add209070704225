"""Train the zstd dictionary the store compresses bodies with (pithsync/store/bodies.py).

    python -m bench.zstd_dictionary [--records N] [--out FILE]

The samples are what the store keeps, as it keeps them: each forged record's bundle and state
as served (forge.dumps), the canonical JSON of its events and of its merged state, for records
100000.. (apart from the 0.. the benchmarks pull), and the five real seeds.  Training is
deterministic, so the same forge gives the same file.  A new dictionary goes in beside the old
ones under a new id (bodies.DICTIONARIES), never over one: old blobs name the one they used.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import zstandard

from pithsync.core.canonical import canon
from pithsync.store import bodies
from pithsync.testing import forge

REPO = Path(__file__).resolve().parent.parent
SEEDS = REPO / "pithsync" / "data" / "seeds"
SIZE = 16 * 1024  # 32 KiB and 64 KiB compress the forge's documents no better (bench/README.md)


def samples(records: int) -> list[bytes]:
    """The training samples: forged records' bodies as stored, then the seeds."""
    out = []
    for i in range(100_000, 100_000 + records):
        bundle = forge.forge_record(i, n_events=2 + i % 3).bundle()
        out += [forge.dumps(bundle), forge.dumps(bundle["state"]), canon(bundle["state"])]
        out += [canon(e) for e in bundle["events"]]
    out += [p.read_bytes() for p in sorted(SEEDS.glob("*.txt"))]
    return out


def train(records: int, dict_id: int = bodies.CURRENT) -> bytes:
    """The dictionary's bytes, trained on `samples(records)`."""
    trained = zstandard.train_dictionary(
        SIZE, samples(records), dict_id=dict_id, level=bodies.LEVEL, threads=1
    )
    return trained.as_bytes()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.zstd_dictionary", description=__doc__)
    ap.add_argument("--records", type=int, default=400)
    name = bodies.DICTIONARIES[bodies.CURRENT][0]
    ap.add_argument("--out", type=Path, default=REPO / "pithsync" / "data" / "zstd" / name)
    args = ap.parse_args(argv)
    data = train(args.records)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"{args.out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
