"""`status`: what the store holds of each record, read-only.  Apart from the store it needs
nothing of the run (no HTTP client), so it starts as quickly as a store can be opened."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from pithsync.base.exits import ExitCode, UsageError
from pithsync.cli.common import open_store
from pithsync.cli.output import Output
from pithsync.config import Config
from pithsync.store import Store

RECORD_COLUMNS = [
    "pith number",
    "tracked",
    "events",
    "state_sha256",
    "updated",
    "last verdict",
    "last checked",
]


def cmd_status(args, cfg: Config, out: Output) -> int:
    """What the store holds, one row per record, sorted by pith number.

    `status --json`: {"records": [RECORD, ...]}, where RECORD is
    {"pith_number": str, "tracked": bool, "event_count": int, "state_sha256": str | null,
     "updated_at": str | null, "last_verdict": str | null, "last_checked": str | null};
    last_verdict is the verdict of the record's last check (in_sync, degraded, diverged,
    unverifiable) and last_checked its time (ISO 8601 UTC), both null before the first.
    Beside "records", "coverage": {"tracked": int, "due": int, "overdue": int,
    "never_checked": int, "oldest_check": str | null}: records tracked, due for a check now,
    last checked longer than [schedule] max_interval ago, never checked, and the time of the
    oldest last check.  "store": {"bytes": int, "free_bytes": int}: the store's file and WAL on
    disk, and how much of that is free pages (`pithsync compact` returns them to the disk).
    `status PITH --json`: RECORD with "mirrors": [{"name", "base_url", "status", "checked_at",
    "reasons"}], or {"records": [...]} of those when PITH names several records."""
    with open_store(cfg, lock=False) as store:
        if args.pith:
            show_records(store, args.pith, out)
        else:
            show_all(store, out, coverage_of(store, cfg), store_size_of(store))
    return ExitCode.OK


def coverage_of(store: Store, cfg: Config) -> dict:
    """The schedule's coverage figures now (see cmd_status)."""
    now = time.time()
    c = store.coverage(now, cfg.schedule.max_interval)
    oldest = None
    if c.oldest_check_age is not None:
        when = datetime.fromtimestamp(now - c.oldest_check_age, UTC)
        oldest = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "tracked": c.tracked,
        "due": c.due,
        "overdue": c.overdue,
        "never_checked": c.never_checked,
        "oldest_check": oldest,
    }


def store_size_of(store: Store) -> dict:
    """The store's size on disk and its free pages' share of it (see cmd_status)."""
    size, free = store.size()
    return {"bytes": size, "free_bytes": free}


def show_all(store: Store, out: Output, coverage: dict, size: dict) -> None:
    """Every stored record: one row each, then the coverage and store lines; or
    `{"records": [...], "coverage": {...}, "store": {...}}` under --json."""
    recs = store.records()
    if out.as_json:
        out.json({"records": recs, "coverage": coverage, "store": size})
        return
    rows = [
        [
            r["pith_number"],
            "yes" if r["tracked"] else "no",
            str(r["event_count"]),
            (r["state_sha256"] or "-")[:16],
            r["updated_at"] or "-",
            r["last_verdict"] or "-",
            r["last_checked"] or "-",
        ]
        for r in recs
    ]
    out.table("records", RECORD_COLUMNS, rows)
    out.line("  ".join(f"{k}={'-' if v is None else v}" for k, v in coverage.items()))
    line = f"store={size['bytes'] / 1e6:,.1f}MB  free={size['free_bytes'] / 1e6:,.1f}MB"
    if size["free_bytes"] * 10 >= size["bytes"] > 0:  # a tenth free: worth a compaction
        line += "  (`pithsync compact` returns the free pages to the disk)"
    out.line(line)


def show_records(store: Store, reference: str, out: Output) -> None:
    """The records `reference` names (a number, suffix, short form or alias), each with its
    mirrors.

    Raises:
        UsageError: no stored record matches it.
    """
    matches = store.resolve(reference)
    if not matches:
        raise UsageError(f"no stored record matches {reference[:80]!r}")
    docs = [status_of(store, p) for p in sorted(matches)]
    if out.as_json:
        out.json(docs[0] if len(docs) == 1 else {"records": docs})
        return
    for d in docs:
        out.line(
            f"{d['pith_number']}  events={d['event_count']}"
            f"  state_sha256={d['state_sha256']}  tracked={d['tracked']}"
            f"  last_verdict={d['last_verdict'] or '-'}"
            f"  last_checked={d['last_checked'] or '-'}"
        )
        mirrors = [[m["name"], m["status"], m["checked_at"] or "-"] for m in d["mirrors"]]
        out.table("mirrors", ["mirror", "status", "checked"], mirrors)


def status_of(store: Store, pith_number: str) -> dict:
    """One record's `status PITH` document (see cmd_status)."""
    rec = store.record(pith_number)
    verdict, checked = store.last_check(pith_number)
    mirrors = [
        {
            "name": m["name"],
            "base_url": m["mirror"],
            "status": m["status"],
            "checked_at": m["checked_at"],
            "reasons": m["reasons"],
        }
        for m in store.mirror_statuses(pith_number)
    ]
    return {
        "pith_number": pith_number,
        "tracked": bool(rec["tracked"]),
        "event_count": rec["event_count"],
        "state_sha256": rec["state_sha256"],
        "updated_at": rec["updated_at"],
        "last_verdict": verdict,
        "last_checked": checked,
        "mirrors": mirrors,
    }
