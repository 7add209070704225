"""The run lock: one sync or pull at a time per store."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from typing import IO

from pithsync.base.exits import NoStoreError, StoreError, StoreLocked


def _lock_holder(fh: IO[str]) -> int | None:
    """The pid the lock's holder wrote into the lock file (informational: it may be gone)."""
    with contextlib.suppress(OSError, ValueError):
        fh.seek(0)
        return int(fh.read(32).strip())
    return None


@contextlib.contextmanager
def run_lock(db_path: str, timeout_s: float, poll_s: float = 0.1) -> Iterator[None]:
    """One sync or pull at a time per store: wait up to `timeout_s` for the lock, then give up.
    The lock is named after the store's real path, so runs that reach it through a symlink
    (or another spelling of the path) wait for each other too.

    Args:
        db_path: the store's path (":memory:" needs no lock).
        timeout_s: how long to wait for another run to finish.
        poll_s: how often to try again meanwhile.

    Raises:
        NoStoreError: the store's directory does not exist.
        StoreLocked: another run held the lock for all of `timeout_s`.
        StoreError: the lock file cannot be opened or locked.
    """
    if db_path == ":memory:":
        yield
        return
    lock_path = f"{os.path.realpath(db_path)}.lock"
    directory = os.path.dirname(lock_path)
    if not os.path.isdir(directory):
        raise NoStoreError(f"no directory for a store at {db_path}: create {directory} first")
    try:
        fh = open(lock_path, "a+")
    except OSError as exc:
        raise StoreError(f"cannot open lock file {lock_path}: {exc.strerror or exc}") from None
    try:
        _wait_for(fh, lock_path, timeout_s, poll_s)
        # The pid is informational: a full disk fails later, clearly.
        with contextlib.suppress(OSError):
            os.ftruncate(fh.fileno(), 0)
            # Unbuffered: close() has nothing to flush.
            os.write(fh.fileno(), f"{os.getpid()}\n".encode())
        yield
    finally:
        fh.close()


def _wait_for(fh: IO[str], lock_path: str, timeout_s: float, poll_s: float) -> None:
    """Take the exclusive lock on `fh`, trying every `poll_s` for up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise StoreError(f"cannot lock {lock_path}: {exc.strerror}") from None
            if time.monotonic() >= deadline:
                held = f"another pithsync run holds {lock_path}; gave up after {timeout_s:g}s"
                raise StoreLocked(held, lock_path, timeout_s, _lock_holder(fh)) from None
            time.sleep(poll_s)
