"""Evidence files, built: the signed documents in the store that show a mirror served something
wrong, written into one self-contained file (the format, and how it is checked, is in
pithsync.core.evidence).  Building reads the store; checking is pure and lives in the core.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from pithsync import __version__
from pithsync.base.clock import utcnow
from pithsync.core import attestation, strictjson
from pithsync.core.canonical import canon, sha256hex
from pithsync.core.evidence import (
    EVIDENCE_TYPE,
    EVIDENCE_VERSION,
    MAX_DOCUMENTS,
    MAX_MISSING_EVENTS,
    MAX_OBSERVATIONS,
    MAX_TOTAL_BYTES,
    Documents,
    EvidenceReport,
    is_evidence,
    verify_evidence,
)
from pithsync.core.merge import find_equivocations, order_key
from pithsync.core.note import NoteSigner, VerifierKey
from pithsync.core.verify import Verifier
from pithsync.evidence_proofs import Proofs

__all__ = ["EvidenceReport", "build_evidence", "is_evidence", "verify_evidence"]


# -- building a file from the store -----------------------------------------------------------


class _Probe:
    """A scratch Documents addressed by sha256, for deriving claims before anything is kept."""

    def __init__(self, verifier: Verifier, pith_number: str, max_bytes: int):
        self.docs = Documents(verifier, pith_number, max_bytes)
        self._at: dict[str, int] = {}

    def index(self, body: bytes) -> int:
        sha = sha256hex(body)
        if sha not in self._at:
            self._at[sha] = len(self.docs.bodies)
            self.docs.bodies.append(body)
        return self._at[sha]


def _event_bytes(event: dict) -> bytes:
    return canon(event)


def build_evidence(
    store,
    pith_number: str,
    verifier: Verifier,
    signer: NoteSigner,
    *,
    observers: Sequence[VerifierKey] = (),
    max_bytes: int = strictjson.DEFAULT_MAX_BYTES,
    created_at: str | None = None,
) -> dict:
    """The evidence file for one record: every bad copy the store kept that a claim can be made
    about, the verified good bundle beside them, the signed events the claims need, the
    observation statements that prove which mirror served what (with their proofs and signed
    checkpoints), and the split views found with peers.  Only claims that `verify_evidence`
    confirms are written; the file is signed with `signer`.

    Args:
        store: the store (read only).
        pith_number: the record, in full.
        verifier: the pinned keys every document and claim is checked with.
        signer: this store's observer key (its log's checkpoints are signed with it).
        observers: the peers' pinned observer keys (their statements prove split views).
        max_bytes: the largest document the checks parse.
        created_at: the file's creation time; by default now.

    Returns:
        The evidence document (format in pithsync.core.evidence and core.attestation).
    """
    builder = _Builder(store, pith_number, verifier, max_bytes)
    builder.keep_reference()
    claims, observations, observed_shas = builder.observe()
    claims += builder.equivocation_claims()
    entries, index = builder.pack()
    proofs = Proofs(store, pith_number, [signer.verifier_key, *observers])
    bound = _confirmed(builder, entries, index, claims, proofs)
    splits = proofs.split_views()
    for obs, sha in zip(observations, observed_shas, strict=True):
        obs["document"] = index.get(sha) if sha else None
    truncated = (
        len(entries) < len(builder.keep)
        or len(bound) < len(claims)
        or len(builder.rows) > len(observations)
    )
    doc = {
        "evidence_type": EVIDENCE_TYPE,
        "evidence_version": EVIDENCE_VERSION,
        "pith_number": pith_number,
        "created_at": created_at or utcnow(),
        "created_by": f"pithsync {__version__}",
        "pinned_keys": [{"key_id": k.key_id, "fingerprint": k.fingerprint} for k in verifier.trust],
        "documents": entries,
        "claims": bound + splits,
        "observations": observations,
        "truncated": truncated,
        "checkpoints": proofs.checkpoints,
        "statements": proofs.statements,
    }
    doc["signature"] = attestation.sign_file(doc, signer)
    return doc


def _confirmed(builder: _Builder, entries: list, index: dict, claims: list, proofs: Proofs):
    """The claims the verifier confirms, their documents bound to ids and their mirrors proven
    by statements of this observer's log (the entries get their kinds)."""
    final = Documents(builder.probe.docs.verifier, builder.pith, builder.probe.docs.max_bytes)
    final.bodies = [builder.keep[e["sha256"]][0] for e in entries]
    for e in entries:
        e["kind"] = final.kind(e["id"])
    bound = []
    for claim in claims:
        c = _bind(claim, index)
        if c is not None and not final.check(c) and proofs.attest(c, final):
            bound.append(c)
    return bound


def _observation(row: dict) -> dict:
    """One evidence row as the file's testimony of what a mirror served."""
    reasons = [
        {"code": r.get("code"), "message": r.get("message")}
        for r in row["reasons"]
        if isinstance(r, dict)
    ]
    return {
        "mirror": row["mirror"],
        "url": row["url"],
        "status": row["status"],
        "reasons": reasons[:10],
        "observed_at": row["observed_at"],
        "document": None,
    }


class _Builder:
    """The documents and claims of one record's evidence file, gathered from the store; claims
    name documents by sha256 until `pack` gives them ids."""

    def __init__(self, store, pith_number: str, verifier: Verifier, max_bytes: int) -> None:
        self.store = store
        self.pith = pith_number
        self.probe = _Probe(verifier, pith_number, max_bytes)
        self.keep: dict[str, list] = {}  # sha256 -> [body, role], in the order they go in
        self.stored = store.stored_events(pith_number)
        self.groups = find_equivocations(self.stored.values())
        self.in_conflict = {eid for g in self.groups for eid in g["event_ids"]}
        # conflicting event_id -> sha256 of kept bundles carrying it
        self.carriers: dict[str, list[str]] = {}
        self.rows = list(reversed(store.evidence_for(pith_number)))  # newest first
        self.statuses = {m["mirror"]: m for m in store.mirror_statuses(pith_number)}

    def kept(self, body: bytes, role: str) -> str:
        """Put a document into the file (a reference stays one); its sha256."""
        sha = sha256hex(body)
        if sha not in self.keep:
            self.keep[sha] = [body, role]
        elif role == "reference":
            self.keep[sha][1] = "reference"
        return sha

    def keep_reference(self) -> None:
        """The verified bundle that holds the most of the record's verified events."""
        best = None
        for _sha, body in self.store.verified_documents(self.pith, "bundle"):
            bundle, _ = self.probe.docs.valid_bundle(self.probe.index(body))
            if bundle is not None:
                key = (
                    len({e["event_id"] for e in bundle["events"]} & set(self.stored)),
                    str(bundle.get("built_at", "")),
                )
                if best is None or key > best[0]:
                    best = (key, body)
        if best is not None:
            self.kept(best[1], "reference")

    def observe(self) -> tuple[list[dict], list[dict], list[str | None]]:
        """The claims the kept bad copies prove, the observations (newest first, capped), and
        the sha256 of the body each observation saw."""
        claims: list[dict] = []
        observations: list[dict] = []
        observed_shas: list[str | None] = []
        considered: set[str] = set()
        for row in self.rows:
            body = bytes(row["body"]) if row.get("body") is not None else None
            sha = sha256hex(body) if body is not None else None
            if len(observations) < MAX_OBSERVATIONS:
                observations.append(_observation(row))
                observed_shas.append(sha)
            if body is None or sha in considered:
                continue
            considered.add(sha)
            ctx = {"mirror": row["mirror"], "url": row["url"], "observed_at": row["observed_at"]}
            claims += [{**claim, **ctx} for claim in self.claims_for(body, row)]
        return claims, observations, observed_shas

    def equivocation_claims(self) -> list[dict]:
        """One claim per group of conflicting stored events, with the bundles that served them."""
        claims = []
        for g in self.groups:
            events = [self.kept(_event_bytes(self.stored[eid]), "event") for eid in g["event_ids"]]
            links = [
                {"document": b, "event": e}
                for eid, e in zip(g["event_ids"], events, strict=True)
                for b in self.carriers.get(eid, [])
            ]
            summary = (
                f"{len(events)} validly signed events of signer {str(g['signer_id'])[:80]} claim"
                f" the same place (target {str(g['target'])[:80]},"
                f" prev_event {str(g['prev_event'])[:30]})"
            )
            claims.append(
                {"claim": "equivocation", "events": events, "served_in": links, "summary": summary}
            )
        return claims

    def pack(self) -> tuple[list[dict], dict[str, int]]:
        """The file's document entries within the size budget (the reference first, then in
        order of use) and each packed document's id by sha256."""
        entries: list[dict] = []
        index: dict[str, int] = {}
        budget = MAX_TOTAL_BYTES
        for sha, (body, role) in self.keep.items():
            if len(entries) >= MAX_DOCUMENTS or len(body) > budget:
                continue
            budget -= len(body)
            index[sha] = len(entries)
            entries.append(
                {
                    "id": len(entries),
                    "role": role,
                    "kind": "",
                    "sha256": sha,
                    "size": len(body),
                    "body_b64": base64.b64encode(body).decode("ascii"),
                }
            )
        return entries, index

    def claims_for(self, body: bytes, row: dict) -> list[dict]:
        """What one bad copy kept in the evidence table proves."""
        docs = self.probe.docs
        i = self.probe.index(body)
        report = docs.report(i)
        if not report.ok:
            reasons = "; ".join(r.message for r in report.reasons[:2])
            return [
                {
                    "claim": "bad_document",
                    "document": self.kept(body, "observed"),
                    "status": report.status.value,
                    "codes": sorted({r.code for r in report.reasons}),
                    "summary": f"{report.status.value}: {reasons}"[:400],
                }
            ]
        doc, _ = docs.parsed(i)
        if doc.get("pith_number") != docs.pith:
            other = str(doc.get("pith_number"))[:80]
            summary = f"a valid {report.kind} of {other}, served for {docs.pith}"
            return [
                {
                    "claim": "wrong_record",
                    "document": self.kept(body, "observed"),
                    "summary": summary,
                }
            ]
        if report.kind == "state":
            return self._state_claims(body, i, row)
        if report.kind == "bundle":
            return self._bundle_claims(body, doc)
        return []

    def _served_beside(self, row: dict) -> list[bytes]:
        """The bundles a state's mirror served beside it in the same write: a bad one kept in the
        same evidence write, or the verified one the mirror_status row of that write names."""
        beside = [
            bytes(r["body"])
            for r in self.rows
            if r["run_id"] == row["run_id"]
            and r["mirror"] == row["mirror"]
            and r["observed_at"] == row["observed_at"]
            and r.get("body") is not None
        ]
        status = self.statuses.get(row["mirror"])
        if (
            status
            and status.get("checked_at") == row["observed_at"]
            and status.get("bundle_sha256")
        ):
            verified = self.store.document_body(status["bundle_sha256"])
            if verified is not None:
                beside.append(verified)
        return beside

    def _state_claims(self, body: bytes, i: int, row: dict) -> list[dict]:
        docs = self.probe.docs
        for other in self._served_beside(row):
            j = self.probe.index(other)
            claim = {"claim": "state_not_merge", "document": i, "bundle": j}
            if docs.kind(j) == "bundle" and not docs.check(claim):
                return [
                    {
                        "claim": "state_not_merge",
                        "document": self.kept(body, "observed"),
                        "bundle": self.kept(other, "observed"),
                        "summary": "a state that is not the merge of the bundle served beside it",
                    }
                ]
        return []

    def _bundle_claims(self, body: bytes, bundle: dict) -> list[dict]:
        """A valid bundle: it carries conflicting events (noted for the equivocation claims), or
        it lacks validly signed events the store holds (stale)."""
        held = {e["event_id"] for e in bundle["events"]}
        conflicting = held & self.in_conflict
        if conflicting:
            sha = self.kept(body, "observed")
            for eid in conflicting:
                self.carriers.setdefault(eid, []).append(sha)
        lacking = set(self.stored) - held - self.in_conflict
        if not lacking:
            return []
        newest = sorted((self.stored[e] for e in lacking), key=order_key, reverse=True)
        return [
            {
                "claim": "stale",
                "document": self.kept(body, "observed"),
                "missing_events": [
                    self.kept(_event_bytes(ev), "event") for ev in newest[:MAX_MISSING_EVENTS]
                ],
                "summary": f"a valid bundle of the record lacking {len(lacking)} of its validly"
                " signed events",
            }
        ]


def _bind(claim: dict, index: dict[str, int]) -> dict | None:
    """sha256 references -> document ids; None when a document did not fit in the file."""
    out = dict(claim)
    try:
        for key in ("document", "bundle"):
            if key in out:
                out[key] = index[out[key]]
        for key in ("missing_events", "events"):
            if key in out:
                out[key] = [index[s] for s in out[key]]
        if "served_in" in out:
            out["served_in"] = [
                {"document": index[s["document"]], "event": index[s["event"]]}
                for s in out["served_in"]
                if s["document"] in index
            ]
    except KeyError:
        return None
    return out
