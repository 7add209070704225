"""Command line.  Every command returns an ExitCode; `main` is the only place that maps
outcomes to process exit statuses."""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import io
import json
import logging
import os
import sqlite3
import sys
from datetime import datetime, timezone
from enum import IntEnum

from pithsync import __version__
from pithsync import config as config_mod
from pithsync import logfmt
from pithsync.core import strictjson
from pithsync.core.errors import MalformedDocument
from pithsync.core.status import Status, Verdict
from pithsync.core.verify import Report, Verifier, verify_document
from pithsync.logfmt import kv
from pithsync.store import NoStoreError, StoreError

log = logging.getLogger("pithsync")


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


# -- output -------------------------------------------------------------------------------------


# Columns whose cells are identifiers a user copies: a table on a terminal keeps them whole.
UNBROKEN_COLUMNS = frozenset({"pith_number", "about"})


class Output:
    """Where results go: JSON, a rich table on a terminal, or plain lines.

    Every write goes through `write`.  When the reader has gone (`pithsync sync | head`), the
    first failed write marks the output closed and every later one is dropped: a run goes on
    to commit what it verified, and `main` exits 141 afterwards, as a pipeline expects."""

    def __init__(self, as_json: bool, quiet: bool = False, stream=None):
        self.as_json = as_json
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.closed = False
        self.rich = not as_json and _isatty(self.stream) and os.environ.get("TERM") != "dumb"

    def write(self, text: str) -> None:
        """`text` as it is, unless the reader has gone."""
        if self.closed:
            return
        try:
            self.stream.write(text)
        except (BrokenPipeError, ConnectionResetError):
            self._reader_gone()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            self._reader_gone()

    def flush(self) -> None:
        """Push buffered output out now (a pipe's buffer would otherwise fail only at exit)."""
        if self.closed:
            return
        try:
            self.stream.flush()
        except (BrokenPipeError, ConnectionResetError):
            self._reader_gone()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            self._reader_gone()

    def _reader_gone(self) -> None:
        self.closed = True
        # What is still buffered goes to /dev/null instead: the interpreter's flush at exit (or
        # a forked worker's) must not fail on the broken pipe again.
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()

    def json(self, value) -> None:
        """One JSON document (indented, for people and jq alike)."""
        self.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")

    def json_line(self, value) -> None:
        """One JSON Lines item: a compact object on one line."""
        self.write(json.dumps(value, ensure_ascii=False) + "\n")

    def line(self, text: str = "") -> None:
        if not self.quiet:
            self.write(text + "\n")

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        """Rows under `columns`: a rich table on a terminal, else plain lines with a header.
        Both name the columns the same (`pith number` is `pith_number`: one word, for awk)."""
        if self.quiet:
            return
        names = [c.replace(" ", "_") for c in columns]
        if self.rich:
            self._rich_table(title, names, rows)
        else:
            if rows:
                self.line("  ".join(names))
            for r in rows:
                self.line("  ".join(r))

    def _rich_table(self, title: str, names: list[str], rows: list[list[str]], console=None):
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title)
        least = 1  # the table's narrowest: its borders, whole identifiers, a few cells of the rest
        for i, name in enumerate(names):
            if name in UNBROKEN_COLUMNS:
                # A pith number is copied whole from the screen: never wrapped nor cut.
                width = max([len(name)] + [len(r[i]) for r in rows])
                t.add_column(name, no_wrap=True, min_width=width)
            else:
                width = min(8, max([len(name)] + [len(r[i]) for r in rows]))
                t.add_column(name, overflow="fold", min_width=width)
            least += width + 3
        for r in rows:
            t.add_row(*r)
        console = console or Console(file=_Writes(self))
        # On a terminal narrower than that the lines run past its edge (the terminal wraps
        # them whole) rather than cropping columns away.
        if console.width < least:
            console.width = least
        console.print(t, crop=False)


class _Writes:
    """A file-like view of an Output for rich: its writes share the Output's handling of a
    reader that has gone."""

    def __init__(self, out: Output):
        self._out = out

    def write(self, text: str) -> int:
        self._out.write(text)
        return len(text)

    def flush(self) -> None:
        self._out.flush()

    def isatty(self) -> bool:
        return _isatty(self._out.stream)

    def fileno(self) -> int:
        return self._out.stream.fileno()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- commands -----------------------------------------------------------------------------------


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
        return {"kind": None, "status": self.STATUS, "pith_number": None, "reasons": [reason],
                "notes": []}


def read_file(path: str, max_bytes: int) -> bytes:
    """One local file's bytes, read once and no further than one byte past the size cap."""
    try:
        with open(path, "rb") as fh:
            return fh.read(max_bytes + 1)
    except OSError as exc:
        raise UnreadableFile(path, exc.strerror or str(exc)) from None


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


def report_unreadable(files: list[UnreadableFile]) -> None:
    """Each file that could not be read, on stderr: the reason for exit 2, even under --json."""
    for bad in files:
        print(f"pithsync: {bad}", file=sys.stderr)


def cmd_verify(args, cfg: config_mod.Config, out: Output) -> ExitCode:
    """Verifies every file given; one that cannot be read is reported and the rest still
    verified.  Exit 2 when any file was unreadable (the input must be fixed first), else 1
    when any file is not ok."""
    verifier = Verifier(cfg.trust)
    results: list[tuple[str, Report | UnreadableFile]] = []
    for path in args.files:
        try:
            results.append((path, verify_file(path, verifier, cfg.crawl.max_bytes)))
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


# -- parser -------------------------------------------------------------------------------------


def _global_options(suppress: bool, store: bool = True) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name.  The copy given to
    subcommands has no defaults, so it never overwrites what was given before the command.
    Without `store`: only the output options, for a command with its own store and config."""
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS if suppress else None)
    if store:
        p.add_argument("--config", help="TOML configuration"
                       " (default: $PITHSYNC_CONFIG, else embedded defaults)")
        p.add_argument("--db", help="SQLite store"
                       " (default: $PITHSYNC_DB, [store] path, or ./pithsync.db)")
    p.add_argument("--json", action="store_true", help="machine-readable output", **({} if suppress else {"default": False}))
    p.add_argument("-v", "--verbose", action="count", help="log more on stderr; not with -q",
                   **({} if suppress else {"default": 0}))
    p.add_argument("-q", "--quiet", action="store_true",
                   help="only warnings and errors on stderr, no tables or lines on stdout"
                   " (--json is still printed); the exit status tells the outcome",
                   **({} if suppress else {"default": False}))
    return p


def output_options() -> argparse.ArgumentParser:
    """The parent parser for a command that brings its own store and configuration (`demo`):
    --json, -v and -q, but no --config or --db it would ignore."""
    return _global_options(suppress=True, store=False)


def non_negative_int(text: str) -> int:
    """argparse type for counts such as --depth: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        message = f"must be a whole number >= 0, not {text[:40]!r}"
        raise argparse.ArgumentTypeError(message) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


# The journal's `at` (store.py): UTC, microseconds, "Z".  --since is written the same way, so
# that the store's text comparison orders them as times.
JOURNAL_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def journal_time(text: str) -> str:
    """argparse type for --since: a date or an ISO 8601 time (with Z, an offset, or no zone,
    read as UTC), returned in the journal's own `at` format."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not an ISO date or time:"
            " give e.g. 2026-12-01 or 2026-12-01T10:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        return when.astimezone(timezone.utc).strftime(JOURNAL_TIME_FORMAT)
    except OverflowError:  # an offset past year 1 or 9999
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is out of range") from None


_EXIT_CODE_HELP = {
    ExitCode.OK: "every record in_sync or degraded (verify: every file ok)",
    ExitCode.FAILED: "a record diverged (verify: a file not ok; journal verify: chain broken)",
    ExitCode.USAGE: "usage or configuration error, a file that cannot be read, an unknown record",
    ExitCode.UNVERIFIABLE: "some record has no verified copy anywhere, none diverged",
    ExitCode.STORE: "the store cannot be used: locked by another run, read-only, full, corrupt",
    ExitCode.BUSY: "sync --if-locked=skip: another run held the store; nothing was done",
}

EPILOG = (
    "exit codes:\n"
    + "".join(f"  {int(code)}  {text}\n" for code, text in _EXIT_CODE_HELP.items())
    + "\nexample:\n"
    "  pithsync --config /etc/pithsync/pithsync.toml pull pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ22\n"
    "\n`pithsync COMMAND --help` shows a command's own arguments and options."
)


def build_parser() -> argparse.ArgumentParser:
    common = _global_options(suppress=True)
    parser = argparse.ArgumentParser(
        prog="pithsync",
        description="Crawl, verify and compare Pith Open Graph mirrors.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_options(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"pithsync {__version__}")
    # Not required: without a command, main() prints this help rather than a one-line error.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="one of:")

    p = sub.add_parser("verify", parents=[common], help="verify local bundle, state or evidence files offline")
    p.add_argument("files", nargs="+", metavar="FILE", help="a bundle, state or evidence JSON file")
    p.set_defaults(func=cmd_verify)

    for register in _command_modules():
        register(sub, common)
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot check option by option, in one place after parsing (the global
    options may come before or after the command name).  Exits 2 as argparse does."""
    if args.command is None:
        parser.print_help()
        parser.exit(int(ExitCode.USAGE), "pithsync: no command given\n")
    if args.verbose and args.quiet:
        parser.error("-v/--verbose and -q/--quiet cannot be combined")
    if getattr(args, "own_store", False) and (args.config or args.db):
        parser.error(f"{args.command} uses its own temporary store and configuration: "
                     "--config and --db do not apply")
    if getattr(args, "action", None) == "verify" and getattr(args, "since", None):
        parser.error("journal verify checks the whole chain: --since does not apply")


def _command_modules():
    """Commands that live beside the shells they drive register themselves here."""
    from pithsync import commands

    return commands.REGISTER


class KeyValueFormatter(logging.Formatter):
    """One logfmt line per event: `level=info logger=pithsync.sync event=record_checked ...`.
    The fields a log call passed (logfmt.log_event) are encoded pair by pair; any other message
    (a library's) becomes msg="...".  No ts= under journald, which stamps its own time."""

    def __init__(self, with_time: bool = True):
        super().__init__()
        self.with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        head: dict = {}
        if self.with_time:
            head["ts"] = datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        head.update(level=record.levelname.lower(), logger=record.name)
        fields = getattr(record, logfmt.FIELDS_ATTR, None)
        line = kv(head) + " " + kv(fields if fields is not None else {"msg": record.getMessage()})
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
    """Run one command; the one place outcomes become exit statuses and errors are reported
    (under --json as `{"error": {"code", "exit", "message"}}` on stderr, one line)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    wants_json = "--json" in argv  # known before parsing, so a usage error can be JSON too
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage) if wants_json else contextlib.nullcontext():
            args = parser.parse_args(argv)
            check_arguments(parser, args)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        if exc.code:
            lines = usage.getvalue().strip().splitlines()
            message = lines[-1].split(": error: ", 1)[-1] if lines else "usage error"
            return _fail(wants_json, "usage", int(exc.code), message)
        return 0
    configure_logging(args.verbose, args.quiet)
    out = Output(args.json, args.quiet)
    cfg = None
    try:
        cfg = config_mod.load(args.config)
        if args.db or os.environ.get("PITHSYNC_DB"):
            cfg = config_mod.replace_db(cfg, args.db or os.environ["PITHSYNC_DB"])
        code = int(args.func(args, cfg, out))
        out.flush()
        # The reader went away: what the command had to store is stored; the output was cut.
        return 141 if out.closed else code
    except config_mod.ConfigError as exc:
        return _fail(args.json, "config", ExitCode.USAGE, str(exc))
    except (UsageError, NoStoreError) as exc:
        return _fail(args.json, "usage", ExitCode.USAGE, str(exc))
    except (StoreError, sqlite3.Error) as exc:
        return _fail(args.json, "store", ExitCode.STORE, _store_message(exc, cfg))
    except BaseExceptionGroup as group:  # the crawler's task group wraps what its tasks raise
        found = group.subgroup(lambda e: isinstance(e, (StoreError, sqlite3.Error)))
        if found is None:
            raise
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        return _fail(args.json, "store", ExitCode.STORE, _store_message(found, cfg))
    except KeyboardInterrupt:
        return _fail(args.json, "interrupted", 130, "interrupted")
    except BrokenPipeError:
        # The reader went away outside Output (argparse's --help): stop quietly, as a pipeline
        # expects. stdout is pointed at /dev/null so the interpreter's final flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _fail(as_json: bool, code: str, exit_status: int, message: str) -> int:
    """Report an error on stderr: `pithsync: MESSAGE`, or under --json one line
    `{"error": {"code": "usage"|"config"|"store"|"interrupted", "exit": int, "message": str}}`."""
    if as_json:
        error = {"code": code, "exit": int(exit_status), "message": message}
        text = json.dumps({"error": error}, ensure_ascii=False)
    else:
        text = f"pithsync: {message}"
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr)
    return int(exit_status)


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
