"""Train the zstd dictionaries the store compresses bodies with (pithsync/store/bodies.py).

    python -m bench.zstd_dictionary [--records N] [--out FILE]
    python -m bench.zstd_dictionary --statements [--records N] [--out FILE]

The samples are what the store keeps, as it keeps them: each forged record's bundle and state
as served (forge.dumps), the canonical JSON of its events and of its merged state, for records
100000.. (apart from the 0.. the benchmarks pull), and the five real seeds.  Training is
deterministic, so the same forge gives the same file.  A new dictionary goes in beside the old
ones under a new id (bodies.DICTIONARIES), never over one: old blobs name the one they used.

`--statements` trains the observation log's dictionary (bodies.STATEMENTS) on statements
(core.observation) about forged records 100000.., three mirrors each among several base URLs
and observers, with a mix of 200, 304 and 404 answers and random times: what a statement keeps
of the skeleton, never a benchmark's ports or observer name.
"""

from __future__ import annotations

import argparse
import hashlib
import random
from pathlib import Path

import zstandard

from pithsync.core import numbers
from pithsync.core.canonical import canon
from pithsync.core.observation import Fetch, statement
from pithsync.store import bodies
from pithsync.testing import forge

REPO = Path(__file__).resolve().parent.parent
SEEDS = REPO / "pithsync" / "data" / "seeds"
SIZE = 16 * 1024  # 32 KiB and 64 KiB compress the forge's documents no better (bench/README.md)
STATEMENTS_SIZE = 4 * 1024  # 2 to 16 KiB compress statements within 2% (bench/README.md)
MIRRORS = [
    "https://mirror.example.org",
    "https://pith.example.net/mirror",
    "http://127.0.0.1:8080",
    "https://a.example",
    "https://pith-mirror.example.edu/graph",
]
OBSERVERS = ["observer.example/pithsync", "vm/pithsync/0a1b2c3d", "pithsync.example.org/log"]


def samples(records: int) -> list[bytes]:
    """The training samples: forged records' bodies as stored, then the seeds."""
    out = []
    for i in range(100_000, 100_000 + records):
        bundle = forge.forge_record(i, n_events=2 + i % 3).bundle()
        out += [forge.dumps(bundle), forge.dumps(bundle["state"]), canon(bundle["state"])]
        out += [canon(e) for e in bundle["events"]]
    out += [p.read_bytes() for p in sorted(SEEDS.glob("*.txt"))]
    return out


def _hex(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def statement_samples(records: int) -> list[bytes]:
    """Training statements: three mirrors' statements about each of forged records 100000..,
    deterministic."""
    rng = random.Random(17)
    out = []
    for i in range(100_000, 100_000 + records):
        pith = numbers.parse_full(forge.pith_number_of(forge.make_record(i)))
        events = [f"sha256:{_hex(i, n)}" for n in range(2 + i % 3)]
        for k, mirror in enumerate(rng.sample(MIRRORS, 3)):
            status = rng.choice([200, 200, 304, 304, 404])
            found = status != 404
            fetched = [
                Fetch(
                    f"{mirror}/pith/{pith.suffix}/{doc}.json",
                    status,
                    _hex(i, k, doc) if found else None,
                )
                for doc in ("bundle", "state")
            ]
            at = (
                f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
                f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999_999):06d}Z"
            )
            stated = statement(
                OBSERVERS[i % len(OBSERVERS)], pith, mirror, fetched, events if found else [],
                _hex(i, "state") if found else None, "ok" if found else "unreachable", at,
            )  # fmt: skip
            out.append(stated.encode())
    return out


def train(records: int, dict_id: int = bodies.CURRENT) -> bytes:
    """The dictionary's bytes, trained on `samples(records)`."""
    trained = zstandard.train_dictionary(
        SIZE, samples(records), dict_id=dict_id, level=bodies.LEVEL, threads=1
    )
    return trained.as_bytes()


def train_statements(records: int, dict_id: int = bodies.STATEMENTS) -> bytes:
    """The statements' dictionary's bytes, trained on `statement_samples(records)`."""
    trained = zstandard.train_dictionary(
        STATEMENTS_SIZE,
        statement_samples(records),
        dict_id=dict_id,
        level=bodies.STATEMENT_LEVEL,
        threads=1,
    )
    return trained.as_bytes()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.zstd_dictionary", description=__doc__)
    ap.add_argument("--records", type=int, default=None, help="400; --statements: 1000")
    ap.add_argument("--statements", action="store_true", help="the observation log's dictionary")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    dict_id = bodies.STATEMENTS if args.statements else bodies.CURRENT
    if args.out is None:
        args.out = REPO / "pithsync" / "data" / "zstd" / bodies.DICTIONARIES[dict_id][0]
    if args.statements:
        data = train_statements(args.records or 1000)
    else:
        data = train(args.records or 400)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"{args.out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
