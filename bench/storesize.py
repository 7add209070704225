"""Bytes on disk per record: a real full pull of N forged records from three local mirrors
serving identical bytes, into a fresh store, then the store's file measured.

    python -m bench.storesize [--records N] [--server auto|nginx|python] [--keep]

Prints the file's size per record (after `PRAGMA wal_checkpoint(TRUNCATE)`, so the WAL holds
nothing) and the bytes of every table and index, from SQLite's `dbstat` virtual table (or, in a
build without it, estimated from the lengths of each table's columns).  Then it pulls the same
records again into that store (an unchanged re-check of each) and prints the bytes that second
pull added, per record, by table and index (`growth`).  `measure` is what the main benchmark
(bench/harness.py) calls on the store of its full sync.
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
    return "\n".join(lines)


def growth(before: dict, after: dict) -> dict:
    """What a later pull added to a store: `after` less `before` (both from `measure`, of the
    same records), per record, overall and by table and index, largest first.

    Returns:
        {"records", "file_bytes", "bytes_per_record", "objects"}: objects as in `measure`.
    """
    per = max(1, after["records"])
    names = set(before["objects"]) | set(after["objects"])
    added = {
        name: after["objects"].get(name, {}).get("bytes", 0)
        - before["objects"].get(name, {}).get("bytes", 0)
        for name in names
    }
    owner = {n: o["table"] for m in (before, after) for n, o in m["objects"].items()}
    file_bytes = after["file_bytes"] - before["file_bytes"]
    return {
        "records": after["records"],
        "file_bytes": file_bytes,
        "bytes_per_record": file_bytes / per,
        "objects": {
            name: {"table": owner[name], "bytes": size, "per_record": size / per}
            for name, size in sorted(added.items(), key=lambda x: -x[1])
            if size
        },
    }


def render_growth(g: dict, *, top: int = 30) -> str:
    """The growth of one unchanged re-check of every record, as lines of text."""
    lines = [
        f"bytes added per unchanged re-check: {g['bytes_per_record']:,.0f} per record "
        f"({g['file_bytes']:,} bytes / {g['records']} records)",
        "by table and index:",
    ]
    for name, o in list(g["objects"].items())[:top]:
        what = name if o["table"] == name else f"{name} (index on {o['table']})"
        lines.append(f"  {o['per_record']:10,.0f} B/record  {o['bytes']:>14,}  {what}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.storesize", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--server", choices=("auto", "nginx", "python"), default="auto")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT / "storesize")
    ap.add_argument("--keep", action="store_true", help="keep the store in <out>/run/")
    ap.add_argument("--json", action="store_true", help="print the measurement as JSON")
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
    cfg, numbers = bench.write_config(), bench.write_list(n)
    try:
        pulled = bench.pull("full", cfg, db, numbers, n)
        if not _in_sync(pulled, log):
            return 1
        m = measure(db, n)
        repulled = bench.pull("resync", cfg, db, numbers, n)
    finally:
        bench.mirrors.stop()
    if not _in_sync(repulled, log):
        return 1
    g = growth(m, measure(db, n))
    print(
        json.dumps({**m, "recheck": g}, indent=2)
        if args.json
        else render(m) + "\n" + render_growth(g)
    )
    if not args.keep:
        for p in bench.work.glob(f"{db.name}*"):
            p.unlink()
    return 0


def _in_sync(pulled: dict, log) -> bool:
    """Whether a pull ended with every record in sync (else says why)."""
    if pulled["in_sync"] and pulled["exit_code"] == 0:
        return True
    log(f"the pull did not end in sync (exit {pulled['exit_code']}): see {pulled['stderr']}")
    return False


if __name__ == "__main__":
    raise SystemExit(main())
