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
from pithsync.store import EncodedState, RecordWrite, Store, run_lock
from pithsync.sync import RecordResult, RecordSink, RunTally, SyncEngine, Target, rare_gc_passes, run_event_loop


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
        try:
            ref = numbers.parse_ref(text)
        except InvalidPithNumber:
            ref = None
        if ref is not None and not ref.is_prefix:
            full = f"pith:{ref.year:04d}:{ref.suffix}" if ref.year else None
            if full is None:
                known = store.resolve(ref.suffix)
                full = known[0] if known else None
            targets.setdefault(ref.suffix, Target(ref.suffix, full, depth))
            continue
        matches = store.resolve(text)
        if not matches:
            raise cli.UsageError(f"cannot resolve {text[:80]!r}: not a full pith number or suffix, and no stored record has that short form or alias")
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
        # Even when the store fails mid-run (exit 4), stdout stays one valid JSON document.
        writer.finish()
    code = cli.exit_code_for_verdicts(v for v, n in tally.by_verdict.items() if n)
    summary = tally.summary()
    store.finish_run(run_id, int(code), summary)
    log.info("run=%s command=%s records=%d %s exit=%d", run_id, command, tally.records, " ".join(f"{k}={n}" for k, n in summary.items()), int(code))
    from pithsync import hooks

    hooks.after_run(cfg, store, run_id, tally, out)
    return code


class _Progress:
    def __init__(self, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.console import Console

        self._p = Progress(TextColumn("syncing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=Console(file=sys.stderr), transient=True)
        self._task = self._p.add_task("sync", total=total)

    def __enter__(self):
        self._p.__enter__()
        return self

    def __exit__(self, *exc):
        return self._p.__exit__(*exc)

    def advance(self, _result) -> None:
        self._p.advance(self._task)


def _progress(out, total: int):
    return _Progress(total) if out.rich and sys.stderr.isatty() and total > 1 else None


class ResultWriter:
    """Each record's result as it completes: JSON is streamed ({"records": [...]}, in the order
    records finish), plain lines too; only a table on a terminal waits for the end, sorted."""

    COLUMNS = ["pith number", "verdict", "events", "mirrors"]

    def __init__(self, out):
        self.out = out
        self._count = 0
        self._table: list[RecordResult] | None = [] if (out.rich and not out.as_json) else None

    def add(self, r: RecordResult) -> None:
        out = self.out
        if out.as_json:
            out.stream.write(('{"records": [\n' if self._count == 0 else ",\n") + json.dumps(r.to_json(), ensure_ascii=False))
        elif self._table is not None:
            self._table.append(r)
        else:
            if self._count == 0:
                out.line("  ".join(c.upper().replace(" ", "_") for c in self.COLUMNS))
            out.line("  ".join(self._row(r)))
            self._problems(r)
        self._count += 1

    def finish(self) -> None:
        out = self.out
        if out.as_json:
            out.stream.write(("\n]}\n" if self._count else '{"records": []}\n'))
        elif self._table:
            results = sorted(self._table, key=lambda r: r.pith_number)
            out.table("pithsync", self.COLUMNS, [self._row(r) for r in results])
            for r in results:
                self._problems(r)

    @staticmethod
    def _row(r: RecordResult) -> list[str]:
        return [r.pith_number, r.verdict.value, str(r.event_count if r.event_count is not None else "-"), "  ".join(f"{m.name}={m.status.value}" for m in r.mirrors)]

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
    refs = list(args.pith)
    if args.from_file:
        refs += read_list(args.from_file)
    if not refs:
        raise _cli().UsageError("pull needs at least one pith number (or --from FILE)")
    with open_store(cfg, lock=True) as store:
        targets = parse_targets(refs, store, args.depth)
        return run_sync(cfg, out, store, targets, "pull")


def cmd_sync(args, cfg: Config, out) -> int:
    with open_store(cfg, lock=True) as store:
        targets = [Target(p.split(":")[2], p, args.depth) for p in store.tracked()]
        if not targets and not out.quiet:
            # A hint for people, on stderr: stdout stays valid JSON with --json.
            print("pithsync: no tracked records yet: add some with `pithsync pull PITH` or `pithsync import FILE`", file=sys.stderr)
        return run_sync(cfg, out, store, targets, "sync")


# -- status / journal -----------------------------------------------------------------------


def cmd_status(args, cfg: Config, out) -> int:
    cli = _cli()
    with open_store(cfg, lock=False) as store:
        if args.pith:
            matches = store.resolve(args.pith)
            if not matches:
                raise cli.UsageError(f"no stored record matches {args.pith[:80]!r}")
            docs = []
            for p in matches:
                rec = store.record(p)
                docs.append({"pith_number": p, "tracked": bool(rec["tracked"]), "event_count": rec["event_count"], "state_sha256": rec["state_sha256"], "updated_at": rec["updated_at"], "mirrors": [{"name": m["name"], "base_url": m["mirror"], "status": m["status"], "checked_at": m["checked_at"], "reasons": m["reasons"]} for m in store.mirror_statuses(p)]})
            if out.as_json:
                out.json(docs[0] if len(docs) == 1 else {"records": docs})
            else:
                for d in docs:
                    out.line(f"{d['pith_number']}  events={d['event_count']}  state_sha256={d['state_sha256']}  tracked={d['tracked']}")
                    out.table("mirrors", ["mirror", "status", "checked"], [[m["name"], m["status"], m["checked_at"] or "-"] for m in d["mirrors"]])
            return cli.ExitCode.OK
        recs = store.records()
        if out.as_json:
            out.json({"records": recs})
        else:
            out.table("records", ["pith number", "events", "state_sha256", "updated"], [[r["pith_number"], str(r["event_count"]), (r["state_sha256"] or "-")[:16], r["updated_at"] or "-"] for r in recs])
        return cli.ExitCode.OK


def cmd_journal(args, cfg: Config, out) -> int:
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
            out.json({"entries": [{**e, "detail": json.loads(e["detail"] or "{}")} for e in entries]})
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
            body = cli.read_file(path, cfg.crawl.max_bytes)
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
        code = cli.ExitCode.OK if all(r.ok for _, r in results) else cli.ExitCode.FAILED
        store.finish_run(run_id, int(code), {"imported": sum(1 for _, r in results if r.ok), "rejected": sum(1 for _, r in results if not r.ok)})
    if out.as_json:
        out.json({"files": [{"file": p, "imported": r.ok, **r.to_json()} for p, r in results]})
    else:
        for p, r in results:
            out.line(f"{'imported' if r.ok else 'rejected'}  {r.status.value}  {r.pith_number or '-'}  {p}  {'; '.join(str(x) for x in r.reasons)}")
    return code


def register(sub, common) -> None:
    p = sub.add_parser("pull", parents=[common], help="pull records from every mirror now, verify, compare and store them")
    p.add_argument("pith", nargs="*", metavar="PITH", help="pith:YYYY:<26>, a bare suffix, pith:<8>, or an alias the store knows (arxiv id, doi)")
    p.add_argument("--from", dest="from_file", metavar="FILE", help="read more pith numbers from FILE, one per line (- for stdin)")
    p.add_argument("--depth", type=int, default=0, help="also pull pith numbers cited in verified payloads, this many hops away")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("sync", parents=[common], help="pull every tracked record (what the timer runs)")
    p.add_argument("--depth", type=int, default=0)
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("status", parents=[common], help="what the store holds")
    p.add_argument("pith", nargs="?", metavar="PITH")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("journal", parents=[common], help="the sync journal; `journal verify` checks its hash chain")
    p.add_argument("action", nargs="?", choices=["verify"])
    p.add_argument("--since", metavar="T", help="only entries at or after this ISO time")
    p.set_defaults(func=cmd_journal)

    p = sub.add_parser("import", parents=[common], help="verify local bundle or state files and store them")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_import)


def _registrations() -> list:
    from pithsync import alerts, ops

    return [register, alerts.register, ops.register]


REGISTER: list = _registrations()
