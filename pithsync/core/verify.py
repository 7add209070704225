"""Verification of bundles and states against pinned keys.

Untrusted input goes in as parsed JSON; a typed `Report` comes out, carrying one status and
every reason found.  Nothing here raises on bad input: a document that cannot be checked is
reported `malformed`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pithsync.core import numbers
from pithsync.core.canonical import canon_sha256, without
from pithsync.core.errors import InvalidPithNumber, PithError
from pithsync.core.events import (
    EVENT_HASH_EXCLUDES,
    SIGNED_MESSAGE,
    EventCheck,
    EventChecker,
    missing_fields,
)
from pithsync.core.keys import TrustStore
from pithsync.core.merge import MERGE_VERSION, STATE_TYPE, merge_state
from pithsync.core.status import Reason, Status, most_severe

# EVENT_HASH_EXCLUDES, SIGNED_MESSAGE and EventCheck live in core.events; callers import them
# from here too.
__all__ = [
    "BUNDLE_TYPE",
    "EVENT_HASH_EXCLUDES",
    "SIGNED_MESSAGE",
    "EventCheck",
    "Report",
    "Verifier",
    "detect_kind",
    "verify_bundle",
    "verify_document",
    "verify_pair",
    "verify_state",
]

BUNDLE_TYPE = "pith_open_graph_bundle"
_BUNDLE_FIELDS: dict[str, type | tuple] = {
    "bundle_type": str,
    "pith_number": str,
    "canonical_record": dict,
    "canonical_sha256": str,
    "source_aliases": list,
    "events": list,
    "state": dict,
    "bundle_signature": dict,
}
_STATE_FIELDS: dict[str, type | tuple] = {
    "state_type": str,
    "pith_number": str,
    "event_count": int,
    "valid_event_count": int,
    "invalid_event_count": int,
    "equivocation_count": int,
    "current": dict,
    "equivocations": list,
    "invalid_events": list,
    "applied_event_ids": list,
    "state_sha256": str,
}


@dataclass
class Report:
    """The outcome of verifying one document (or a bundle/state pair)."""

    kind: str  # "bundle", "state", "pair"
    reasons: list[Reason] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pith_number: str | None = None
    canonical_sha256: str | None = None
    # Only for bundles: the events whose hash and signature verified, and the recomputed state.
    valid_events: list[dict] = field(default_factory=list)
    merged_state: dict | None = None

    @property
    def status(self) -> Status:
        return most_severe(r.status for r in self.reasons)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def add(self, status: Status, code: str, message: str) -> None:
        self.reasons.append(Reason(status, code, message))

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "status": self.status.value,
            "pith_number": self.pith_number,
            "reasons": [r.to_json() for r in self.reasons],
            "notes": list(self.notes),
        }


class Verifier:
    """Verifies documents against one TrustStore.

    Its EventChecker holds a cache of signature checks, so an event served by three mirrors is
    checked once: long runs keep one Verifier.
    """

    def __init__(self, trust: TrustStore, cache_size: int = 8192):
        self.trust = trust
        self.event_checker = EventChecker(trust, cache_size)

    def check_event(self, event: object, index: int, subject: str | None = None) -> EventCheck:
        """One event's checks (see EventChecker.check_event)."""
        return self.event_checker.check_event(event, index, subject)

    # -- the canonical record and its number -------------------------------------------
    def _check_record(
        self, report: Report, record: object, claimed_sha: object, claimed_number: object
    ) -> None:
        if not isinstance(record, dict) or not isinstance(record.get("metadata"), dict):
            report.add(
                Status.MALFORMED, "record_schema", "canonical_record is not an object with metadata"
            )
            return
        digest = canon_sha256(record)
        report.canonical_sha256 = digest
        if claimed_sha is not None and claimed_sha != digest:
            report.add(
                Status.TAMPERED,
                "canonical_sha256_mismatch",
                f"canonical_sha256 {str(claimed_sha)[:80]!r} is not"
                f" sha256(canon(canonical_record)) = {digest}",
            )
        try:
            claimed = numbers.parse_full(claimed_number)  # type: ignore[arg-type]
        except InvalidPithNumber as exc:
            report.add(Status.MALFORMED, "pith_number_syntax", str(exc))
            return
        try:
            derived = numbers.PithNumber(
                numbers.year_of(record), numbers.suffix_from_sha256(digest)
            )
        except (InvalidPithNumber, KeyError, TypeError) as exc:
            report.add(Status.MALFORMED, "record_schema", f"cannot derive a pith number: {exc}")
            return
        if str(derived) != claimed_number:
            report.add(
                Status.TAMPERED,
                "pith_number_mismatch",
                f"pith number {claimed} does not match its record, which gives {derived}",
            )

    # -- documents ---------------------------------------------------------------------
    @staticmethod
    def _checked(
        kind: str,
        doc: object,
        fields: Mapping[str, Any],
        type_field: str,
        type_value: str,
        check: Callable[[dict, Report], None],
    ) -> Report:
        """The schema gate every document passes, then `check`; bad input never raises."""
        report = Report(kind)
        if not isinstance(doc, dict):
            report.add(Status.MALFORMED, f"{kind}_schema", f"{kind} is not a JSON object")
            return report
        bad = missing_fields(doc, fields)
        if bad or doc[type_field] != type_value:
            report.add(
                Status.MALFORMED,
                f"{kind}_schema",
                f"not a {type_value}: bad fields: {', '.join(bad) or type_field}",
            )
            return report
        report.pith_number = doc["pith_number"][:80]
        try:
            check(doc, report)
        except PithError as exc:  # e.g. a value with no canonical encoding
            report.add(Status.MALFORMED, "unencodable", str(exc))
        return report

    def verify_bundle(self, bundle: object) -> Report:
        return self._checked(
            "bundle", bundle, _BUNDLE_FIELDS, "bundle_type", BUNDLE_TYPE, self._verify_bundle
        )

    def _verify_bundle(self, bundle: dict, report: Report) -> None:
        self._check_record(
            report, bundle["canonical_record"], bundle["canonical_sha256"], bundle["pith_number"]
        )
        if report.status is Status.MALFORMED:
            return

        invalid: dict[str, str] = {}
        events = []
        seen_record_created = False
        for i, ev in enumerate(bundle["events"]):
            check = self.check_event(ev, i, subject=bundle["pith_number"])
            report.reasons.extend(check.reasons)
            if not isinstance(ev, dict) or not isinstance(ev.get("event_id"), str):
                continue  # nothing a merge could name
            events.append(ev)
            if check.valid:
                report.valid_events.append(ev)
                seen_record_created |= ev["event_type"] == "record_created"
                if (
                    ev["payload"].get("canonical_sha256") not in (None, report.canonical_sha256)
                    and ev["event_type"] == "record_created"
                ):
                    report.add(
                        Status.TAMPERED,
                        "receipt_other_record",
                        f"event {ev['event_id'][:80]}: receipt is for another canonical record",
                    )
            else:
                invalid.setdefault(ev["event_id"], check.reasons[0].code)
        # An id with a valid copy is valid: the merge sees that copy alone, never a forged twin.
        valid_ids = {ev["event_id"] for ev in report.valid_events}
        events = report.valid_events + [ev for ev in events if ev["event_id"] not in valid_ids]
        invalid = {eid: code for eid, code in invalid.items() if eid not in valid_ids}
        if not seen_record_created:
            report.add(
                Status.TAMPERED,
                "no_valid_receipt",
                "no validly signed record_created event (receipt) for this record",
            )

        self._check_bundle_signature(report, bundle)

        merged = merge_state(
            bundle["pith_number"],
            bundle["canonical_record"],
            bundle["source_aliases"],
            events,
            invalid,
        )
        report.merged_state = merged
        self._check_state(report, bundle["state"], "embedded state", merged)

    def _check_bundle_signature(self, report: Report, bundle: dict) -> None:
        """The bundle's own signature, over the sha256 of everything but itself."""
        sig = bundle["bundle_signature"]
        bundle_sha = canon_sha256(without(bundle, "bundle_signature"))
        if sig.get("bundle_sha256") != bundle_sha:
            report.add(
                Status.TAMPERED,
                "bundle_hash_mismatch",
                f"bundle_sha256 does not match the bundle (computed {bundle_sha})",
            )
        else:
            report.reasons.extend(
                self.event_checker.check_signature(
                    sig, bundle_sha, "bundle_signature", SIGNED_MESSAGE["bundle"]
                )
            )

    def _check_state(
        self, report: Report, state: Mapping, what: str, merged: Mapping | None = None
    ) -> None:
        """A state's own hash, and (given the merge) whether its content is that merge.

        One canonical encoding per state: the merge carries the hash of its content, so equal
        digests mean byte-identical canonical content."""
        digest = canon_sha256(without(state, "state_sha256"))
        if state.get("state_sha256") != digest:
            report.add(
                Status.TAMPERED,
                "state_hash_mismatch",
                f"{what}: state_sha256 does not match its content (computed {digest})",
            )
        if merged is not None and digest != merged["state_sha256"]:
            report.add(
                Status.STATE_MISMATCH,
                "state_not_merge",
                f"{what} is not the merge of the bundle's events ({_state_diff(state, merged)})",
            )

    def verify_state(self, state: object) -> Report:
        """A standalone state: its hash, its number, and its receipt.  Its events carry no
        signatures, so a state alone cannot prove them (reported as a note)."""
        return self._checked(
            "state", state, _STATE_FIELDS, "state_type", STATE_TYPE, self._verify_state
        )

    def _verify_state(self, state: dict, report: Report) -> None:
        if state.get("merge_version") != MERGE_VERSION:
            report.notes.append(
                f"merge_version {str(state.get('merge_version'))[:40]!r} is not {MERGE_VERSION}"
            )
        self._check_state(report, state, "state")
        current = state["current"]
        self._check_record(report, current.get("canonical_record"), None, state["pith_number"])
        if report.status is Status.MALFORMED:
            return
        rc = current.get("record_created")
        if not isinstance(rc, dict) or not isinstance(rc.get("payload"), dict):
            report.add(
                Status.TAMPERED,
                "no_valid_receipt",
                "state has no record_created entry to carry a receipt",
            )
        else:
            pseudo_event = {"payload": rc["payload"]}
            reasons = self.event_checker.check_record_created(pseudo_event, "record_created")
            if not reasons and rc["payload"]["canonical_sha256"] != report.canonical_sha256:
                reasons.append(
                    Reason(
                        Status.TAMPERED,
                        "receipt_other_record",
                        "receipt is for another canonical record",
                    )
                )
            report.reasons.extend(reasons)
        self._check_state_consistency(report, state)
        report.notes.append("a state alone carries no event signatures: its events are not proven")

    def _check_state_consistency(self, report: Report, state: Mapping) -> None:
        entries = []
        for name, value in state["current"].items():
            if name == "record_created" and isinstance(value, dict):
                entries.append(value)
            elif isinstance(value, list) and name not in ("source_aliases",):
                entries.extend(v for v in value if isinstance(v, dict) and "event_id" in v)
        applied = state["applied_event_ids"]
        if not all(isinstance(e.get("event_id"), str) for e in entries) or not all(
            isinstance(a, str) for a in applied
        ):
            report.add(
                Status.MALFORMED,
                "state_schema",
                "event ids in current or applied_event_ids are not all strings",
            )
            return
        listed = {e["event_id"] for e in entries}
        problems = []
        if set(applied) != listed or len(set(applied)) != len(applied):
            problems.append("applied_event_ids do not name the entries in current")
        if state["invalid_event_count"] != len(state["invalid_events"]):
            problems.append("invalid_event_count is not len(invalid_events)")
        if state["equivocation_count"] != len(state["equivocations"]):
            problems.append("equivocation_count is not len(equivocations)")
        if state["valid_event_count"] + state["invalid_event_count"] != state["event_count"]:
            problems.append("valid + invalid event counts are not event_count")
        if state["valid_event_count"] < len(applied):
            problems.append("more applied events than valid ones")
        for p in problems:
            report.add(Status.STATE_MISMATCH, "state_inconsistent", p)

    def verify_pair(self, bundle: object, state: object) -> Report:
        """A bundle and the state served beside it: the state must be the bundle's merge."""
        report = self.verify_bundle(bundle)
        report.kind = "pair"
        if not isinstance(state, dict) or report.merged_state is None:
            if not isinstance(state, dict):
                report.add(Status.MALFORMED, "state_schema", "state is not a JSON object")
            return report
        self.check_served_state(report, state)
        return report

    def check_served_state(self, report: Report, state: dict) -> None:
        """The state served beside a bundle must be that bundle's merge (report.merged_state)."""
        try:
            if state.get("pith_number") != report.pith_number:
                report.add(
                    Status.STATE_MISMATCH,
                    "state_other_record",
                    f"state.json is for {str(state.get('pith_number'))[:80]!r},"
                    f" not {report.pith_number}",
                )
            else:
                self._check_state(report, state, "state.json", report.merged_state)
        except PithError as exc:
            report.add(Status.MALFORMED, "unencodable", f"state.json: {exc}")


def _state_diff(claimed: Mapping, merged: Mapping) -> str:
    keys = sorted(
        k
        for k in set(claimed) | set(merged)
        if k != "state_sha256" and claimed.get(k) != merged.get(k)
    )
    return "differs in: " + ", ".join(keys[:8]) if keys else "differs"


# Convenience for one-off use; long runs keep one Verifier for its cache.
def verify_bundle(bundle: object, trust: TrustStore) -> Report:
    return Verifier(trust).verify_bundle(bundle)


def verify_state(state: object, trust: TrustStore) -> Report:
    return Verifier(trust).verify_state(state)


def verify_pair(bundle: object, state: object, trust: TrustStore) -> Report:
    return Verifier(trust).verify_pair(bundle, state)


def detect_kind(doc: object) -> str | None:
    if isinstance(doc, dict):
        if doc.get("bundle_type") == BUNDLE_TYPE:
            return "bundle"
        if doc.get("state_type") == STATE_TYPE:
            return "state"
    return None


def verify_document(doc: object, verifier: Verifier) -> Report:
    kind = detect_kind(doc)
    if kind == "bundle":
        return verifier.verify_bundle(doc)
    if kind == "state":
        return verifier.verify_state(doc)
    report = Report("unknown")
    report.add(
        Status.MALFORMED,
        "unknown_document",
        "neither a pith_open_graph_bundle nor a pith_open_graph_state",
    )
    return report
