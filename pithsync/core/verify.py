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
from pithsync.core.keys import TrustStore, decode_signature
from pithsync.core.merge import MERGE_VERSION, STATE_TYPE, merge_state
from pithsync.core.status import Reason, Status, most_severe

BUNDLE_TYPE = "pith_open_graph_bundle"
EVENT_HASH_EXCLUDES = ("signature", "content_sha256", "event_id")
SIGNED_MESSAGE = {
    "receipt": "canonical_sha256_bytes",
    "event": "open_graph_event_sha256_bytes",
    "bundle": "bundle_sha256_bytes",
}

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
_EVENT_FIELDS: dict[str, type | tuple] = {
    "event_type": str,
    "subject_pith_number": str,
    "payload": dict,
    "signer": dict,
    "created_at": str,
    "signature": dict,
    "content_sha256": str,
    "event_id": str,
}
_HEX64 = frozenset("0123456789abcdef")


def _is_sha256hex(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX64


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


def _missing_fields(doc: Mapping, spec: Mapping[str, Any]) -> list[str]:
    return [
        f"{name} ({'absent' if name not in doc else 'not ' + getattr(t, '__name__', str(t))})"
        for name, t in spec.items()
        if not isinstance(doc.get(name), t) or (t is int and isinstance(doc.get(name), bool))
    ]


@dataclass(frozen=True)
class EventCheck:
    event_id: str
    reasons: tuple[Reason, ...]

    @property
    def valid(self) -> bool:
        return not self.reasons


class Verifier:
    """Verifies documents against one TrustStore.

    Holds a cache of signature checks (pure: the same message, signature and pinned key always
    give the same answer), so an event served by three mirrors is checked once.  An event
    belongs to one record, so the cache only needs to span the records in flight.
    """

    def __init__(self, trust: TrustStore, cache_size: int = 8192):
        self.trust = trust
        self._sig_cache: dict[tuple, bool] = {}
        self._cache_size = cache_size

    # -- signatures --------------------------------------------------------------------
    def _check_signature(
        self, sig: object, digest_hex: str, what: str, expected_message: str
    ) -> list[Reason]:
        if not isinstance(sig, dict):
            return [Reason(Status.MALFORMED, "signature_missing", f"{what}: no signature object")]
        if sig.get("algorithm") != "ed25519":
            return [
                Reason(
                    Status.BAD_SIGNATURE,
                    "signature_algorithm",
                    f"{what}: algorithm {sig.get('algorithm')!r} is not ed25519",
                )
            ]
        key = self.trust.get(sig.get("key_id"))
        if key is None:
            return [
                Reason(
                    Status.BAD_SIGNATURE,
                    "key_not_pinned",
                    f"{what}: key_id {str(sig.get('key_id'))[:80]!r} is not a pinned key",
                )
            ]
        if sig.get("public_key_fingerprint") != key.fingerprint:
            return [
                Reason(
                    Status.BAD_SIGNATURE,
                    "fingerprint_mismatch",
                    (
                        f"{what}: fingerprint {str(sig.get('public_key_fingerprint'))[:80]!r} is "
                        f"not that of pinned key {key.key_id}"
                    ),
                )
            ]
        if sig.get("signed_message") != expected_message:
            return [
                Reason(
                    Status.BAD_SIGNATURE,
                    "signed_message",
                    (
                        f"{what}: signed_message is {str(sig.get('signed_message'))[:80]!r}, "
                        f"expected {expected_message!r}"
                    ),
                )
            ]
        raw_sig = decode_signature(sig.get("signature_b64"))
        if raw_sig is None:
            return [
                Reason(
                    Status.BAD_SIGNATURE,
                    "signature_encoding",
                    f"{what}: signature_b64 is not a 64-byte base64 signature",
                )
            ]
        cache_key = (key.key_id, digest_hex, raw_sig)
        ok = self._sig_cache.get(cache_key)
        if ok is None:
            ok = key.verify(bytes.fromhex(digest_hex), raw_sig)
            if len(self._sig_cache) >= self._cache_size:
                self._sig_cache.clear()
            self._sig_cache[cache_key] = ok
        if not ok:
            return [
                Reason(
                    Status.BAD_SIGNATURE,
                    "signature_invalid",
                    f"{what}: Ed25519 signature does not verify with pinned key {key.key_id}",
                )
            ]
        return []

    # -- events ------------------------------------------------------------------------
    def check_event(self, event: object, index: int, subject: str | None = None) -> EventCheck:
        what = f"event[{index}]"
        if not isinstance(event, dict):
            return EventCheck(
                f"#{index}", (Reason(Status.MALFORMED, "event_schema", f"{what} is not an object"),)
            )
        event_id = event.get("event_id")
        event_id = event_id if isinstance(event_id, str) else f"#{index}"
        what = f"event {event_id[:80]}"
        bad = _missing_fields(event, _EVENT_FIELDS)
        if bad:
            return EventCheck(
                event_id,
                (
                    Reason(
                        Status.MALFORMED, "event_schema", f"{what}: bad fields: {', '.join(bad)}"
                    ),
                ),
            )
        reasons: list[Reason] = []
        digest = canon_sha256(without(event, *EVENT_HASH_EXCLUDES))
        if event["content_sha256"] != digest:
            reasons.append(
                Reason(
                    Status.TAMPERED,
                    "event_hash_mismatch",
                    f"{what}: content_sha256 does not match its content (computed {digest})",
                )
            )
        if event_id != "sha256:" + event["content_sha256"]:
            reasons.append(
                Reason(
                    Status.TAMPERED,
                    "event_id_mismatch",
                    f"{what}: event_id is not sha256:<content_sha256>",
                )
            )
        if subject is not None and event["subject_pith_number"] != subject:
            reasons.append(
                Reason(
                    Status.TAMPERED,
                    "event_subject_mismatch",
                    f"{what}: subject {event['subject_pith_number'][:80]!r} is not {subject}",
                )
            )
        if not reasons:
            reasons.extend(
                self._check_signature(event["signature"], digest, what, SIGNED_MESSAGE["event"])
            )
        if not reasons:
            reasons.extend(self._check_signer(event, what))
        if not reasons and event["event_type"] == "record_created":
            reasons.extend(self._check_record_created(event, what))
        return EventCheck(event_id, tuple(reasons))

    def _check_signer(self, event: dict, what: str) -> list[Reason]:
        """The merge groups events by signer, so the signer an event names must be the key
        that signed it: otherwise one pinned key could speak for another."""
        signer, sig = event["signer"], event["signature"]
        key = self.trust.get(sig.get("key_id"))
        if (
            signer.get("key_id") != sig.get("key_id")
            or key is None
            or signer.get("public_key_fingerprint") != key.fingerprint
        ):
            return [
                Reason(
                    Status.BAD_SIGNATURE,
                    "signer_mismatch",
                    (
                        f"{what}: signer names key {str(signer.get('key_id'))[:80]!r}, but it is "
                        f"signed by {str(sig.get('key_id'))[:80]!r}"
                    ),
                )
            ]
        if not isinstance(signer.get("signer_id"), str):
            return [
                Reason(
                    Status.MALFORMED, "event_schema", f"{what}: signer.signer_id is not a string"
                )
            ]
        return []

    def _check_record_created(self, event: dict, what: str) -> list[Reason]:
        """The receipt: the registry's signature over the canonical record's digest."""
        payload = event["payload"]
        record, digest, receipt = (
            payload.get("canonical_record"),
            payload.get("canonical_sha256"),
            payload.get("receipt"),
        )
        if not (isinstance(record, dict) and _is_sha256hex(digest) and isinstance(receipt, dict)):
            return [
                Reason(
                    Status.MALFORMED,
                    "receipt_schema",
                    (
                        f"{what}: record_created payload lacks "
                        "canonical_record, canonical_sha256 or receipt"
                    ),
                )
            ]
        if canon_sha256(record) != digest or receipt.get("canonical_sha256") != digest:
            return [
                Reason(
                    Status.TAMPERED,
                    "receipt_hash_mismatch",
                    f"{what}: receipt does not match the canonical record's sha256",
                )
            ]
        return self._check_signature(receipt, digest, f"{what} receipt", SIGNED_MESSAGE["receipt"])

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
                (
                    f"canonical_sha256 {str(claimed_sha)[:80]!r} is not "
                    f"sha256(canon(canonical_record)) = {digest}"
                ),
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
        bad = _missing_fields(doc, fields)
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
                self._check_signature(sig, bundle_sha, "bundle_signature", SIGNED_MESSAGE["bundle"])
            )

        merged = merge_state(
            bundle["pith_number"],
            bundle["canonical_record"],
            bundle["source_aliases"],
            events,
            invalid,
        )
        report.merged_state = merged
        self._check_state(report, bundle["state"], "embedded state", merged)

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
            reasons = self._check_record_created(pseudo_event, "record_created")
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
                    (
                        f"state.json is for {str(state.get('pith_number'))[:80]!r}, "
                        f"not {report.pith_number}"
                    ),
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
