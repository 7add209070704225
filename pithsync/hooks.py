"""What happens after a run's results are stored (alerts delivery, metrics).  Kept apart so
the data still flows one way: store -> alert."""

from __future__ import annotations


def after_run(cfg, store, run_id, results, out) -> None:
    return None
