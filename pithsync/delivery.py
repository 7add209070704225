"""Alert delivery: what the outbox holds, sent to each configured channel (webhook, command,
log).  How an alert comes to be there, in three steps, data flowing one way:

1. `core.alerting.decide()` is pure: a record's verdict and mirror statuses, the alerts open
   for it and the consecutive-unreachable counts in; what to open and what to resolve out.
2. `run.alerting.record_alerts()` runs it for each record inside the savepoint that writes the
   record's rows, and `Store.apply_alert_decision()` writes the alert rows and one outbox row
   per (notification, channel): they commit or roll back with the evidence they report.
3. `deliver()` (this module, from run.after.after_run) sends what the outbox holds.  A failed
   delivery stays in the outbox (attempts, last_error) and is retried on the next run.
   Delivery is at least once: a receiver may see a notification twice (same
   `notification_id`) if a run dies between sending it and recording that it was sent.

The notification (webhook body, command stdin, log line fields)::

    {"type": "pithsync_alert", "version": 1, "notification_id": "12:opened", "alert_id": 12,
     "event": "opened" | "resolved", "kind": "divergence" | "unreachable",
     "pith_number": "pith:2026:...", "verdict": "diverged",
     "mirrors": [{"name": "b", "base_url": "http://...", "status": "stale", "divergent": true,
                  "reasons": [{"status": "stale", "code": "stale", "message": "..."}]}],
     "divergent": [{"mirror": "http://...", "name": "b", "status": "stale"}],   # divergence
     "mirror": {"name": ..., "base_url": ...}, "unreachable_runs": 3,            # unreachable
     "first_seen": "...", "diverged_since": "...", "resolved_at": null | "...",
     "resolution": null | "cleared" | "changed" | "reachable",
     "at": "...", "run_id": "...", "summary": "one line for people"}
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import anyio

from pithsync import __version__
from pithsync.base.clock import utcnow
from pithsync.base.logfmt import kv, log_event
from pithsync.core.alerting import DIVERGENCE, OPENED

log = logging.getLogger("pithsync.alerts")

CHANNELS = ("webhook", "command", "log")
WEBHOOK_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0
MAX_PER_RUN = 1000  # notifications per channel per run; the rest wait for the next run


# -- delivery -----------------------------------------------------------------------------------


@dataclass
class DeliveryReport:
    """Notifications by channel: delivered, failed, and deferred (not tried this run: the
    channel was failing, or is no longer configured)."""

    delivered: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    deferred: dict[str, int] = field(default_factory=dict)

    def _add(self, what: dict, channel: str, n: int = 1) -> None:
        if n:
            what[channel] = what.get(channel, 0) + n


def body_of(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")


def log_fields(payload: dict) -> dict:
    """The fields of a notification's log line (the `log` channel), None where unknown."""
    mirrors = (
        payload.get("divergent") if payload.get("kind") == DIVERGENCE else payload.get("mirrors")
    )
    fields = {
        "alert": payload.get("event"),
        "kind": payload.get("kind"),
        "alert_id": payload.get("alert_id"),
        "pith": payload.get("pith_number"),
        "verdict": payload.get("verdict"),
        "mirrors": ",".join(f"{m.get('name')}:{m.get('status')}" for m in mirrors or []),
        "first_seen": payload.get("first_seen"),
        "resolution": payload.get("resolution"),
        "summary": payload.get("summary"),
    }
    return fields


def log_line(payload: dict) -> str:
    """A notification as the `log` channel writes it, without the line's head."""
    return kv(log_fields(payload))


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[str, bool]:
    """("", _) when delivered; else (why, whether the channel is failing as a whole)."""
    try:
        async with session.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", "User-Agent": f"pithsync/{__version__}"},
            allow_redirects=False,
        ) as resp:
            await resp.content.read(4096)
            if 200 <= resp.status < 300:
                return "", False
            return f"HTTP {resp.status}" + (
                " (redirects are not followed)" if 300 <= resp.status < 400 else ""
            ), resp.status >= 500 or resp.status in (408, 429) or 300 <= resp.status < 400
    except TimeoutError:
        return "timed out", True
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:300]}", True


def _run_command(
    argv: Sequence[str], body: bytes, payload: dict, timeout_s: float
) -> tuple[str, bool]:
    """Run the alert command (an argv list, no shell) with the alert's JSON on stdin.  Delivery
    ends when the command itself exits, not when its pipes close: a background child it leaves
    behind (`sh -c 'notifier & exit 0'`) is not waited for, and its process group is ended."""
    env = {
        **os.environ,
        "PITHSYNC_ALERT_EVENT": str(payload.get("event")),
        "PITHSYNC_ALERT_KIND": str(payload.get("kind")),
        "PITHSYNC_PITH_NUMBER": str(payload.get("pith_number")),
    }
    with tempfile.TemporaryFile() as stderr_file:  # a file: a lingering child cannot block it
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=stderr_file,
                env=env,
                shell=False,
                start_new_session=True,
            )
        except OSError as exc:
            return f"cannot run {argv[0]!r}: {exc.strerror or exc}", True
        # Fed from a thread: a command that never reads must not block us past the timeout.
        feeder = threading.Thread(target=_feed, args=(proc.stdin, body), daemon=True)
        feeder.start()
        try:
            returncode = _wait_unreaped(proc.pid, timeout_s)
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                # The leader is not reaped yet, so its pid (the group's id) cannot be reused.
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            feeder.join(5)
        if returncode is None:
            return f"timed out after {timeout_s:g}s (killed)", True
        if returncode != 0:
            stderr_file.seek(max(0, stderr_file.seek(0, os.SEEK_END) - 4096))
            tail = stderr_file.read().decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            return f"exit status {returncode}" + (f": {tail[0][:300]}" if tail[0] else ""), False
    return "", False


def _feed(stdin, body: bytes) -> None:
    """Write the alert to the command's stdin and close it (EOF); a command that exits without
    reading it all is fine: its exit status says how delivery went."""
    with contextlib.suppress(OSError):  # BrokenPipeError among them
        try:
            stdin.write(body)
        finally:
            stdin.close()


def _wait_unreaped(pid: int, timeout_s: float, poll_s: float = 0.02) -> int | None:
    """The exit status of child `pid` once it exits (None after `timeout_s`), leaving it a zombie
    for the caller to reap."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is not None:
            status = info.si_status
            return status if info.si_code == os.CLD_EXITED else -status
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll_s)


async def deliver_pending(
    cfg,
    store,
    *,
    webhook_timeout_s: float = WEBHOOK_TIMEOUT_S,
    command_timeout_s: float = COMMAND_TIMEOUT_S,
    limit: int = MAX_PER_RUN,
) -> DeliveryReport:
    """Send every undelivered notification to its channel, oldest first.  A channel that fails as
    a whole (receiver down, timeout, 5xx, command missing) is not tried again until the next run;
    a notification the receiver rejects (4xx, non-zero exit) is retried next run too, and the
    same alert's later notifications wait for it (a receiver never sees `resolved` first).

    Args:
        cfg: the configuration (its alerts section names the channels).
        store: the store whose outbox is delivered and marked.
        webhook_timeout_s: the whole of one webhook request.
        command_timeout_s: how long the alert command may run.
        limit: notifications per channel in this run.

    Returns:
        What was delivered, failed and deferred, by channel.
    """
    sender = _Sender(cfg, webhook_timeout_s, command_timeout_s)
    report = DeliveryReport()
    configured = channels(cfg)
    try:
        for channel in CHANNELS:
            rows = store.pending_notifications(channel, limit)
            if not rows:
                continue
            if channel not in configured:
                report._add(report.deferred, channel, len(rows))
                log_event(
                    log,
                    logging.WARNING,
                    "alert_delivery",
                    outcome="deferred",
                    channel=channel,
                    pending=len(rows),
                    why="channel no longer configured; kept in the outbox",
                )
                continue
            await _deliver_channel(sender, store, channel, rows, report)
    finally:
        await sender.close()
    return report


class _Sender:
    """Sends one notification on a channel; the webhook's HTTP session is opened on first use."""

    def __init__(self, cfg, webhook_timeout_s: float, command_timeout_s: float) -> None:
        self.cfg = cfg
        self.webhook_timeout_s = webhook_timeout_s
        self.command_timeout_s = command_timeout_s
        self.session: aiohttp.ClientSession | None = None

    async def send(self, channel: str, payload: dict) -> tuple[str, bool]:
        """("", False) when delivered; else (why, whether the channel is failing as a whole)."""
        if channel == "log":
            level = logging.WARNING if payload.get("event") == OPENED else logging.INFO
            log_event(log, level, "alert", **log_fields(payload))
            return "", False
        if channel == "webhook":
            if self.session is None:
                self.session = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self.webhook_timeout_s),
                    cookie_jar=aiohttp.DummyCookieJar(),
                )
            return await _post(self.session, self.cfg.alerts.webhook_url, body_of(payload))
        run = functools.partial(
            _run_command, self.cfg.alerts.command, body_of(payload), payload, self.command_timeout_s
        )
        return await anyio.to_thread.run_sync(run)

    async def close(self) -> None:
        """Close the webhook session, if one was opened."""
        if self.session is not None:
            await self.session.close()


async def _deliver_channel(
    sender: _Sender, store, channel: str, rows: list[dict], report: DeliveryReport
) -> None:
    """Deliver one channel's pending rows in order, marking each in the outbox; stop at the
    first failure of the channel as a whole."""
    held: set[int] = set()  # alerts whose earlier notification failed: keep their order
    for n, row in enumerate(rows):
        payload = row["payload"]
        if row["alert_id"] in held:
            report._add(report.deferred, channel)
            continue
        why, fatal = await sender.send(channel, payload)
        at = utcnow()
        if not why:
            store.mark_delivered(row["id"], at)
            report._add(report.delivered, channel)
            log_event(
                log,
                logging.DEBUG,
                "alert_delivery",
                outcome="delivered",
                channel=channel,
                outbox_id=row["id"],
                notification_id=payload.get("notification_id"),
            )
            continue
        store.mark_failed(row["id"], at, why)
        report._add(report.failed, channel)
        held.add(row["alert_id"])
        log_event(
            log,
            logging.WARNING,
            "alert_delivery",
            outcome="failed",
            channel=channel,
            outbox_id=row["id"],
            notification_id=payload.get("notification_id"),
            attempts=(row["attempts"] or 0) + 1,
            error=why,
        )
        if fatal:
            rest = len(rows) - n - 1
            report._add(report.deferred, channel, rest)
            if rest:
                log_event(
                    log,
                    logging.WARNING,
                    "alert_delivery",
                    outcome="deferred",
                    channel=channel,
                    pending=rest,
                    why="channel failing; retried next run",
                )
            return


def deliver(cfg, store, **kw) -> DeliveryReport:
    """deliver_pending from synchronous code: run.after.after_run calls it once the crawl's
    loop has ended."""
    if not store.undelivered_counts():
        return DeliveryReport()
    return anyio.run(functools.partial(deliver_pending, cfg, store, **kw))


# -- configuration -----------------------------------------------------------------------------


def channels(cfg) -> list[str]:
    """The configured delivery channels."""
    a = cfg.alerts
    return [
        c
        for c, on in (
            ("webhook", bool(a.webhook_url)),
            ("command", bool(a.command)),
            ("log", a.log),
        )
        if on
    ]
