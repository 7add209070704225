"""Two or more versions of pithsync measured side by side: CPU per record of a full sync and of
the re-sync after it, runs alternating, on the benchmark's forged mirrors (bench/harness.py).

    python -m bench.ab --records 3000 --rounds 4 before=HEAD~1 after=WORKTREE
    python -m bench.ab --records 3000 workers=WORKTREE one=WORKTREE:processes=1

A variant is LABEL=SOURCE[:KEY=VALUE,...]: SOURCE is WORKTREE (this checkout as it is), a
directory holding a pithsync/ package (another worktree, with its uncommitted edits, put first on
PYTHONPATH as it is) or a git revision (its pithsync/ exported to a temporary directory and put
first on PYTHONPATH); KEY=VALUE
pairs go into the config's [crawl] section.  Each round runs every variant once, in turn, each a
full sync on an empty store and then the re-sync; the medians and every run are printed.  The
rule it serves: a speed trick stays only if it pays at least 5% of a figure side by side.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench import forgetree, harness
from bench.servers import start_mirrors


@dataclass
class Variant:
    label: str
    source: str  # WORKTREE, a directory holding pithsync/, or a git revision
    crawl: dict[str, str]
    pythonpath: Path | None = None
    cfg: Path | None = None
    full_ms: list[float] = field(default_factory=list)
    resync_ms: list[float] = field(default_factory=list)


def parse_variant(spec: str) -> Variant:
    """LABEL=SOURCE[:KEY=VALUE,...] -> a Variant."""
    label, _, rest = spec.partition("=")
    source, _, settings = rest.partition(":")
    crawl = dict(kv.split("=", 1) for kv in settings.split(",") if kv)
    if not label or not source:
        raise SystemExit(f"bench.ab: a variant is LABEL=SOURCE[:KEY=VALUE,...], not {spec!r}")
    return Variant(label, source, crawl)


def export(rev: str, into: Path) -> Path:
    """pithsync/ as of git revision `rev`, unpacked under `into`; returns the directory to put on
    PYTHONPATH."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "pithsync"],
        cwd=harness.REPO,
        capture_output=True,
        check=True,
    ).stdout
    tar = into / "src.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    return into


def compile_package(root: Path) -> None:
    """Byte-compile root/pithsync, as an installed pithsync is: where PYTHONDONTWRITEBYTECODE
    is set (the project's machines), a source tree without its .pyc files would be compiled
    again by every pull, a cost that only the variants run from source would pay."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "pithsync")], check=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    ap.add_argument("variants", nargs="+", help="LABEL=SOURCE[:KEY=VALUE,...]")
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", type=Path, default=harness.DEFAULT_OUT / "ab")
    args = ap.parse_args(argv)
    variants = [parse_variant(s) for s in args.variants]
    opts = harness.Options(records=args.records, out_dir=args.out)
    bench = harness.Bench(opts)
    if bench.work.exists():
        subprocess.run(["rm", "-rf", str(bench.work)], check=True)
    bench.work.mkdir(parents=True)
    bench.tree = forgetree.build(harness.DEFAULT_OUT / "cache", args.records, log=print)
    bench.mirrors = start_mirrors(bench.tree.root, bench.work, "auto", log=print)
    with tempfile.TemporaryDirectory(prefix="pithsync-ab-") as tmp:
        try:
            base_cfg = bench.write_config().read_text()
            for v in variants:
                if (Path(v.source) / "pithsync" / "__init__.py").is_file():
                    v.pythonpath = Path(v.source).resolve()
                elif v.source != "WORKTREE":
                    v.pythonpath = export(v.source, Path(tmp) / v.label)
                compile_package(v.pythonpath or harness.REPO)
                extra = "".join(f"{k} = {val}\n" for k, val in v.crawl.items())
                v.cfg = bench.work / f"pithsync-{v.label}.toml"
                v.cfg.write_text(base_cfg.replace("[crawl]\n", "[crawl]\n" + extra, 1))
            run_rounds(bench, variants, args)
        finally:
            bench.mirrors.stop()
            for p in bench.work.glob("*.db*"):
                p.unlink(missing_ok=True)
    for v in variants:
        print(
            f"{v.label:<12} full {statistics.median(v.full_ms):.3f} ms/record "
            f"(runs {', '.join(f'{x:.3f}' for x in v.full_ms)}); "
            f"re-sync {statistics.median(v.resync_ms):.3f} "
            f"(runs {', '.join(f'{x:.3f}' for x in v.resync_ms)})"
        )
    return 0


def run_rounds(bench: harness.Bench, variants: list[Variant], args: argparse.Namespace) -> None:
    """Every variant once per round, in turn: a full sync on an empty store, then the re-sync."""
    lst = bench.write_list(args.records)
    for k in range(args.rounds):
        for v in variants:
            db = bench.work / f"{v.label}-{k}.db"
            with harness.pythonpath_first(v.pythonpath):
                full = bench.pull("full", v.cfg, db, lst, args.records)
                resync = bench.pull("resync", v.cfg, db, lst, args.records)
            if not (full["in_sync"] and resync["in_sync"]):
                raise SystemExit(f"bench.ab: {v.label} did not sync every record: see {db}")
            v.full_ms.append(full["cpu_ms_per_record"])
            v.resync_ms.append(resync["cpu_ms_per_record"])
            for p in bench.work.glob(f"{v.label}-{k}.db*"):
                p.unlink()


if __name__ == "__main__":
    raise SystemExit(main())
