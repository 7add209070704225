"""Writing records: the one path into the verified tables.  A group of records' RecordWrites
(core.plan) becomes rows, each statement once for the whole group, and every record is kept
under the number its verified record derives.

The functions here write inside the caller's transaction and return the journal entries the
caller appends (store.journal), so that the entries and the rows commit together."""

from __future__ import annotations

import json

import sqlite_utils

from pithsync.base.exits import StoreError, WrongNumberError
from pithsync.core import numbers
from pithsync.core.alerting import record_scope
from pithsync.core.canonical import canon, sha256hex
from pithsync.core.merge import merge_state
from pithsync.core.numbers import suffix_of
from pithsync.core.plan import MirrorRow, RecordWrite, _derived_number, number_of, record_columns
from pithsync.store import bodies, schedule
from pithsync.store.hashes import packed
from pithsync.store.journal import Entry
from pithsync.store.reads import numbers_for_suffixes, record_summaries

MirrorKey = tuple[str, bool]  # (base_url, configured): a mirrors row as a run writes it


def mirror_keys(writes: list[RecordWrite]) -> set[MirrorKey]:
    """The mirrors rows a group of writes touches."""
    return {(m.base_url, m.configured) for w in writes for m in w.mirrors}


def write_rows(
    db: sqlite_utils.Database,
    run_id: str,
    writes: list[RecordWrite],
    now: str,
    mirrors_written: set[MirrorKey] = frozenset(),
    discovered_at: float | None = None,
) -> list[Entry]:
    """Every row of a group of records, in the open transaction.

    Each statement runs once for the whole group, with every record's rows: sqlite3's cost per
    statement, not SQLite's per row, was most of the writer's cost.  No record may appear twice
    in `writes` (each is decided against what the store holds).

    Args:
        db: the writer's connection, inside a transaction or savepoint.
        run_id: the run writing.
        writes: the records' write plans, in order.
        now: the rows' time.
        mirrors_written: mirrors rows the open batch already wrote (written once per batch).
        discovered_at: now in unix seconds, when tracked writes that carry no schedule (an
            import) are to be marked discovered, due at once.

    Returns:
        The journal entries of the group, in order: renumberings, then each record's outcome
        (_outcome_detail).

    Raises:
        WrongNumberError: a record would be stored under a number it does not derive.
        StoreError: a record's new state would drop events the stored one counts.
    """
    existing = record_summaries(db, [w.pith_number for w in writes])
    mirrors = {
        (m.base_url, m.configured): m
        for w in writes
        for m in w.mirrors
        if (m.base_url, m.configured) not in mirrors_written
    }
    _write_sources(db, writes, list(mirrors.values()), now)
    entries = _settle_numbers(db, writes, existing, now)
    _write_states(db, writes, existing, now)
    _write_checks(db, run_id, writes, now)
    schedule.write_states(db, [(w.pith_number, w.schedule) for w in writes if w.schedule])
    if discovered_at is not None:
        unscheduled = [w.pith_number for w in writes if w.schedule is None and w.tracked]
        schedule.mark_discovered(db, unscheduled, discovered_at)
    entries += [
        ("record_outcome", w.pith_number, None, w.verdict, _outcome_detail(w)) for w in writes
    ]
    return entries


def _outcome_detail(w: RecordWrite) -> dict:
    """A record check's `record_outcome` detail: the write's journal detail and each mirror's
    outcome, `"mirrors": [{"mirror": base_url, "status", "reasons": [code, ...]}]`, reasons
    left out when there are none (journals before schema 9 have a `mirror_outcome` entry per
    mirror instead)."""
    mirrors = []
    for m in w.mirrors:
        outcome = {"mirror": m.base_url, "status": m.status}
        if m.reasons:
            outcome["reasons"] = [r.get("code") for r in m.reasons]
        mirrors.append(outcome)
    return {**w.journal_detail, "mirrors": mirrors}


def _many(db: sqlite_utils.Database, sql: str, rows: list) -> None:
    if rows:  # most records have nothing for most tables; an empty call still costs
        db.conn.executemany(sql, rows)


def _write_sources(
    db: sqlite_utils.Database, writes: list[RecordWrite], mirrors: list[MirrorRow], now: str
) -> None:
    """The mirrors, documents, events and where each event was seen."""
    _many(
        db,
        "insert into mirrors (base_url, name, configured, first_seen, last_seen)"
        " values (?,?,?,?,?) on conflict(base_url) do update set last_seen = excluded.last_seen,"
        " configured = max(configured, excluded.configured)",
        [(m.base_url, m.name, int(m.configured), now, now) for m in mirrors],
    )
    _many(
        db,
        "insert or ignore into documents (sha256, kind, pith_number, body, size, first_seen)"
        " values (?,?,?,?,?,?)",
        [
            (sha, kind, w.pith_number, bodies.compress(body), len(body), now)
            for w in writes
            for sha, kind, body in w.documents
        ],
    )
    _many(
        db,
        "insert or ignore into events (event_id, pith_number, event_type, body, first_seen)"
        " values (?,?,?,?,?)",
        [
            (eid, w.pith_number, event_type, bodies.compress(body), now)
            for w in writes
            for eid, (event_type, body) in w.events.items()
        ],
    )
    _many(
        db,
        "insert or ignore into event_sources (event_id, mirror) values (?,?)",
        [(eid, mirror) for w in writes for eid, mirror in w.event_sources],
    )


def _write_checks(db: sqlite_utils.Database, run_id: str, writes: list[RecordWrite], now: str):
    """What this check saw: mirror statuses, evidence, validators, verified copies, verdicts."""
    # One statement, updated in place: unreachable_runs counts runs in a row that found the
    # mirror unreachable for this record, and starts again at 0 when it is reached.
    _many(
        db,
        "insert into mirror_status (pith_number, mirror, name, status, reasons, bundle_sha256,"
        " state_sha256, checked_at, unreachable_runs) values (?,?,?,?,?,?,?,?,?)"
        " on conflict(pith_number, mirror) do update set name = excluded.name,"
        " status = excluded.status, reasons = excluded.reasons,"
        " bundle_sha256 = excluded.bundle_sha256, state_sha256 = excluded.state_sha256,"
        " checked_at = excluded.checked_at, unreachable_runs = case"
        " when excluded.unreachable_runs > 0 then mirror_status.unreachable_runs + 1 else 0 end",
        [
            (w.pith_number, m.base_url, m.name, m.status, json.dumps(m.reasons))
            + (packed(m.bundle_sha256), packed(m.state_sha256), now, 1 if m.unreachable else 0)
            for w in writes
            for m in w.mirrors
        ],
    )
    _many(
        db,
        "insert into evidence (pith_number, mirror, url, status, reasons, body_sha256, body,"
        " observed_at, run_id) values (?,?,?,?,?,?,?,?,?)",
        [
            (w.pith_number, ev["mirror"], ev["url"], ev["status"], json.dumps(ev["reasons"]))
            + (_body_sha256(ev), _blob(ev.get("body")), now, run_id)
            for w in writes
            for ev in w.evidence
        ],
    )
    _many(
        db,
        "insert or replace into validators (url, etag, last_modified, document_sha256)"
        " values (?,?,?,?)",
        [(url, etag, lm, packed(sha)) for w in writes for url, etag, lm, sha in w.validators],
    )
    _many(
        db,
        "insert or ignore into verified_copies (bundle_sha256, state_sha256, trust_id,"
        " pith_number) values (?,?,?,?)",
        [
            (packed(b), packed(st), packed(w.trust_id), w.pith_number)
            for w in writes
            for b, st in w.verified_copies
        ],
    )
    _many(
        db,
        "insert or replace into record_checks (pith_number, verdict, checked_at) values (?,?,?)",
        [(w.pith_number, w.verdict, now) for w in writes],
    )


def _blob(body: bytes | None) -> bytes | None:
    return bodies.compress(body) if body is not None else None


def _body_sha256(evidence: dict) -> str | None:
    return sha256hex(evidence["body"]) if evidence.get("body") is not None else None


def _write_states(
    db: sqlite_utils.Database, writes: list[RecordWrite], existing: dict[str, dict], now: str
) -> None:
    """Each record's row: new records inserted, changed states updated, never rolled back."""
    new_rows, aliases = [], []
    for w in writes:
        st = w.state
        known = existing.get(w.pith_number)
        if known is None:
            if st is None and not w.tracked:
                continue
            # A new record is one row, with its state when it has one (the state holds the
            # canonical record and aliases: plan.record_columns derives them).
            state_columns = (
                (bodies.compress(st.state), st.state_sha256, st.event_count)
                if st
                else (None, None, 0)
            )
            suffix = suffix_of(w.pith_number)
            new_rows.append((w.pith_number, suffix, int(w.tracked), now, now, *state_columns))
        else:
            if w.tracked and not known["tracked"]:
                db.conn.execute(
                    "update records set tracked = 1 where pith_number = ?", [w.pith_number]
                )
            if st is None:
                continue
            _update_state(db, w, known, now)
        if st is not None:
            aliases += [(kind, value, w.pith_number) for kind, value in st.aliases]
    _many(
        db,
        "insert into records (pith_number, suffix, tracked, first_seen, updated_at,"
        " state, state_sha256, event_count) values (?,?,?,?,?,?,?,?)",
        new_rows,
    )
    _many(
        db,
        "insert or ignore into aliases (alias_kind, alias_value, pith_number) values (?,?,?)",
        aliases,
    )


def _update_state(db: sqlite_utils.Database, w: RecordWrite, known: dict, now: str) -> None:
    """A stored record's new state, if it changed."""
    st = w.state
    # Never roll back: the new state must contain every event the stored one counted.
    if (known.get("event_count") or 0) > st.event_count:
        raise StoreError(
            f"refusing to roll {w.pith_number} back from {known['event_count']}"
            f" to {st.event_count} events"
        )
    if known.get("state_sha256") != st.state_sha256:
        db.conn.execute(
            "update records set state = ?, state_sha256 = ?, event_count = ?, updated_at = ?"
            " where pith_number = ?",
            [bodies.compress(st.state), st.state_sha256, st.event_count, now, w.pith_number],
        )


def _settle_numbers(
    db: sqlite_utils.Database, writes: list[RecordWrite], existing: dict[str, dict], now: str
) -> list[Entry]:
    """The store's own check that every record is kept under the number its verified record
    derives: a state under another number is refused (WrongNumberError), and a row holding
    the same suffix under another number is renumbered to the write's (journal entry
    `record_renumbered`) when that row's own record gives the write's number, or has none
    (a typed number that waited for its record); otherwise the write is refused.  `existing`
    learns the renumbered rows."""
    for w in writes:
        if w.state is not None and (derived := number_of(w.state)) != w.pith_number:
            raise WrongNumberError(f"refusing to store the record {derived} as {w.pith_number}")
    new = {
        suffix_of(w.pith_number): w
        for w in writes
        if w.pith_number not in existing and w.pith_number.count(":") == 2
    }
    if not new:
        return []
    entries: list[Entry] = []
    for suffix, old in numbers_for_suffixes(db, list(new)).items():
        w = new[suffix]
        row = db.conn.execute("select state from records where pith_number = ?", [old]).fetchone()
        if row[0] is not None:
            if (derived := _state_number(row[0])) != w.pith_number:
                raise WrongNumberError(
                    f"refusing to store {w.pith_number}: the stored record with suffix"
                    f" {suffix} is {derived}"
                )
            reason = "wrong_year"  # a row an earlier version stored under a typed year
        else:
            reason = "verified" if w.state is not None else "retyped"
        entries.append(renumber(db, old, w.pith_number, reason, now))
        existing.update(record_summaries(db, [w.pith_number]))
    return entries


def heal_numbers(db: sqlite_utils.Database, now: str) -> list[Entry]:
    """Renumber every stored record whose verified record derives another number (what the
    schema 3 migration does to the rows earlier versions wrote).

    Returns:
        The journal entries to append, one per record renumbered.
    """
    rows = db.conn.execute(
        "select pith_number, state from records where state is not null"
    ).fetchall()
    entries = []
    for pith_number, state in rows:
        try:
            derived = _state_number(state)
        except (ValueError, KeyError, TypeError, numbers.InvalidPithNumber):
            continue  # no number to derive: left as it is
        if derived != pith_number:
            entries.append(renumber(db, pith_number, derived, "wrong_year", now))
    return entries


_MOVED = ("records", "aliases", "documents", "events", "evidence", "verified_copies", "alerts")


def renumber(db: sqlite_utils.Database, old: str, new: str, reason: str, at: str) -> Entry:
    """Move every row of record `old` to `new`, in the open transaction.

    The journal's earlier entries keep the number they were written with.

    Args:
        db: the writer's connection, inside a transaction.
        old: the number the rows are stored under.
        new: the number they move to.
        reason: why, for the journal ("wrong_year", "verified", "retyped").
        at: the time the moved state says it was updated.

    Returns:
        The `record_renumbered` journal entry the caller appends.
    """
    conn = db.conn
    for table in _MOVED:
        conn.execute(f"update {table} set pith_number = ? where pith_number = ?", [new, old])
    moved = ["mirror_status", "record_checks"]
    if db["schedule"].exists():  # not yet when the schema 3 migration renumbers
        moved.append("schedule")
    for table in moved:
        conn.execute(
            f"update or replace {table} set pith_number = ? where pith_number = ?", [new, old]
        )
    conn.execute(
        "update or ignore alerts set scope = ? where scope = ?",
        [record_scope(new), record_scope(old)],
    )
    row = conn.execute("select state from records where pith_number = ?", [new]).fetchone()
    stored_state = json.loads(stored_text(row[0])) if row is not None and row[0] else None
    if stored_state is not None and stored_state.get("pith_number") != new:
        # A state merged under the typed number names it, and its state_sha256 covers it.
        blobs = conn.execute("select body from events where pith_number = ?", [new])
        events = [json.loads(stored_text(blob)) for (blob,) in blobs]
        current = stored_state["current"]
        record, aliases = current["canonical_record"], current["source_aliases"]
        state = merge_state(new, record, aliases, events, {})
        conn.execute(
            "update records set state = ?, state_sha256 = ?, event_count = ?, updated_at = ?"
            " where pith_number = ?",
            [bodies.compress(canon(state)), state["state_sha256"], state["event_count"], at, new],
        )
    return ("record_renumbered", new, None, None, {"from": old, "reason": reason})


def _state_number(stored_state: str | bytes) -> str:
    """The pith number a stored state's canonical record derives."""
    return _derived_number(record_columns(stored_text(stored_state))[0])


def stored_text(value: str | bytes) -> str:
    """A stored event's or state's JSON: a blob, or the text the schema 3 migration (which
    renumbers before schema 5 compresses) still finds."""
    return value if isinstance(value, str) else bodies.expand_text(value)


def untrack(db: sqlite_utils.Database, pith_number: str) -> list[Entry]:
    """Stop syncing a record, in the open transaction; everything stored about it stays.

    Returns:
        The journal entry to append, or none when the record was not tracked.
    """
    cur = db.conn.execute(
        "update records set tracked = 0 where pith_number = ? and tracked = 1", [pith_number]
    )
    schedule.forget(db, pith_number)
    return [("record_untracked", pith_number, None, None, None)] if cur.rowcount else []
