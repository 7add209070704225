"""Peers' checkpoints: the last one verified and found consistent for each peer, and the
rewrites found, each with both signed checkpoints (the evidence that the log was rewritten)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

from pithsync.core.peers import PeerStatement


@dataclass(frozen=True)
class SplitViewFound:
    """A split view to keep: the record, the mirror, this observer's statement of the check
    (a leaf of its log) and the peer's proven statement."""

    pith_number: str
    mirror: str
    mine: bytes
    seen: PeerStatement
    at: str


def last_checkpoint(db: sqlite_utils.Database, url: str) -> bytes | None:
    """The last signed checkpoint of the peer at `url` found consistent, or None."""
    row = db.execute("select checkpoint from peer_checkpoints where url = ?", [url]).fetchone()
    return bytes(row[0]) if row else None


def save_checkpoint(
    db: sqlite_utils.Database, name: str, url: str, note: bytes, size: int, at: str, run_id: str
) -> None:
    """Keep `note` as the peer's last consistent checkpoint."""
    db.execute(
        "insert into peer_checkpoints (url, name, checkpoint, size, verified_at, run_id)"
        " values (?,?,?,?,?,?) on conflict(url) do update set name = excluded.name,"
        " checkpoint = excluded.checkpoint, size = excluded.size,"
        " verified_at = excluded.verified_at, run_id = excluded.run_id",
        [url, name, note, size, at, run_id],
    )


def save_rewrite(
    db: sqlite_utils.Database,
    name: str,
    url: str,
    how: str,
    message: str,
    old: bytes,
    new: bytes,
    at: str,
    run_id: str,
) -> int:
    """Keep a rewrite found, with both signed checkpoints; returns its id."""
    cur = db.execute(
        "insert into peer_rewrites (name, url, how, message, old_checkpoint, new_checkpoint,"
        " observed_at, run_id) values (?,?,?,?,?,?,?,?)",
        [name, url, how, message, old, new, at, run_id],
    )
    return int(cur.lastrowid)


def save_split_views(db: sqlite_utils.Database, run_id: str, found: list[SplitViewFound]) -> None:
    """Keep each split view found with both statements and the peer's proof."""
    db.conn.executemany(
        "insert into split_views (pith_number, mirror, peer, mine, statement, leaf_index, proof,"
        " checkpoint, window_s, observed_at, run_id) values (?,?,?,?,?,?,?,?,?,?,?)",
        [
            (
                f.pith_number,
                f.mirror,
                f.seen.peer,
                f.mine,
                f.seen.leaf_data,
                f.seen.index,
                b"".join(f.seen.proof),
                f.seen.checkpoint.note,
                f.seen.window_s,
                f.at,
                run_id,
            )  # fmt: skip
            for f in found
        ],
    )


def split_views(db: sqlite_utils.Database, pith_number: str) -> list[dict]:
    """The split views kept for a record, newest first."""
    query = "select * from split_views where pith_number = ? order by id desc"
    return list(db.query(query, [pith_number]))


def rewrites(db: sqlite_utils.Database, url: str | None = None) -> list[dict]:
    """The rewrites found (of the peer at `url`, or of all), oldest first."""
    where, args = ("where url = ?", [url]) if url is not None else ("", [])
    return list(db.query(f"select * from peer_rewrites {where} order by id", args))


def open_alert(db: sqlite_utils.Database, scope: str) -> bool:
    """Whether an alert of `scope` is open."""
    query = "select exists(select 1 from alerts where state = 'open' and scope = ?)"
    return db.execute(query, [scope]).fetchone()[0] == 1
