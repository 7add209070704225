"""Which alerts a record's outcome opens and resolves: a pure decision, made from the record's
verdict and mirror statuses, the alerts open for it and the consecutive-unreachable counts.
The run writes what it decides beside the record's evidence (pithsync.store), and
pithsync.delivery sends the notifications.  The notification's shape is in delivery's docstring.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DIVERGENCE = "divergence"


UNREACHABLE = "unreachable"


SPLIT_VIEW = "split_view"  # one open per (record, mirror)


PEER_REWRITTEN = "peer_rewritten"  # one open per peer; a rewrite is never undone, so never resolved


OPENED = "opened"


RESOLVED = "resolved"


NOTIFICATION_TYPE = "pithsync_alert"


NOTIFICATION_VERSION = 1


# Never part of a divergence alert: unreachable and split_view have their own.
_OK_STATUSES = ("ok", "unreachable", "split_view")


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
    def from_row(cls, row: Mapping) -> OpenAlert:
        payload = row.get("payload") or {}
        if isinstance(payload, str):
            payload = json.loads(payload)
        divergent = frozenset(
            (d["mirror"], d["status"]) for d in payload.get("divergent", []) if isinstance(d, dict)
        )
        return cls(
            row["id"],
            row["kind"],
            row["scope"],
            row["opened_at"],
            row.get("fingerprint") or "",
            row.get("mirror"),
            divergent,
            payload.get("diverged_since") or row["opened_at"],
        )


@dataclass(frozen=True)
class Opening:
    kind: str
    scope: str
    pith_number: str | None  # None: not about one record (peer_rewritten)
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


def split_view_scope(pith_number: str, base_url: str) -> str:
    return f"split_view:{pith_number} {base_url}"


def peer_scope(url: str) -> str:
    return f"peer:{url}"


def fingerprint(divergent: frozenset) -> str:
    return hashlib.sha256(json.dumps(sorted(divergent), separators=(",", ":")).encode()).hexdigest()


def divergent_set(
    verdict: str, mirrors: Sequence[MirrorView], previous: frozenset = frozenset()
) -> frozenset:
    """The (mirror, status) pairs that make a divergence.  A mirror that is unreachable now keeps
    the divergent status it had (it cannot be seen to have changed), so a lying mirror that also
    flaps does not resolve and re-open its alert on every run."""
    now = (
        {(m.base_url, m.status) for m in mirrors if m.status not in _OK_STATUSES}
        if verdict == "diverged"
        else set()
    )
    unreachable = {m.base_url for m in mirrors if m.status == "unreachable"}
    now |= {(url, status) for url, status in previous if url in unreachable}
    return frozenset(now)


def _mirrors_json(mirrors: Sequence[MirrorView], divergent: frozenset = frozenset()) -> list[dict]:
    flagged = {url for url, _ in divergent}
    return [
        {
            "name": m.name,
            "base_url": m.base_url,
            "status": m.status,
            "divergent": m.base_url in flagged,
            "reasons": list(m.reasons)[:10],
        }
        for m in mirrors
    ]


def _divergent_json(divergent: frozenset, mirrors: Sequence[MirrorView]) -> list[dict]:
    names = {m.base_url: m.name for m in mirrors}
    return [
        {"mirror": url, "name": names.get(url, url), "status": status}
        for url, status in sorted(divergent)
    ]


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
    split_view (one open per record and mirror): opened when the mirror is split_view for the
    record, resolved ("cleared") when a check finds it neither split_view nor unreachable.
    """
    decision = Decision()
    base = {
        "type": NOTIFICATION_TYPE,
        "version": NOTIFICATION_VERSION,
        "pith_number": pith_number,
        "verdict": verdict,
        "at": now,
        "run_id": run_id,
    }
    _decide_divergence(decision, base, mirrors, open_alerts)
    _decide_unreachable(decision, base, mirrors, open_alerts, unreachable_threshold)
    _decide_split_views(decision, base, mirrors, open_alerts)
    return decision


def _decide_divergence(
    decision: Decision, base: dict, mirrors: Sequence[MirrorView], open_alerts: Sequence[OpenAlert]
) -> None:
    """The record's divergence alert: opened, changed (resolved and opened again) or cleared."""
    pith_number, verdict, now = base["pith_number"], base["verdict"], base["at"]
    scope = record_scope(pith_number)
    old = next((a for a in open_alerts if a.kind == DIVERGENCE and a.scope == scope), None)
    current = divergent_set(verdict, mirrors, old.divergent if old else frozenset())
    if old is not None and current != old.divergent:
        resolution = "changed" if current else "cleared"
        summary = f"{pith_number}: divergence {'changed' if current else 'resolved'}" + (
            "" if current else f", verdict now {verdict}"
        )
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


def _unreachable_opening(m: MirrorView, common: dict) -> Opening:
    """The alert for a mirror unreachable for enough runs in a row."""
    why = _first_message(m)
    summary = (
        f"mirror {m.name} ({m.base_url}) unreachable for {m.unreachable_runs} runs in a row"
        f" (seen for {common['pith_number']})"
    ) + (f": {why}" if why else "")
    payload = {
        **common,
        "event": OPENED,
        "first_seen": common["at"],
        "resolved_at": None,
        "resolution": None,
        "summary": summary,
    }
    return Opening(
        UNREACHABLE, mirror_scope(m.base_url), common["pith_number"], m.base_url, "", payload
    )


def _decide_unreachable(
    decision: Decision,
    base: dict,
    mirrors: Sequence[MirrorView],
    open_alerts: Sequence[OpenAlert],
    unreachable_threshold: int,
) -> None:
    """Each mirror's unreachable alert: opened past the threshold, resolved once reachable."""
    pith_number, now = base["pith_number"], base["at"]
    open_by_mirror = {a.mirror: a for a in open_alerts if a.kind == UNREACHABLE}
    for m in mirrors:
        alert = open_by_mirror.get(m.base_url)
        common = {
            **base,
            "kind": UNREACHABLE,
            "mirror": {"name": m.name, "base_url": m.base_url},
            "mirrors": _mirrors_json([m]),
            "unreachable_runs": m.unreachable_runs,
        }
        if m.status == "unreachable":
            if (
                alert is None
                and unreachable_threshold > 0
                and m.unreachable_runs >= unreachable_threshold
            ):
                decision.open.append(_unreachable_opening(m, common))
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
                        "summary": (
                            f"mirror {m.name} ({m.base_url}) reachable again "
                            f"(seen for {pith_number}, status {m.status})"
                        ),
                    },
                )
            )


def _decide_split_views(
    decision: Decision, base: dict, mirrors: Sequence[MirrorView], open_alerts: Sequence[OpenAlert]
) -> None:
    """Each mirror's split_view alert for the record: opened when first seen, cleared after."""
    pith_number, now = base["pith_number"], base["at"]
    open_by_scope = {a.scope: a for a in open_alerts if a.kind == SPLIT_VIEW}
    for m in mirrors:
        scope = split_view_scope(pith_number, m.base_url)
        alert = open_by_scope.get(scope)
        common = {
            **base,
            "kind": SPLIT_VIEW,
            "mirror": {"name": m.name, "base_url": m.base_url},
            "mirrors": _mirrors_json([m]),
        }
        if m.status == SPLIT_VIEW and alert is None:
            why = _first_message(m)
            summary = f"{pith_number}: mirror {m.name} ({m.base_url}) is split_view" + (
                f": {why}" if why else ""
            )
            payload = {
                **common, "event": OPENED, "first_seen": now, "resolved_at": None,
                "resolution": None, "summary": clip_words(summary, 500),
            }  # fmt: skip
            decision.open.append(Opening(SPLIT_VIEW, scope, pith_number, m.base_url, "", payload))
        elif alert is not None and m.status not in (SPLIT_VIEW, UNREACHABLE):
            payload = {
                **common, "event": RESOLVED, "first_seen": alert.opened_at, "resolved_at": now,
                "resolution": "cleared",
                "summary": f"{pith_number}: mirror {m.name} no longer split_view ({m.status})",
            }  # fmt: skip
            decision.resolve.append(Resolution(alert, payload))


def peer_rewritten(
    peer: str, url: str, how: str, message: str, old: str, new: str, *, now: str, run_id: str
) -> Decision:
    """The alert for a peer whose log was rewritten: `old` and `new` are the two signed
    checkpoints (note text), kept in the notification as its proof."""
    payload = {
        "type": NOTIFICATION_TYPE, "version": NOTIFICATION_VERSION, "kind": PEER_REWRITTEN,
        "event": OPENED, "pith_number": None, "verdict": None, "at": now, "run_id": run_id,
        "peer": {"name": peer, "url": url}, "how": how, "mirrors": [],
        "checkpoints": {"old": old, "new": new}, "first_seen": now, "resolved_at": None,
        "resolution": None, "summary": clip_words(f"peer log rewritten: {message}", 500),
    }  # fmt: skip
    digest = hashlib.sha256(new.encode()).hexdigest()
    return Decision(open=[Opening(PEER_REWRITTEN, peer_scope(url), None, url, digest, payload)])
