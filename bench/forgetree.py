"""The forged mirror tree: N records signed with the forge's test key, laid out as static files
under PROTOCOL.md's URL layout, cached on disk so repeated runs never re-sign.

    <cache>/<fingerprint>/root/pith/<suffix>/bundle.json
    <cache>/<fingerprint>/root/pith/<suffix>/state.json
    <cache>/<fingerprint>/root/.well-known/pith/<suffix>/bundle.json   (hard link to the bundle)
    <cache>/<fingerprint>/numbers.txt                                   (record i on line i)

Record i is `forge.forge_record(i)`, which is deterministic (Ed25519 signatures are too), so the
tree for N records is a prefix of the tree for any larger N: asking for more records only signs
the missing ones, and asking for fewer reuses the tree as it is.  The fingerprint is a hash of the
forge and of the code that shapes its output, so a change there builds a fresh tree.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pithsync
from pithsync.testing import forge

# The modules whose code decides the bytes of a forged record.
_SOURCES = ("testing/forge.py", "core/canonical.py", "core/numbers.py", "core/merge.py")


def fingerprint() -> str:
    h = hashlib.sha256()
    pkg = Path(pithsync.__file__).parent
    for rel in _SOURCES:
        h.update(rel.encode() + b"\0" + (pkg / rel).read_bytes() + b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Tree:
    root: Path  # the document root every mirror serves
    numbers: tuple[str, ...]  # pith numbers, record i at index i
    built_s: float  # seconds spent signing in this call (0 when all came from the cache)
    signed: int  # records signed in this call

    def suffix(self, i: int) -> str:
        return self.numbers[i].rsplit(":", 1)[-1]

    def bundle_path(self, i: int) -> Path:
        return self.root / "pith" / self.suffix(i) / "bundle.json"

    def state_path(self, i: int) -> Path:
        return self.root / "pith" / self.suffix(i) / "state.json"


def _write_record(root: Path, i: int) -> str:
    forged = forge.forge_record(i)
    bundle = forged.bundle()
    suffix = forged.suffix
    d = root / "pith" / suffix
    d.mkdir(parents=True, exist_ok=True)
    (d / "bundle.json").write_bytes(forge.dumps(bundle))
    (d / "state.json").write_bytes(forge.dumps(bundle["state"]))
    wk = root / ".well-known" / "pith" / suffix
    wk.mkdir(parents=True, exist_ok=True)
    link = wk / "bundle.json"
    if link.exists():
        link.unlink()
    try:
        os.link(d / "bundle.json", link)
    except OSError:  # a filesystem without hard links
        shutil.copyfile(d / "bundle.json", link)
    return forged.pith_number


def _write_chunk(args: tuple[str, int, int]) -> list[str]:
    root, start, stop = args
    return [_write_record(Path(root), i) for i in range(start, stop)]


def build(cache_dir: Path | str, n: int, *, processes: int = 2, log=print) -> Tree:
    """The tree holding at least records 0..n-1 (signing only those not cached yet)."""
    cache_dir = Path(cache_dir)
    fp = fingerprint()
    home = cache_dir / fp
    root = home / "root"
    numbers_file = home / "numbers.txt"
    if cache_dir.exists():  # trees made by other versions of the forge are of no further use
        for old in cache_dir.iterdir():
            if old.is_dir() and old.name != fp:
                shutil.rmtree(old, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    have = numbers_file.read_text().split() if numbers_file.exists() else []
    if len(have) >= n:
        return Tree(root, tuple(have[:n]), 0.0, 0)

    start, t0 = len(have), time.perf_counter()
    missing = n - start
    log(f"forging {missing} records ({start} cached) into {home} ...")
    chunk = 250
    jobs = [(str(root), a, min(a + chunk, n)) for a in range(start, n, chunk)]
    procs = max(1, min(processes, os.cpu_count() or 1))
    if procs > 1 and missing >= 1000:
        ctx = (
            multiprocessing.get_context("fork")
            if "fork" in multiprocessing.get_all_start_methods()
            else multiprocessing.get_context()
        )
        with ctx.Pool(procs) as pool:
            parts = pool.map(_write_chunk, jobs)
    else:
        parts = [_write_chunk(j) for j in jobs]
    new = [p for part in parts for p in part]
    all_numbers = have + new
    if len(set(all_numbers)) != len(all_numbers):
        raise RuntimeError(
            "forged pith numbers collide; the forge is no longer one record per index"
        )
    tmp = numbers_file.with_suffix(".tmp")
    tmp.write_text("\n".join(all_numbers) + "\n")
    tmp.replace(numbers_file)  # only now is the new prefix part of the cache
    built = time.perf_counter() - t0
    log(
        f"forged {missing} records in {built:.1f}s ({built / missing * 1000:.2f} ms/record, "
        f"{procs if missing >= 1000 else 1} process(es))"
    )
    return Tree(root, tuple(all_numbers[:n]), built, missing)
