"""Counters behind the suite's reliability summary line (issue 6).

Tests add to them only after their assertions passed, so the line reports what was survived:

    reliability: 41 faults survived, 20 kills survived, 1200 fuzz examples run

`conftest_reliability.pytest_terminal_summary` prints it.
"""

from __future__ import annotations

COUNTS: dict[str, int] = {"faults": 0, "kills": 0, "fuzz": 0}
# (fault, status, reason code, message) as observed by tests/test_hostile.py.
OBSERVED: list[tuple[str, str, str, str]] = []


def add(kind: str, n: int = 1) -> None:
    COUNTS[kind] += n


def observe(fault: str, status: str, code: str, message: str) -> None:
    OBSERVED.append((fault, status, code, message))


def summary_line() -> str:
    return (
        f"reliability: {COUNTS['faults']} faults survived, {COUNTS['kills']} kills survived, "
        f"{COUNTS['fuzz']} fuzz examples run"
    )
