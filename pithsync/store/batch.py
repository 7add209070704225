"""Groups and batches of records: how a run's writes are cut into atomic groups, and the one
transaction a run keeps open across many groups."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import sqlite_utils

from pithsync.core.plan import RecordWrite
from pithsync.store.journal import Head
from pithsync.store.observations import LogHead
from pithsync.store.records import MirrorKey, mirror_keys

T = TypeVar("T")


def groups(pairs: Iterable[tuple[T, RecordWrite]]) -> Iterator[list[tuple[T, RecordWrite]]]:
    """`pairs` (anything, RecordWrite) cut into groups, in order: a record named twice starts a
    new group, so that each write is decided against what the store holds."""
    group: list[tuple[T, RecordWrite]] = []
    names: set[str] = set()
    for pair in pairs:
        name = pair[1].pith_number
        if name in names:
            yield group
            group, names = [], set()
        group.append(pair)
        names.add(name)
    if group:
        yield group


@dataclass
class Batch:
    """The transaction a run keeps open across groups of records, and what the store knows
    while it is open: it holds the write lock, so no other connection moves the journal's head
    or writes the mirrors rows, and neither need be read again for every group."""

    started: float | None = None  # time.monotonic() at BEGIN; None: no batch open
    records: int = 0  # records written in the batch
    mirrors: set[MirrorKey] = field(default_factory=set)  # mirrors rows written in the batch
    journal_head: Head | None = None  # None: read it from meta
    log_head: LogHead | None = None  # the observation log's head; None: read it from the log
    # What the open group wrote: counted into the batch once its savepoint is released.
    group: list[RecordWrite] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        """Whether a batch's transaction is open."""
        return self.started is not None

    def begin(self, db: sqlite_utils.Database) -> None:
        """Open the batch's transaction."""
        db.conn.execute("BEGIN")
        self.started = time.monotonic()

    def keep_group(self) -> None:
        """The open group's savepoint was released: its records are part of the batch."""
        if self.is_open:
            self.records += len(self.group)
            self.mirrors |= mirror_keys(self.group)
        self.group.clear()

    def drop_group(self) -> None:
        """The open group was rolled back, journal entries included."""
        self.group.clear()
        self.journal_head = None
        self.log_head = None

    def due(self, batch_records: int, batch_seconds: float) -> bool:
        """Whether the open batch holds enough records, or is old enough, to commit."""
        if not self.is_open:
            return False
        age = time.monotonic() - self.started
        return self.records >= batch_records or age >= batch_seconds

    def end(self) -> None:
        """The batch was committed or rolled back: nothing is known about it any more."""
        self.started = None
        self.records = 0
        self.mirrors.clear()
        self.journal_head = None
        self.log_head = None
        self.group.clear()
