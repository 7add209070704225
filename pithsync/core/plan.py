"""What the store is to write for one record: the write plan a comparison comes to, and the
pure functions that come to it (plan_write after a full comparison, quick_plan for a record
nothing changed in).  The run fetches and compares, the store writes; this decides."""

from __future__ import annotations

import json
from collections.abc import Mapping, Set
from dataclasses import dataclass, field

from pithsync.core import numbers, strictjson
from pithsync.core.canonical import canon, sha256hex
from pithsync.core.compare import Assessment, MirrorCopy, MirrorOutcome, RecordComparison
from pithsync.core.errors import InvalidPithNumber, MalformedDocument
from pithsync.core.merge import merge_state
from pithsync.core.observation import Fetch
from pithsync.core.peers import PeerStatement
from pithsync.core.results import MirrorResult, RecordResult
from pithsync.core.schedule import ScheduleState
from pithsync.core.status import Status, Verdict
from pithsync.core.urls import MirrorSpec, base_key, hinted_mirrors


def number_of(state: EncodedState) -> str:
    """The pith number a stored state's canonical record derives, from its stored bytes."""
    return _derived_number(state.canonical_record)


def record_columns(state_json: str) -> tuple[str, str, str]:
    """(canonical_record, canonical_sha256, source_aliases) as EncodedState encodes them, from
    a stored state's JSON alone: the merged state holds its record and aliases (`current`), so
    the store keeps only the state."""
    current = json.loads(state_json)["current"]
    record_json = canon(current["canonical_record"])
    return record_json.decode(), sha256hex(record_json), canon(current["source_aliases"]).decode()


def _derived_number(canonical_record_json: str) -> str:
    record = json.loads(canonical_record_json)
    suffix = numbers.suffix_from_sha256(sha256hex(canonical_record_json.encode()))
    return str(numbers.PithNumber(numbers.year_of(record), suffix))


@dataclass
class MirrorRow:
    base_url: str
    name: str
    configured: bool
    status: str
    reasons: list[dict]
    bundle_sha256: str | None = None
    state_sha256: str | None = None
    unreachable: bool = False


@dataclass(frozen=True)
class MirrorObservation:
    """What one mirror served for one record in this check: the facts of its observation
    statement (core.observation), which the one writer completes with observer and time."""

    mirror: str  # base URL
    fetched: tuple[Fetch, ...]  # every URL asked, with its HTTP status and body sha256
    events: tuple[str, ...]  # sorted event_ids of the verified history it served
    state_sha256: str | None  # the merge of those events; None iff there are none
    status: str  # the mirror's status for the record


def _observation(mirror: str, fetched, events, state_sha256: str | None, status: Status):
    ids = tuple(sorted(set(events)))
    return MirrorObservation(mirror, fetched, ids, state_sha256 if ids else None, status.value)


@dataclass(frozen=True)
class EncodedState:
    """A record's merged state as the records table keeps it, encoded once by whoever merged it
    (in a large run, a worker process), so that the one writer only writes."""

    canonical_record: str
    canonical_sha256: str
    source_aliases: str
    aliases: tuple[tuple[str, str], ...]  # (alias_kind, alias_value): the aliases table
    state: str
    state_sha256: str
    event_count: int

    @classmethod
    def of(cls, canonical_record: dict, source_aliases: list, state: dict) -> EncodedState:
        record_json = canon(canonical_record)
        aliases = tuple(
            (a["alias_kind"], a["alias_value"])
            for a in source_aliases or []
            if isinstance(a, dict)
            and isinstance(a.get("alias_kind"), str)
            and isinstance(a.get("alias_value"), str)
        )
        return cls(
            record_json.decode(),
            sha256hex(record_json),
            canon(source_aliases).decode(),
            aliases,
            canon(state).decode(),
            state["state_sha256"],
            state["event_count"],
        )


@dataclass
class RecordWrite:
    """Everything one sync learned about one record, written in one transaction.  Documents and
    events arrive encoded: the bytes to store, not objects to encode again."""

    pith_number: str
    verdict: str
    tracked: bool
    state: EncodedState | None = None  # the new merge of all verified events, if any
    documents: list[tuple[str, str, bytes]] = field(default_factory=list)  # (sha256, kind, body)
    events: dict[str, tuple[str | None, str]] = field(
        default_factory=dict
    )  # event_id -> (event_type, canonical JSON), new ones only
    event_sources: list[tuple[str, str]] = field(
        default_factory=list
    )  # (event_id, mirror base_url)
    mirrors: list[MirrorRow] = field(default_factory=list)
    evidence: list[dict] = field(default_factory=list)  # mirror, url, status, reasons, body
    validators: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    verified_copies: list[tuple[str, str]] = field(default_factory=list)  # (bundle sha, state sha)
    trust_id: str = ""
    journal_detail: dict = field(default_factory=dict)
    # The record's schedule after this check (set by the run's sink); None: not a check.
    schedule: ScheduleState | None = None
    observations: list[MirrorObservation] = field(default_factory=list)  # one per mirror asked
    # (mirror base URL, the peer's proven statement) of each split view found: kept as proof
    split_views: list[tuple[str, PeerStatement]] = field(default_factory=list)

    def payload_bytes(self) -> int:
        """About how many bytes of documents, events, state and evidence this write carries."""
        n = sum(len(body) for _, _, body in self.documents) + sum(
            len(body) for _, body in self.events.values()
        )
        n += sum(len(ev.get("body") or b"") for ev in self.evidence)
        if self.state is not None:
            n += len(self.state.state) + len(self.state.canonical_record)
        return n

    def add_events(self, events, source: str, stored: dict | set = frozenset()) -> None:
        """Verified `events` seen at `source`: each encoded once, and only if not `stored` yet."""
        for ev in events:
            eid = ev["event_id"]
            if eid not in stored and eid not in self.events:
                self.events[eid] = (ev.get("event_type"), canon(ev).decode("utf-8"))
            self.event_sources.append((eid, source))


# -- planning: what a record's check means for the store ------------------------------------

NOT_MODIFIED = "not_modified"  # Fetched.code of a copy answered 304: the stored bytes, unchanged


def is_full_number(text: str) -> bool:
    """Whether `text` is a full pith number (a record tracked under it), not a stand-in."""
    try:
        numbers.parse_full(text)
    except InvalidPithNumber:
        return False
    return True


@dataclass
class FetchedCopy:
    """One mirror's copy of a record as fetched, with the validators to keep for its URLs."""

    copy: MirrorCopy
    validators: list[tuple[str, str | None, str | None, str | None]]  # (url, etag, last-mod, sha)
    asked: tuple[Fetch, ...] = ()  # every URL asked, in order: bundle (then well-known), state


@dataclass(frozen=True)
class StoredRecord:
    """What the store held about one record before this check: trusted input only."""

    pith_number: str | None
    known_good: Set[tuple[str, str]]  # (bundle sha256, state sha256) verified together
    verdicts: Mapping[str, tuple]  # mirror base_url -> (status, bundle sha256, state sha256)
    summary: Mapping | None  # the store's record summary (has_state, event_count, state_sha256)
    event_ids: tuple[str, ...] = ()  # the verified events stored for it

    @property
    def has_state(self) -> bool:
        """A stored state means a verified record (the store checks its number on write)."""
        return self.summary is not None and bool(self.summary["has_state"])


@dataclass(frozen=True)
class PlanRules:
    """What every record of a run is planned under."""

    trust_id: str
    track: bool
    max_bytes: int
    follow_hints: bool
    configured: Mapping[str, MirrorSpec]  # base_key -> spec, the configured mirrors


@dataclass
class Findings:
    """What the full check of one record found: the input of plan_write."""

    pith_number: str
    comparison: RecordComparison
    stored_events: Mapping[str, dict]  # event_id -> event, verified on earlier runs
    fetched: list[FetchedCopy]
    specs: Mapping[str, MirrorSpec]  # base_key -> spec, hinted mirrors included
    refused: list[dict]  # hints not followed, and why
    known_good: Set[tuple[str, str]]
    summary: Mapping | None  # the store's record summary for pith_number, if any


Plan = tuple[RecordResult, RecordWrite]


class _Report:
    """A record's result and write, filled mirror by mirror."""

    def __init__(self, pith_number: str, verdict: Verdict, rules: PlanRules):
        tracked = rules.track and is_full_number(pith_number)
        self.write = RecordWrite(pith_number, verdict.value, tracked, trust_id=rules.trust_id)
        self.mirrors: list[MirrorResult] = []

    def mirror(
        self,
        spec: MirrorSpec | None,
        base_url: str,
        status: Status,
        reasons: list[dict],
        shas: tuple[str | None, str | None],
    ) -> None:
        """One mirror's outcome, in the record's result and in its write."""
        name, configured = (spec.name, spec.configured) if spec else (base_url, False)
        self.mirrors.append(MirrorResult(name, base_url, status, reasons, configured))
        row = MirrorRow(
            base_url,
            name,
            configured,
            status.value,
            reasons,
            *shas,
            unreachable=status is Status.UNREACHABLE,
        )
        self.write.mirrors.append(row)


def merged(pith_number: str, best: Assessment, comparison: RecordComparison) -> dict:
    """The merge of every verified event (comparison.valid_events), from `best`'s bundle's
    record and aliases.  When that bundle holds exactly these events and no invalid one, its
    verification already merged them (or, for a known-good copy, checked its embedded state
    against that merge): the same inputs, and the merge ignores event order and signatures.
    Otherwise merged here.  tests/conftest.py checks the reuse against a fresh merge in
    every sync the suite runs."""
    reused = best.report.merged_state if best.report is not None else None
    if (
        reused is not None
        and reused.get("invalid_event_count") == 0
        and best.event_ids == comparison.valid_events.keys()
    ):
        return reused
    bundle = best.bundle
    events = comparison.valid_events.values()
    return merge_state(
        pith_number, bundle["canonical_record"], bundle["source_aliases"], events, {}
    )


def plan_write(found: Findings, rules: PlanRules) -> Plan:
    """What the store is to write for a fully compared record, and the record's result.

    Args:
        found: what the check fetched, verified and compared.
        rules: the run's trust set and tracking.

    Returns:
        The record's result and its write.
    """
    report = _Report(found.pith_number, found.comparison.verdict, rules)
    write = report.write
    by_mirror = {f.copy.mirror: f for f in found.fetched}
    documents: dict[str, tuple[str, bytes]] = {}  # each distinct verified document once
    best: Assessment | None = None
    for outcome in found.comparison.outcomes:
        a = outcome.assessment
        _plan_mirror(report, found, outcome, documents)
        asked = f.asked if (f := by_mirror.get(outcome.mirror)) is not None else ()
        write.observations.append(_observed(outcome, asked))
        write.split_views.extend((outcome.mirror, split.seen) for split in outcome.split_views)
        if a.bundle_ok and a.copy is not None:
            if best is None or len(a.valid_events) > len(best.valid_events):
                best = a
        if (f := by_mirror.get(outcome.mirror)) is not None:
            write.validators.extend(f.validators)
    write.documents = [(sha, kind, body) for sha, (kind, body) in documents.items()]
    # The stored state: the merge of every verified event, seen now or before.
    state = None
    new_ids = set(found.comparison.valid_events) - set(found.stored_events)
    stored = found.summary
    if best is not None and (new_ids or stored is None or not stored["has_state"]):
        state = merged(found.pith_number, best, found.comparison)
        write.state = EncodedState.of(
            best.bundle["canonical_record"], best.bundle["source_aliases"], state
        )
    write.journal_detail = {"new_events": len(new_ids), "refused_hints": len(found.refused)}
    result = RecordResult(
        found.pith_number, found.comparison.verdict, report.mirrors,
        refused_hints=found.refused, new_events=len(new_ids),
    )  # fmt: skip
    if state is not None:
        result.event_count, result.state_sha256 = state["event_count"], state["state_sha256"]
    elif stored is not None:
        result.event_count, result.state_sha256 = (
            stored.get("event_count"),
            stored.get("state_sha256"),
        )
    return result, write


def _observed(outcome: MirrorOutcome, asked: tuple[Fetch, ...]) -> MirrorObservation:
    """A mirror's observation: its verified history is its bundle's, when that verified."""
    a = outcome.assessment
    if not a.bundle_ok:
        return _observation(outcome.mirror, asked, (), None, outcome.status)
    merged_state = a.report.merged_state if a.report is not None else None
    digest = merged_state.get("state_sha256") if merged_state else None
    return _observation(outcome.mirror, asked, a.event_ids, digest, outcome.status)


def _plan_mirror(
    report: _Report,
    found: Findings,
    outcome: MirrorOutcome,
    documents: dict[str, tuple[str, bytes]],
) -> None:
    """One mirror's part of the write: its row, its new documents, events and evidence."""
    a, write, copy = outcome.assessment, report.write, outcome.assessment.copy
    reasons = [r.to_json() for r in outcome.reasons]
    shas = (copy.bundle.sha256, copy.state.sha256) if copy else (None, None)
    report.mirror(
        found.specs.get(base_key(outcome.mirror)), outcome.mirror, outcome.status, reasons, shas
    )
    if copy is None:
        write.add_events(a.valid_events, outcome.mirror, stored=found.stored_events)
        return
    stored_pair = shas in found.known_good
    if a.bundle_ok and not stored_pair and copy.bundle.sha256 not in documents:
        documents[copy.bundle.sha256] = ("bundle", copy.bundle.body)
    if a.state_ok and not stored_pair:
        documents.setdefault(copy.state.sha256, ("state", copy.state.body))
        if shas not in write.verified_copies:
            write.verified_copies.append(shas)
    if copy.bundle.code != NOT_MODIFIED:
        # A copy answered 304 serves the events it served when its row was written;
        # mirror_status.checked_at says it was confirmed again.
        write.add_events(a.valid_events, outcome.mirror, stored=found.stored_events)
    if outcome.status is Status.OK:
        return
    for kind, doc, ok in (("bundle", copy.bundle, a.bundle_ok), ("state", copy.state, a.state_ok)):
        kept_as_proof = kind == "bundle" and outcome.status in (Status.EQUIVOCATION, Status.STALE)
        if doc.body is not None and (not ok or kept_as_proof):
            write.evidence.append({
                "mirror": outcome.mirror, "url": doc.url, "status": outcome.status.value,
                "reasons": reasons, "body": doc.body,
            })  # fmt: skip


def quick_plan(stored: StoredRecord, fetched: list[FetchedCopy], rules: PlanRules) -> Plan | None:
    """The plan of a record nothing has changed in since its last check, found without
    comparing again, or None.  It holds when every configured mirror answered 304 for both
    documents with a pair that verified together under the pinned keys (known_good), the
    last check found each of these mirrors `ok` with these very bytes (so their events hold
    no equivocation), and each served state's state_sha256 is the stored merge's (so each
    mirror has exactly the stored events: none is stale, and nothing new is to be stored).
    Then the full path gives every mirror `ok`, an in_sync verdict and nothing to write
    but the check itself; tests/run/test_sync.py holds the two paths equal case by case.
    With follow_hints the bundle is read for hints: one naming another mirror takes the full
    path.

    Args:
        stored: what the store held about the record, its pith number verified.
        fetched: what each configured mirror served.
        rules: the run's trust set, tracking, size cap, hints setting and configured mirrors.

    Returns:
        The record's result and its write, or None when the record needs the full comparison.
    """
    pairs = [(f.copy.bundle.sha256, f.copy.state.sha256) for f in fetched]
    if not _confirmed_unchanged(stored, fetched, pairs, rules):
        return None
    report = _Report(stored.pith_number, Verdict.IN_SYNC, rules)
    for f, pair in zip(fetched, pairs, strict=True):
        spec = rules.configured[base_key(f.copy.mirror)]
        report.mirror(spec, f.copy.mirror, Status.OK, [], pair)
        # Each served state is the stored merge: each mirror served exactly the stored events.
        observed = (f.copy.mirror, f.asked, stored.event_ids, stored.summary["state_sha256"])
        report.write.observations.append(_observation(*observed, Status.OK))
    report.write.journal_detail = {"new_events": 0, "refused_hints": 0}
    summary = stored.summary
    result = RecordResult(
        stored.pith_number, Verdict.IN_SYNC, report.mirrors,
        event_count=summary["event_count"], state_sha256=summary["state_sha256"],
    )  # fmt: skip
    return result, report.write


def _confirmed_unchanged(
    stored: StoredRecord, fetched: list[FetchedCopy], pairs: list[tuple[str, str]], rules: PlanRules
) -> bool:
    """Whether quick_plan's conditions all hold (see there)."""
    if any(
        f.copy.bundle.code != NOT_MODIFIED or f.copy.state.code != NOT_MODIFIED for f in fetched
    ):
        return False
    if not all(p in stored.known_good for p in pairs):
        return False
    ok = Status.OK.value
    if any(
        stored.verdicts.get(f.copy.mirror) != (ok, *p) for f, p in zip(fetched, pairs, strict=True)
    ):
        return False
    if not stored.has_state:
        return False
    states = {f.copy.state.sha256: f.copy.state.body for f in fetched}  # each distinct one once
    try:
        served = [
            strictjson.loads_object(body, max_bytes=rules.max_bytes) for body in states.values()
        ]
    except MalformedDocument:
        return False
    if any(s.get("state_sha256") != stored.summary["state_sha256"] for s in served):
        return False
    return not rules.follow_hints or _hints_only_configured(stored.pith_number, fetched, rules)


def _hints_only_configured(pith_number: str, fetched: list[FetchedCopy], rules: PlanRules) -> bool:
    """Whether every hint the served bundles hold names a configured mirror (hints naming
    configured mirrors are not followed anyway; any other takes the full path)."""
    suffix = numbers.parse_full(pith_number).suffix
    for body in {f.copy.bundle.sha256: f.copy.bundle.body for f in fetched}.values():
        try:
            hints = hinted_mirrors(strictjson.loads_object(body, max_bytes=rules.max_bytes), suffix)
        except MalformedDocument:
            return False
        if any(base_key(h.base_url) not in rules.configured for h in hints):
            return False
    return True
