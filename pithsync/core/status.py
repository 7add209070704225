"""The status vocabulary shared by verification, comparison, storage and the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Status(str, Enum):
    """One document's or one mirror's standing.  Verification uses the first five."""

    OK = "ok"
    TAMPERED = "tampered"
    BAD_SIGNATURE = "bad_signature"
    STATE_MISMATCH = "state_mismatch"
    MALFORMED = "malformed"
    STALE = "stale"
    EQUIVOCATION = "equivocation"
    MISSING = "missing"
    UNREACHABLE = "unreachable"
    # Not from one copy: the mirror showed a peer observer another validly signed history
    # (core.peers), the targeted deception an observer alone cannot see.
    SPLIT_VIEW = "split_view"

    def __str__(self) -> str:
        return self.value


# Most severe first (issue 3): when several apply to one mirror, the first wins.
SEVERITY: tuple[Status, ...] = (
    Status.SPLIT_VIEW,
    Status.EQUIVOCATION,
    Status.BAD_SIGNATURE,
    Status.TAMPERED,
    Status.STATE_MISMATCH,
    Status.MALFORMED,
    Status.STALE,
    Status.MISSING,
    Status.UNREACHABLE,
    Status.OK,
)
_RANK = {s: i for i, s in enumerate(SEVERITY)}


def most_severe(statuses) -> Status:
    return min(statuses, key=_RANK.__getitem__, default=Status.OK)


class Verdict(str, Enum):
    """One record's standing across all mirrors."""

    IN_SYNC = "in_sync"
    DIVERGED = "diverged"
    DEGRADED = "degraded"
    UNVERIFIABLE = "unverifiable"
    # Not about the mirrors: the reference's year is not its record's (the user's input to fix).
    WRONG_NUMBER = "wrong_number"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Reason:
    """One finding: a machine-readable code, the status it implies, and a sentence for people."""

    status: Status
    code: str
    message: str

    def to_json(self) -> dict:
        return {"status": self.status.value, "code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"{self.status.value}/{self.code}: {self.message}"
