"""What serve, export and the evidence files read: verified documents, the best bundle of a
record, evidence rows, runs.  Read-only queries."""

from __future__ import annotations

import json
from collections.abc import Iterator

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
