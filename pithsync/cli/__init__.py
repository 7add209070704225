"""The command line: `main` runs one command and is the one place outcomes become process
exit statuses and errors are reported.  Nothing imports this package.

This module and the parser import only the standard library and pithsync.base, so that
`pithsync --version` and argument errors start quickly; what a command needs (the
configuration and its keys, the store, the output) is imported once it has been parsed."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys

from pithsync.base.exits import ExitCode, NoStoreError, StoreError, UsageError
from pithsync.cli.parser import build_parser, check_arguments

__all__ = ["ExitCode", "UsageError", "build_parser", "configure_logging", "main", "program"]

# The exit status of a command whose reader closed stdout (128 + SIGPIPE), as a pipeline expects.
EXIT_READER_GONE = 141
EXIT_INTERRUPTED = 130


def configure_logging(verbose: int, quiet: bool) -> None:
    """The pithsync logger's one handler: logfmt lines on stderr, at WARNING with -q, INFO by
    default, DEBUG with -v (no timestamp under journald, which stamps its own)."""
    # Imported here, once a command is parsed: logging is a large share of an interpreter's
    # start, which `--version`, --help and a usage error do without.
    import logging

    from pithsync.base.logfmt import KeyValueFormatter

    level = logging.WARNING if quiet else logging.INFO if verbose == 0 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter(with_time=not os.environ.get("JOURNAL_STREAM")))
    root = logging.getLogger("pithsync")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Run one command; the one place outcomes become exit statuses and errors are reported
    (under --json as `{"error": {"code", "exit", "message"}}` on stderr, one line).

    Args:
        argv: the arguments after the program name (default: sys.argv[1:]).

    Returns:
        The exit status: the command's ExitCode, 2 for a usage or configuration error, 4 for
        a store that cannot be used, 130 when interrupted, 141 when the reader closed stdout.
    """
    parsed = _parse(list(sys.argv[1:] if argv is None else argv))
    if isinstance(parsed, int):
        return parsed
    args = parsed
    configure_logging(args.verbose, args.quiet)
    from pithsync import config as config_mod  # the configuration's keys need pynacl
    from pithsync.cli.output import Output

    out = Output(args.json, args.quiet)
    cfg = None
    try:
        cfg = config_mod.load(args.config)
        if args.db or os.environ.get("PITHSYNC_DB"):
            cfg = config_mod.replace_db(cfg, args.db or os.environ["PITHSYNC_DB"])
        code = int(args.func(args, cfg, out))
        out.flush()
        # The reader went away: what the command had to store is stored; the output was cut.
        return EXIT_READER_GONE if out.closed else code
    except BrokenPipeError:
        # The reader went away outside Output (argparse's --help): stop quietly, as a pipeline
        # expects. stdout is pointed at /dev/null so the interpreter's final flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_READER_GONE
    except BaseException as exc:
        failure = reported_failure(exc, cfg)
        if failure is None:
            raise
        return _fail(args.json, *failure)


def _parse(argv: list[str]) -> argparse.Namespace | int:
    """The parsed arguments, or the exit status when there is no command to run: 0 after
    --help or --version, 2 after a usage error (reported, as JSON under --json)."""
    parser = build_parser()
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
    return args


def reported_failure(exc: BaseException, cfg) -> tuple[str, int, str] | None:
    """How `main` reports an error a command raised: (code, exit status, message), or None
    for one it does not map (a bug: it propagates, with its traceback).

    Args:
        exc: what the command raised.
        cfg: the configuration, when it was loaded (names the store in a store error).

    Returns:
        `("config", 2, ...)`, `("usage", 2, ...)`, `("store", 4, ...)` (also for a store
        error inside the crawler's task group), `("interrupted", 130, ...)`, or None.
    """
    import sqlite3  # only for this isinstance: a bare sqlite3 error raised outside the store

    from pithsync.config import ConfigError

    store_errors = (StoreError, sqlite3.Error)
    if isinstance(exc, ConfigError):
        return "config", ExitCode.USAGE, str(exc)
    if isinstance(exc, (UsageError, NoStoreError)):
        return "usage", ExitCode.USAGE, str(exc)
    if isinstance(exc, BaseExceptionGroup):  # the crawler's task group wraps what tasks raise
        found = exc.subgroup(lambda e: isinstance(e, store_errors))
        if found is None:
            return None
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        exc = found
    if isinstance(exc, store_errors):
        return "store", ExitCode.STORE, _store_message(exc, cfg)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED, "interrupted"
    return None


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
    """The `pithsync` program (and `python -m pithsync`)."""
    return main()


def _store_message(exc: BaseException, cfg) -> str:
    """A StoreError says what went wrong; a bare sqlite3 error (raised outside a store
    transaction: a read, a checkpoint) is explained the same way."""
    import sqlite3

    if isinstance(exc, sqlite3.OperationalError):
        from pithsync.store import explain_error  # loaded already: the error came from it

        return explain_error(exc, cfg.db_path if cfg is not None else "(store)")
    if isinstance(exc, sqlite3.Error):
        return f"store error: {type(exc).__name__}: {exc}"
    return str(exc)
