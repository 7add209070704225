"""Evidence files, checked: the signed documents that show a mirror served something wrong, in one
self-contained JSON file that `pithsync verify FILE` checks offline, on any machine, against its
own pinned keys.

Format (`evidence_version` 2)::

    {"evidence_type": "pithsync_evidence", "evidence_version": 1,
     "pith_number": "pith:2026:...", "created_at": "...", "created_by": "pithsync 0.1.0",
     "pinned_keys": [{"key_id": ..., "fingerprint": ...}],        # informational
     "documents": [{"id": 0, "role": "reference" | "observed" | "event", "kind": "bundle",
                    "sha256": "...", "size": 1234, "body_b64": "<exact bytes>"}, ...],
     "claims": [...],                                                # what the documents prove
     "observations": [{"mirror", "url", "status", "reasons", "observed_at", "document"}],
     "checkpoints": [...], "statements": [...],                      # core.attestation
     "signature": "<signed note by the exporter's observer key>"}

Roles: a `reference` is a verified good bundle of the record and must verify cleanly; an `event`
is one signed event and must verify with the record as its subject; an `observed` document is a
copy a mirror served, checked only through the claims that name it.

Claims, each re-checked from the bytes alone:
- `bad_document` {document, status, codes}: verifying the document with the pinned keys gives
  exactly `status` (the most severe) and at least the reason `codes` (tampered, bad_signature,
  state_mismatch, malformed).
- `wrong_record` {document}: a valid bundle or state, but of another record.
- `state_not_merge` {document, bundle}: a state that is not the merge of the bundle served
  beside it.
- `stale` {document, missing_events}: a valid bundle of the record that lacks each listed
  validly signed event of the record.
- `equivocation` {events, served_in}: validly signed events that conflict per
  core.merge.find_equivocations (exactly that group), and each `served_in` bundle carries the
  named event with a valid signature.
- `split_view` {mirror, url, statements: [mine, theirs], window_s}: two observers' proven
  statements show the mirror served them histories that fork (core.attestation).

A claim's `mirror` and `url` are proven by the observation statements it cites (`statements`,
core.attestation): each is in an observer's log, under a checkpoint signed by a pinned observer
key, and says that mirror answered that url with the claim's document.  Observations (what the
observer concluded, when) are the exporter's testimony, bound to its observer key by the file's
signature.  A 404 or an unreachable mirror leaves no document and no claim.

Checking a file is pure (its bytes and the pinned keys in, a Report out); building one reads
the store and is pithsync.evidence's business.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pithsync.core import attestation, strictjson
from pithsync.core.canonical import sha256hex
from pithsync.core.errors import MalformedDocument, PithError
from pithsync.core.merge import find_equivocations
from pithsync.core.note import VerifierKey
from pithsync.core.numbers import parse_full
from pithsync.core.status import Status
from pithsync.core.verify import Report, Verifier, detect_kind, verify_document

EVIDENCE_TYPE = "pithsync_evidence"
EVIDENCE_VERSION = 2
ROLES = ("reference", "observed", "event")
CLAIMS = ("bad_document", "wrong_record", "state_not_merge", "stale", "equivocation")
MAX_DOCUMENTS = 500
MAX_TOTAL_BYTES = (
    5 * 1024 * 1024
)  # of embedded bodies; base64 keeps the file under the 8 MiB read cap
MAX_MISSING_EVENTS = 20  # per stale claim: enough to prove it
MAX_OBSERVATIONS = 200


def is_evidence(doc: object) -> bool:
    """Whether a parsed document is an evidence file (rather than a bundle or state)."""
    return isinstance(doc, dict) and doc.get("evidence_type") == EVIDENCE_TYPE


# -- the documents, as both the builder and the verifier see them ------------------------------


class Documents:
    """Embedded bodies with cached parses and verification reports, and the claim checks over
    them (shared with the builder, which checks each claim before writing it)."""

    def __init__(
        self, verifier: Verifier, pith_number: str, max_bytes: int = strictjson.DEFAULT_MAX_BYTES
    ):
        self.verifier = verifier
        self.pith = pith_number
        self.max_bytes = max_bytes
        self.bodies: list[bytes] = []
        self._parsed: dict[int, tuple[Any, str | None]] = {}
        self._reports: dict[int, Report] = {}

    def __len__(self) -> int:
        return len(self.bodies)

    def has(self, i: object) -> bool:
        return isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(self.bodies)

    def parsed(self, i: int) -> tuple[Any, str | None]:
        if i not in self._parsed:
            try:
                self._parsed[i] = (strictjson.loads(self.bodies[i], max_bytes=self.max_bytes), None)
            except MalformedDocument as exc:
                self._parsed[i] = (None, str(exc))
        return self._parsed[i]

    def report(self, i: int) -> Report:
        """The document verified on its own, exactly as `pithsync verify` would."""
        if i not in self._reports:
            doc, error = self.parsed(i)
            if error is not None:
                report = Report("unknown")
                report.add(Status.MALFORMED, "not_strict_json", error)
            else:
                report = verify_document(doc, self.verifier)
            self._reports[i] = report
        return self._reports[i]

    def kind(self, i: int) -> str:
        doc, _ = self.parsed(i)
        if detect_kind(doc):
            return detect_kind(doc)  # type: ignore[return-value]
        if isinstance(doc, dict) and isinstance(doc.get("event_id"), str) and "event_type" in doc:
            return "event"
        return "unknown"

    def event(self, i: int) -> tuple[dict | None, str]:
        """A validly signed event of this record, or why not."""
        doc, error = self.parsed(i)
        if error is not None:
            return None, f"not strict JSON: {error}"
        try:
            check = self.verifier.check_event(doc, i, subject=self.pith)
        except PithError as exc:
            return None, str(exc)
        if not check.valid:
            return None, "; ".join(str(r) for r in check.reasons)
        return doc, ""

    def valid_bundle(self, i: int) -> tuple[dict | None, str]:
        """A bundle of this record that verifies cleanly, or why not."""
        report = self.report(i)
        doc, _ = self.parsed(i)
        if report.kind != "bundle":
            return None, f"not a bundle ({self.kind(i)})"
        if not report.ok:
            return (
                None,
                f"does not verify: {report.status.value}:"
                f" {'; '.join(r.code for r in report.reasons[:5])}",
            )
        if doc.get("pith_number") != self.pith:
            return None, f"is a bundle of {str(doc.get('pith_number'))[:80]}, not {self.pith}"
        return doc, ""

    # -- claims: each returns "" when it holds, else why not --------------------------------
    def check(self, claim: dict) -> str:
        name = claim.get("claim")
        if name not in CLAIMS:
            return f"unknown claim {str(name)[:40]!r}"
        return getattr(self, f"_check_{name}")(claim)

    def _doc_ref(self, claim: dict, key: str) -> tuple[int | None, str]:
        i = claim.get(key)
        if not self.has(i):
            return None, f"{key} {str(i)[:20]!r} is not a document of this file"
        return i, ""

    def _check_bad_document(self, claim: dict) -> str:
        i, why = self._doc_ref(claim, "document")
        if i is None:
            return why
        codes = claim.get("codes")
        if not isinstance(codes, list) or not codes or not all(isinstance(c, str) for c in codes):
            return "codes must be a non-empty list of reason codes"
        report = self.report(i)
        if report.ok:
            return f"document {i} verifies cleanly"
        found = {r.code for r in report.reasons}
        if report.status.value != claim.get("status"):
            return (
                f"document {i} is {report.status.value} ({', '.join(sorted(found))}),"
                f" not {str(claim.get('status'))[:40]}"
            )
        if not set(codes) <= found:
            absent = ", ".join(sorted(set(codes) - found))
            return f"document {i} has reasons {', '.join(sorted(found))}, not {absent}"
        return ""

    def _check_wrong_record(self, claim: dict) -> str:
        i, why = self._doc_ref(claim, "document")
        if i is None:
            return why
        report = self.report(i)
        if report.kind not in ("bundle", "state") or not report.ok:
            return f"document {i} is not a valid bundle or state ({report.status.value})"
        doc, _ = self.parsed(i)
        if doc.get("pith_number") == self.pith:
            return f"document {i} is of {self.pith} itself"
        return ""

    def _check_state_not_merge(self, claim: dict) -> str:
        i, why = self._doc_ref(claim, "document")
        j, why2 = self._doc_ref(claim, "bundle")
        if i is None or j is None:
            return why or why2
        state, _ = self.parsed(i)
        if self.kind(i) != "state":
            return f"document {i} is not a state"
        served = self.report(j)
        bundle, _ = self.parsed(j)
        if served.kind != "bundle" or served.merged_state is None:
            return f"document {j} is not a bundle whose events can be merged"
        if bundle.get("pith_number") != self.pith or state.get("pith_number") != self.pith:
            return f"documents {i} and {j} are not both of {self.pith}"
        pair = Report("pair", merged_state=served.merged_state, pith_number=served.pith_number)
        self.verifier.check_served_state(pair, state)
        if pair.ok:
            return f"document {i} is the merge of bundle {j}"
        return ""

    def _check_stale(self, claim: dict) -> str:
        i, why = self._doc_ref(claim, "document")
        if i is None:
            return why
        bundle, why = self.valid_bundle(i)
        if bundle is None:
            return f"document {i} {why}"
        missing = claim.get("missing_events")
        if not isinstance(missing, list) or not missing:
            return "missing_events must be a non-empty list of documents"
        held = {e.get("event_id") for e in bundle["events"] if isinstance(e, dict)}
        for k in missing:
            if not self.has(k):
                return f"missing event {str(k)[:20]!r} is not a document of this file"
            event, why = self.event(k)
            if event is None:
                return f"document {k} is not a validly signed event of {self.pith}: {why}"
            if event["event_id"] in held:
                return f"bundle {i} holds event {event['event_id'][:23]} (document {k})"
        return ""

    def _check_equivocation(self, claim: dict) -> str:
        refs = claim.get("events")
        if not isinstance(refs, list) or len(refs) < 2:
            return "events must list at least two documents"
        events = []
        for k in refs:
            if not self.has(k):
                return f"event {str(k)[:20]!r} is not a document of this file"
            event, why = self.event(k)
            if event is None:
                return f"document {k} is not a validly signed event of {self.pith}: {why}"
            events.append(event)
        ids = {e["event_id"] for e in events}
        if len(ids) != len(events):
            return "the same event is listed twice"
        if not any(set(g["event_ids"]) == ids for g in find_equivocations(events)):
            return "these events do not conflict (no equivocation among exactly them)"
        served_in = claim.get("served_in", [])
        if not isinstance(served_in, list):
            return "served_in must be a list"
        for s in served_in:
            if (
                not isinstance(s, dict)
                or not self.has(s.get("document"))
                or s.get("event") not in refs
            ):
                return (
                    f"served_in entry {str(s)[:80]} does not name a document and one of the"
                    " claim's events"
                )
            report = self.report(s["document"])
            event_id = events[refs.index(s["event"])]["event_id"]
            if (
                report.kind != "bundle"
                or report.pith_number != self.pith
                or event_id not in {e["event_id"] for e in report.valid_events}
            ):
                return (
                    f"document {s['document']} is not a bundle of {self.pith} carrying validly"
                    f" signed event {event_id[:23]}"
                )
        return ""


# -- verifying a file -------------------------------------------------------------------------


@dataclass
class EvidenceReport(Report):
    """A Report with one entry per claim: what was proven, and who says which mirror served it."""

    claims: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {**super().to_json(), "claims": list(self.claims)}


# A claim's `mirror` and `url` are proven by the observer statements it cites.
ATTRIBUTION = "observer"


def _shown(value: object, limit: int) -> str:
    """`value` as text for one output line: cut to `limit`, control characters escaped (the
    file is untrusted and its text reaches a terminal)."""
    text = str(value)[:limit]
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _attribution(claim: dict, proven: bool) -> str:
    """What follows a claim's verdict: `; mirror M (url U) proven by observer statements` (or
    `not proven`), or nothing when the claim names no mirror."""
    mirror, url = claim.get("mirror"), claim.get("url")
    if not isinstance(mirror, str) and not isinstance(url, str):
        return ""
    where = f"mirror {_shown(mirror, 200)}" if isinstance(mirror, str) else "mirror unnamed"
    where += f" (url {_shown(url, 300)})" if isinstance(url, str) else ""
    return f"; {where} {'proven' if proven else 'not proven'} by observer statements"


def _claim_outcome(n: int, claim: dict, holds: bool, signed: bool) -> dict:
    """One claim in the JSON report; `signed`: its mirror and url are proven by statements."""
    out: dict[str, Any] = {"claim": n, "kind": _shown(claim.get("claim"), 40), "holds": holds}
    if isinstance(claim.get("mirror"), str) or isinstance(claim.get("url"), str):
        for key in ("mirror", "url"):
            out[key] = claim[key][:2000] if isinstance(claim.get(key), str) else None
        out["attribution"] = ATTRIBUTION
        out["signed"] = signed
    return out


def verify_evidence(
    doc: dict,
    verifier: Verifier,
    max_bytes: int = strictjson.DEFAULT_MAX_BYTES,
    observers: Sequence[VerifierKey] = (),
) -> Report:
    """Every embedded document re-verified with `verifier`'s pinned keys, every claim re-checked,
    every statement proven and the file's signature checked under the pinned `observers` keys.
    ok only when all of it holds (and there is at least one claim)."""
    report = EvidenceReport("evidence")
    try:
        _verify(doc, verifier, max_bytes, list(observers), report)
    except PithError as exc:  # e.g. a value with no canonical encoding
        report.add(Status.MALFORMED, "unencodable", str(exc))
    return report


def _verify(
    doc: dict, verifier: Verifier, max_bytes: int, observers: list, report: EvidenceReport
) -> None:
    pith = _header(doc, report)
    if pith is None:
        return
    if why := attestation.check_signature(doc, observers):
        report.add(Status.TAMPERED, "file_signature", why)
    checkpoints, why_not = attestation.open_checkpoints(doc.get("checkpoints"), observers)
    proven, more = attestation.prove_statements(doc.get("statements"), checkpoints)
    for why in why_not:
        report.add(Status.TAMPERED, "checkpoint_unverified", why)
    for why in more:
        report.add(Status.TAMPERED, "statement_unproven", why)
    entries, claims = doc.get("documents"), doc.get("claims")
    if (
        not isinstance(entries, list)
        or not isinstance(claims, list)
        or len(entries) > MAX_DOCUMENTS
    ):
        report.add(
            Status.MALFORMED,
            "evidence_schema",
            f"documents (at most {MAX_DOCUMENTS}) and claims must be lists",
        )
        return
    docs = Documents(verifier, pith, max_bytes)
    roles = _decode_documents(entries, docs, report)
    if roles is None:
        return
    _check_roles(roles, docs, report)
    _check_claims(claims, docs, proven, report)
    observations = doc.get("observations")
    if isinstance(observations, list) and observations:
        report.notes.append(
            f"{len(observations)} observation(s) recorded by the exporting observer"
            " (its testimony, signed with the file)"
        )


def _header(doc: dict, report: EvidenceReport) -> str | None:
    """The file's pith number when its version is supported, else None (and why, in `report`)."""
    if doc.get("evidence_version") != EVIDENCE_VERSION:
        version = str(doc.get("evidence_version"))[:20]
        report.add(
            Status.MALFORMED,
            "evidence_version",
            f"evidence_version {version!r} is not supported"
            f" (this pithsync reads {EVIDENCE_VERSION})",
        )
        return None
    try:
        pith = str(parse_full(doc.get("pith_number")))  # type: ignore[arg-type]
    except PithError as exc:
        report.add(Status.MALFORMED, "evidence_schema", f"pith_number: {exc}")
        return None
    report.pith_number = pith
    return pith


def _decode_documents(entries: list, docs: Documents, report: EvidenceReport) -> list[str] | None:
    """Each entry's bytes into `docs`; their roles, or None when an entry is malformed."""
    roles = []
    for i, e in enumerate(entries):
        if (
            not isinstance(e, dict)
            or e.get("id") != i
            or e.get("role") not in ROLES
            or not isinstance(e.get("body_b64"), str)
        ):
            report.add(
                Status.MALFORMED,
                "evidence_schema",
                f"documents[{i}] needs id {i}, a role ({', '.join(ROLES)}) and body_b64",
            )
            return None
        try:
            body = base64.b64decode(e["body_b64"], validate=True)
        except (binascii.Error, ValueError):
            report.add(
                Status.MALFORMED, "evidence_schema", f"documents[{i}].body_b64 is not base64"
            )
            return None
        if e.get("sha256") != sha256hex(body):
            report.add(
                Status.TAMPERED,
                "document_hash_mismatch",
                f"documents[{i}]: sha256 {str(e.get('sha256'))[:64]!r} is not that of its bytes"
                f" ({sha256hex(body)})",
            )
        docs.bodies.append(body)
        roles.append(e["role"])
    return roles


def _check_roles(roles: list[str], docs: Documents, report: EvidenceReport) -> None:
    """A reference must verify cleanly, an event must be a validly signed event of the record."""
    for i, role in enumerate(roles):
        if role == "reference":
            _, why = docs.valid_bundle(i)
            if why:
                report.add(Status.TAMPERED, "reference_invalid", f"document {i} (reference) {why}")
        elif role == "event":
            _, why = docs.event(i)
            if why:
                report.add(
                    Status.TAMPERED,
                    "event_invalid",
                    f"document {i} (event) is not a validly signed event of {docs.pith}: {why}",
                )


def check_claim(claim: dict, docs: Documents, proven: Sequence) -> tuple[str, str]:
    """Why a claim does not hold ('' when it does), and why its mirror and url are not proven
    by a statement it cites ('' when they are, or when it names none)."""
    if claim.get("claim") == "split_view":
        why = attestation.check_split_view(claim, proven, docs.pith)
        return why, why
    why = docs.check(claim)
    if not isinstance(claim.get("mirror"), str) and not isinstance(claim.get("url"), str):
        return why, ""
    i = claim.get("document")
    digest = sha256hex(docs.bodies[i]) if docs.has(i) else None
    return why, attestation.check_attribution(claim, proven, docs.pith, digest)


def _check_claims(claims: list, docs: Documents, proven: Sequence, report: EvidenceReport):
    """Every claim re-checked from the bytes and its mirror proven; at least one is needed."""
    if not claims:
        report.add(Status.MALFORMED, "no_claims", "the evidence makes no claim")
    for n, claim in enumerate(claims):
        if not isinstance(claim, dict):
            report.add(Status.MALFORMED, "evidence_schema", f"claims[{n}] is not an object")
            continue
        why, unproven = check_claim(claim, docs, proven)
        what = f"claim {n} ({_shown(claim.get('claim'), 40)})"
        attributed = _attribution(claim, not unproven)
        report.claims.append(_claim_outcome(n, claim, not why, not unproven))
        if why:
            report.add(Status.TAMPERED, "claim_false", f"{what} does not hold: {why}{attributed}")
        if unproven and unproven != why:
            report.add(Status.TAMPERED, "attribution_unproven", f"{what}: {unproven}{attributed}")
        if not why and not unproven:
            summary = f": {claim['summary']}" if isinstance(claim.get("summary"), str) else ""
            report.notes.append(f"{what} holds{summary}{attributed}")
