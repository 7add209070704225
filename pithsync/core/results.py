"""What one record's check reports: its target, each mirror's outcome and the record's verdict.

Pure data, built by the write planner (core/plan.py) and carried by the run to its caller; the
run re-exports these from pithsync.run.results."""

from __future__ import annotations

from dataclasses import dataclass, field

from pithsync.core.status import Status, Verdict


@dataclass(frozen=True)
class Target:
    """A record a run is to sync, by suffix, with its full number when known."""

    suffix: str
    pith_number: str | None = None  # when known
    depth: int = 0
    # The full number a user typed, a claim only: the record's verified number is what is stored,
    # and a reference naming another one is answered with that number (Verdict.WRONG_NUMBER).
    requested: str | None = None


@dataclass
class MirrorResult:
    """One mirror's status for one record, with the reasons for it."""

    name: str
    base_url: str
    status: Status
    reasons: list[dict]
    configured: bool

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "base_url": self.base_url,
            "status": self.status.value,
            "configured": self.configured,
            "reasons": self.reasons,
        }


@dataclass
class RecordResult:
    """One record's verdict, its mirrors' statuses and what its state now is."""

    pith_number: str
    verdict: Verdict
    mirrors: list[MirrorResult]
    event_count: int | None = None
    state_sha256: str | None = None
    refused_hints: list[dict] = field(default_factory=list)
    new_events: int = 0
    found_numbers: list[str] = field(default_factory=list)
    error: str | None = None  # set when pithsync itself failed on this record
    true_number: str | None = None  # WRONG_NUMBER: the number the record's documents really have

    def to_json(self) -> dict:
        return {
            "pith_number": self.pith_number,
            "verdict": self.verdict.value,
            "event_count": self.event_count,
            "state_sha256": self.state_sha256,
            "new_events": self.new_events,
            "mirrors": [m.to_json() for m in self.mirrors],
            "refused_hints": self.refused_hints,
            **({"error": self.error} if self.error else {}),
            **({"true_number": self.true_number} if self.true_number else {}),
        }
