"""Exit codes, and the errors that map to them: what a user must fix (UsageError, NoStoreError:
exit 2) and a store that cannot be used (StoreError: exit 4).  Every command returns an
ExitCode; the CLI's `main` is the one place outcomes become process exit statuses."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a command's exit status says (`pithsync --help` lists them)."""

    OK = 0  # all ok / in_sync / degraded
    FAILED = 1  # a document not ok, or a record diverged
    USAGE = 2  # usage or configuration error
    UNVERIFIABLE = 3  # some record has no verified copy anywhere, none diverged
    STORE = 4  # the store cannot be used: locked by another run, read-only, full, corrupt
    BUSY = 75  # `sync --if-locked=skip`: the store stayed locked by another run (EX_TEMPFAIL)


class UsageError(Exception):
    """Bad arguments or input that the user must fix (exit 2)."""


def exit_code_for_verdicts(verdicts) -> ExitCode:
    """A run's exit code from its records' verdicts: the worst of them decides."""
    # Imported here, not with the module: core.status brings dataclasses (and inspect), a
    # large share of an interpreter's start, which `pithsync --version` and usage errors never need.
    from pithsync.core.status import Verdict

    verdicts = list(verdicts)
    if Verdict.WRONG_NUMBER in verdicts:  # the input must be fixed first; the others are reported
        return ExitCode.USAGE
    if Verdict.DIVERGED in verdicts:
        return ExitCode.FAILED
    if Verdict.UNVERIFIABLE in verdicts:
        return ExitCode.UNVERIFIABLE
    return ExitCode.OK


class StoreError(Exception):
    """The store cannot be opened or written (read-only, full disk, corrupt, locked)."""


class StoreLocked(StoreError):
    """Another run held the store's run lock for all of lock_timeout_s."""

    def __init__(self, message: str, lock_path: str, waited_s: float, holder_pid: int | None):
        super().__init__(message)
        self.lock_path = lock_path
        self.waited_s = waited_s
        self.holder_pid = holder_pid


class WrongNumberError(Exception):
    """A write names a pith number its verified record does not have (a bug in the caller: the
    record is not written, the store is fine)."""


class NoStoreError(StoreError):
    """Nothing at the path to read as a store, or no directory to create one in: the path is
    wrong, or nothing was pulled or imported yet.  A usage error (exit 2), not a broken store."""

    @classmethod
    def at(cls, path: str) -> NoStoreError:
        """The error for a read-only command on a path that holds no store."""
        return cls(f"no store at {path} (run `pithsync pull` or `pithsync import` first)")
