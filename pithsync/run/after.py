"""What happens after a run's results are stored (alerts delivery, metrics).  Kept apart so
the data still flows one way: store -> alert.

Nothing here changes the run's exit code: a webhook that is down or a metrics file that cannot
be written is logged, and the notifications wait in the outbox for the next run.
"""

from __future__ import annotations

import logging

from pithsync import delivery, metrics
from pithsync.base.logfmt import log_event

log = logging.getLogger("pithsync.hooks")


def after_run(cfg, store, run_id: str, tally, coverage=None) -> None:
    """Deliver what the outbox holds and write the metrics textfile (with the schedule's
    `coverage`, when given); log what fails."""
    try:
        report = delivery.deliver(cfg, store)
        if report.delivered or report.failed or report.deferred:
            counts = {
                **{f"delivered_{c}": n for c, n in report.delivered.items()},
                **{f"failed_{c}": n for c, n in report.failed.items()},
                **{f"deferred_{c}": n for c, n in report.deferred.items()},
            }
            log_event(log, logging.INFO, "alert_delivery", outcome="done", run_id=run_id, **counts)
    except Exception as exc:  # noqa: BLE001 - delivery never fails the run; the outbox keeps everything
        log_event(
            log,
            logging.ERROR,
            "alert_delivery",
            outcome="error",
            run_id=run_id,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=log.isEnabledFor(logging.DEBUG),
        )

    if cfg.metrics.textfile:
        try:
            metrics.write_textfile(cfg.metrics.textfile, store, run_id, tally, coverage)
        except Exception as exc:  # noqa: BLE001
            log_event(
                log,
                logging.ERROR,
                "metrics",
                outcome="error",
                textfile=cfg.metrics.textfile,
                error=f"{type(exc).__name__}: {exc}",
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
