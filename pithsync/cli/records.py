"""`pull`, `sync`, `untrack` and `import`: the commands that sync records into the store or
change what it tracks (`status`, which only reads, is in status.py)."""

from __future__ import annotations

import contextlib
import logging
import sys

from pithsync.base.exits import ExitCode, StoreLocked, UsageError
from pithsync.base.logfmt import log_event
from pithsync.cli.common import open_store, resolve_one
from pithsync.cli.output import Output, ResultWriter, progress_bar
from pithsync.cli.verify import UnreadableFile, read_file, report_unreadable, verify_bytes
from pithsync.config import Config
from pithsync.core import numbers
from pithsync.core.canonical import sha256hex
from pithsync.core.errors import InvalidPithNumber
from pithsync.core.merge import merge_state
from pithsync.core.plan import EncodedState, RecordWrite
from pithsync.core.verify import Report, Verifier
from pithsync.run import sync_records, workers
from pithsync.run.results import RecordResult, Target
from pithsync.run.scheduling import RunClock, due_targets
from pithsync.store import Store

log = logging.getLogger("pithsync.sync")


# -- pull / sync ----------------------------------------------------------------------------


def parse_targets(refs: list[str], store: Store, depth: int) -> list[Target]:
    """The records `refs` name, once each: a full number or a bare suffix as it is, a short form
    or an alias by what the store knows of it.

    Args:
        refs: what the user typed.
        store: the store, to resolve short forms and aliases.
        depth: how many citation hops to follow from each.

    Raises:
        UsageError: a reference that names no stored record, or several.
    """
    targets: dict[str, Target] = {}
    for text in refs:
        why = "not a full pith number or suffix"
        try:
            ref = numbers.parse_ref(text)
        except InvalidPithNumber as exc:
            ref, why = None, str(exc)
        if ref is not None and not ref.is_prefix:
            # The typed year is only a claim: the engine finds the stored or verified number by
            # the suffix, and answers a reference naming another year with the true number.
            requested = None if ref.year is None else str(numbers.PithNumber(ref.year, ref.suffix))
            targets.setdefault(ref.suffix, Target(ref.suffix, None, depth, requested=requested))
            continue
        matches = store.resolve(text)
        if not matches:
            raise UsageError(
                f"cannot resolve {text[:80]!r}: {why},"
                " and no stored record has that short form or alias"
            )
        if len(matches) > 1:
            raise UsageError(f"{text[:80]!r} is ambiguous: {', '.join(matches[:5])}")
        suffix = numbers.parse_full(matches[0]).suffix
        targets.setdefault(suffix, Target(suffix, matches[0], depth))
    return list(targets.values())


def read_list(source: str) -> list[str]:
    """The references in a list file (or stdin for `-`): one a line, `#` starts a comment."""
    try:
        text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {source}: {exc}") from None
    return [
        line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()
    ]


def sync_and_report(
    cfg: Config,
    out,
    store: Store,
    targets: list[Target],
    command: str,
    *,
    clock: RunClock | None = None,
    max_duration: float | None = None,
    not_taken: int = 0,
) -> int:
    """A run over `targets` (see run.sync_records), its records written to `out` as they
    complete (rows sorted at the end); the progress bar on a terminal.  Returns the run's exit
    code."""
    progress = progress_bar(out, len(targets))
    writer = ResultWriter(out)

    def on_record(result: RecordResult) -> None:
        writer.add(result)
        if progress:
            progress.advance(result)

    out.flush()  # before any fork: a reader already gone is found here, not by a worker
    try:
        with progress or contextlib.nullcontext():
            outcome = sync_records(
                cfg, store, targets, command, on_record=on_record, clock=clock,
                max_duration=max_duration, not_taken=not_taken,
            )  # fmt: skip
    finally:
        # Even when the store fails mid-run (exit 4), the rows examined so far are shown.
        writer.finish()
    return outcome.code


def cmd_pull(args, cfg: Config, out) -> int:
    """Pull, verify, compare and store the records named.  Rows sorted by pith number; --json:
    JSON Lines, one record a line as each completes, `{"pith_number", "verdict", "event_count":
    int|null, "state_sha256": str|null, "new_events": int, "mirrors": [{"name", "base_url",
    "status", "configured": bool, "reasons": [{"status", "code", "message"}]}], "refused_hints":
    [...]}` (and "error" when pithsync itself failed on the record)."""
    refs = list(args.pith)
    if args.from_file:
        refs += read_list(args.from_file)
    if not refs:
        raise UsageError("pull needs at least one pith number (or --from FILE)")
    with open_store(cfg, lock=True) as store:
        targets = parse_targets(refs, store, args.depth)
        return sync_and_report(cfg, out, store, targets, "pull")


def cmd_sync(args, cfg: Config, out) -> int:
    """`sync`: pull the tracked records that are due, in priority order, with the same output
    as `pull` (JSON Lines under --json).  With --max-duration (or [schedule] run_budget_s) the
    run starts no record after that long; what it did not reach stays due.  With
    --if-locked=skip, a store that another run keeps locked past lock_timeout_s is not an
    error: the run logs why and exits BUSY (nothing fetched or written), so a timer's run
    beside a long manual pull does not fail its unit."""
    try:
        return sync_tracked(args, cfg, out)
    except StoreLocked as exc:
        if args.if_locked != "skip":
            raise
        log_event(
            log,
            logging.WARNING,
            "run_skipped",
            reason="store locked by another run",
            lock=exc.lock_path,
            holder_pid=exc.holder_pid,
            waited_s=f"{exc.waited_s:g}",
            exit=int(ExitCode.BUSY),
        )
        return ExitCode.BUSY


def sync_tracked(args, cfg: Config, out) -> int:
    """A run over the tracked records due now (see cmd_sync)."""
    budget = args.max_duration if args.max_duration is not None else cfg.schedule.run_budget_s
    with open_store(cfg, lock=True) as store:
        clock = RunClock.starting()
        # A budgeted run reads no more due records than it can start (2.5 million due records
        # held at once would take over 600 MB); the rest stay due for the next run.
        capacity = workers.record_capacity(cfg, budget)
        due = due_targets(store, clock.start, capacity)
        not_taken = 0 if capacity is None else store.due_count(clock.start) - len(due)
        targets = [Target(t.suffix, t.pith_number, args.depth) for t in due]
        tracked = store.coverage(clock.start, cfg.schedule.max_interval).tracked
        if not tracked and not out.quiet:
            # A hint for people, on stderr: stdout stays valid JSON with --json.
            print(
                "pithsync: no tracked records yet:"
                " add some with `pithsync pull PITH` or `pithsync import FILE`",
                file=sys.stderr,
            )
        return sync_and_report(
            cfg, out, store, targets, "sync", clock=clock, max_duration=budget,
            not_taken=not_taken,
        )  # fmt: skip


# -- untrack ---------------------------------------------------------------------------------


def cmd_untrack(args, cfg: Config, out) -> int:
    """Stop syncing records; their history (record, events, documents, journal) is kept, and
    `pull` tracks one again.  Every reference is resolved before anything changes."""
    with open_store(cfg, lock=True) as store:
        chosen: list[str] = []
        for text in args.pith:
            pith = resolve_one(
                store,
                text,
                "cannot untrack {ref}: no stored record has that number, suffix, short form"
                " or alias",
            )
            if pith not in chosen:
                chosen.append(pith)
        run_id = store.begin_run("untrack")
        done = {p: store.untrack(run_id, p) for p in chosen}
        untracked = [p for p, d in done.items() if d]
        already = [p for p, d in done.items() if not d]
        summary = {"untracked": len(untracked), "already_untracked": len(already)}
        store.finish_run(run_id, int(ExitCode.OK), summary)
    if out.as_json:
        out.json({"untracked": untracked, "already_untracked": already})
    else:
        for p, d in done.items():
            out.line(f"{'untracked' if d else 'already untracked'}  {p}")
    return ExitCode.OK


# -- import ---------------------------------------------------------------------------------

FileResult = Report | UnreadableFile


def cmd_import(args, cfg: Config, out) -> int:
    """Verify local bundle or state files and store the ones that verify, in one run.  A file
    that cannot be read is reported (exit 2) and the others are still imported; otherwise exit
    1 when any file is not ok.  --json: `{"files": [{"file", "imported": bool, "kind",
    "status", "pith_number", "reasons", "notes"}]}`."""
    verifier = Verifier(cfg.trust)
    results: list[tuple[str, FileResult]] = []
    with open_store(cfg, lock=True) as store:
        run_id = store.begin_run("import")
        for path in args.files:
            results.append((path, import_file(store, run_id, path, verifier, cfg.crawl.max_bytes)))
        unreadable = [r for _, r in results if isinstance(r, UnreadableFile)]
        reports = [r for _, r in results if not isinstance(r, UnreadableFile)]
        code = ExitCode.OK if all(r.ok for r in reports) else ExitCode.FAILED
        tally = {"imported": sum(1 for r in reports if r.ok)}
        tally["rejected"] = len(reports) - tally["imported"]
        if unreadable:
            code = ExitCode.USAGE
            tally["unreadable"] = len(unreadable)
        store.finish_run(run_id, int(code), tally)
    show_imports(results, out)
    report_unreadable(unreadable)
    return code


def import_file(
    store: Store, run_id: str, path: str, verifier: Verifier, max_bytes: int
) -> FileResult:
    """Read, verify and (when it verifies as a bundle or a state) store one file.

    Args:
        store: the store, under the run lock.
        run_id: the import's run.
        path: the file.
        verifier: the pinned keys.
        max_bytes: the size cap of a document.

    Returns:
        The file's verification report, or the UnreadableFile it could not be read as.
    """
    # Read once: the bytes stored are the bytes that verified.
    try:
        body = read_file(path, max_bytes)
    except UnreadableFile as exc:
        return exc
    report, doc = verify_bytes(body, verifier, max_bytes)
    if not report.ok or report.kind not in ("bundle", "state"):
        return report
    pith = report.pith_number
    w = RecordWrite(pith_number=pith, verdict="imported", tracked=True)
    w.documents.append((sha256hex(body), report.kind, body))
    if report.kind == "bundle":
        record, aliases = doc["canonical_record"], doc["source_aliases"]
        events = store.stored_events(pith)
        w.add_events(report.valid_events, f"file:{path}", stored=events)
        for ev in report.valid_events:
            events.setdefault(ev["event_id"], ev)
        merged = merge_state(pith, record, aliases, events.values(), {})
        w.state = EncodedState.of(record, aliases, merged)
    w.journal_detail = {"file": path, "kind": report.kind}
    store.write_record(run_id, w)
    return report


def show_imports(results: list[tuple[str, FileResult]], out: Output) -> None:
    """Each file's outcome: a line (`imported|rejected|unreadable  STATUS  PITH  FILE  WHY`),
    or under --json one document listing them."""
    if out.as_json:
        files = [
            {"file": p, "imported": isinstance(r, Report) and r.ok, **r.to_json()}
            for p, r in results
        ]
        out.json({"files": files})
        return
    for p, r in results:
        if isinstance(r, UnreadableFile):
            out.line(f"unreadable  -  -  {p}  {r.reason}")
            continue
        outcome = "imported" if r.ok else "rejected"
        why = "; ".join(str(x) for x in r.reasons)
        out.line(f"{outcome}  {r.status.value}  {r.pith_number or '-'}  {p}  {why}")
