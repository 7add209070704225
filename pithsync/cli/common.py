"""What several commands share: opening the store the way a command needs it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
