"""Exit codes, and the errors a user must fix.  Every command returns an ExitCode; the CLI's
`main` is the one place outcomes become process exit statuses."""

from __future__ import annotations

from enum import IntEnum

from pithsync.core.status import Verdict


class ExitCode(IntEnum):
    OK = 0  # all ok / in_sync / degraded
    FAILED = 1  # a document not ok, or a record diverged
    USAGE = 2  # usage or configuration error
    UNVERIFIABLE = 3  # some record has no verified copy anywhere, none diverged
    STORE = 4  # the store cannot be used: locked by another run, read-only, full, corrupt
    BUSY = 75  # `sync --if-locked=skip`: the store stayed locked by another run (EX_TEMPFAIL)


class UsageError(Exception):
    """Bad arguments or input that the user must fix (exit 2)."""


def exit_code_for_verdicts(verdicts) -> ExitCode:
    verdicts = list(verdicts)
    if Verdict.WRONG_NUMBER in verdicts:  # the input must be fixed first; the others are reported
        return ExitCode.USAGE
    if Verdict.DIVERGED in verdicts:
        return ExitCode.FAILED
    if Verdict.UNVERIFIABLE in verdicts:
        return ExitCode.UNVERIFIABLE
    return ExitCode.OK
