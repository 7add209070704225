"""Evidence files, built: the signed documents in the store that show a mirror served something
wrong, written into one self-contained file (the format, and how it is checked, is in
pithsync.core.evidence).  Building reads the store; checking is pure and lives in the core.
"""

from __future__ import annotations

import base64

from pithsync import __version__
from pithsync.base.clock import utcnow
from pithsync.core import strictjson
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
from pithsync.core.verify import Verifier

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
    *,
    max_bytes: int = strictjson.DEFAULT_MAX_BYTES,
    created_at: str | None = None,
) -> dict:
    """The evidence file for one record: every bad copy the store kept that a claim can be made
    about, the verified good bundle beside them, and the signed events the claims need.  Only
    claims that `verify_evidence` confirms are written."""
    probe = _Probe(verifier, pith_number, max_bytes)
    keep: dict[str, list] = {}  # sha256 -> [body, role], in the order they go into the file

    def kept(body: bytes, role: str) -> str:
        sha = sha256hex(body)
        if sha not in keep:
            keep[sha] = [body, role]
        elif role == "reference":
            keep[sha][1] = "reference"
        return sha

    stored = store.stored_events(pith_number)
    groups = find_equivocations(stored.values())
    in_conflict = {eid for g in groups for eid in g["event_ids"]}

    # The reference: the verified bundle that holds the most of the record's verified events.
    best = None
    for _sha, body in store.verified_documents(pith_number, "bundle"):
        bundle, _ = probe.docs.valid_bundle(probe.index(body))
        if bundle is not None:
            key = (
                len({e["event_id"] for e in bundle["events"]} & set(stored)),
                str(bundle.get("built_at", "")),
            )
            if best is None or key > best[0]:
                best = (key, body)
    if best is not None:
        kept(best[1], "reference")

    claims: list[dict] = []
    observations: list[dict] = []
    carriers: dict[
        str, list[str]
    ] = {}  # conflicting event_id -> sha256 of kept bundles carrying it
    rows = list(reversed(store.evidence_for(pith_number)))  # newest first
    statuses = {m["mirror"]: m for m in store.mirror_statuses(pith_number)}
    considered: set[str] = set()
    obs_sha: list[str | None] = []
    for row in rows:
        body = bytes(row["body"]) if row.get("body") is not None else None
        sha = sha256hex(body) if body is not None else None
        if len(observations) < MAX_OBSERVATIONS:
            observations.append(
                {
                    "mirror": row["mirror"],
                    "url": row["url"],
                    "status": row["status"],
                    "reasons": [
                        {"code": r.get("code"), "message": r.get("message")}
                        for r in row["reasons"]
                        if isinstance(r, dict)
                    ][:10],
                    "observed_at": row["observed_at"],
                    "document": None,
                }
            )
            obs_sha.append(sha)
        if body is None or sha in considered:
            continue
        considered.add(sha)
        ctx = {"mirror": row["mirror"], "url": row["url"], "observed_at": row["observed_at"]}
        for claim in _claims_for(
            probe, body, row, rows, statuses, store, stored, in_conflict, carriers, kept
        ):
            claims.append({**claim, **ctx})

    for g in groups:
        events = [kept(_event_bytes(stored[eid]), "event") for eid in g["event_ids"]]
        links = [
            {"document": b, "event": e}
            for eid, e in zip(g["event_ids"], events)
            for b in carriers.get(eid, [])
        ]
        claims.append(
            {
                "claim": "equivocation",
                "events": events,
                "served_in": links,
                "summary": f"{len(events)} validly signed events of signer {str(g['signer_id'])[:80]} claim the same place (target {str(g['target'])[:80]}, prev_event {str(g['prev_event'])[:30]})",
            }
        )

    # Into the file, within the size budget: the reference first, then in order of use.
    entries: list[dict] = []
    index: dict[str, int] = {}
    budget = MAX_TOTAL_BYTES
    for sha, (body, role) in keep.items():
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
    final = Documents(verifier, pith_number, max_bytes)
    final.bodies = [keep[e["sha256"]][0] for e in entries]
    for e in entries:
        e["kind"] = final.kind(e["id"])

    bound = []
    for claim in claims:
        c = _bind(claim, index)
        if c is not None and not final.check(c):  # only what the verifier confirms goes out
            bound.append(c)
    for obs, sha in zip(observations, obs_sha):
        obs["document"] = index.get(sha) if sha else None
    return {
        "evidence_type": EVIDENCE_TYPE,
        "evidence_version": EVIDENCE_VERSION,
        "pith_number": pith_number,
        "created_at": created_at or utcnow(),
        "created_by": f"pithsync {__version__}",
        "pinned_keys": [{"key_id": k.key_id, "fingerprint": k.fingerprint} for k in verifier.trust],
        "documents": entries,
        "claims": bound,
        "observations": observations,
        "truncated": len(entries) < len(keep)
        or len(bound) < len(claims)
        or len(rows) > len(observations),
    }


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


def _claims_for(
    probe: _Probe,
    body: bytes,
    row: dict,
    rows: list[dict],
    statuses: dict,
    store,
    stored: dict,
    in_conflict: set,
    carriers: dict,
    kept,
) -> list[dict]:
    """What one bad copy kept in the evidence table proves (documents referenced by sha256;
    `kept(body, role)` puts a document into the file)."""
    docs = probe.docs
    i = probe.index(body)
    report = docs.report(i)
    if not report.ok:
        codes = sorted({r.code for r in report.reasons})
        summary = f"{report.status.value}: {'; '.join(r.message for r in report.reasons[:2])}"[:400]
        return [
            {
                "claim": "bad_document",
                "document": kept(body, "observed"),
                "status": report.status.value,
                "codes": codes,
                "summary": summary,
            }
        ]
    doc, _ = docs.parsed(i)
    if doc.get("pith_number") != docs.pith:
        return [
            {
                "claim": "wrong_record",
                "document": kept(body, "observed"),
                "summary": f"a valid {report.kind} of {str(doc.get('pith_number'))[:80]}, served for {docs.pith}",
            }
        ]
    if report.kind == "state":
        # The bundle its mirror served beside it in the same write: a bad one kept in the same
        # evidence write, or the verified one the mirror_status row of that write names.
        beside = [
            bytes(r["body"])
            for r in rows
            if r["run_id"] == row["run_id"]
            and r["mirror"] == row["mirror"]
            and r["observed_at"] == row["observed_at"]
            and r.get("body") is not None
        ]
        status = statuses.get(row["mirror"])
        if (
            status
            and status.get("checked_at") == row["observed_at"]
            and status.get("bundle_sha256")
        ):
            verified = store.document_body(status["bundle_sha256"])
            if verified is not None:
                beside.append(verified)
        for other in beside:
            j = probe.index(other)
            if docs.kind(j) == "bundle" and not docs.check(
                {"claim": "state_not_merge", "document": i, "bundle": j}
            ):
                return [
                    {
                        "claim": "state_not_merge",
                        "document": kept(body, "observed"),
                        "bundle": kept(other, "observed"),
                        "summary": "a state that is not the merge of the bundle served beside it",
                    }
                ]
        return []
    if report.kind != "bundle":
        return []
    held = {e["event_id"] for e in doc["events"]}
    conflicting = held & in_conflict
    if conflicting:
        sha = kept(body, "observed")
        for eid in conflicting:
            carriers.setdefault(eid, []).append(sha)
    lacking = set(stored) - held - in_conflict
    if not lacking:
        return []
    missing = sorted((stored[e] for e in lacking), key=order_key, reverse=True)[:MAX_MISSING_EVENTS]
    return [
        {
            "claim": "stale",
            "document": kept(body, "observed"),
            "missing_events": [kept(_event_bytes(ev), "event") for ev in missing],
            "summary": f"a valid bundle of the record lacking {len(lacking)} of its validly signed events",
        }
    ]
