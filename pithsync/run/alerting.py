"""A record's alerts: read what is open for it, decide (core.alerting), and write the decision
(store.apply_alert_decision), inside the group that writes the record's evidence, so that the
alert rows and their outbox rows commit or roll back with it."""

from __future__ import annotations

import logging

from pithsync.base.clock import utcnow
from pithsync.base.logfmt import log_event
from pithsync.config import Config
from pithsync.core.alerting import Decision, MirrorView, OpenAlert, decide
from pithsync.delivery import channels
from pithsync.run.results import RecordResult
from pithsync.store import Store

log = logging.getLogger("pithsync.alerts")


def record_alerts(cfg: Config, store: Store, run_id: str, result: RecordResult) -> None:
    """Decide and write one record's alerts, inside the group that wrote its rows.

    Runs after the record's mirror_status rows are written, so the unreachable counts include
    this run, and after the alerts of the records before it in the group, which it sees.

    Args:
        cfg: the run's configuration (alert threshold, delivery channels).
        store: the store, inside `store.group()`.
        run_id: the run.
        result: the record's outcome.
    """
    if not _can_change_alerts(store, result):
        return  # decide() could neither open nor resolve anything: skip its two queries
    now = utcnow()
    try:
        decision = _decision(cfg, store, run_id, result, now)
    except Exception:  # a bug here must not cost the record its verified data
        log_event(
            log, logging.ERROR, "alert_decision_failed", exc_info=True, record=result.pith_number
        )
        return
    chans = channels(cfg)
    for payload in store.apply_alert_decision(decision, chans, now, run_id):
        log_event(
            log, logging.DEBUG, "alert_queued", alert=payload["event"], kind=payload["kind"],
            alert_id=payload["alert_id"], record=result.pith_number,
            channels=",".join(chans) or "-",
        )  # fmt: skip


def _can_change_alerts(store: Store, result: RecordResult) -> bool:
    """Whether the record's outcome could open or resolve an alert: it diverged, a mirror was
    unreachable, or some alert is open (it may be one this outcome resolves)."""
    if result.verdict.value == "diverged":
        return True
    if any(m.status.value == "unreachable" for m in result.mirrors):
        return True
    return store.any_open_alert()


def _decision(cfg: Config, store: Store, run_id: str, result: RecordResult, now: str) -> Decision:
    """What the record's outcome does to the alerts, from the rows the group holds so far."""
    pith = result.pith_number
    counts = store.unreachable_counts(pith)
    mirrors = [
        MirrorView(m.base_url, m.name, m.status.value, tuple(m.reasons), counts.get(m.base_url, 0))
        for m in result.mirrors
    ]
    rows = store.open_alerts_for(pith, [m.base_url for m in mirrors])
    return decide(
        pith,
        result.verdict.value,
        mirrors,
        [OpenAlert.from_row(r) for r in rows],
        unreachable_threshold=cfg.alerts.unreachable_runs,
        now=now,
        run_id=run_id,
    )
