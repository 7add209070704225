"""Prints the reliability summary line at the end of a run (issue 6).

Loaded from tests/conftest.py with

    from conftest_reliability import pytest_terminal_summary  # noqa: F401  (reliability line)

or ad hoc with `PYTHONPATH=tests pytest -p conftest_reliability ...`.  With
PITHSYNC_RELIABILITY_TABLE=1 it also prints the fault -> status/reason table that
tests/test_hostile.py observed.
"""

from __future__ import annotations

import os

import reliability_counts


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    counts = reliability_counts.COUNTS
    if not any(counts.values()):
        return
    terminalreporter.write_sep("-", "reliability")
    terminalreporter.write_line(reliability_counts.summary_line())
    if os.environ.get("PITHSYNC_RELIABILITY_TABLE"):
        terminalreporter.write_line(
            "| fault | status | reason code | message (bad mirror, first reason) |"
        )
        terminalreporter.write_line("|---|---|---|---|")
        for fault, status, code, message in reliability_counts.OBSERVED:
            terminalreporter.write_line(
                f"| {fault} | {status} | {code} | {message[:120].replace('|', '/')} |"
            )
