"""Each tracked record's revisit schedule (core.schedule.ScheduleState), one `schedule` row per
tracked record: loading states, taking the due ones in priority order, writing them after a
check (in the record's group, see records.write_rows), marking records discovered, and the
coverage figures.  Times are REAL unix seconds.

The priority class is a generated column with the rules of core.schedule.class_for, indexed
with next_due, so that a run reads the due records a page at a time in the order it checks them
instead of loading every tracked record."""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

from pithsync.core.numbers import suffix_of
from pithsync.core.schedule import (
    ATTENTION_OUTCOMES,
    HOUR,
    Coverage,
    Outcome,
    PriorityClass,
    ScheduleState,
)
from pithsync.store.reads import rows_in

_ATTENTION = ",".join(f"'{o.value}'" for o in sorted(ATTENTION_OUTCOMES))
# core.schedule.class_for, in SQL.
PRIORITY_SQL = (
    f"case when last_checked is null then {int(PriorityClass.NEVER_VERIFIED)}"
    f" when last_outcome in ({_ATTENTION}) then {int(PriorityClass.ATTENTION)}"
    f" when discovered_at > last_checked then {int(PriorityClass.DISCOVERED)}"
    f" else {int(PriorityClass.ROTATION)} end"
)

_COLUMNS = (
    "pith_number, next_due, interval, last_checked, last_outcome, discovered_at, unchanged_checks"
)


def create(db: sqlite_utils.Database) -> None:
    """The schedule table and its index (in a migration)."""
    db.execute(
        "create table if not exists schedule (pith_number text primary key, next_due real not null,"
        " interval real not null, last_checked real, last_outcome text not null,"
        " discovered_at real not null, unchanged_checks integer not null default 0,"
        f" priority integer generated always as ({PRIORITY_SQL}) virtual)"
    )
    db.execute(
        "create index if not exists schedule_due on schedule (priority, next_due, pith_number)"
    )


@dataclass(frozen=True)
class DueKey:
    """Where a run's walk through the due records has got to: the last (class, next_due,
    pith_number) it took."""

    priority: int
    next_due: float
    pith_number: str


def _state(row: tuple) -> tuple[str, ScheduleState]:
    pith, next_due, interval, last_checked, outcome, discovered_at, unchanged = row[:7]
    state = ScheduleState(
        suffix=suffix_of(pith),
        discovered_at=discovered_at,
        next_due=next_due,
        interval=interval,
        last_checked=last_checked,
        last_outcome=Outcome(outcome),
        consecutive_unchanged=unchanged,
    )
    return pith, state


def _row(pith_number: str, s: ScheduleState) -> tuple:
    return (pith_number, s.next_due, s.interval, s.last_checked, s.last_outcome.value)


def load_states(db: sqlite_utils.Database, pith_numbers: list[str]) -> dict[str, ScheduleState]:
    """pith_number -> its schedule, for those of `pith_numbers` that have one."""
    sql = f"select {_COLUMNS} from schedule where pith_number in ({{}})"
    return dict(_state(row) for row in rows_in(db, sql, pith_numbers))


def take_due(
    db: sqlite_utils.Database, now: float, limit: int, after: DueKey | None = None
) -> list[tuple[str, ScheduleState, DueKey]]:
    """Up to `limit` records due at `now`, in the order a run checks them (priority class, then
    most overdue first), after `after`: each with its state and its key.  One index range per
    class, never a scan of the rest."""
    taken: list[tuple[str, ScheduleState, DueKey]] = []
    first = after.priority if after is not None else 0
    for priority in range(first, int(PriorityClass.ROTATION) + 1):
        if len(taken) >= limit:
            break
        where, params = "priority = ? and next_due <= ?", [priority, now]
        if after is not None and priority == after.priority:
            where += " and (next_due, pith_number) > (?, ?)"
            params += [after.next_due, after.pith_number]
        rows = db.conn.execute(
            f"select {_COLUMNS}, priority from schedule where {where}"
            " order by next_due, pith_number limit ?",
            [*params, limit - len(taken)],
        )
        for row in rows:
            pith, state = _state(row)
            taken.append((pith, state, DueKey(row[7], state.next_due, pith)))
    return taken


def write_states(db: sqlite_utils.Database, states: list[tuple[str, ScheduleState]]) -> None:
    """Each record's schedule after a check, in the open transaction; only for records that
    are tracked (an untracked record has no schedule)."""
    if not states:
        return
    db.conn.executemany(
        f"insert or replace into schedule ({_COLUMNS})"
        " select ?,?,?,?,?,?,? where exists"
        " (select 1 from records where pith_number = ? and tracked = 1)",
        [(*_row(p, s), s.discovered_at, s.consecutive_unchanged, p) for p, s in states],
    )


def mark_discovered(db: sqlite_utils.Database, pith_numbers: list[str], now: float) -> None:
    """Tracked records a pull, import or citation named at `now`, in the open transaction: due
    at once (core.schedule.discovered); a record new to the schedule starts never checked (its
    base interval is not read before its first check sets one)."""
    if not pith_numbers:
        return
    db.conn.executemany(
        f"insert into schedule ({_COLUMNS})"
        " select ?, ?, ?, null, ?, ?, 0 where exists"
        " (select 1 from records where pith_number = ? and tracked = 1)"
        " on conflict(pith_number) do update set"
        " discovered_at = max(discovered_at, excluded.discovered_at),"
        " next_due = min(next_due, excluded.next_due)",
        [(p, now, HOUR, Outcome.NEVER_CHECKED.value, now, p) for p in pith_numbers],
    )


def forget(db: sqlite_utils.Database, pith_number: str) -> None:
    """An untracked record leaves the schedule (`pull` brings it back, due at once)."""
    db.conn.execute("delete from schedule where pith_number = ?", [pith_number])


def due_count(db: sqlite_utils.Database, now: float) -> int:
    """How many tracked records are due at `now`."""
    return db.conn.execute("select count(*) from schedule where next_due <= ?", [now]).fetchone()[0]


def coverage(db: sqlite_utils.Database, now: float, max_interval: float) -> Coverage:
    """The coverage figures at `now` (see core.schedule.coverage), counted by SQLite."""
    tracked, due, overdue, never, oldest = db.conn.execute(
        "select count(*), coalesce(sum(next_due <= ?), 0),"
        " coalesce(sum(coalesce(last_checked, discovered_at) < ?), 0),"
        " coalesce(sum(last_checked is null), 0), min(last_checked) from schedule",
        [now, now - max_interval],
    ).fetchone()
    age = None if oldest is None else now - oldest
    return Coverage(
        tracked=tracked, due=due, overdue=overdue, never_checked=never, oldest_check_age=age
    )
