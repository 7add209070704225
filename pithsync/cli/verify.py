"""`verify`: bundle, state and evidence files checked offline against the pinned keys; and the
reading of local files that `verify` and `import` share."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pithsync import config as config_mod
from pithsync import evidence
from pithsync.base.exits import ExitCode, UsageError
from pithsync.cli.output import Output
from pithsync.core import strictjson
from pithsync.core.errors import MalformedDocument
from pithsync.core.note import VerifierKey
from pithsync.core.status import Status
from pithsync.core.verify import Report, Verifier, verify_document
from pithsync.observer import pinned_keys


class UnreadableFile(UsageError):
    """A local file named on the command line cannot be read (exit 2): `reason` is the OS's."""

    STATUS = "unreadable"

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read {path}: {reason}")
        self.path = path
        self.reason = reason

    def to_json(self) -> dict:
        """The same fields as a verification Report's JSON, for one list of file results."""
        reason = {"status": self.STATUS, "code": "cannot_read", "message": self.reason}
        return {
            "kind": None,
            "status": self.STATUS,
            "pith_number": None,
            "reasons": [reason],
            "notes": [],
        }


def read_file(path: str, max_bytes: int) -> bytes:
    """One local file's bytes, read once and no further than one byte past the size cap."""
    try:
        with open(path, "rb") as fh:
            return fh.read(max_bytes + 1)
    except OSError as exc:
        raise UnreadableFile(path, exc.strerror or str(exc)) from None


def verify_bytes(
    data: bytes, verifier: Verifier, max_bytes: int, observers: Sequence[VerifierKey] = ()
) -> tuple[Report, object]:
    """The report for one document's bytes, and the document (None when it is not strict JSON);
    an evidence file's statements and signature are checked with the `observers` keys."""

    try:
        doc = strictjson.loads(data, max_bytes=max_bytes)
    except MalformedDocument as exc:
        report = Report("unknown")
        report.add(Status.MALFORMED, "not_strict_json", str(exc))
        return report, None
    if evidence.is_evidence(doc):
        return evidence.verify_evidence(doc, verifier, max_bytes, observers), doc
    return verify_document(doc, verifier), doc


def verify_file(
    path: str, verifier: Verifier, max_bytes: int, observers: Sequence[VerifierKey] = ()
) -> Report:
    """The verification report of one local file (UnreadableFile when it cannot be read)."""
    return verify_bytes(read_file(path, max_bytes), verifier, max_bytes, observers)[0]


def report_unreadable(files: list[UnreadableFile]) -> None:
    """Each file that could not be read, on stderr: the reason for exit 2, even under --json."""
    for bad in files:
        print(f"pithsync: {bad}", file=sys.stderr)


def cmd_verify(args, cfg: config_mod.Config, out: Output) -> ExitCode:
    """Verifies every file given; one that cannot be read is reported and the rest still
    verified.  Exit 2 when any file was unreadable (the input must be fixed first), else 1
    when any file is not ok.  Evidence files are checked with the observer keys pinned:
    `[[peers]]`, `--observer-key` and this store's own."""
    verifier = Verifier(cfg.trust)
    observers = pinned_keys(cfg.db_path, [p.observer_key for p in cfg.peers], args.observer_key)
    results: list[tuple[str, Report | UnreadableFile]] = []
    for path in args.files:
        try:
            results.append((path, verify_file(path, verifier, cfg.crawl.max_bytes, observers)))
        except UnreadableFile as exc:
            results.append((path, exc))
    unreadable = [r for _, r in results if isinstance(r, UnreadableFile)]
    if out.as_json:
        out.json({"files": [{"file": p, **r.to_json()} for p, r in results]})
    else:
        rows = []
        for path, r in results:
            if isinstance(r, UnreadableFile):
                rows.append([r.STATUS, "-", "-", path, r.reason])
                continue
            why = "; ".join(str(x) for x in r.reasons) or "; ".join(r.notes)
            rows.append([r.status.value, r.kind, r.pith_number or "-", path, why])
        out.table("pithsync verify", ["status", "kind", "pith number", "file", "reasons"], rows)
    report_unreadable(unreadable)
    if unreadable:
        return ExitCode.USAGE
    return ExitCode.OK if all(r.ok for _, r in results) else ExitCode.FAILED
