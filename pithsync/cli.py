"""Command line.  Every command returns an ExitCode; `main` is the only place that maps
outcomes to process exit statuses."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import re
import sqlite3
import sys
from datetime import datetime, timezone
from enum import IntEnum

from pithsync import __version__
from pithsync import config as config_mod
from pithsync.core import strictjson
from pithsync.core.errors import MalformedDocument
from pithsync.core.status import Status, Verdict
from pithsync.core.verify import Report, Verifier, verify_document
from pithsync.store import NoStoreError, StoreError

log = logging.getLogger("pithsync")


class ExitCode(IntEnum):
    OK = 0  # all ok / in_sync / degraded
    FAILED = 1  # a document not ok, or a record diverged
    USAGE = 2  # usage or configuration error
    UNVERIFIABLE = 3  # some record has no verified copy anywhere, none diverged
    STORE = 4  # the store cannot be used: locked by another run, read-only, full, corrupt


class UsageError(Exception):
    """Bad arguments or input that the user must fix (exit 2)."""


def exit_code_for_verdicts(verdicts) -> ExitCode:
    verdicts = list(verdicts)
    if Verdict.DIVERGED in verdicts:
        return ExitCode.FAILED
    if Verdict.UNVERIFIABLE in verdicts:
        return ExitCode.UNVERIFIABLE
    return ExitCode.OK


# -- output -------------------------------------------------------------------------------------


class Output:
    """Where results go: JSON, a rich table on a terminal, or plain lines."""

    def __init__(self, as_json: bool, quiet: bool = False, stream=None):
        self.as_json = as_json
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.rich = not as_json and self.stream.isatty() and os.environ.get("TERM") != "dumb"

    def json(self, value) -> None:
        self.stream.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")

    def line(self, text: str = "") -> None:
        if not self.quiet:
            self.stream.write(text + "\n")

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        if self.quiet:
            return
        if self.rich:
            from rich.console import Console
            from rich.table import Table

            t = Table(title=title)
            for c in columns:
                t.add_column(c, overflow="fold")
            for r in rows:
                t.add_row(*r)
            Console(file=self.stream).print(t)
        else:
            if rows:
                self.line("  ".join(c.upper().replace(" ", "_") for c in columns))
            for r in rows:
                self.line("  ".join(r))


# -- commands -----------------------------------------------------------------------------------


def read_file(path: str, max_bytes: int) -> bytes:
    """One local file's bytes, read once and no further than one byte past the size cap."""
    try:
        with open(path, "rb") as fh:
            return fh.read(max_bytes + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def verify_bytes(data: bytes, verifier: Verifier, max_bytes: int) -> tuple[Report, object]:
    """The report for one document's bytes, and the document (None when it is not strict JSON)."""
    from pithsync import evidence

    try:
        doc = strictjson.loads(data, max_bytes=max_bytes)
    except MalformedDocument as exc:
        report = Report("unknown")
        report.add(Status.MALFORMED, "not_strict_json", str(exc))
        return report, None
    if evidence.is_evidence(doc):
        return evidence.verify_evidence(doc, verifier), doc
    return verify_document(doc, verifier), doc


def verify_file(path: str, verifier: Verifier, max_bytes: int) -> Report:
    return verify_bytes(read_file(path, max_bytes), verifier, max_bytes)[0]


def cmd_verify(args, cfg: config_mod.Config, out: Output) -> ExitCode:
    verifier = Verifier(cfg.trust)
    results = [(path, verify_file(path, verifier, cfg.crawl.max_bytes)) for path in args.files]
    if out.as_json:
        out.json({"files": [{"file": p, **r.to_json()} for p, r in results]})
    else:
        rows = []
        for path, r in results:
            why = "; ".join(str(x) for x in r.reasons) or "; ".join(r.notes)
            rows.append([r.status.value, r.kind, r.pith_number or "-", path, why])
        out.table("pithsync verify", ["status", "kind", "pith number", "file", "reasons"], rows)
    return ExitCode.OK if all(r.ok for _, r in results) else ExitCode.FAILED


# -- parser -------------------------------------------------------------------------------------


def _global_options(suppress: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name.  The copy given to
    subcommands has no defaults, so it never overwrites what was given before the command."""
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS if suppress else None)
    p.add_argument("--config", help="TOML configuration (default: $PITHSYNC_CONFIG, else embedded defaults)")
    p.add_argument("--db", help="SQLite store (default: $PITHSYNC_DB, [store] path, or ./pithsync.db)")
    p.add_argument("--json", action="store_true", help="machine-readable output", **({} if suppress else {"default": False}))
    p.add_argument("-v", "--verbose", action="count", **({} if suppress else {"default": 0}))
    p.add_argument("-q", "--quiet", action="store_true", **({} if suppress else {"default": False}))
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _global_options(suppress=True)
    parser = argparse.ArgumentParser(prog="pithsync", description="Crawl, verify and compare Pith Open Graph mirrors.", parents=[_global_options(suppress=False)])
    parser.add_argument("--version", action="version", version=f"pithsync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("verify", parents=[common], help="verify local bundle, state or evidence files offline")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_verify)

    for register in _command_modules():
        register(sub, common)
    return parser


def _command_modules():
    """Commands that live beside the shells they drive register themselves here."""
    from pithsync import commands

    return commands.REGISTER


_KV_BARE = re.compile(r'[^\s"=\\]+')
_KV_PAIR = r'[A-Za-z_][\w.]*=(?:"(?:[^"\\\n]|\\.)*"|[^\s"]*)'
_KV_MESSAGE = re.compile(rf"{_KV_PAIR}(?: {_KV_PAIR})*")


def kv(fields: dict | None = None, **more) -> str:
    """`key=value key2="with spaces"`: one line, whatever the values hold (journald-friendly)."""
    parts = []
    for key, value in {**(fields or {}), **more}.items():
        text = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        if not _KV_BARE.fullmatch(text):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


class KeyValueFormatter(logging.Formatter):
    """One line per event: `level=info logger=pithsync.sync record=... verdict=...`.  A message
    that already is key=value pairs is kept; any other becomes msg="...".  No ts= under journald,
    which stamps its own time."""

    def __init__(self, with_time: bool = True):
        super().__init__()
        self.with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        head: dict = {}
        if self.with_time:
            head["ts"] = datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        head.update(level=record.levelname.lower(), logger=record.name)
        message = record.getMessage()
        line = kv(head) + " " + (message if _KV_MESSAGE.fullmatch(message) else kv(msg=message))
        if record.exc_info:
            line += " " + kv(exc=self.formatException(record.exc_info))
        return line


def configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.INFO if verbose == 0 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter(with_time=not os.environ.get("JOURNAL_STREAM")))
    root = logging.getLogger("pithsync")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    configure_logging(args.verbose, args.quiet)
    out = Output(args.json, args.quiet)
    cfg = None
    try:
        cfg = config_mod.load(args.config)
        if args.db or os.environ.get("PITHSYNC_DB"):
            cfg = config_mod.replace_db(cfg, args.db or os.environ["PITHSYNC_DB"])
        return int(args.func(args, cfg, out))
    except (config_mod.ConfigError, UsageError, NoStoreError) as exc:
        print(f"pithsync: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except (StoreError, sqlite3.Error) as exc:
        print(f"pithsync: {_store_message(exc, cfg)}", file=sys.stderr)
        return int(ExitCode.STORE)
    except BaseExceptionGroup as group:  # the crawler's task group wraps what its tasks raise
        found = group.subgroup(lambda e: isinstance(e, (StoreError, sqlite3.Error)))
        if found is None:
            raise
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        print(f"pithsync: {_store_message(found, cfg)}", file=sys.stderr)
        return int(ExitCode.STORE)
    except KeyboardInterrupt:
        print("pithsync: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`pithsync journal | head`): stop quietly, as a pipeline expects.
        # stdout is pointed at /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def program() -> int:
    """The `pithsync` program (and `python -m pithsync`): main(), then a quicker exit.  At exit
    the interpreter runs the cyclic GC over every object still alive, 50 ms of the 0.15 s it
    took to stop after a 5,000-record pull; nothing pithsync needs at exit depends on it (the
    store is closed by then, and atexit still flushes and joins).  Not in main(), which tests
    call in process."""
    code = main()
    gc.freeze()
    return code


def _store_message(exc: BaseException, cfg) -> str:
    """A StoreError says what went wrong; a bare sqlite3 error (raised outside a store
    transaction: a read, a checkpoint) is explained the same way."""
    if isinstance(exc, sqlite3.OperationalError):
        from pithsync.store import _explain

        return _explain(exc, cfg.db_path if cfg is not None else "(store)")
    if isinstance(exc, sqlite3.Error):
        return f"store error: {type(exc).__name__}: {exc}"
    return str(exc)
