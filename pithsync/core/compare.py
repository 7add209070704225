"""Cross-mirror comparison: from what each mirror served to one status per mirror and one
verdict per record.  Pure: the shell hands in bytes (or why there are none) and the events the
verified store already holds."""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property

from pithsync.core import strictjson
from pithsync.core.canonical import sha256hex
from pithsync.core.errors import MalformedDocument
from pithsync.core.merge import find_equivocations
from pithsync.core.peers import PeerSplit, PeerViews, View, split_views
from pithsync.core.status import Reason, Status, Verdict, most_severe
from pithsync.core.verify import Report, Verifier


class Retrieval(str, Enum):
    FOUND = "found"
    NOT_FOUND = "not_found"
    UNREACHABLE = "unreachable"
    UNUSABLE = "unusable"  # a body arrived but cannot be a document (over the cap, bad encoding)


@dataclass(frozen=True)
class Fetched:
    """One document as retrieved from one URL: bytes, or why there are none."""

    retrieval: Retrieval
    url: str = ""
    body: bytes | None = None
    detail: str = ""
    code: str = ""  # machine-readable why (connection_refused, too_large, ...): fetch/errors.py
    stored_sha256: str | None = None  # the body is stored bytes, read back by this digest

    @cached_property
    def sha256(self) -> str | None:
        if self.stored_sha256 is not None:
            return self.stored_sha256
        return sha256hex(self.body) if self.body is not None else None


@dataclass(frozen=True)
class MirrorCopy:
    mirror: str
    bundle: Fetched
    state: Fetched


@dataclass
class Assessment:
    """One mirror's copy of one record, checked on its own."""

    mirror: str
    reasons: list[Reason] = field(default_factory=list)
    bundle: dict | None = None  # parsed, only when it verified as a bundle of the right record
    bundle_ok: bool = False
    state_ok: bool = False
    valid_events: list[dict] = field(default_factory=list)
    report: Report | None = None
    copy: MirrorCopy | None = None

    @property
    def event_ids(self) -> frozenset[str]:
        return frozenset(e["event_id"] for e in self.valid_events)

    @property
    def has_copy(self) -> bool:
        return self.copy is not None and self.copy.bundle.retrieval in (
            Retrieval.FOUND,
            Retrieval.UNUSABLE,
        )


@dataclass
class MirrorOutcome:
    mirror: str
    status: Status
    reasons: list[Reason]
    assessment: Assessment
    split_views: list[PeerSplit] = field(default_factory=list)  # each with the peer's proof


@dataclass
class RecordComparison:
    verdict: Verdict
    outcomes: list[MirrorOutcome]
    valid_events: dict[str, dict]  # event_id -> event, every verified event seen (store included)
    equivocations: list[dict]


def _fetch_reason(what: str, f: Fetched) -> Reason | None:
    if f.retrieval is Retrieval.UNREACHABLE:
        return Reason(
            Status.UNREACHABLE, f.code or "unreachable", f"{what}: {f.detail or 'unreachable'}"
        )
    if f.retrieval is Retrieval.NOT_FOUND:
        return Reason(Status.MISSING, "not_found", f"{what}: not found ({f.detail or '404'})")
    if f.retrieval is Retrieval.UNUSABLE:
        return Reason(Status.MALFORMED, f.code or "unusable_body", f"{what}: {f.detail}")
    return None


class Assessor:
    """Parses and verifies mirror copies; identical bytes are assessed once per Assessor."""

    # Identical copies come from the mirrors of one record, assessed close together: a small
    # cache catches them (a process has at most 64 records in flight, a few documents each),
    # and a long run must not hold parsed bundles it will never see again.
    CACHE_SIZE = 128

    def __init__(self, verifier: Verifier, max_bytes: int = strictjson.DEFAULT_MAX_BYTES):
        self.verifier = verifier
        self.max_bytes = max_bytes
        self._cache: dict[tuple, tuple] = {}

    def assess(
        self, copy: MirrorCopy, suffix: str, known_good: Set[tuple[str, str]] = frozenset()
    ) -> Assessment:
        """`known_good`: (bundle sha256, state sha256) pairs that verified together before under
        the same pinned keys (trusted state, from the shell): those exact bytes are not
        verified again, only parsed."""
        a = Assessment(copy.mirror, copy=copy)
        for what, f in (("bundle", copy.bundle), ("state", copy.state)):
            if (r := _fetch_reason(what, f)) is not None:
                a.reasons.append(r)
        if copy.bundle.retrieval is not Retrieval.FOUND:
            return a
        key = (
            suffix,
            copy.bundle.sha256,
            copy.state.sha256 if copy.state.retrieval is Retrieval.FOUND else None,
        )
        cached = self._cache.get(key)
        if cached is None:
            if key[1:] in known_good:
                cached = self._known_good(copy, suffix)
            else:
                cached = self._assess_bodies(copy, suffix)
            if len(self._cache) >= self.CACHE_SIZE:
                del self._cache[next(iter(self._cache))]
            self._cache[key] = cached
        reasons, bundle, bundle_ok, state_ok, report = cached
        a.reasons.extend(reasons)
        a.bundle, a.bundle_ok, a.state_ok, a.report = bundle, bundle_ok, state_ok, report
        a.valid_events = report.valid_events if report is not None and bundle is not None else []
        return a

    def _known_good(self, copy: MirrorCopy, suffix: str) -> tuple:
        # These exact bytes passed strict parsing and full verification before: parsed again
        # (strictjson's fast path when orjson reads them faithfully), not verified again.
        try:
            bundle = strictjson.loads_object(copy.bundle.body, max_bytes=self.max_bytes)
        except MalformedDocument:  # e.g. max_bytes lowered since: then judge it afresh
            return self._assess_bodies(copy, suffix)
        report = Report(
            "bundle",
            pith_number=bundle["pith_number"],
            valid_events=bundle["events"],
            merged_state=bundle["state"],
        )
        report.canonical_sha256 = bundle["canonical_sha256"]
        return [], bundle, True, True, report

    def _assess_bodies(self, copy: MirrorCopy, suffix: str) -> tuple:
        reasons: list[Reason] = []
        try:
            bundle = strictjson.loads_object(copy.bundle.body, max_bytes=self.max_bytes)
        except MalformedDocument as exc:
            return (
                [Reason(Status.MALFORMED, "bundle_not_json", f"bundle: {exc}")],
                None,
                False,
                False,
                None,
            )
        report = self.verifier.verify_bundle(bundle)
        if report.status is Status.MALFORMED:
            return list(report.reasons), None, False, False, report
        reasons.extend(report.reasons)
        if not str(bundle.get("pith_number", "")).endswith(":" + suffix):
            reasons.append(
                Reason(
                    Status.TAMPERED,
                    "wrong_record",
                    f"bundle is for {str(bundle.get('pith_number'))[:80]},"
                    f" not the requested {suffix}",
                )
            )
            return reasons, None, False, False, report
        bundle_ok = report.ok
        state_ok = False
        if copy.state.retrieval is Retrieval.FOUND and report.merged_state is None:
            # The bundle could not be checked through (a value with no canonical encoding beside
            # a tampered part): there is no merge to hold state.json against, and it is not ok.
            reasons.append(
                Reason(
                    Status.MALFORMED,
                    "state_unchecked",
                    "state: not checked, the bundle beside it could not be verified",
                )
            )
        elif copy.state.retrieval is Retrieval.FOUND:
            try:
                state = strictjson.loads_object(copy.state.body, max_bytes=self.max_bytes)
            except MalformedDocument as exc:
                reasons.append(Reason(Status.MALFORMED, "state_not_json", f"state: {exc}"))
            else:
                pair = Report(
                    "pair", merged_state=report.merged_state, pith_number=report.pith_number
                )
                self.verifier.check_served_state(pair, state)
                reasons.extend(pair.reasons)
                state_ok = bundle_ok and pair.ok
        return reasons, bundle, bundle_ok, state_ok, report


def _cross_mirror_reasons(
    ids: Set[str], all_ids: Set[str], in_conflict: Set[str], stored_events: Mapping[str, dict]
) -> list[Reason]:
    """What one mirror's verified bundle gets wrong against the union of verified events.

    Args:
        ids: the event ids the mirror's bundle carries.
        all_ids: every verified event id, from any mirror or the store.
        in_conflict: the ids of events that take part in an equivocation.
        stored_events: the events the verified store already holds, by id.

    Returns:
        An equivocation reason if it serves a conflicting event, a stale one if it lacks an
        event that is not in conflict; none, one or both.
    """
    reasons = []
    conflicting = sorted(ids & in_conflict)
    if conflicting:
        reasons.append(
            Reason(
                Status.EQUIVOCATION,
                "equivocation",
                f"serves {len(conflicting)} signed event(s) that conflict with another signed"
                f" event: {', '.join(c[:23] for c in conflicting[:3])}",
            )
        )
    missing = all_ids - ids - in_conflict
    if missing:
        where = "the store" if missing <= set(stored_events) else "another mirror"
        reasons.append(
            Reason(
                Status.STALE,
                "stale",
                f"lacks {len(missing)} verified event(s) held by {where}"
                f" ({len(ids)} of {len(all_ids)})",
            )
        )
    return reasons


def _view(a: Assessment, observed_at: str) -> View:
    """This observer's view of one mirror's copy: its verified events and their merge."""
    merged = a.report.merged_state if a.report is not None and a.bundle is not None else None
    if merged is None or not a.valid_events:
        return View(frozenset(), None, observed_at)
    return View(a.event_ids, merged.get("state_sha256"), observed_at)


def compare_record(
    assessments: list[Assessment],
    stored_events: Mapping[str, dict],
    peers: PeerViews | None = None,
) -> RecordComparison:
    """One status per mirror and a verdict for the record.

    stale: the mirror lacks a verified event seen on another mirror or already in the store.
    equivocation: it serves a validly signed event that conflicts with another one seen anywhere.
    missing: 404 while another mirror has the record.
    split_view: a peer's verified statement shows the mirror served it another history or state
    (core.peers.split_views; `peers` holds those statements and when this observer looked).
    """
    union: dict[str, dict] = dict(stored_events)
    for a in assessments:
        for ev in a.valid_events:
            union.setdefault(ev["event_id"], ev)
    equivocations = find_equivocations(union.values())
    in_conflict = {eid for e in equivocations for eid in e["event_ids"]}
    all_ids = frozenset(union)
    someone_has_it = bool(stored_events) or any(a.has_copy for a in assessments)

    outcomes = []
    for a in assessments:
        reasons = list(a.reasons)
        if a.bundle is not None:
            reasons.extend(_cross_mirror_reasons(a.event_ids, all_ids, in_conflict, stored_events))
        splits = split_views(a.mirror, _view(a, peers.observed_at), peers) if peers else []
        reasons.extend(s.reason() for s in splits)
        if not someone_has_it:
            # Nobody has the record: a 404 is not "missing while others have it".
            reasons = [r for r in reasons if r.status is not Status.MISSING] or [
                Reason(Status.MISSING, "not_found", "no mirror has this record")
            ]
        status = most_severe(r.status for r in reasons)
        outcomes.append(MirrorOutcome(a.mirror, status, reasons, a, splits))

    statuses = {o.status for o in outcomes}
    bad = {
        Status.STALE,
        Status.TAMPERED,
        Status.BAD_SIGNATURE,
        Status.STATE_MISMATCH,
        Status.EQUIVOCATION,
        Status.MALFORMED,
        Status.SPLIT_VIEW,
    }
    if statuses & bad or (Status.MISSING in statuses and someone_has_it):
        verdict = Verdict.DIVERGED
    elif not any(a.bundle is not None for a in assessments):
        verdict = Verdict.UNVERIFIABLE
    elif Status.UNREACHABLE in statuses:
        verdict = Verdict.DEGRADED
    else:
        verdict = Verdict.IN_SYNC
    return RecordComparison(verdict, outcomes, union, equivocations)
