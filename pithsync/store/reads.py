"""What a sync and the record commands read: records, their last checks, mirror statuses,
validators and stored bytes.  Plain queries on the store's connection."""

from __future__ import annotations

import json
from collections.abc import Iterator

import sqlite_utils

from pithsync.base.exits import StoreError
from pithsync.core import numbers
from pithsync.core.plan import record_columns
from pithsync.store import bodies
from pithsync.store.hashes import packed, unpacked

_CHUNK = 500  # values bound per query: well under SQLite's limit on parameters


def rows_in(db: sqlite_utils.Database, sql: str, values: list, *before: object) -> Iterator[tuple]:
    """Rows of `sql`, whose one `in ({})` is filled with `values` a chunk at a time.

    Args:
        db: the store's connection.
        sql: a query with one `in ({})`.
        values: what fills it.
        before: parameters bound ahead of them.
    """
    for i in range(0, len(values), _CHUNK):
        chunk = values[i : i + _CHUNK]
        marks = ",".join("?" * len(chunk))
        yield from db.conn.execute(sql.format(marks), [*before, *chunk])


def record(db: sqlite_utils.Database, pith_number: str) -> dict | None:
    """A record's row, or None, with the canonical record, its sha256 and the source aliases
    that its state holds (None without a state)."""
    cur = db.conn.execute("select * from records where pith_number = ?", [pith_number])
    row = cur.fetchone()
    if row is None:
        return None
    out = dict(zip((d[0] for d in cur.description), row, strict=True))
    derived: tuple = (None, None, None)
    if out["state"] is not None:
        out["state"] = bodies.expand_text(out["state"])
        derived = record_columns(out["state"])
    names = ("canonical_record", "canonical_sha256", "source_aliases")
    out.update(zip(names, derived, strict=True))
    return out


def record_summaries(db: sqlite_utils.Database, pith_numbers: list[str]) -> dict[str, dict]:
    """pith_number -> the record's row without its (large) state and record JSON: what a sync
    decides on (tracked, event_count, state_sha256, has_state)."""
    sql = (
        "select pith_number, tracked, event_count, state_sha256, state is not null"
        " from records where pith_number in ({})"
    )
    return {
        pith: {
            "tracked": tracked,
            "event_count": count,
            "state_sha256": sha,
            "has_state": bool(has),
        }
        for pith, tracked, count, sha, has in rows_in(db, sql, pith_numbers)
    }


def tracked(db: sqlite_utils.Database) -> list[str]:
    """The pith numbers a sync checks, in order."""
    query = "select pith_number from records where tracked = 1 order by pith_number"
    return [r[0] for r in db.execute(query)]


def records(db: sqlite_utils.Database) -> list[dict]:
    """Every stored record, by pith number, with its last check (verdict and time, None
    before the first) and `tracked` as a bool."""
    rows = list(
        db.query(
            "select r.pith_number, r.event_count, r.state_sha256, r.tracked, r.updated_at,"
            " c.verdict as last_verdict, c.checked_at as last_checked from records r"
            " left join record_checks c on c.pith_number = r.pith_number"
            " order by r.pith_number"
        )
    )
    for r in rows:
        r["tracked"] = bool(r["tracked"])
    return rows


def last_check(db: sqlite_utils.Database, pith_number: str) -> tuple[str | None, str | None]:
    """(verdict, checked_at) of a record's last check, or (None, None)."""
    row = db.execute(
        "select verdict, checked_at from record_checks where pith_number = ?", [pith_number]
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def stored_events(db: sqlite_utils.Database, pith_number: str) -> dict[str, dict]:
    """event_id -> the verified event, for every event stored for a record.

    Raises:
        StoreError: a stored event is corrupt, or is not the event its row names.
    """
    rows = db.conn.execute("select event_id, body from events where pith_number = ?", [pith_number])
    out = {}
    for eid, blob in rows:
        event = json.loads(bodies.expand(blob))
        if event.get("event_id") != eid:
            raise StoreError(f"the stored event {eid} holds another event")
        out[eid] = event
    return out


def event_ids(db: sqlite_utils.Database, pith_numbers: list[str]) -> dict[str, tuple[str, ...]]:
    """pith_number -> the sorted ids of the verified events stored for it."""
    found: dict[str, list[str]] = {}
    sql = "select pith_number, event_id from events where pith_number in ({})"
    for pith, eid in rows_in(db, sql, pith_numbers):
        found.setdefault(pith, []).append(eid)
    return {pith: tuple(sorted(ids)) for pith, ids in found.items()}


def mirror_statuses(db: sqlite_utils.Database, pith_number: str) -> list[dict]:
    """A record's mirror_status rows, by mirror name, with their reasons parsed."""
    query = "select * from mirror_status where pith_number = ? order by name"
    rows = list(db.query(query, [pith_number]))
    for r in rows:
        r["reasons"] = json.loads(r["reasons"] or "[]")
        r["bundle_sha256"] = unpacked(r["bundle_sha256"])
        r["state_sha256"] = unpacked(r["state_sha256"])
    return rows


MirrorVerdict = tuple[str, "str | None", "str | None"]  # (status, bundle sha256, state sha256)


def mirror_verdicts(
    db: sqlite_utils.Database, pith_numbers: list[str]
) -> dict[str, dict[str, MirrorVerdict]]:
    """pith_number -> mirror base_url -> (status, bundle sha256, state sha256) of the record's
    last check."""
    sql = (
        "select pith_number, mirror, status, bundle_sha256, state_sha256 from mirror_status"
        " where pith_number in ({})"
    )
    out: dict[str, dict[str, MirrorVerdict]] = {}
    for pith, mirror, status, bundle_sha, state_sha in rows_in(db, sql, pith_numbers):
        out.setdefault(pith, {})[mirror] = (status, unpacked(bundle_sha), unpacked(state_sha))
    return out


def validators_for(db: sqlite_utils.Database, urls: list[str]) -> dict[str, dict]:
    """url -> its validators (etag, last_modified, document_sha256), for those known."""
    sql = "select url, etag, last_modified, document_sha256 from validators where url in ({})"
    return {
        url: {"url": url, "etag": etag, "last_modified": lm, "document_sha256": unpacked(sha)}
        for url, etag, lm, sha in rows_in(db, sql, urls)
    }


def document_bodies(db: sqlite_utils.Database, shas: list[str]) -> dict[str, bytes]:
    """sha256 -> exact bytes, from verified documents or from evidence (a bad copy served
    again unchanged is still that bad copy)."""
    wanted = sorted(set(shas))
    sql = "select sha256, body from documents where sha256 in ({})"
    out = {sha: bodies.expand(blob, sha) for sha, blob in rows_in(db, sql, wanted)}
    missing = [x for x in wanted if x not in out]
    sql = (
        "select body_sha256, body from evidence where body is not null"
        " and body_sha256 in ({}) group by body_sha256"
    )
    out.update((sha, bodies.expand(blob, sha)) for sha, blob in rows_in(db, sql, missing))
    return out


def verified_pairs(
    db: sqlite_utils.Database, pith_numbers: list[str], trust_id: str
) -> dict[str, set[tuple[str, str]]]:
    """pith_number -> the (bundle sha256, state sha256) pairs that verified together under
    `trust_id`."""
    sql = (
        "select pith_number, bundle_sha256, state_sha256 from verified_copies"
        " where trust_id = ? and pith_number in ({})"
    )
    out: dict[str, set[tuple[str, str]]] = {}
    for pith, bundle_sha, state_sha in rows_in(db, sql, pith_numbers, packed(trust_id)):
        out.setdefault(pith, set()).add((unpacked(bundle_sha), unpacked(state_sha)))
    return out


def numbers_for_suffixes(db: sqlite_utils.Database, suffixes: list[str]) -> dict[str, str]:
    """suffix -> the full pith number stored with it."""
    sql = "select suffix, pith_number from records where suffix in ({})"
    return dict(rows_in(db, sql, suffixes))


# The records an alias names, exactly or by lower case.  The first condition, implied by the
# others, is what the index aliases_lower_value answers; without it the query scans every alias.
ALIAS_QUERY = (
    "select distinct pith_number from aliases where lower(alias_value) = lower(?)"
    " and (alias_value = ? or lower(alias_value) = ?)"
)


def resolve(db: sqlite_utils.Database, text: str) -> list[str]:
    """Full numbers of the stored records that `text` names: a suffix prefix, or an alias."""
    ref = None
    try:
        ref = numbers.parse_ref(text)
    except Exception:
        pass
    if ref is not None:
        # An equality or a range, which use the suffix index: LIKE can't use it and scans every
        # record.  Suffixes are upper-case base32: all sort below "~".
        if ref.is_prefix:
            found = [
                r[0]
                for r in db.execute(
                    "select pith_number from records where suffix >= ? and suffix < ?",
                    [ref.suffix, ref.suffix + "~"],
                )
            ]
        else:
            found = list(numbers_for_suffixes(db, [ref.suffix]).values())
        if found:
            return sorted(found)
    value = text.strip()
    for candidate in {value, value.lower()}:
        rows = db.execute(ALIAS_QUERY, [candidate] * 3).fetchall()
        if rows:
            return sorted(r[0] for r in rows)
    return []
