"""Alert rows and their outbox: what core.alerting decided, written beside the evidence it
reports (in the same transaction), and what pithsync.delivery reads and marks."""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlite_utils

from pithsync.core.alerting import (
    OPENED,
    RESOLVED,
    Decision,
    mirror_scope,
    record_scope,
    split_view_scope,
)


def unreachable_counts(db: sqlite_utils.Database, pith_number: str) -> dict[str, int]:
    """mirror base_url -> consecutive runs it was unreachable for this record (this run included
    when read after the record's mirror_status rows were written)."""
    rows = db.execute(
        "select mirror, unreachable_runs from mirror_status where pith_number = ?", [pith_number]
    )
    return {mirror: int(runs or 0) for mirror, runs in rows}


def open_alerts_for(db: sqlite_utils.Database, pith_number: str, mirrors: list[str]) -> list[dict]:
    """Open alerts a record's outcome can affect: its divergence, its mirrors' unreachability
    and their split views.

    Args:
        db: the store's connection.
        pith_number: the record.
        mirrors: the base_url of every mirror the record was checked on.

    Returns:
        The alerts' rows, oldest first, each with its payload parsed.
    """
    scopes = [record_scope(pith_number)] + [mirror_scope(m) for m in mirrors]
    scopes += [split_view_scope(pith_number, m) for m in mirrors]
    marks = ",".join("?" * len(scopes))
    rows = list(
        db.query(
            f"select * from alerts where state = 'open' and scope in ({marks}) order by id", scopes
        )
    )
    for r in rows:
        r["payload"] = json.loads(r["payload"] or "{}")
    return rows


def any_open(db: sqlite_utils.Database) -> bool:
    """Whether any alert is open."""
    query = "select exists(select 1 from alerts where state = 'open')"
    return db.execute(query).fetchone()[0] == 1


def insert_alert(
    db: sqlite_utils.Database,
    kind: str,
    scope: str,
    pith_number: str | None,
    mirror: str | None,
    fingerprint: str,
    opened_at: str,
    run_id: str,
) -> int:
    """Open an alert (its payload is set once its id is known, see set_alert_payload).

    Returns:
        The new alert's id.
    """
    cur = db.execute(
        "insert into alerts (kind, scope, pith_number, mirror, fingerprint, state, opened_at,"
        " opened_run_id, payload) values (?,?,?,?,?,'open',?,?,'{}')",
        [kind, scope, pith_number, mirror, fingerprint, opened_at, run_id],
    )
    return int(cur.lastrowid)


def set_alert_payload(db: sqlite_utils.Database, alert_id: int, payload: dict) -> None:
    """The `opened` notification of an alert, kept on its row."""
    body = json.dumps(payload, sort_keys=True)
    db.execute("update alerts set payload = ? where id = ?", [body, alert_id])


def resolve_alert(
    db: sqlite_utils.Database, alert_id: int, resolved_at: str, run_id: str, payload: dict
) -> None:
    """Resolve an open alert, keeping its `resolved` notification on its row."""
    db.execute(
        "update alerts set state = 'resolved', resolved_at = ?, resolved_run_id = ?,"
        " resolved_payload = ? where id = ? and state = 'open'",
        [resolved_at, run_id, json.dumps(payload, sort_keys=True), alert_id],
    )


def enqueue_notification(
    db: sqlite_utils.Database,
    alert_id: int,
    event: str,
    channels: Sequence[str],
    payload: dict,
    created_at: str,
) -> None:
    """One outbox row per channel for an alert's `event` (at most one per alert, event and
    channel: enqueuing again does nothing)."""
    body = json.dumps(payload, sort_keys=True)
    db.conn.executemany(
        "insert or ignore into outbox (alert_id, event, channel, payload, created_at, attempts)"
        " values (?,?,?,?,?,0)",
        [(alert_id, event, channel, body, created_at) for channel in channels],
    )


def apply_decision(
    db: sqlite_utils.Database,
    decision: Decision,
    channels: Sequence[str],
    now: str,
    run_id: str,
) -> list[dict]:
    """Write what core.alerting.decide decided: resolve and open alert rows, and queue their
    notifications.  Runs inside the caller's transaction (the record's group).

    Args:
        db: the writer's connection.
        decision: the alerts to resolve and to open.
        channels: the delivery channels each notification goes to.
        now: the time the alerts open or resolve at.
        run_id: the run that decided.

    Returns:
        The notifications queued, in order, each with its alert_id and notification_id.
    """
    sent = []
    for r in decision.resolve:
        note = f"{r.alert.id}:{RESOLVED}"
        payload = {**r.payload, "alert_id": r.alert.id, "notification_id": note}
        resolve_alert(db, r.alert.id, now, run_id, payload)
        enqueue_notification(db, r.alert.id, RESOLVED, channels, payload, now)
        sent.append(payload)
    for o in decision.open:
        alert_id = insert_alert(
            db, o.kind, o.scope, o.pith_number, o.mirror, o.fingerprint, now, run_id
        )
        payload = {**o.payload, "alert_id": alert_id, "notification_id": f"{alert_id}:{OPENED}"}
        set_alert_payload(db, alert_id, payload)
        enqueue_notification(db, alert_id, OPENED, channels, payload, now)
        sent.append(payload)
    return sent


def pending_notifications(db: sqlite_utils.Database, channel: str, limit: int = 1000) -> list[dict]:
    """Undelivered notifications for one channel, oldest first, each with its payload parsed."""
    rows = list(
        db.query(
            "select * from outbox where delivered_at is null and channel = ? order by id limit ?",
            [channel, limit],
        )
    )
    for r in rows:
        r["payload"] = json.loads(r["payload"])
    return rows


def mark_delivered(db: sqlite_utils.Database, outbox_id: int, at: str) -> None:
    """A notification was delivered at `at`.  Runs inside the caller's transaction."""
    db.execute(
        "update outbox set delivered_at = ?, last_attempt_at = ?, attempts = attempts + 1"
        " where id = ?",
        [at, at, outbox_id],
    )


def mark_failed(db: sqlite_utils.Database, outbox_id: int, at: str, error: str) -> None:
    """A delivery attempt failed; the notification stays queued.  Runs inside the caller's
    transaction."""
    db.execute(
        "update outbox set last_attempt_at = ?, attempts = attempts + 1, last_error = ?"
        " where id = ?",
        [at, error[:1000], outbox_id],
    )


def alerts(db: sqlite_utils.Database, open_only: bool = False) -> list[dict]:
    """Alerts, newest first, each with its notifications' delivery state."""
    where = "where a.state = 'open'" if open_only else ""
    rows = list(
        db.query(
            "select a.*, (select count(*) from outbox o where o.alert_id = a.id"
            " and o.delivered_at is null) as undelivered,"
            " (select count(*) from outbox o where o.alert_id = a.id) as notifications"
            f" from alerts a {where} order by a.id desc"
        )
    )
    for r in rows:
        r["payload"] = json.loads(r["payload"] or "{}")
        resolved = r["resolved_payload"]
        r["resolved_payload"] = json.loads(resolved) if resolved else None
    return rows


def open_alert_counts(db: sqlite_utils.Database) -> dict[str, int]:
    """kind -> how many alerts of that kind are open."""
    query = "select kind, count(*) from alerts where state = 'open' group by kind"
    return dict(db.execute(query).fetchall())


def undelivered_counts(db: sqlite_utils.Database) -> dict[str, int]:
    """channel -> how many notifications wait for delivery on it."""
    query = "select channel, count(*) from outbox where delivered_at is null group by channel"
    return dict(db.execute(query).fetchall())
