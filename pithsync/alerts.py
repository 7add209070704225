"""Alerts on divergence: decided per record, written to the outbox with the evidence, then
delivered (webhook, command, log).

Three layers, data flowing one way:

1. `decide()` is pure: a record's verdict and mirror statuses, the alerts open for it and the
   consecutive-unreachable counts in; what to open and what to resolve out.
2. `on_record()` gives SyncEngine the `extra` that store.write_record runs inside the record's
   transaction: the alert rows and one outbox row per (notification, channel) commit or roll back
   together with the evidence they report.
3. `deliver()` (from hooks.after_run) sends what the outbox holds.  A failed delivery stays in
   the outbox (attempts, last_error) and is retried on the next run.  Delivery is at least once:
   a receiver may see a notification twice (same `notification_id`) if a run dies between
   sending it and recording that it was sent.

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
import hashlib
import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import aiohttp
import anyio

from pithsync import __version__
from pithsync.logfmt import log_event

log = logging.getLogger("pithsync.alerts")

DIVERGENCE = "divergence"
UNREACHABLE = "unreachable"
OPENED = "opened"
RESOLVED = "resolved"
CHANNELS = ("webhook", "command", "log")
NOTIFICATION_TYPE = "pithsync_alert"
NOTIFICATION_VERSION = 1
WEBHOOK_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0
MAX_PER_RUN = 1000  # notifications per channel per run; the rest wait for the next run
_OK_STATUSES = ("ok", "unreachable")  # never part of a divergence (unreachable has its own alert)


def _kv(fields: Mapping) -> str:
    from pithsync.cli import kv

    return kv(dict(fields))


# -- the decision (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class MirrorView:
    """One mirror's outcome for the record in this run."""

    base_url: str
    name: str
    status: str
    reasons: tuple = ()
    unreachable_runs: int = 0  # consecutive runs unreachable for this record, this run included


@dataclass(frozen=True)
class OpenAlert:
    id: int
    kind: str
    scope: str
    opened_at: str
    fingerprint: str = ""
    mirror: str | None = None
    divergent: frozenset = frozenset()  # {(base_url, status)} of a divergence alert
    diverged_since: str | None = None

    @classmethod
    def from_row(cls, row: Mapping) -> "OpenAlert":
        payload = row.get("payload") or {}
        if isinstance(payload, str):
            payload = json.loads(payload)
        divergent = frozenset((d["mirror"], d["status"]) for d in payload.get("divergent", []) if isinstance(d, dict))
        return cls(row["id"], row["kind"], row["scope"], row["opened_at"], row.get("fingerprint") or "", row.get("mirror"), divergent, payload.get("diverged_since") or row["opened_at"])


@dataclass(frozen=True)
class Opening:
    kind: str
    scope: str
    pith_number: str
    mirror: str | None
    fingerprint: str
    payload: dict  # complete but for alert_id / notification_id


@dataclass(frozen=True)
class Resolution:
    alert: OpenAlert
    payload: dict


@dataclass
class Decision:
    resolve: list[Resolution] = field(default_factory=list)
    open: list[Opening] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.resolve or self.open)


def record_scope(pith_number: str) -> str:
    return f"record:{pith_number}"


def mirror_scope(base_url: str) -> str:
    return f"mirror:{base_url}"


def fingerprint(divergent: frozenset) -> str:
    return hashlib.sha256(json.dumps(sorted(divergent), separators=(",", ":")).encode()).hexdigest()


def divergent_set(verdict: str, mirrors: Sequence[MirrorView], previous: frozenset = frozenset()) -> frozenset:
    """The (mirror, status) pairs that make a divergence.  A mirror that is unreachable now keeps
    the divergent status it had (it cannot be seen to have changed), so a lying mirror that also
    flaps does not resolve and re-open its alert on every run."""
    now = {(m.base_url, m.status) for m in mirrors if m.status not in _OK_STATUSES} if verdict == "diverged" else set()
    unreachable = {m.base_url for m in mirrors if m.status == "unreachable"}
    now |= {(url, status) for url, status in previous if url in unreachable}
    return frozenset(now)


def _mirrors_json(mirrors: Sequence[MirrorView], divergent: frozenset = frozenset()) -> list[dict]:
    flagged = {url for url, _ in divergent}
    return [{"name": m.name, "base_url": m.base_url, "status": m.status, "divergent": m.base_url in flagged, "reasons": list(m.reasons)[:10]} for m in mirrors]


def _divergent_json(divergent: frozenset, mirrors: Sequence[MirrorView]) -> list[dict]:
    names = {m.base_url: m.name for m in mirrors}
    return [{"mirror": url, "name": names.get(url, url), "status": status} for url, status in sorted(divergent)]


def clip_words(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters at a space, with an ellipsis, so that a hash or
    a URL in it is either whole or left out, never cut in the middle."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return (text[:cut] if cut > 0 else "").rstrip(" ,;:(") + " …"


def _first_message(m: MirrorView) -> str:
    for r in m.reasons:
        if isinstance(r, dict) and r.get("status") == m.status:
            return clip_words(str(r.get("message", "")), 160)
    return ""


def _divergence_summary(pith: str, divergent: frozenset, mirrors: Sequence[MirrorView]) -> str:
    by_url = {m.base_url: m for m in mirrors}
    parts = []
    for url, status in sorted(divergent):
        m = by_url.get(url)
        name = m.name if m else url
        why = _first_message(m) if m and m.status == status else "unreachable now"
        parts.append(f"{name} is {status}" + (f" ({why})" if why else ""))
    return f"{pith} diverged: " + "; ".join(parts)


def decide(
    pith_number: str,
    verdict: str,
    mirrors: Sequence[MirrorView],
    open_alerts: Sequence[OpenAlert],
    *,
    unreachable_threshold: int,
    now: str,
    run_id: str,
) -> Decision:
    """What one record's outcome does to the alerts.

    divergence (one open per record): opened when the record is first seen diverged; an
    unchanged divergence (same set of (mirror, status)) does nothing; a changed one resolves the
    old alert ("changed") and opens a new one; a cleared one resolves it ("cleared").
    unreachable (one open per mirror, however many records it serves): opened when the mirror
    has been unreachable for `unreachable_threshold` runs in a row for this record (0: never),
    resolved when this record sees it reachable again ("reachable").
    """
    decision = Decision()
    base = {"type": NOTIFICATION_TYPE, "version": NOTIFICATION_VERSION, "pith_number": pith_number, "verdict": verdict, "at": now, "run_id": run_id}

    # divergence
    scope = record_scope(pith_number)
    old = next((a for a in open_alerts if a.kind == DIVERGENCE and a.scope == scope), None)
    current = divergent_set(verdict, mirrors, old.divergent if old else frozenset())
    if old is not None and current != old.divergent:
        resolution = "changed" if current else "cleared"
        summary = f"{pith_number}: divergence {'changed' if current else 'resolved'}" + ("" if current else f", verdict now {verdict}")
        decision.resolve.append(
            Resolution(
                old,
                {
                    **base,
                    "event": RESOLVED,
                    "kind": DIVERGENCE,
                    "mirrors": _mirrors_json(mirrors, current),
                    "divergent": _divergent_json(old.divergent, mirrors),
                    "first_seen": old.opened_at,
                    "diverged_since": old.diverged_since,
                    "resolved_at": now,
                    "resolution": resolution,
                    "summary": summary,
                },
            )
        )
    if current and (old is None or current != old.divergent):
        since = old.diverged_since if old is not None else now
        decision.open.append(
            Opening(
                DIVERGENCE,
                scope,
                pith_number,
                None,
                fingerprint(current),
                {
                    **base,
                    "event": OPENED,
                    "kind": DIVERGENCE,
                    "mirrors": _mirrors_json(mirrors, current),
                    "divergent": _divergent_json(current, mirrors),
                    "first_seen": now,
                    "diverged_since": since,
                    "resolved_at": None,
                    "resolution": None,
                    "summary": clip_words(_divergence_summary(pith_number, current, mirrors), 500),
                },
            )
        )

    # unreachable mirrors
    open_by_mirror = {a.mirror: a for a in open_alerts if a.kind == UNREACHABLE}
    for m in mirrors:
        alert = open_by_mirror.get(m.base_url)
        common = {**base, "kind": UNREACHABLE, "mirror": {"name": m.name, "base_url": m.base_url}, "mirrors": _mirrors_json([m]), "unreachable_runs": m.unreachable_runs}
        if m.status == "unreachable":
            if alert is None and unreachable_threshold > 0 and m.unreachable_runs >= unreachable_threshold:
                why = _first_message(m)
                decision.open.append(
                    Opening(
                        UNREACHABLE,
                        mirror_scope(m.base_url),
                        pith_number,
                        m.base_url,
                        "",
                        {
                            **common,
                            "event": OPENED,
                            "first_seen": now,
                            "resolved_at": None,
                            "resolution": None,
                            "summary": f"mirror {m.name} ({m.base_url}) unreachable for {m.unreachable_runs} runs in a row (seen for {pith_number})" + (f": {why}" if why else ""),
                        },
                    )
                )
        elif alert is not None:
            decision.resolve.append(
                Resolution(
                    alert,
                    {
                        **common,
                        "event": RESOLVED,
                        "first_seen": alert.opened_at,
                        "resolved_at": now,
                        "resolution": "reachable",
                        "summary": f"mirror {m.name} ({m.base_url}) reachable again (seen for {pith_number}, status {m.status})",
                    },
                )
            )
    return decision


# -- writing, inside the record's transaction ---------------------------------------------------


def channels(cfg) -> list[str]:
    """The configured delivery channels."""
    a = cfg.alerts
    return [c for c, on in (("webhook", bool(a.webhook_url)), ("command", bool(a.command)), ("log", a.log)) if on]


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
        from pithsync.store import utcnow

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


# -- delivery -----------------------------------------------------------------------------------


@dataclass
class DeliveryReport:
    delivered: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    deferred: dict[str, int] = field(default_factory=dict)  # not tried this run (channel failing, or not configured)

    def _add(self, what: dict, channel: str, n: int = 1) -> None:
        if n:
            what[channel] = what.get(channel, 0) + n


def body_of(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")


def log_fields(payload: dict) -> dict:
    """The fields of a notification's log line (the `log` channel), None where unknown."""
    mirrors = payload.get("divergent") if payload.get("kind") == DIVERGENCE else payload.get("mirrors")
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
    return _kv(log_fields(payload))


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[str, bool]:
    """("", _) when delivered; else (why, whether the channel is failing as a whole)."""
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json", "User-Agent": f"pithsync/{__version__}"}, allow_redirects=False) as resp:
            await resp.content.read(4096)
            if 200 <= resp.status < 300:
                return "", False
            return f"HTTP {resp.status}" + (" (redirects are not followed)" if 300 <= resp.status < 400 else ""), resp.status >= 500 or resp.status in (408, 429) or 300 <= resp.status < 400
    except TimeoutError:
        return "timed out", True
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:300]}", True


def _run_command(argv: Sequence[str], body: bytes, payload: dict, timeout_s: float) -> tuple[str, bool]:
    """Run the alert command (an argv list, no shell) with the alert's JSON on stdin.  Delivery
    ends when the command itself exits, not when its pipes close: a background child it leaves
    behind (`sh -c 'notifier & exit 0'`) is not waited for, and its process group is ended."""
    env = {**os.environ, "PITHSYNC_ALERT_EVENT": str(payload.get("event")), "PITHSYNC_ALERT_KIND": str(payload.get("kind")), "PITHSYNC_PITH_NUMBER": str(payload.get("pith_number"))}
    with tempfile.TemporaryFile() as stderr_file:  # a file: a lingering child cannot block it
        try:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr_file,
                env=env, shell=False, start_new_session=True,
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


async def deliver_pending(cfg, store, *, webhook_timeout_s: float = WEBHOOK_TIMEOUT_S, command_timeout_s: float = COMMAND_TIMEOUT_S, limit: int = MAX_PER_RUN) -> DeliveryReport:
    """Send every undelivered notification to its channel, oldest first.  A channel that fails as
    a whole (receiver down, timeout, 5xx, command missing) is not tried again until the next run;
    a notification the receiver rejects (4xx, non-zero exit) is retried next run too, and the
    same alert's later notifications wait for it (a receiver never sees `resolved` first)."""
    from pithsync.store import utcnow

    report = DeliveryReport()
    configured = channels(cfg)
    session = None
    try:
        for channel in CHANNELS:
            rows = store.pending_notifications(channel, limit)
            if not rows:
                continue
            if channel not in configured:
                report._add(report.deferred, channel, len(rows))
                log_event(
                    log, logging.WARNING, "alert_delivery", outcome="deferred", channel=channel,
                    pending=len(rows), why="channel no longer configured; kept in the outbox",
                )
                continue
            held: set[int] = set()  # alerts whose earlier notification failed: keep their order
            for n, row in enumerate(rows):
                payload = row["payload"]
                if row["alert_id"] in held:
                    report._add(report.deferred, channel)
                    continue
                if channel == "log":
                    log_event(
                        log, logging.WARNING if payload.get("event") == OPENED else logging.INFO,
                        "alert", **log_fields(payload),
                    )
                    why, fatal = "", False
                elif channel == "webhook":
                    if session is None:
                        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=webhook_timeout_s), cookie_jar=aiohttp.DummyCookieJar())
                    why, fatal = await _post(session, cfg.alerts.webhook_url, body_of(payload))
                else:
                    why, fatal = await anyio.to_thread.run_sync(functools.partial(_run_command, cfg.alerts.command, body_of(payload), payload, command_timeout_s))
                at = utcnow()
                if not why:
                    store.mark_delivered(row["id"], at)
                    report._add(report.delivered, channel)
                    log_event(
                        log, logging.DEBUG, "alert_delivery", outcome="delivered", channel=channel,
                        outbox_id=row["id"], notification_id=payload.get("notification_id"),
                    )
                    continue
                store.mark_failed(row["id"], at, why)
                report._add(report.failed, channel)
                held.add(row["alert_id"])
                log_event(
                    log, logging.WARNING, "alert_delivery", outcome="failed", channel=channel,
                    outbox_id=row["id"], notification_id=payload.get("notification_id"),
                    attempts=(row["attempts"] or 0) + 1, error=why,
                )
                if fatal:
                    rest = len(rows) - n - 1
                    report._add(report.deferred, channel, rest)
                    if rest:
                        log_event(
                            log, logging.WARNING, "alert_delivery", outcome="deferred",
                            channel=channel, pending=rest, why="channel failing; retried next run",
                        )
                    break
    finally:
        if session is not None:
            await session.close()
    return report


def deliver(cfg, store, **kw) -> DeliveryReport:
    """deliver_pending from synchronous code (hooks.after_run runs after the crawl's loop ended)."""
    if not store.undelivered_counts():
        return DeliveryReport()
    return anyio.run(functools.partial(deliver_pending, cfg, store, **kw))


# -- commands: `alerts` and `evidence` ----------------------------------------------------------


def _alert_json(row: dict) -> dict:
    payload = row["resolved_payload"] or row["payload"]
    return {
        "id": row["id"],
        "kind": row["kind"],
        "state": row["state"],
        "pith_number": row["pith_number"],
        "mirror": row["mirror"],
        "opened_at": row["opened_at"],
        "resolved_at": row["resolved_at"],
        "summary": (row["payload"] or {}).get("summary"),
        "resolution": (row["resolved_payload"] or {}).get("resolution"),
        "notifications": row["notifications"],
        "undelivered": row["undelivered"],
        "payload": payload,
    }


def _listed_summary(summary: str, pith_number: str | None) -> str:
    """A notification's summary as `alerts` lists it: whole (a table folds it, a hash is never
    cut), without the pith number its row already shows in `about`."""
    if pith_number:
        for prefix in (f"{pith_number}: ", f"{pith_number} "):
            if summary.startswith(prefix):
                return summary[len(prefix):]
    return summary


def cmd_alerts(args, cfg, out) -> int:
    """Alerts, newest first.  --json: JSON Lines, one alert a line, `{"id": int, "kind", "state",
    "pith_number", "mirror" (base URL or null), "opened_at", "resolved_at", "summary",
    "resolution", "notifications": int, "undelivered": int, "payload": {...}}`."""
    from pithsync.cli import ExitCode
    from pithsync.commands import open_store

    with open_store(cfg, lock=False) as store:
        rows = store.alerts(open_only=args.open)
    if out.as_json:
        for r in rows:
            out.json_line(_alert_json(r))
        return ExitCode.OK
    if not rows:
        out.line("no open alerts" if args.open else "no alerts")
        return ExitCode.OK
    table = []
    for r in rows:
        delivery = f"{r['undelivered']} undelivered" if r["undelivered"] else "delivered" if r["notifications"] else "-"
        about = r["mirror"] or r["pith_number"] or "-"
        summary = _listed_summary(str((r["payload"] or {}).get("summary", "")), r["pith_number"])
        table.append(
            [str(r["id"]), r["state"], r["kind"], about, r["opened_at"], r["resolved_at"] or "-"]
            + [delivery, summary],
        )
    out.table("alerts", ["id", "state", "kind", "about", "opened", "resolved", "delivery", "summary"], table)
    return ExitCode.OK


def cmd_evidence(args, cfg, out) -> int:
    from pithsync import evidence
    from pithsync.cli import ExitCode, UsageError
    from pithsync.commands import open_store
    from pithsync.core.verify import Verifier
    from pithsync.metrics import write_atomically

    verifier = Verifier(cfg.trust)
    with open_store(cfg, lock=False) as store:
        matches = store.resolve(args.pith)
        if not matches:
            raise UsageError(f"no stored record matches {args.pith[:80]!r}")
        if len(matches) > 1:
            raise UsageError(f"{args.pith[:80]!r} is ambiguous: {', '.join(matches[:5])}")
        doc = evidence.build_evidence(store, matches[0], verifier, max_bytes=cfg.crawl.max_bytes)
    if not doc["claims"]:
        raise UsageError(f"the store holds no evidence for {matches[0]} that signatures can prove (nothing written)")
    check = evidence.verify_evidence(doc, verifier, cfg.crawl.max_bytes)
    if not check.ok:  # cannot happen: build keeps only confirmed claims
        for r in check.reasons:
            log_event(log, logging.ERROR, "evidence_self_check_failed", reason=str(r))
        return ExitCode.FAILED
    data = (json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")
    if args.out == "-":
        out.write(data.decode("utf-8"))
        return ExitCode.OK
    try:
        write_atomically(args.out, data)
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    if out.as_json:
        out.json({"file": args.out, "pith_number": doc["pith_number"], "documents": len(doc["documents"]), "claims": [c["claim"] for c in doc["claims"]], "truncated": doc["truncated"]})
    else:
        out.line(f"wrote {args.out}: {len(doc['claims'])} claim(s) over {len(doc['documents'])} document(s) for {doc['pith_number']}; check it anywhere with `pithsync verify {args.out}`")
    return ExitCode.OK


def register(sub, common) -> None:
    """Adds `alerts` and `evidence` subcommands."""
    p = sub.add_parser("alerts", parents=[common], help="list alerts (divergences, unreachable mirrors) and their delivery")
    p.add_argument("--open", action="store_true", help="only alerts that are still open")
    p.set_defaults(func=cmd_alerts)

    p = sub.add_parser("evidence", parents=[common], help="write a self-contained evidence file for a record, checkable offline with `pithsync verify`")
    p.add_argument("pith", metavar="PITH", help="pith number, suffix, short form or alias of a stored record")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the evidence JSON (- for stdout)")
    p.set_defaults(func=cmd_evidence)
