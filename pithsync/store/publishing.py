"""What serve, export and the evidence files read: verified documents, the best bundle of a
record, evidence rows, runs, and the status page's overview.  Read-only queries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import sqlite_utils

from pithsync.store import bodies


def records_with_state(db: sqlite_utils.Database) -> list[tuple[str, str]]:
    """(pith_number, suffix) of every record that has a merged state, by suffix."""
    query = "select pith_number, suffix from records where state is not null order by suffix"
    return db.execute(query).fetchall()


def document_index(db: sqlite_utils.Database, kind: str) -> dict[str, list[str]]:
    """pith_number -> sha256 of every stored verified document of `kind` ("bundle" or
    "state"), in one pass that reads no bodies (documents has no pith_number index)."""
    out: dict[str, list[str]] = {}
    query = "select pith_number, sha256 from documents where kind = ? order by sha256"
    for pith, sha in db.execute(query, [kind]):
        out.setdefault(pith, []).append(sha)
    return out


def stored_event_ids(db: sqlite_utils.Database, pith_number: str) -> set[str]:
    """The ids of every event stored for a record."""
    rows = db.execute("select event_id from events where pith_number = ?", [pith_number])
    return {r[0] for r in rows}


def document_first_seen(db: sqlite_utils.Database, sha256: str) -> str | None:
    """When a verified document was first stored, or None."""
    row = db.execute("select first_seen from documents where sha256 = ?", [sha256]).fetchone()
    return row[0] if row else None


def _bundles(
    db: sqlite_utils.Database, pith_number: str, shas: list[str]
) -> Iterator[tuple[str, bytes, dict, set[str]]]:
    """(sha256, bytes, parsed, event ids) of each stored bundle of a record among `shas`."""
    query = "select body from documents where sha256 = ? and kind = 'bundle' and pith_number = ?"
    for sha in shas:
        row = db.execute(query, [sha, pith_number]).fetchone()
        if row is None:
            continue
        body = bodies.expand(row[0], sha)
        try:
            bundle = json.loads(body)
            ids = {
                e["event_id"]
                for e in bundle["events"]
                if isinstance(e, dict) and isinstance(e.get("event_id"), str)
            }
        except (ValueError, KeyError, TypeError):
            continue  # cannot happen for a verified document; never serve one that is not
        yield sha, body, bundle, ids


def best_bundle(
    db: sqlite_utils.Database, pith_number: str, shas: list[str] | None = None
) -> tuple[str, bytes, dict] | None:
    """The stored verified bundle of `pith_number` whose events match the record's stored
    state best, as (sha256, exact bytes, parsed): the most events the store holds for the
    record (its state is their merge), then the fewest it does not, then the latest
    `built_at`, then the sha256.

    Args:
        db: the store's connection.
        pith_number: the record.
        shas: the candidates (from `document_index`); without them the documents table is
            scanned.
    """
    if shas is None:
        query = "select sha256 from documents where kind = 'bundle' and pith_number = ?"
        shas = [r[0] for r in db.execute(query, [pith_number])]
    known = stored_event_ids(db, pith_number)
    best_key, best = None, None
    for sha, body, bundle, ids in _bundles(db, pith_number, shas):
        key = (len(ids & known), -len(ids - known), str(bundle.get("built_at", "")), sha)
        if best_key is None or key > best_key:
            best_key, best = key, (sha, body, bundle)
    return best


def verified_documents(
    db: sqlite_utils.Database, pith_number: str, kind: str
) -> list[tuple[str, bytes]]:
    """(sha256, exact bytes) of every verified document of `kind` stored for a record."""
    rows = db.execute(
        "select sha256, body from documents where pith_number = ? and kind = ?"
        " order by first_seen, sha256",
        [pith_number, kind],
    )
    return [(sha, bodies.expand(blob, sha)) for sha, blob in rows]


def evidence_for(db: sqlite_utils.Database, pith_number: str) -> list[dict]:
    """The bad copies kept for a record, oldest first, with their reasons parsed and their
    bodies expanded (checked against body_sha256)."""
    rows = list(db.query("select * from evidence where pith_number = ? order by id", [pith_number]))
    for r in rows:
        r["reasons"] = json.loads(r["reasons"] or "[]")
        if r["body"] is not None:
            r["body"] = bodies.expand(r["body"], r["body_sha256"])
    return rows


def run(db: sqlite_utils.Database, run_id: str) -> dict | None:
    """A run's row, or None."""
    rows = list(db.query("select * from runs where run_id = ?", [run_id]))
    return rows[0] if rows else None


def last_finished_run(db: sqlite_utils.Database, *, success: bool) -> dict | None:
    """The latest finished crawl run (not an import); with success, the latest that exited 0."""
    cond = " and exit_code = 0" if success else ""
    rows = list(
        db.query(
            "select * from runs where finished_at is not null"
            f" and command not in ('import', 'untrack'){cond} order by finished_at desc limit 1"
        )
    )
    return rows[0] if rows else None


# -- the status page (publishing.statuspage) ----------------------------------------------------

# Statuses that mean a mirror lacks verified history the store holds: what its lag counts.
BEHIND_STATUSES = ("stale", "missing")


@dataclass(frozen=True)
class MirrorOverview:
    """One mirror as the store's last checks saw it.

    `behind` counts the records whose last check found it stale or missing.  `lag_s` is how far
    behind it was, at worst: over those records, the time from when the store first held a
    verified event the mirror has never been seen serving to the mirror's last check of that
    record (None when no such event: behind on no record, or only by a rollback or a removal
    of events it once served)."""

    name: str
    base_url: str
    configured: bool
    statuses: dict[str, int]  # status -> how many records its last check found so
    last_checked: str | None
    behind: int
    lag_s: float | None


@dataclass(frozen=True)
class MirrorProblem:
    """A mirror whose last check of a record did not find it ok, and why."""

    name: str
    base_url: str
    status: str
    reasons: tuple[str, ...]  # "code: message", as stored


@dataclass(frozen=True)
class DivergingRecord:
    """A record whose last check's verdict is `diverged`."""

    pith_number: str
    checked_at: str | None
    mirrors: tuple[MirrorProblem, ...]


@dataclass(frozen=True)
class OpenAlertSummary:
    """An open alert as a person reads it."""

    id: int
    kind: str
    pith_number: str | None
    mirror: str | None
    opened_at: str
    summary: str | None


@dataclass(frozen=True)
class StatusOverview:
    """What the status page shows; lists are capped, the totals are not."""

    records: int
    last_run_finished: str | None
    mirrors: tuple[MirrorOverview, ...]
    diverging_total: int
    diverging: tuple[DivergingRecord, ...]
    alerts_total: int
    alerts: tuple[OpenAlertSummary, ...]


def status_overview(db: sqlite_utils.Database, limit: int = 100) -> StatusOverview:
    """The mirrors, diverging records and open alerts, read in one snapshot by the caller.

    Args:
        db: the store's connection.
        limit: at most this many diverging records and open alerts (by pith number, by id).
    """
    run = last_finished_run(db, success=False)
    diverging_total, diverging = _diverging(db, limit)
    alerts_total, alerts = _open_alerts(db, limit)
    return StatusOverview(
        records=db.execute("select count(*) from records").fetchone()[0],
        last_run_finished=run["finished_at"] if run else None,
        mirrors=_mirror_overviews(db),
        diverging_total=diverging_total,
        diverging=diverging,
        alerts_total=alerts_total,
        alerts=alerts,
    )


def _seconds_between(start: str, end: str) -> float:
    return max(0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())


def _mirror_overviews(db: sqlite_utils.Database) -> tuple[MirrorOverview, ...]:
    counts: dict[str, dict[str, int]] = {}
    last: dict[str, str] = {}
    query = "select mirror, status, count(*), max(checked_at) from mirror_status group by 1, 2"
    for mirror, status, n, checked in db.execute(query):
        counts.setdefault(mirror, {})[status] = n
        if checked and checked > last.get(mirror, ""):
            last[mirror] = checked
    behind: dict[str, int] = {}
    lag: dict[str, float] = {}
    marks = ",".join("?" * len(BEHIND_STATUSES))
    query = (
        "select ms.mirror, ms.checked_at, (select min(e.first_seen) from events e"
        " where e.pith_number = ms.pith_number and not exists (select 1 from event_sources s"
        " where s.event_id = e.event_id and s.mirror = ms.mirror))"
        f" from mirror_status ms where ms.status in ({marks})"
    )
    for mirror, checked, oldest_unseen in db.execute(query, BEHIND_STATUSES):
        behind[mirror] = behind.get(mirror, 0) + 1
        if checked and oldest_unseen:
            lag[mirror] = max(lag.get(mirror, 0.0), _seconds_between(oldest_unseen, checked))
    rows = db.execute("select base_url, name, configured from mirrors order by name, base_url")
    return tuple(
        MirrorOverview(
            name=name,
            base_url=url,
            configured=bool(configured),
            statuses=counts.get(url, {}),
            last_checked=last.get(url),
            behind=behind.get(url, 0),
            lag_s=lag.get(url),
        )
        for url, name, configured in rows
    )


def _reason_texts(reasons_json: str | None) -> tuple[str, ...]:
    out = []
    for r in json.loads(reasons_json or "[]"):
        if isinstance(r, dict):
            out.append(f"{r.get('code')}: {r.get('message')}")
    return tuple(out)


def _diverging(db: sqlite_utils.Database, limit: int) -> tuple[int, tuple[DivergingRecord, ...]]:
    where = "from record_checks where verdict = 'diverged'"
    total = db.execute(f"select count(*) {where}").fetchone()[0]
    rows = db.execute(
        f"select pith_number, checked_at {where} order by pith_number limit ?", [limit]
    ).fetchall()
    query = (
        "select ms.name, ms.mirror, ms.status, ms.reasons from mirror_status ms"
        " where ms.pith_number = ? and ms.status != 'ok' order by ms.name, ms.mirror"
    )
    records = tuple(
        DivergingRecord(
            pith_number=pith,
            checked_at=checked,
            mirrors=tuple(
                MirrorProblem(name, url, status, _reason_texts(reasons))
                for name, url, status, reasons in db.execute(query, [pith])
            ),
        )
        for pith, checked in rows
    )
    return total, records


def _open_alerts(db: sqlite_utils.Database, limit: int) -> tuple[int, tuple[OpenAlertSummary, ...]]:
    total = db.execute("select count(*) from alerts where state = 'open'").fetchone()[0]
    rows = db.execute(
        "select id, kind, pith_number, mirror, opened_at, payload from alerts"
        " where state = 'open' order by id limit ?",
        [limit],
    )
    alerts = tuple(
        OpenAlertSummary(
            id=alert_id,
            kind=kind,
            pith_number=pith,
            mirror=mirror,
            opened_at=opened_at,
            summary=json.loads(payload or "{}").get("summary"),
        )
        for alert_id, kind, pith, mirror, opened_at, payload in rows
    )
    return total, alerts
