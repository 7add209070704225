"""What a run reports for each record and in total: typed values that cross from the run to
its caller (the CLI, the demo, the metrics)."""

from __future__ import annotations

from pithsync.core import numbers
from pithsync.core.errors import InvalidPithNumber
from pithsync.core.results import MirrorResult, RecordResult, Target
from pithsync.core.status import Status, Verdict

__all__ = [
    "MirrorResult",
    "RecordResult",
    "RunTally",
    "Target",
    "failed_result",
    "internal_error",
    "suffix_of",
    "wrong_number_result",
]


class RunTally:
    """What a run produced, counted record by record, so that a run over many records keeps
    none of them: verdicts (the exit code, the journal summary) and statuses per mirror
    (metrics)."""

    def __init__(self) -> None:
        self.by_verdict: dict[Verdict, int] = {v: 0 for v in Verdict}
        self.mirrors: dict[tuple[str, str], dict[str, int]] = {}  # (name, base_url) -> status -> n

    def add(self, result: RecordResult) -> None:
        self.by_verdict[result.verdict] += 1
        for m in result.mirrors:
            counts = self.mirrors.get((m.name, m.base_url))
            if (
                counts is None
            ):  # not setdefault: its default dict was built for every mirror of every record
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


def suffix_of(name: str) -> str:
    """The suffix of the record a result names: its full number's, or the one in the
    `pith:<suffix>` that a record without a known number is reported under."""
    try:
        return numbers.parse_full(name).suffix
    except InvalidPithNumber:
        return name.removeprefix("pith:")
