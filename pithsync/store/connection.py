"""Opening the store's SQLite file: the writer's connection and its pragmas, read-only and
immutable connections, and the errors SQLite gives, said in the store's terms."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator

import sqlite_utils

from pithsync.base.exits import StoreError


def connect(
    path: str, *, read_only: bool = False, immutable: bool = False
) -> sqlite_utils.Database:
    """A connection to the store at `path`: the writer's, with its pragmas, or a read-only one.

    Args:
        path: the store's file, or ":memory:".
        read_only: open with mode=ro (never creates, never writes).
        immutable: with read_only, read the file as one nobody writes (no -wal or -shm).

    Raises:
        StoreError: SQLite or the OS refused to open it.
    """
    try:
        if read_only:
            query = "mode=ro&immutable=1" if immutable else "mode=ro"
            uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?{query}"
            conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level="DEFERRED")
        else:
            conn = sqlite3.connect(path, timeout=30, isolation_level="DEFERRED")
        # Plugins installed beside sqlite-utils do not get the verified store's connection, and
        # looking them up scans every installed package at each start.
        db = sqlite_utils.Database(conn, execute_plugins=False)
        db.execute("PRAGMA busy_timeout = 30000")
        if not read_only:
            _writer_pragmas(db, path)
        return db
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open store {path}: {exc}{read_only_hint(path)}") from None
    except OSError as exc:
        raise StoreError(f"cannot open store {path}: {exc.strerror or exc}") from None


def _writer_pragmas(db: sqlite_utils.Database, path: str) -> None:
    """The writer's settings: each one keeps a large run's writes cheap (bench/README.md)."""
    if path != ":memory:":
        # 16 KiB pages hold a bundle in its row, not in an overflow chain, which saves the
        # writer's sys time.  Takes effect only on a new store, before WAL is enabled; existing
        # stores keep their page size.
        db.execute("PRAGMA page_size = 16384")
        db.enable_wal()
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    # Each group of records is a savepoint inside its batch; by default the savepoint's undo
    # pages spill to a temp file, one small write each.
    db.execute("PRAGMA temp_store = MEMORY")
    # The page cache must hold the indexes every record inserts into; they outgrow 16 MB at
    # 50,000 records, and 32 MB stays under the RSS budget.
    db.execute("PRAGMA cache_size = -32768")  # KiB
    # Each commit writes every page it dirtied to the WAL, and each checkpoint copies them into
    # the file: a longer WAL rewrites the index pages that random keys touch fewer times.  The
    # WAL file grows large during a big run (about 100 MB).
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.execute(f"PRAGMA wal_autocheckpoint = {64 * 1024 * 1024 // page_size}")  # 64 MB of pages


def connect_reader(path: str) -> sqlite_utils.Database:
    """A read-only connection to the store file at `path`, which exists.

    A WAL store needs its -wal and -shm files, even to read, and they cannot be created on a
    read-only file system or directory: nothing can write the file through such a path either,
    so it is then read as immutable.

    Raises:
        StoreError: the file cannot be read as a database.
    """
    db = connect(path, read_only=True)
    try:
        _probe(db)
        return db
    except sqlite3.OperationalError as exc:
        db.close()
        if not cannot_open(exc):
            raise StoreError(f"cannot open store {path} read-only: {exc}") from None
    except sqlite3.DatabaseError as exc:
        db.close()
        raise StoreError(f"cannot open store {path} read-only: {exc}") from None
    db = connect(path, read_only=True, immutable=True)
    try:
        _probe(db)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise StoreError(f"cannot open store {path} read-only: {exc}") from None
    return db


def _probe(db: sqlite_utils.Database) -> None:
    """Read the schema: the first read is where SQLite opens the file (and its -wal, -shm)."""
    db.execute("select count(*) from sqlite_master").fetchone()


def cannot_open(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_CANTOPEN: for a file that exists, the -wal or -shm file it needs is missing and
    cannot be created."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_CANTOPEN


def explain_error(exc: sqlite3.OperationalError, path: str) -> str:
    """What an SQLite error on the store at `path` means, for the operator."""
    msg = str(exc)
    if "readonly" in msg or "read-only" in msg:
        return f"store {path} is read-only: {msg}"
    if "disk is full" in msg or "database or disk is full" in msg:
        return f"no space left for store {path}: {msg}"
    return f"store {path}: {msg}"


def read_only_hint(path: str) -> str:
    """Why SQLite could not open a store, when it is a read-only directory (a WAL store needs to
    create its -wal and -shm files beside it, even to read)."""
    parent = os.path.dirname(os.path.abspath(path))
    if path != ":memory:" and os.path.isdir(parent) and not os.access(parent, os.W_OK):
        return f" (its directory {parent} is read-only)"
    return ""


def file_bytes(path: str) -> int:
    """The store's bytes on disk: its file and its WAL."""
    return sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))


def free_bytes(db: sqlite_utils.Database) -> int:
    """The bytes of the store's free pages: space SQLite reuses for new rows but keeps in the
    file (a migration that rebuilds a table leaves the old table's pages free)."""
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    return free * db.execute("PRAGMA page_size").fetchone()[0]


def vacuum(db: sqlite_utils.Database, path: str) -> None:
    """Rebuild the store's file without its free pages (SQLite's VACUUM), then copy the WAL
    that VACUUM wrote into the file and truncate it.

    The rebuilt copy goes to a temporary file (SQLite looks in $SQLITE_TMPDIR, then $TMPDIR,
    then /var/tmp), not to memory as the writer's other temporary data do: it is as large as
    the store's rows.

    Args:
        db: the writer's connection, outside any transaction.
        path: the store's path, for the error.

    Raises:
        StoreError: SQLite could not write (no space for the copy or the WAL, a read-only
            store: see explain_error); the store is then as it was.
    """
    try:
        temp_store = db.execute("PRAGMA temp_store").fetchone()[0]
        db.execute("PRAGMA temp_store = FILE")
        try:
            db.execute("VACUUM")
        finally:
            db.execute(f"PRAGMA temp_store = {int(temp_store)}")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.OperationalError as exc:
        raise StoreError(explain_error(exc, path)) from None


@contextlib.contextmanager
def savepoint(db: sqlite_utils.Database, path: str) -> Iterator[None]:
    """One atomic unit of writes: a transaction, or a savepoint inside the open one (a group of
    records inside its batch).  Whatever the block raises takes back everything it wrote.

    The savepoint always has the same name, and SQLite releases the innermost of that name, so
    these nest.  A fixed name keeps its statements compiled; sqlite_utils' atomic() names each
    savepoint with random bytes, a getrandom() call and two statements SQLite compiles anew.

    Args:
        db: the writer's connection.
        path: the store's path, for the error.

    Raises:
        StoreError: SQLite could not write (a read-only or full disk, see explain_error).
    """
    conn = db.conn
    try:
        if not conn.in_transaction:
            with db.atomic():
                yield
            return
        conn.execute("SAVEPOINT pithsync")
        try:
            yield
        except BaseException:
            if conn.in_transaction:  # an error can end the whole transaction, savepoints too
                conn.execute("ROLLBACK TO pithsync")
                conn.execute("RELEASE pithsync")
            raise
        conn.execute("RELEASE pithsync")
    except sqlite3.OperationalError as exc:
        raise StoreError(explain_error(exc, path)) from None
