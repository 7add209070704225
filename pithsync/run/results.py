"""What a run reports for each record and in total: typed values that cross from the run to
its caller (the CLI, the demo, the metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pithsync.core.status import Status, Verdict


@dataclass(frozen=True)
class Target:
    suffix: str
    pith_number: str | None = None  # when known
    depth: int = 0
    # The full number a user typed, a claim only: the record's verified number is what is stored,
    # and a reference naming another one is answered with that number (Verdict.WRONG_NUMBER).
    requested: str | None = None


@dataclass
class MirrorResult:
    name: str
    base_url: str
    status: Status
    reasons: list[dict]
    configured: bool

    def to_json(self) -> dict:
        return {"name": self.name, "base_url": self.base_url, "status": self.status.value, "configured": self.configured, "reasons": self.reasons}


@dataclass
class RecordResult:
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


class RunTally:
    """What a run produced, counted record by record, so that a run over many records keeps
    none of them: verdicts (the exit code, the journal summary) and statuses per mirror (metrics)."""

    def __init__(self) -> None:
        self.by_verdict: dict[Verdict, int] = {v: 0 for v in Verdict}
        self.mirrors: dict[tuple[str, str], dict[str, int]] = {}  # (name, base_url) -> status -> n

    def add(self, result: RecordResult) -> None:
        self.by_verdict[result.verdict] += 1
        for m in result.mirrors:
            counts = self.mirrors.get((m.name, m.base_url))
            if counts is None:  # not setdefault: its default dict was built for every mirror of every record
                counts = self.mirrors[(m.name, m.base_url)] = {s.value: 0 for s in Status}
            counts[m.status.value] += 1

    @property
    def records(self) -> int:
        return sum(self.by_verdict.values())

    def summary(self) -> dict[str, int]:
        return {v.value: n for v, n in self.by_verdict.items()}


def internal_error(exc: Exception) -> str:
    return f"internal error: {type(exc).__name__}: {str(exc)[:200]}"


def wrong_number_result(target: Target, true_number: str) -> RecordResult:
    """A reference whose year is not its record's: the user's input to fix, no mirror's fault,
    and nothing is stored for it."""
    error = f"no such record: the documents with suffix {target.suffix} are {true_number}"
    name = target.requested or true_number
    return RecordResult(name, Verdict.WRONG_NUMBER, [], error=error, true_number=true_number)


def failed_result(target: Target, error: str) -> RecordResult:
    # Not the mirrors' fault: no mirror status is claimed, the record is just not verified.
    name = target.pith_number or target.requested or f"pith:{target.suffix}"
    return RecordResult(name, Verdict.UNVERIFIABLE, [], error=error[:300])
