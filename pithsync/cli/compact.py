"""`compact`: return the store's free pages to the disk (after a migration from an older schema,
say), under the run lock so that no sync writes meanwhile."""

from __future__ import annotations

from pathlib import Path

from pithsync.base.exits import ExitCode, NoStoreError
from pithsync.cli.common import open_store
from pithsync.config import Config


def cmd_compact(args, cfg: Config, out) -> int:
    """Rebuild the store's file without its free pages (Store.compact) and journal it as a
    `compact` run.  --json: `{"path", "bytes_before", "free_bytes_before", "bytes_after"}`,
    bytes of the file and its WAL.

    Raises:
        NoStoreError: there is no store at the path (compacting creates none).
    """
    if not Path(cfg.db_path).is_file():
        raise NoStoreError.at(cfg.db_path)
    with open_store(cfg, lock=True) as store:
        before, free = store.size()
        run_id = store.begin_run("compact")
        store.compact()
        after, _ = store.size()
        summary = {"bytes_before": before, "free_bytes_before": free, "bytes_after": after}
        store.finish_run(run_id, int(ExitCode.OK), summary)
    if out.as_json:
        out.json({"path": cfg.db_path, **summary})
    else:
        out.line(
            f"compacted {cfg.db_path}: {_mb(before)} -> {_mb(after)}"
            f" ({_mb(max(before - after, 0))} returned to the disk)"
        )
    return ExitCode.OK


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"
