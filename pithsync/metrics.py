"""Prometheus metrics in the node_exporter textfile format (`[metrics] textfile = PATH`),
rewritten after every run, atomically: a temp file in the same directory, fsync'd, then
os.replace, so the collector never reads half a file.

    pithsync_last_run_timestamp_seconds         end of the last crawl run (pull or sync)
    pithsync_last_run_exit_code                 its exit code (0 ok, 1 diverged, 3 unverifiable)
    pithsync_last_success_timestamp_seconds     end of the last crawl run that exited 0 (0: never)
    pithsync_run_duration_seconds               the last run's duration
    pithsync_records{verdict}                   records by verdict, in the last run
    pithsync_mirror_records{mirror,base_url,status}  records by mirror and status, in the last run
    pithsync_alerts_open{kind}                  open alerts (divergence, unreachable)
    pithsync_alert_notifications_undelivered{channel}  notifications waiting in the outbox
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import datetime, timezone
from typing import Iterable

ALERT_KINDS = ("divergence", "unreachable")
CHANNELS = ("webhook", "command", "log")


def _ts(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float | int) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, help_text: str, samples: Iterable[tuple[dict, float | int]]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{inner}}} {_num(value)}" if inner else f"{name} {_num(value)}")

    def render(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(store, run_id: str, tally) -> str:
    """The metrics text after run `run_id`; `tally` is its sync.RunTally."""
    t = _Text()
    run = store.run(run_id) or {}
    last = store.last_finished_run(success=False) or run
    success = store.last_finished_run(success=True)
    t.metric("pithsync_last_run_timestamp_seconds", "Unix time the last crawl run (pull or sync) finished.", [({}, _ts(last.get("finished_at")) or 0.0)])
    t.metric("pithsync_last_run_exit_code", "Exit code of the last crawl run (0 ok, 1 diverged, 3 unverifiable).", [({}, last.get("exit_code") or 0)])
    t.metric("pithsync_last_success_timestamp_seconds", "Unix time the last crawl run that exited 0 finished (0: never).", [({}, _ts(success.get("finished_at")) if success else 0.0)])
    started, finished = _ts(run.get("started_at")), _ts(run.get("finished_at"))
    t.metric("pithsync_run_duration_seconds", "Duration of the last run.", [({}, round(finished - started, 6) if started and finished else 0.0)])

    by_verdict = tally.summary()
    mirrors = tally.mirrors
    t.metric("pithsync_records", "Records by verdict in the last run.", [({"verdict": v}, n) for v, n in by_verdict.items()])
    t.metric(
        "pithsync_mirror_records",
        "Records by mirror and status in the last run.",
        [({"mirror": name, "base_url": base, "status": s}, n) for (name, base), counts in sorted(mirrors.items()) for s, n in counts.items()],
    )
    open_counts = store.open_alert_counts()
    t.metric("pithsync_alerts_open", "Open alerts by kind.", [({"kind": k}, open_counts.get(k, 0)) for k in ALERT_KINDS])
    pending = store.undelivered_counts()
    t.metric("pithsync_alert_notifications_undelivered", "Alert notifications waiting for delivery, by channel.", [({"channel": c}, pending.get(c, 0)) for c in CHANNELS])
    return t.render()


def write_atomically(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` all at once: readers see the old file or the new, never half.
    Raises OSError; on failure the old file is untouched and no temp file is left behind."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_textfile(path: str, store, run_id: str, tally) -> None:
    write_atomically(path, render(store, run_id, tally).encode("utf-8"))
