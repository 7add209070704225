"""Evidence files: self-contained bundles of conflicting signed documents (filled in by the
alerts work).  `pithsync verify` recognises them."""

from __future__ import annotations

from pithsync.core.verify import Report, Verifier

EVIDENCE_TYPE = "pithsync_evidence"


def is_evidence(doc: object) -> bool:
    return isinstance(doc, dict) and doc.get("evidence_type") == EVIDENCE_TYPE


def verify_evidence(doc: dict, verifier: Verifier) -> Report:
    report = Report("evidence")
    report.add(__import__("pithsync.core.status", fromlist=["Status"]).Status.MALFORMED, "unsupported", "evidence verification not implemented yet")
    return report
