"""A verified fact about stored state documents: the state_sha256 each one claims, and its
size, kept when its bytes verify (table `state_claims`, keyed by the document's sha256).

A re-sync in which nothing changed needs only these two facts of a stored state document (the
quick check, core.plan.quick_plan), not its bytes: so it neither reads nor decompresses nor
parses them.  Both are functions of the bytes alone, so a row never goes stale."""

from __future__ import annotations

import json
from collections.abc import Iterable

import sqlite_utils

from pithsync.base.exits import StoreError
from pithsync.core.plan import StateClaim
from pithsync.store import bodies
from pithsync.store.reads import rows_in


def keep(db: sqlite_utils.Database, claims: Iterable[tuple[str, StateClaim]]) -> None:
    """Keep (state document sha256, its claim) pairs, in the open transaction."""
    db.conn.executemany(
        "insert or ignore into state_claims (sha256, state_sha256, size) values (?,?,?)",
        [(sha, claim.state_sha256, claim.size) for sha, claim in claims],
    )


def claimed(db: sqlite_utils.Database, shas: list[str]) -> dict[str, StateClaim]:
    """sha256 -> the claim of each of these state documents whose claim is kept."""
    sql = "select sha256, state_sha256, size from state_claims where sha256 in ({})"
    return {sha: StateClaim(state, size) for sha, state, size in rows_in(db, sql, shas)}


def backfill(db: sqlite_utils.Database) -> None:
    """The claims of every stored state document (documents holds only verified bytes), for a
    store written before the table existed."""
    rows = db.conn.execute("select sha256, body from documents where kind = 'state'")
    found = []
    for sha, blob in rows:
        try:
            body = bodies.expand(blob, sha)
            claim = json.loads(body).get("state_sha256")
        except (StoreError, ValueError, AttributeError):
            continue  # no fact: the record takes the full path, which reports the bad row
        if isinstance(claim, str):
            found.append((sha, StateClaim(claim, len(body))))
    keep(db, found)
