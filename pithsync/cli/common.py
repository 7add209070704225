"""What several commands share: opening the store the way a command needs it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pithsync.base.exits import UsageError
from pithsync.config import Config
from pithsync.store import Store, run_lock


@contextmanager
def open_store(cfg: Config, *, lock: bool) -> Iterator[Store]:
    """The store, under the run lock, for writing (created if need be); without `lock`, the
    existing store read-only (NoStoreError when there is none: reading creates nothing)."""
    if lock:
        with run_lock(cfg.db_path, cfg.lock_timeout_s):
            store = Store.open(cfg.db_path)
            try:
                yield store
            finally:
                store.close()
    else:
        store = Store.open_reader(cfg.db_path)
        try:
            yield store
        finally:
            store.close()


def resolve_one(store: Store, reference: str, unknown: str) -> str:
    """The one stored record a user's reference names (number, suffix, short form or alias).

    Args:
        store: the store to look the reference up in.
        reference: what the user typed.
        unknown: what to say when nothing matches; `{ref}` stands for the quoted reference.

    Raises:
        UsageError: nothing matches, or more than one record does.
    """
    matches = store.resolve(reference)
    if not matches:
        raise UsageError(unknown.format(ref=repr(reference[:80])))
    if len(matches) > 1:
        raise UsageError(f"{reference[:80]!r} is ambiguous: {', '.join(matches[:5])}")
    return matches[0]
