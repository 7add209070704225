"""Prometheus metrics in the node_exporter textfile format (`[metrics] textfile = PATH`),
rewritten after every run, atomically (base.files.write_atomically), so the collector never
reads half a file.

    pithsync_last_run_timestamp_seconds         end of the last crawl run (pull or sync)
    pithsync_last_run_exit_code                 its exit code (0 ok, 1 diverged, 3 unverifiable)
    pithsync_last_success_timestamp_seconds     end of the last crawl run that exited 0 (0: never)
    pithsync_run_duration_seconds               the last run's duration
    pithsync_records{verdict}                   records by verdict, in the last run
    pithsync_mirror_records{mirror,base_url,status}  records by mirror and status, in the last run
    pithsync_alerts_open{kind}                  open alerts (divergence, unreachable)
    pithsync_alert_notifications_undelivered{channel}  notifications waiting in the outbox
    pithsync_records_tracked                    records tracked (the schedule, at the run's end)
    pithsync_records_due                        tracked records due for a check
    pithsync_records_overdue                    tracked records last checked over max_interval ago
    pithsync_oldest_check_age_seconds           age of the oldest last check (0: none yet)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from pithsync.base.files import write_atomically
from pithsync.core.schedule import Coverage

ALERT_KINDS = ("divergence", "unreachable")
CHANNELS = ("webhook", "command", "log")


def _ts(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float | int) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(
        self, name: str, help_text: str, samples: Iterable[tuple[dict, float | int]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            self.lines.append(
                f"{name}{{{inner}}} {_num(value)}" if inner else f"{name} {_num(value)}"
            )

    def render(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(store, run_id: str, tally, coverage: Coverage | None = None) -> str:
    """The metrics text after run `run_id`.

    Args:
        store: the store the run wrote (its runs, open alerts and outbox).
        run_id: the run just finished.
        tally: its RunTally (records by verdict, by mirror and status).
        coverage: the schedule's coverage at the run's end (None: not written).

    Returns:
        The textfile's content.
    """
    t = _Text()
    _run_metrics(t, store, run_id)
    _record_metrics(t, tally)
    _alert_metrics(t, store)
    if coverage is not None:
        _coverage_metrics(t, coverage)
    return t.render()


def _coverage_metrics(t: _Text, c: Coverage) -> None:
    t.metric("pithsync_records_tracked", "Records tracked.", [({}, c.tracked)])
    t.metric("pithsync_records_due", "Tracked records due for a check.", [({}, c.due)])
    t.metric(
        "pithsync_records_overdue",
        "Tracked records whose last check is older than max_interval.",
        [({}, c.overdue)],
    )
    t.metric(
        "pithsync_oldest_check_age_seconds",
        "Age of the oldest last check of a tracked record (0: none checked yet).",
        [({}, round(c.oldest_check_age or 0.0, 3))],
    )


def _run_metrics(t: _Text, store, run_id: str) -> None:
    run = store.run(run_id) or {}
    last = store.last_finished_run(success=False) or run
    success = store.last_finished_run(success=True)
    t.metric(
        "pithsync_last_run_timestamp_seconds",
        "Unix time the last crawl run (pull or sync) finished.",
        [({}, _ts(last.get("finished_at")) or 0.0)],
    )
    t.metric(
        "pithsync_last_run_exit_code",
        "Exit code of the last crawl run (0 ok, 1 diverged, 3 unverifiable).",
        [({}, last.get("exit_code") or 0)],
    )
    t.metric(
        "pithsync_last_success_timestamp_seconds",
        "Unix time the last crawl run that exited 0 finished (0: never).",
        [({}, _ts(success.get("finished_at")) if success else 0.0)],
    )
    started, finished = _ts(run.get("started_at")), _ts(run.get("finished_at"))
    t.metric(
        "pithsync_run_duration_seconds",
        "Duration of the last run.",
        [({}, round(finished - started, 6) if started and finished else 0.0)],
    )


def _record_metrics(t: _Text, tally) -> None:
    by_verdict = tally.summary()
    mirrors = tally.mirrors
    t.metric(
        "pithsync_records",
        "Records by verdict in the last run.",
        [({"verdict": v}, n) for v, n in by_verdict.items()],
    )
    t.metric(
        "pithsync_mirror_records",
        "Records by mirror and status in the last run.",
        [
            ({"mirror": name, "base_url": base, "status": s}, n)
            for (name, base), counts in sorted(mirrors.items())
            for s, n in counts.items()
        ],
    )


def _alert_metrics(t: _Text, store) -> None:
    open_counts = store.open_alert_counts()
    t.metric(
        "pithsync_alerts_open",
        "Open alerts by kind.",
        [({"kind": k}, open_counts.get(k, 0)) for k in ALERT_KINDS],
    )
    pending = store.undelivered_counts()
    t.metric(
        "pithsync_alert_notifications_undelivered",
        "Alert notifications waiting for delivery, by channel.",
        [({"channel": c}, pending.get(c, 0)) for c in CHANNELS],
    )


def write_textfile(path: str, store, run_id: str, tally, coverage: Coverage | None = None) -> None:
    """Rewrite the textfile at `path` with the metrics after run `run_id` (see `render`)."""
    write_atomically(path, render(store, run_id, tally, coverage).encode("utf-8"))
