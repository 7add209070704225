"""Subcommands that drive the crawler and the store.  `REGISTER` lists functions that add
subparsers; cli.main maps what they return to exit codes."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from contextlib import contextmanager
from typing import Iterator

from pithsync.config import Config
from pithsync.core import numbers
from pithsync.core.errors import InvalidPithNumber
from pithsync.core.canonical import sha256hex
from pithsync.core.merge import merge_state
from pithsync.core.verify import Verifier
from pithsync.fetch import Fetcher
from pithsync import shards
from pithsync.store import EncodedState, RecordWrite, Store, StoreLocked, run_lock
from pithsync.sync import RecordResult, RecordSink, RunTally, SyncEngine, Target, rare_gc_passes, run_event_loop
from pithsync.logfmt import log_event


log = logging.getLogger("pithsync.sync")


def _cli():
    from pithsync import cli  # late: cli imports this module to build its parser

    return cli


@contextmanager
def open_store(cfg: Config, *, lock: bool) -> Iterator[Store]:
    """The store, under the run lock, for writing (created if need be); without `lock`, the
    existing store read-only (NoStoreError when there is none: reading creates nothing)."""
    if lock:
        with run_lock(cfg.db_path, cfg.lock_timeout_s):
            store = Store.open(cfg.db_path)
            try:
                yield store
            finally:
                store.close()
    else:
        store = Store.open_reader(cfg.db_path)
        try:
            yield store
        finally:
            store.close()


# -- pull / sync ----------------------------------------------------------------------------


def parse_targets(refs: list[str], store: Store, depth: int) -> list[Target]:
    cli = _cli()
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
            raise cli.UsageError(
                f"cannot resolve {text[:80]!r}: {why},"
                " and no stored record has that short form or alias"
            )
        if len(matches) > 1:
            raise cli.UsageError(f"{text[:80]!r} is ambiguous: {', '.join(matches[:5])}")
        suffix = matches[0].split(":")[2]
        targets.setdefault(suffix, Target(suffix, matches[0], depth))
    return list(targets.values())


def read_list(source: str) -> list[str]:
    cli = _cli()
    try:
        text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise cli.UsageError(f"cannot read {source}: {exc}") from None
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def run_sync(cfg: Config, out, store: Store, targets: list[Target], command: str) -> int:
    cli = _cli()
    run_id = store.begin_run(command)
    progress = _progress(out, len(targets))
    tally = RunTally()
    writer = ResultWriter(out)

    def on_record(result: RecordResult) -> None:
        tally.add(result)
        writer.add(result)
        if progress:
            progress.advance(result)

    sink = RecordSink(cfg, store, on_record=on_record, keep_results=False)
    workers = shards.worker_count(cfg, targets, store.path)
    out.flush()  # before any fork: a reader already gone is found here, not by a worker
    pool = shards.WorkerPool.start(cfg, store, run_id, targets, workers) if workers else None

    async def run_in_process() -> None:
        async with Fetcher(cfg.crawl, SyncEngine.policy_for(cfg)) as fetcher:
            await SyncEngine(cfg, store, fetcher, sink=sink).run(run_id, targets)

    try:
        with progress or contextlib.nullcontext(), rare_gc_passes():
            if pool is not None:
                pool.collect(sink)
            else:
                run_event_loop(run_in_process)
    finally:
        # Even when the store fails mid-run (exit 4), the rows examined so far are shown.
        writer.finish()
    code = cli.exit_code_for_verdicts(v for v, n in tally.by_verdict.items() if n)
    summary = tally.summary()
    store.finish_run(run_id, int(code), summary)
    log_event(
        log, logging.INFO, "run_finished", run=run_id, command=command, records=tally.records,
        **{str(k): n for k, n in summary.items()}, exit=int(code),
    )
    from pithsync import hooks

    hooks.after_run(cfg, store, run_id, tally, out)
    return code


class _Progress:
    """A progress bar on stderr for a run on a terminal.  While it is drawn, the pithsync
    logger's lines go through the bar's console, which prints them above the bar instead of
    through it; the logger's own handlers are put back when the bar ends."""

    def __init__(self, total: int, stream=None):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        console = Console(file=stream or sys.stderr)
        self._p = Progress(TextColumn("syncing"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), console=console, transient=True)
        self._task = self._p.add_task("sync", total=total)
        self._logger = logging.getLogger("pithsync")
        self._saved: list[logging.Handler] = []

    def __enter__(self):
        self._p.__enter__()
        self._saved = list(self._logger.handlers)
        formatter = self._saved[0].formatter if self._saved else None
        self._logger.handlers[:] = [_ConsoleLogHandler(self._p.console, formatter)]
        return self

    def __exit__(self, *exc):
        self._logger.handlers[:] = self._saved
        return self._p.__exit__(*exc)

    def advance(self, _result) -> None:
        self._p.advance(self._task)


class _ConsoleLogHandler(logging.Handler):
    """Log lines printed through a rich console (above a live progress bar), as plain text:
    no markup, highlighting or wrapping, so each stays one logfmt line."""

    def __init__(self, console, formatter: logging.Formatter | None):
        super().__init__()
        self.console = console
        if formatter is not None:
            self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(self.format(record), markup=False, highlight=False, emoji=False,
                               soft_wrap=True)
        except Exception:  # noqa: BLE001 - as logging.StreamHandler does
            self.handleError(record)


def _progress(out, total: int):
    return _Progress(total) if out.rich and sys.stderr.isatty() and total > 1 else None


class ResultWriter:
    """Each record's result.  --json streams one JSON Lines object per record as it completes
    (completion order: a huge run never waits, and `| head` gets whole objects).  Otherwise the
    rows are kept (a record's row is small) and written at the end sorted by pith number, as a
    table on a terminal or plain lines in a pipe, under the same column names."""

    COLUMNS = ["pith number", "verdict", "events", "mirrors"]

    def __init__(self, out):
        self.out = out
        self._rows: list[RecordResult] = []

    def add(self, r: RecordResult) -> None:
        if self.out.as_json:
            self.out.json_line(r.to_json())
        else:
            self._rows.append(r)

    def finish(self) -> None:
        if self.out.as_json or not self._rows:
            return
        results = sorted(self._rows, key=lambda r: r.pith_number)
        self.out.table("pithsync", self.COLUMNS, [self._row(r) for r in results])
        for r in results:
            self._problems(r)

    @staticmethod
    def _row(r: RecordResult) -> list[str]:
        events = str(r.event_count if r.event_count is not None else "-")
        mirrors = "  ".join(f"{m.name}={m.status.value}" for m in r.mirrors)
        return [r.pith_number, r.verdict.value, events, mirrors]

    def _problems(self, r: RecordResult) -> None:
        for m in r.mirrors:
            if m.status.value != "ok":
                for reason in m.reasons[:3]:
                    self.out.line(f"  {r.pith_number} {m.name}: {reason['status']}/{reason['code']}: {reason['message']}")
        for h in r.refused_hints[:5]:
            self.out.line(f"  {r.pith_number} refused hint {h['base_url']}: {h['reason']}")
        if r.error:
            self.out.line(f"  {r.pith_number}: {r.error}")


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
        raise _cli().UsageError("pull needs at least one pith number (or --from FILE)")
    with open_store(cfg, lock=True) as store:
        targets = parse_targets(refs, store, args.depth)
        return run_sync(cfg, out, store, targets, "pull")


def cmd_sync(args, cfg: Config, out) -> int:
    """`sync`: pull every tracked record, with the same output as `pull` (JSON Lines under
    --json).  With --if-locked=skip, a store that another run keeps locked past lock_timeout_s
    is not an error: the run logs why and exits BUSY (nothing fetched or written), so a timer's
    run beside a long manual pull does not fail its unit."""
    try:
        return sync_tracked(args, cfg, out)
    except StoreLocked as exc:
        if args.if_locked != "skip":
            raise
        cli = _cli()
        log_event(log, logging.WARNING, "run_skipped", reason="store locked by another run",
                  lock=exc.lock_path, holder_pid=exc.holder_pid,
                  waited_s=f"{exc.waited_s:g}", exit=int(cli.ExitCode.BUSY))
        return cli.ExitCode.BUSY


def sync_tracked(args, cfg: Config, out) -> int:
    with open_store(cfg, lock=True) as store:
        targets = [Target(p.split(":")[2], p, args.depth) for p in store.tracked()]
        if not targets and not out.quiet:
            # A hint for people, on stderr: stdout stays valid JSON with --json.
            print("pithsync: no tracked records yet: add some with `pithsync pull PITH` or `pithsync import FILE`", file=sys.stderr)
        return run_sync(cfg, out, store, targets, "sync")


# -- status / journal -----------------------------------------------------------------------


def cmd_status(args, cfg: Config, out) -> int:
    """What the store holds, one row per record, sorted by pith number.

    `status --json`: {"records": [RECORD, ...]}, where RECORD is
    {"pith_number": str, "tracked": bool, "event_count": int, "state_sha256": str | null,
     "updated_at": str | null, "last_verdict": str | null, "last_checked": str | null};
    last_verdict is the verdict of the record's last check (in_sync, degraded, diverged,
    unverifiable) and last_checked its time (ISO 8601 UTC), both null before the first.
    `status PITH --json`: RECORD with "mirrors": [{"name", "base_url", "status", "checked_at",
    "reasons"}], or {"records": [...]} of those when PITH names several records."""
    cli = _cli()
    with open_store(cfg, lock=False) as store:
        if args.pith:
            matches = store.resolve(args.pith)
            if not matches:
                raise cli.UsageError(f"no stored record matches {args.pith[:80]!r}")
            docs = [_status_of(store, p) for p in sorted(matches)]
            if out.as_json:
                out.json(docs[0] if len(docs) == 1 else {"records": docs})
            else:
                for d in docs:
                    out.line(
                        f"{d['pith_number']}  events={d['event_count']}"
                        f"  state_sha256={d['state_sha256']}  tracked={d['tracked']}"
                        f"  last_verdict={d['last_verdict'] or '-'}"
                        f"  last_checked={d['last_checked'] or '-'}"
                    )
                    mirrors = [[m["name"], m["status"], m["checked_at"] or "-"]
                               for m in d["mirrors"]]
                    out.table("mirrors", ["mirror", "status", "checked"], mirrors)
            return cli.ExitCode.OK
        recs = store.records()
        if out.as_json:
            out.json({"records": recs})
        else:
            columns = ["pith number", "tracked", "events", "state_sha256", "updated",
                       "last verdict", "last checked"]
            rows = [
                [r["pith_number"], "yes" if r["tracked"] else "no", str(r["event_count"]),
                 (r["state_sha256"] or "-")[:16], r["updated_at"] or "-",
                 r["last_verdict"] or "-", r["last_checked"] or "-"]
                for r in recs
            ]
            out.table("records", columns, rows)
        return cli.ExitCode.OK


def _status_of(store: Store, pith_number: str) -> dict:
    """One record's `status PITH` document (see cmd_status)."""
    rec = store.record(pith_number)
    verdict, checked = store.last_check(pith_number)
    mirrors = [
        {"name": m["name"], "base_url": m["mirror"], "status": m["status"],
         "checked_at": m["checked_at"], "reasons": m["reasons"]}
        for m in store.mirror_statuses(pith_number)
    ]
    return {
        "pith_number": pith_number,
        "tracked": bool(rec["tracked"]),
        "event_count": rec["event_count"],
        "state_sha256": rec["state_sha256"],
        "updated_at": rec["updated_at"],
        "last_verdict": verdict,
        "last_checked": checked,
        "mirrors": mirrors,
    }


def cmd_untrack(args, cfg: Config, out) -> int:
    """Stop syncing records; their history (record, events, documents, journal) is kept, and
    `pull` tracks one again.  Every reference is resolved before anything changes."""
    cli = _cli()
    with open_store(cfg, lock=True) as store:
        chosen: list[str] = []
        for text in args.pith:
            matches = store.resolve(text)
            if not matches:
                raise cli.UsageError(
                    f"cannot untrack {text[:80]!r}: no stored record has that number, suffix,"
                    " short form or alias"
                )
            if len(matches) > 1:
                raise cli.UsageError(f"{text[:80]!r} is ambiguous: {', '.join(matches[:5])}")
            if matches[0] not in chosen:
                chosen.append(matches[0])
        run_id = store.begin_run("untrack")
        done = {p: store.untrack(run_id, p) for p in chosen}
        untracked = [p for p, d in done.items() if d]
        already = [p for p, d in done.items() if not d]
        summary = {"untracked": len(untracked), "already_untracked": len(already)}
        store.finish_run(run_id, int(cli.ExitCode.OK), summary)
    if out.as_json:
        out.json({"untracked": untracked, "already_untracked": already})
    else:
        for p, d in done.items():
            out.line(f"{'untracked' if d else 'already untracked'}  {p}")
    return cli.ExitCode.OK


def cmd_journal(args, cfg: Config, out) -> int:
    """The journal, oldest first.  --json: JSON Lines, one entry a line, `{"seq": int, "at",
    "kind", "pith_number", "mirror" (base URL), "status", "detail": {...}, "prev_sha256",
    "entry_sha256", ...}`; `journal verify --json` prints one document `{"ok": bool, "entries":
    int, "problems": [str]}`."""
    cli = _cli()
    with open_store(cfg, lock=False) as store:
        if args.action == "verify":
            problems = store.verify_journal()
            n = len(store.journal())
            if out.as_json:
                out.json({"ok": not problems, "entries": n, "problems": problems})
            elif problems:
                for p in problems:
                    out.line(f"journal: {p}")
            else:
                out.line(f"journal ok: {n} entries, hash chain intact")
            return cli.ExitCode.FAILED if problems else cli.ExitCode.OK
        entries = store.journal(args.since)
        if out.as_json:
            for e in entries:
                out.json_line({**e, "detail": json.loads(e["detail"] or "{}")})
        else:
            for e in entries:
                out.line(" ".join(str(x) for x in (e["seq"], e["at"], e["kind"], e["pith_number"] or "", e["mirror"] or "", e["status"] or "") if x != ""))
        return cli.ExitCode.OK


# -- import ---------------------------------------------------------------------------------


def cmd_import(args, cfg: Config, out) -> int:
    cli = _cli()
    verifier = Verifier(cfg.trust)
    results = []
    with open_store(cfg, lock=True) as store:
        run_id = store.begin_run("import")
        for path in args.files:
            # Read once: the bytes stored are the bytes that verified.
            try:
                body = cli.read_file(path, cfg.crawl.max_bytes)
            except cli.UnreadableFile as exc:  # the others are still imported; exit 2
                results.append((path, exc))
                continue
            report, doc = cli.verify_bytes(body, verifier, cfg.crawl.max_bytes)
            results.append((path, report))
            if not report.ok or report.kind not in ("bundle", "state"):
                continue
            pith = report.pith_number
            w = RecordWrite(pith_number=pith, verdict="imported", tracked=True)
            w.documents.append((sha256hex(body), report.kind, body))
            if report.kind == "bundle":
                bundle = doc
                events = store.stored_events(pith)
                w.add_events(report.valid_events, f"file:{path}", stored=events)
                for ev in report.valid_events:
                    events.setdefault(ev["event_id"], ev)
                merged = merge_state(pith, bundle["canonical_record"], bundle["source_aliases"], events.values(), {})
                w.state = EncodedState.of(bundle["canonical_record"], bundle["source_aliases"], merged)
            w.journal_detail = {"file": path, "kind": report.kind}
            store.write_record(run_id, w)
        unreadable = [r for _, r in results if isinstance(r, cli.UnreadableFile)]
        reports = [r for _, r in results if not isinstance(r, cli.UnreadableFile)]
        code = cli.ExitCode.OK if all(r.ok for r in reports) else cli.ExitCode.FAILED
        if unreadable:
            code = cli.ExitCode.USAGE
        tally = {"imported": sum(1 for r in reports if r.ok)}
        tally["rejected"] = len(reports) - tally["imported"]
        if unreadable:
            tally["unreadable"] = len(unreadable)
        store.finish_run(run_id, int(code), tally)
    if out.as_json:
        readable = {id(r) for r in reports}
        out.json({"files": [{"file": p, "imported": id(r) in readable and r.ok, **r.to_json()}
                            for p, r in results]})
    else:
        for p, r in results:
            if isinstance(r, cli.UnreadableFile):
                out.line(f"unreadable  -  -  {p}  {r.reason}")
                continue
            out.line(f"{'imported' if r.ok else 'rejected'}  {r.status.value}  {r.pith_number or '-'}  {p}  {'; '.join(str(x) for x in r.reasons)}")
    cli.report_unreadable(unreadable)
    return code


def register(sub, common) -> None:
    p = sub.add_parser("pull", parents=[common], help="pull records from every mirror now, verify, compare and store them")
    p.add_argument("pith", nargs="*", metavar="PITH", help="pith:YYYY:<26>, a bare suffix, pith:<8>, or an alias the store knows (arxiv id, doi)")
    p.add_argument("--from", dest="from_file", metavar="FILE", help="read more pith numbers from FILE, one per line (- for stdin)")
    p.add_argument("--depth", type=_cli().non_negative_int, default=0, metavar="N",
                   help="also pull pith numbers cited in verified payloads, up to N hops away"
                   " (default 0)")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("sync", parents=[common], help="pull every tracked record (what the timer runs)")
    p.add_argument("--depth", type=_cli().non_negative_int, default=0, metavar="N",
                   help="also pull pith numbers cited in verified payloads, up to N hops away"
                   " (default 0)")
    p.add_argument("--if-locked", choices=["fail", "skip"], default="fail",
                   help="when another run holds the store past [store] lock_timeout_s: fail "
                   "(exit 4, the default) or skip (log event=run_skipped, exit 75, EX_TEMPFAIL)")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("status", parents=[common], help="what the store holds")
    p.add_argument("pith", nargs="?", metavar="PITH",
                   help="one record, by pith number, suffix, short form or alias"
                   " (default: list every record)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "untrack", parents=[common],
        help="stop syncing records, keeping everything stored about them (`pull` tracks one again)",
    )
    p.add_argument(
        "pith", nargs="+", metavar="PITH",
        help="pith:YYYY:<26>, a bare suffix, pith:<8>, or an alias of a stored record",
    )
    p.set_defaults(func=cmd_untrack)

    p = sub.add_parser("journal", parents=[common], help="the sync journal; `journal verify` checks its hash chain")
    p.add_argument("--since", metavar="TIME", type=_cli().journal_time,
                   help="only entries at or after TIME: a date (2026-12-01) or an ISO time"
                   " (2026-12-01T10:00:00Z; an offset is converted, no zone means UTC)")
    p.set_defaults(func=cmd_journal)
    # `pithsync journal` alone lists the entries; `journal verify` has its own parser and help.
    journal_sub = p.add_subparsers(dest="action", metavar="[ACTION]",
                                   help="without one, the entries are listed")
    journal_sub.add_parser("verify", parents=[common], help="check the journal's hash chain",
                           description="Check the journal's hash chain: every entry present,"
                           " unedited, and the head recorded in the store matching the last"
                           " entry.  Exit 1 when the chain is broken.")

    p = sub.add_parser("import", parents=[common], help="verify local bundle or state files and store them")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="a bundle or state JSON file; only the ones that verify are stored")
    p.set_defaults(func=cmd_import)


def _registrations() -> list:
    from pithsync import alerts, ops

    return [register, alerts.register, ops.register]


REGISTER: list = _registrations()
