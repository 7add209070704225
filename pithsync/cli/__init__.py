"""The command line: `main` runs one command and is the one place outcomes become process
exit statuses and errors are reported.  Nothing imports this package."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import os
import sqlite3
import sys

from pithsync import config as config_mod
from pithsync.base.exits import ExitCode, UsageError
from pithsync.base.logfmt import KeyValueFormatter
from pithsync.cli.output import Output
from pithsync.cli.parser import build_parser, check_arguments
from pithsync.store import NoStoreError, StoreError, explain_error

log = logging.getLogger("pithsync")





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
        return explain_error(exc, cfg.db_path if cfg is not None else "(store)")
    if isinstance(exc, sqlite3.Error):
        return f"store error: {type(exc).__name__}: {exc}"
    return str(exc)
