"""How the observation log's leaves (its statements) are stored: a record check at a time.

`log_checks` holds one row per run of consecutive leaves of one record (a check's statements,
one per mirror asked; at most MAX_CHECK_LEAVES): its first leaf index, the record, the
`log_mirrors` id of each leaf's mirror (MIRROR_ID_BYTES each, so a row's leaf count is the
column's length over MIRROR_ID_BYTES) and one zstd frame of its statements
(bodies.compress_statements), which share nearly every byte but their mirror's.  The index on
(pith_number, mirrors) answers a record's reads; the leaf index is the rowid, so a range of
leaves is a range of rows.  Reads give back the exact bytes appended, or raise StoreError.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import sqlite_utils

from pithsync.base.exits import StoreError
from pithsync.store import bodies

MAX_CHECK_LEAVES = 64  # the most leaves one log_checks row (one zstd frame) holds
MIRROR_ID_BYTES = 2  # log_checks.mirrors: each leaf's log_mirrors id, big-endian


@dataclass(frozen=True)
class Leaf:
    """One statement to append: its record, its mirror, its bytes (the leaf data)."""

    pith_number: str
    mirror: str
    statement: bytes


def size(db: sqlite_utils.Database) -> int:
    """How many leaves the log holds."""
    row = db.execute(
        "select first_leaf, mirrors from log_checks order by first_leaf desc limit 1"
    ).fetchone()
    return 0 if row is None else row[0] + len(_mirror_ids_of(row[1]))


def _checks(leaves: Sequence[Leaf]) -> list[Sequence[Leaf]]:
    """The leaves cut into the runs a log_checks row holds: consecutive leaves of one record,
    at most MAX_CHECK_LEAVES."""
    runs, start = [], 0
    for i in range(1, len(leaves) + 1):
        if (
            i == len(leaves)
            or leaves[i].pith_number != leaves[start].pith_number
            or i - start == MAX_CHECK_LEAVES
        ):
            runs.append(leaves[start:i])
            start = i
    return runs


def write(db: sqlite_utils.Database, first: int, leaves: Sequence[Leaf]) -> None:
    """Store `leaves` as the leaves from index `first` on (one executemany).  Call it inside
    a transaction, with `first` the log's size.

    Raises:
        ValueError: a statement is longer than 65,535 bytes (a tlog entry's cap).
        StoreError: the log has named more mirrors than a row's ids can hold.
    """
    ids = _mirror_ids(db, {leaf.mirror for leaf in leaves})
    rows = []
    for check in _checks(leaves):
        mirrors = b"".join(ids[leaf.mirror].to_bytes(MIRROR_ID_BYTES, "big") for leaf in check)
        blob = bodies.compress_statements([leaf.statement for leaf in check])
        rows.append((first, check[0].pith_number, mirrors, blob))
        first += len(check)
    db.conn.executemany(
        "insert into log_checks (first_leaf, pith_number, mirrors, statements) values (?, ?, ?, ?)",
        rows,
    )


def _mirror_ids(db: sqlite_utils.Database, mirrors: set[str]) -> dict[str, int]:
    """The log_mirrors id of each mirror, given one if it has none yet."""
    named = sorted(mirrors)
    db.conn.executemany(
        "insert or ignore into log_mirrors (mirror) values (?)", [(m,) for m in named]
    )
    rows = db.execute(
        f"select mirror, id from log_mirrors where mirror in ({', '.join('?' * len(named))})",
        named,
    )
    ids = dict(rows.fetchall())
    if any(i >= 1 << (8 * MIRROR_ID_BYTES) for i in ids.values()):
        raise StoreError(
            f"the observation log has named {(1 << (8 * MIRROR_ID_BYTES)) - 1:,} mirrors, the"
            " most its rows can hold"
        )
    return ids


def _mirror_ids_of(mirrors: bytes) -> list[int]:
    """A log_checks row's mirror ids, one per leaf.

    Raises:
        StoreError: the column is not a whole, non-empty number of ids.
    """
    if not isinstance(mirrors, bytes) or not mirrors or len(mirrors) % MIRROR_ID_BYTES:
        raise StoreError("a stored record check of the log is corrupt: its mirror ids")
    return [
        int.from_bytes(mirrors[i : i + MIRROR_ID_BYTES], "big")
        for i in range(0, len(mirrors), MIRROR_ID_BYTES)
    ]


def read(db: sqlite_utils.Database, start: int, end: int) -> list[bytes]:
    """The statements of leaves [start, end) the log holds, in order (fewer when the log ends
    before `end`).  Reads from the row before the range on, and checks that each row starts
    where the one before it ends.

    Raises:
        StoreError: a stored row is corrupt, or the rows overlap or leave a gap.
    """
    rows = db.execute(
        "select first_leaf, mirrors, statements from log_checks where first_leaf >="
        " coalesce((select max(first_leaf) from log_checks where first_leaf < ?), 0)"
        " and first_leaf < ? order by first_leaf",
        [start, end],
    )
    out: list[bytes] = []
    at = None  # where the next row must start
    for first, mirrors, blob in rows:
        if (first > start) if at is None else (first != at):
            raise StoreError(f"the stored log's record checks overlap or skip at leaf {first}")
        count = len(_mirror_ids_of(mirrors))
        at = first + count
        if at > start:  # a row wholly before the range is only checked, not expanded
            out += bodies.expand_statements(blob, count)[max(0, start - first) : end - first]
    if len(out) < end - start:  # the log ends within the range, unless rows are missing
        after = db.execute(
            "select min(first_leaf) from log_checks where first_leaf >= ?", [at or 0]
        ).fetchone()[0]
        if after is not None:
            raise StoreError(f"the stored log's record checks skip from leaf {at or 0}")
    return out


def _record_checks(
    db: sqlite_utils.Database, pith_number: str, size: int
) -> Iterator[tuple[int, list[int], bytes]]:
    """(first leaf, mirror ids, blob) of a record's rows with a leaf among the first `size`,
    newest first: read as far as the caller goes."""
    rows = db.execute(
        "select first_leaf, mirrors, statements from log_checks"
        " where pith_number = ? and first_leaf < ? order by first_leaf desc",
        [pith_number, size],
    )
    return ((first, _mirror_ids_of(mirrors), blob) for first, mirrors, blob in rows)


def _mirror_names(db: sqlite_utils.Database, ids: set[int]) -> dict[int, str]:
    """The mirror of each log_mirrors id.

    Raises:
        StoreError: a stored record check names an id log_mirrors does not hold.
    """
    rows = db.execute(
        f"select id, mirror from log_mirrors where id in ({', '.join('?' * len(ids))})",
        sorted(ids),
    )
    names = dict(rows.fetchall())
    if len(names) != len(ids):
        raise StoreError("a stored record check of the log names a mirror the log does not hold")
    return names


def latest_of(db: sqlite_utils.Database, pith_number: str, size: int) -> list[tuple]:
    """(leaf index, mirror, statement) of a record's latest statement per mirror among the first
    `size` leaves, sorted by mirror.  Expands only the rows that hold one."""
    wanted: set[int] = set()
    for (mirrors,) in db.execute(
        "select distinct mirrors from log_checks where pith_number = ? and first_leaf < ?",
        [pith_number, size],
    ):
        wanted.update(_mirror_ids_of(mirrors))
    found: dict[int, tuple[int, bytes]] = {}
    for first, ids, blob in _record_checks(db, pith_number, size):
        if len(found) == len(wanted):
            break
        new = [i for i in range(len(ids)) if first + i < size and ids[i] not in found]
        if new:
            statements = bodies.expand_statements(blob, len(ids))
            for i in reversed(new):
                found.setdefault(ids[i], (first + i, statements[i]))
    names = _mirror_names(db, set(found)) if found else {}
    return sorted(
        ((index, names[m], statement) for m, (index, statement) in found.items()),
        key=lambda row: row[1],
    )


def of_record(
    db: sqlite_utils.Database, pith_number: str, mirror: str | None, size: int, limit: int
) -> list[tuple]:
    """(leaf index, mirror, statement) of a record's statements among the first `size` leaves,
    of `mirror` (None: of every mirror), newest first, at most `limit`."""
    only = None
    if mirror is not None:
        row = db.execute("select id from log_mirrors where mirror = ?", [mirror]).fetchone()
        if row is None:
            return []
        only = row[0]
    found: list[tuple[int, int, bytes]] = []
    for first, ids, blob in _record_checks(db, pith_number, size):
        if len(found) >= limit:
            break
        hits = [i for i in range(len(ids)) if first + i < size and (only is None or ids[i] == only)]
        if hits:
            statements = bodies.expand_statements(blob, len(ids))
            found += [(first + i, ids[i], statements[i]) for i in reversed(hits)]
    found = found[:limit]
    names = _mirror_names(db, {m for _, m, _ in found}) if found else {}
    return [(index, names[m], statement) for index, m, statement in found]


def numbers(db: sqlite_utils.Database, size: int) -> list[str]:
    """The pith numbers with a statement among the first `size` leaves, sorted."""
    rows = db.execute(
        "select distinct pith_number from log_checks where first_leaf < ? order by 1", [size]
    ).fetchall()
    return [row[0] for row in rows]


def move_schema_8_leaves(db: sqlite_utils.Database) -> int:
    """Move every leaf of schema 8's `log_statements` (a row a leaf, each compressed alone)
    into log_checks (empty), a record check a row as `write` keeps them, then check that every
    leaf reads back byte for byte.  Call it inside the migration's transaction.

    Returns:
        The number of leaves moved.

    Raises:
        StoreError: an old row is corrupt or missing, or a leaf does not read back exactly.
    """
    old = "select leaf_index, pith_number, mirror, run_id, statement from log_statements"
    if db.execute("select 1 from log_statements limit 1").fetchone() is None:
        return 0  # nothing to move (a store whose version was set back by hand, say)
    if size(db):
        raise StoreError(f"{_NOT_MOVED}: it holds leaves in both layouts")
    pending: list[Leaf] = []
    moved, run = 0, None
    for index, pith, mirror, run_id, blob in db.conn.execute(f"{old} order by leaf_index"):
        if index != moved + len(pending):
            raise StoreError(f"{_NOT_MOVED}: its log holds no leaf {moved + len(pending)}")
        # Written a run at a time (a check never spans two), in batches cut between records.
        if pending and (run != run_id or len(pending) >= 4096 and pith != pending[-1].pith_number):
            write(db, moved, pending)
            moved, pending = moved + len(pending), []
        run = run_id
        pending.append(Leaf(pith, mirror, bodies.expand(blob)))
    if pending:
        write(db, moved, pending)
        moved += len(pending)
    for start in range(0, moved, 4096):
        kept = read(db, start, start + 4096)
        rows = db.conn.execute(
            f"{old} where leaf_index >= ? and leaf_index < ? order by leaf_index",
            [start, start + 4096],
        )
        if kept != [bodies.expand(row[4]) for row in rows]:
            raise StoreError(f"{_NOT_MOVED}: a leaf from {start} on does not read back exactly")
    if size(db) != moved:
        raise StoreError(f"{_NOT_MOVED}: it holds {size(db)} leaves, not {moved}")
    return moved


_NOT_MOVED = "cannot migrate the store's observation log to schema 9 (the store is left as it was)"
