"""A record's alerts, decided (core.alerting) and written in the transaction that writes its
evidence, so that the alert rows and their outbox rows commit or roll back with it."""

from __future__ import annotations

import logging
from typing import Callable, Sequence

from pithsync.base.clock import utcnow
from pithsync.base.logfmt import log_event
from pithsync.core.alerting import OPENED, RESOLVED, Decision, MirrorView, OpenAlert, decide
from pithsync.delivery import channels

log = logging.getLogger("pithsync.alerts")


def apply(store, decision: Decision, chans: Sequence[str], now: str, run_id: str) -> list[dict]:
    """Alert rows and outbox rows for a decision.  Runs inside the caller's transaction."""
    sent = []
    for r in decision.resolve:
        payload = {**r.payload, "alert_id": r.alert.id, "notification_id": f"{r.alert.id}:{RESOLVED}"}
        store.resolve_alert(r.alert.id, now, run_id, payload)
        store.enqueue_notification(r.alert.id, RESOLVED, list(chans), payload, now)
        sent.append(payload)
    for o in decision.open:
        alert_id = store.insert_alert(o.kind, o.scope, o.pith_number, o.mirror, o.fingerprint, now, run_id)
        payload = {**o.payload, "alert_id": alert_id, "notification_id": f"{alert_id}:{OPENED}"}
        store.set_alert_payload(alert_id, payload)
        store.enqueue_notification(alert_id, OPENED, list(chans), payload, now)
        sent.append(payload)
    return sent


def on_record(cfg, store, run_id: str, result) -> Callable[[object], None]:
    """The `extra` for store.write_record(run_id, write, extra=...): decides and writes this
    record's alerts inside the transaction that writes its evidence.  It runs after the record's
    mirror_status rows are written, so the unreachable counts include this run."""

    def extra(_db) -> None:

        if result.verdict.value != "diverged" and all(m.status.value != "unreachable" for m in result.mirrors) and not store.any_open_alert():
            return  # decide() could neither open nor resolve anything: skip its two queries
        now = utcnow()
        pith = result.pith_number
        counts = store.unreachable_counts(pith)
        mirrors = [MirrorView(m.base_url, m.name, m.status.value, tuple(m.reasons), counts.get(m.base_url, 0)) for m in result.mirrors]
        try:
            open_alerts = [OpenAlert.from_row(r) for r in store.open_alerts_for(pith, [m.base_url for m in mirrors])]
            decision = decide(pith, result.verdict.value, mirrors, open_alerts, unreachable_threshold=cfg.alerts.unreachable_runs, now=now, run_id=run_id)
        except Exception:  # a bug here must not cost the record its verified data
            log_event(log, logging.ERROR, "alert_decision_failed", exc_info=True, record=pith)
            return
        for payload in apply(store, decision, channels(cfg), now, run_id):
            log_event(
                log, logging.DEBUG, "alert_queued", alert=payload["event"], kind=payload["kind"],
                alert_id=payload["alert_id"], record=pith, channels=",".join(channels(cfg)) or "-",
            )

    return extra
