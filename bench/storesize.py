"""Bytes on disk per record: a real full pull of N forged records from three local mirrors
serving identical bytes, into a fresh store, then the store's file measured.

    python -m bench.storesize [--records N] [--server auto|nginx|python] [--keep] [--recheck]

Prints the file's size per record (after `PRAGMA wal_checkpoint(TRUNCATE)`, so the WAL holds
nothing) and the bytes of every table and index, from SQLite's `dbstat` virtual table (or, in a
build without it, estimated from the lengths of each table's columns).  --recheck pulls the
same records again, unchanged, and prints what that check added to each table and index.
`measure` is what the main benchmark (bench/harness.py) calls on the store of its full sync.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from bench.harness import DEFAULT_OUT, Bench, Options
from bench.servers import start_mirrors

REGISTRY_RECORDS = 2_500_000  # the registry's size the issue extrapolates to


def measure(db_path: Path | str, records: int) -> dict:
    """The store at `db_path`, holding `records` records, measured on disk.

    Checkpoints the WAL into the file first (TRUNCATE), so that the file is the whole store.

    Returns:
        {"records", "file_bytes", "bytes_per_record", "page_size", "method", "objects"}, with
        objects: name -> {"table": the table it belongs to, "bytes", "per_record"}, largest first.
    """
    db_path = Path(db_path)
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        owner = dict(conn.execute("select name, tbl_name from sqlite_master where type != 'view'"))
        try:
            sizes = conn.execute("select name, sum(pgsize) from dbstat group by name").fetchall()
            method = "dbstat"
        except sqlite3.OperationalError:  # SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
            sizes, method = _estimate(conn, owner), "column lengths"
    finally:
        conn.close()
    wal = db_path.with_name(db_path.name + "-wal")
    file_bytes = db_path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    per = max(1, records)
    objects = {
        name: {"table": owner.get(name, name), "bytes": size, "per_record": size / per}
        for name, size in sorted(sizes, key=lambda x: -x[1])
    }
    return {
        "records": records,
        "file_bytes": file_bytes,
        "bytes_per_record": file_bytes / per,
        "registry_gb": file_bytes / per * REGISTRY_RECORDS / 1e9,
        "page_size": page_size,
        "method": method,
        "objects": objects,
    }


def _estimate(conn: sqlite3.Connection, owner: dict[str, str]) -> list[tuple[str, int]]:
    """Bytes per table from the lengths of its columns (indexes are not counted)."""
    out = []
    for table in sorted({t for t in owner.values() if not t.startswith("sqlite_")}):
        cols = [r[1] for r in conn.execute(f"pragma table_info('{table}')")]
        total = " + ".join(f'coalesce(length("{c}"), 0)' for c in cols) or "0"
        size = conn.execute(f"select coalesce(sum({total}), 0) from '{table}'").fetchone()[0]
        out.append((table, size))
    return out


def render(m: dict, *, top: int = 30) -> str:
    """The measurement as lines of text: the total, then each table and index."""
    lines = [
        f"bytes on disk per record: {m['bytes_per_record']:,.0f} "
        f"({m['file_bytes']:,} bytes / {m['records']} records; page size {m['page_size']};"
        f" {m['registry_gb']:.1f} GB at {REGISTRY_RECORDS:,} records)",
        f"by table and index ({m['method']}):",
    ]
    for name, o in list(m["objects"].items())[:top]:
        what = name if o["table"] == name else f"{name} (index on {o['table']})"
        lines.append(f"  {o['per_record']:10,.0f} B/record  {o['bytes']:>14,}  {what}")
    if "recheck" in m:
        grown = m["recheck"]
        lines.append(f"an unchanged re-check added {grown['file_bytes_per_record']:,.0f} B/record:")
        lines += [f"  {b:10,.0f} B/record  {name}" for name, b in grown["objects"].items()]
    return "\n".join(lines)


def growth(before: dict, after: dict) -> dict:
    """What a second measurement of the same store adds: file bytes per record, and the bytes
    per record each table or index grew by (those that grew), largest first."""
    per = max(1, after["records"])
    grown = {
        name: (o["bytes"] - before["objects"].get(name, {"bytes": 0})["bytes"]) / per
        for name, o in after["objects"].items()
    }
    return {
        "file_bytes_per_record": (after["file_bytes"] - before["file_bytes"]) / per,
        "objects": dict(sorted(((k, v) for k, v in grown.items() if v), key=lambda x: -x[1])),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.storesize", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--server", choices=("auto", "nginx", "python"), default="auto")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT / "storesize")
    ap.add_argument("--keep", action="store_true", help="keep the store in <out>/run/")
    ap.add_argument("--json", action="store_true", help="print the measurement as JSON")
    ap.add_argument(
        "--recheck", action="store_true", help="pull again, unchanged, and print what it added"
    )
    args = ap.parse_args(argv)
    n = args.records
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    bench = Bench(Options(records=n, out_dir=args.out, cache_dir=DEFAULT_OUT / "cache", log=log))
    bench.work.mkdir(parents=True, exist_ok=True)
    from bench import forgetree

    bench.tree = forgetree.build(bench.cache, n, log=log)
    bench.mirrors = start_mirrors(bench.tree.root, bench.work, args.server, log=log)
    db = bench.work / f"storesize-{n}.db"
    for p in bench.work.glob(f"{db.name}*"):
        p.unlink()
    cfg, targets = bench.write_config(), bench.write_list(n)
    try:
        pulled = bench.pull("full", cfg, db, targets, n)
        m = measure(db, n)
        if args.recheck and pulled["in_sync"]:
            pulled = bench.pull("recheck", cfg, db, targets, n)
            m["recheck"] = growth(m, measure(db, n))
    finally:
        bench.mirrors.stop()
    if not pulled["in_sync"] or pulled["exit_code"] != 0:
        log(f"the pull did not end in sync (exit {pulled['exit_code']}): see {pulled['stderr']}")
        return 1
    print(json.dumps(m, indent=2) if args.json else render(m))
    if not args.keep:
        for p in bench.work.glob(f"{db.name}*"):
            p.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
