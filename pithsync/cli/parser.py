"""The command line's grammar: every command, argument and option, with its help."""

from __future__ import annotations

import argparse
import importlib
from datetime import UTC, datetime

from pithsync import __version__
from pithsync.base.exits import ExitCode


class Handler:
    """A command's function, named by its module in pithsync.cli and imported only when the
    command runs, so that building the parser (and `--version`) imports no command's
    dependencies.  A plain class: dataclasses would cost `--version` its import."""

    __slots__ = ("module", "function")

    def __init__(self, module: str, function: str):
        self.module = module
        self.function = function

    def __repr__(self) -> str:
        return f"Handler({self.module!r}, {self.function!r})"

    def __call__(self, args, cfg, out) -> int:
        """Import the command's module and run its function."""
        module = importlib.import_module(f"pithsync.cli.{self.module}")
        return getattr(module, self.function)(args, cfg, out)


def _global_options(suppress: bool, store: bool = True) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name.  The copy given to
    subcommands has no defaults, so it never overwrites what was given before the command.
    Without `store`: only the output options, for a command with its own store and config."""
    p = argparse.ArgumentParser(
        add_help=False, argument_default=argparse.SUPPRESS if suppress else None
    )
    if store:
        p.add_argument(
            "--config",
            help="TOML configuration (default: $PITHSYNC_CONFIG, else embedded defaults)",
        )
        p.add_argument(
            "--db", help="SQLite store (default: $PITHSYNC_DB, [store] path, or ./pithsync.db)"
        )
    p.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output",
        **({} if suppress else {"default": False}),
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        help="log more on stderr; not with -q",
        **({} if suppress else {"default": 0}),
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="only warnings and errors on stderr, no tables or lines on stdout"
        " (--json is still printed); the exit status tells the outcome",
        **({} if suppress else {"default": False}),
    )
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


def duration(text: str) -> float:
    """argparse type for --max-duration: seconds, or a number with s, m, h or d."""
    from pithsync.config import ConfigError, parse_duration

    try:
        return parse_duration(text, "--max-duration")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# The journal's `at` (base/clock.py): UTC, microseconds, "Z".  --since is written the same way, so
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
        when = when.replace(tzinfo=UTC)
    try:
        return when.astimezone(UTC).strftime(JOURNAL_TIME_FORMAT)
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
    """The `pithsync` parser: the global options, --version and every command, each with
    its Handler (nothing of a command is imported here)."""
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

    p = sub.add_parser(
        "verify", parents=[common], help="verify local bundle, state or evidence files offline"
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="a bundle, state or evidence JSON file")
    p.add_argument(
        "--observer-key",
        action="append",
        default=[],
        type=_verifier_key,
        metavar="VKEY",
        help="pin an observer's verifier key (as `pithsync observer` prints it) for evidence"
        " files, beside the [[peers]] keys and this store's own; repeatable",
    )
    p.set_defaults(func=Handler("verify", "cmd_verify"))

    for register in (
        register_sync,
        register_store,
        register_compact,
        register_observer,
        register_alerts,
        register_mirror,
    ):
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
        parser.error(
            f"{args.command} uses its own temporary store and configuration: "
            "--config and --db do not apply"
        )
    if getattr(args, "action", None) == "verify" and getattr(args, "since", None):
        parser.error("journal verify checks the whole chain: --since does not apply")


def register_sync(sub, common) -> None:
    """Adds `pull` and `sync` subcommands."""
    p = sub.add_parser(
        "pull",
        parents=[common],
        help="pull records from every mirror now, verify, compare and store them",
    )
    p.add_argument(
        "pith",
        nargs="*",
        metavar="PITH",
        help="pith:YYYY:<26>, a bare suffix, pith:<8>, or an alias the store knows (arxiv id, doi)",
    )
    p.add_argument(
        "--from",
        dest="from_file",
        metavar="FILE",
        help="read more pith numbers from FILE, one per line (- for stdin)",
    )
    p.add_argument(
        "--depth",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="also pull pith numbers cited in verified payloads, up to N hops away (default 0)",
    )
    p.set_defaults(func=Handler("records", "cmd_pull"))

    p = sub.add_parser(
        "sync",
        parents=[common],
        help="pull the tracked records that are due, most urgent first (what the timer runs)",
    )
    p.add_argument(
        "--max-duration",
        type=duration,
        default=None,
        metavar="DURATION",
        help="start no record after this long (seconds, or 30m, 1h, 7d; default [schedule]"
        " run_budget_s, else no limit): what was not reached stays due for the next run",
    )
    p.add_argument(
        "--depth",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="also pull pith numbers cited in verified payloads, up to N hops away (default 0)",
    )
    p.add_argument(
        "--if-locked",
        choices=["fail", "skip"],
        default="fail",
        help="when another run holds the store past [store] lock_timeout_s: fail "
        "(exit 4, the default) or skip (log event=run_skipped, exit 75, EX_TEMPFAIL)",
    )
    p.set_defaults(func=Handler("records", "cmd_sync"))


_JOURNAL_DESCRIPTION = (
    "The sync journal, oldest first: run_started and run_finished, one record_outcome per"
    " record check (its detail lists each mirror's outcome under `mirrors`; journals before"
    " schema 9 have a mirror_outcome entry per mirror instead), record_renumbered,"
    " record_untracked, peer_checked and peer_rewritten."
)


def register_store(sub, common) -> None:
    """Adds `status`, `untrack`, `journal` (and `journal verify`) and `import` subcommands."""
    p = sub.add_parser("status", parents=[common], help="what the store holds")
    p.add_argument(
        "pith",
        nargs="?",
        metavar="PITH",
        help="one record, by pith number, suffix, short form or alias (default: list every record)",
    )
    p.set_defaults(func=Handler("status", "cmd_status"))

    p = sub.add_parser(
        "untrack",
        parents=[common],
        help="stop syncing records, keeping everything stored about them (`pull` tracks one again)",
    )
    p.add_argument(
        "pith",
        nargs="+",
        metavar="PITH",
        help="pith:YYYY:<26>, a bare suffix, pith:<8>, or an alias of a stored record",
    )
    p.set_defaults(func=Handler("records", "cmd_untrack"))

    p = sub.add_parser(
        "journal", parents=[common], help="the sync journal; `journal verify` checks its hash chain"
    )
    p.description = _JOURNAL_DESCRIPTION
    p.add_argument(
        "--since",
        metavar="TIME",
        type=journal_time,
        help="only entries at or after TIME: a date (2026-12-01) or an ISO time"
        " (2026-12-01T10:00:00Z; an offset is converted, no zone means UTC)",
    )
    p.set_defaults(func=Handler("journal", "cmd_journal"))
    # `pithsync journal` alone lists the entries; `journal verify` has its own parser and help.
    journal_sub = p.add_subparsers(
        dest="action", metavar="[ACTION]", help="without one, the entries are listed"
    )
    journal_sub.add_parser(
        "verify",
        parents=[common],
        help="check the journal's hash chain",
        description="Check the journal's hash chain: every entry present,"
        " unedited, and the head recorded in the store matching the last"
        " entry.  Exit 1 when the chain is broken.",
    )

    p = sub.add_parser(
        "import", parents=[common], help="verify local bundle or state files and store them"
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="a bundle or state JSON file; only the ones that verify are stored",
    )
    p.set_defaults(func=Handler("records", "cmd_import"))


def register_compact(sub, common) -> None:
    """Adds the `compact` subcommand."""
    p = sub.add_parser(
        "compact",
        parents=[common],
        help="return the store's free pages to the disk (after an upgrade from an older schema)",
    )
    p.description = (
        "Rebuild the store's file without its free pages (SQLite's VACUUM), under the run lock:"
        " a migration from an older schema frees pages that stay in the file until then."
        " Needs free disk space about twice the store's size (SQLite's temporary copy, in"
        " $SQLITE_TMPDIR, else $TMPDIR, else /var/tmp; then the WAL beside the store)."
        " Everything stored stays as it is; the journal records a `compact` run."
    )
    p.set_defaults(func=Handler("compact", "cmd_compact"))


def _verifier_key(text: str):
    """A `--observer-key` value, parsed (the import waits until a command is parsed)."""
    from pithsync.core.errors import InvalidKey
    from pithsync.core.note import VerifierKey

    try:
        return VerifierKey.parse(text)
    except InvalidKey as exc:
        raise argparse.ArgumentTypeError(f"not a C2SP verifier key: {exc}") from None


def register_observer(sub, common) -> None:
    """Adds the `observer` subcommand."""
    p = sub.add_parser(
        "observer",
        parents=[common],
        help="this store's observer key (made on first use): its verifier key and fingerprint",
    )
    p.set_defaults(func=Handler("observer", "cmd_observer"))


def register_alerts(sub, common) -> None:
    """Adds `alerts` and `evidence` subcommands."""
    p = sub.add_parser(
        "alerts",
        parents=[common],
        help="list alerts (divergences, unreachable mirrors) and their delivery",
    )
    p.add_argument("--open", action="store_true", help="only alerts that are still open")
    p.set_defaults(func=Handler("alerts", "cmd_alerts"))

    p = sub.add_parser(
        "evidence",
        parents=[common],
        help="write a self-contained evidence file for a record,"
        " checkable offline with `pithsync verify`",
    )
    p.add_argument(
        "pith", metavar="PITH", help="pith number, suffix, short form or alias of a stored record"
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="where to write the evidence JSON (- for stdout)",
    )
    p.set_defaults(func=Handler("alerts", "cmd_evidence"))


def register_mirror(sub, common) -> None:
    """Adds `serve`, `export` and `demo` subcommands."""
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="serve the verified store as a Pith mirror over HTTP (read-only)",
    )
    p.add_argument(
        "--bind",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="where to listen (default 127.0.0.1:8080; put TLS in front with a reverse proxy)",
    )
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="base URL announced in /pith-mirrors.json (default: the origin each request came to)",
    )
    p.add_argument("--name", default="pithsync mirror", help="mirror name in the manifest")
    p.set_defaults(func=Handler("mirror", "cmd_serve"))

    p = sub.add_parser(
        "export",
        parents=[common],
        help="write the verified store as a static mirror tree (atomic writes) for any web server",
    )
    p.add_argument("directory", metavar="DIR", help="directory to write the mirror tree into")
    p.add_argument(
        "--base-url",
        required=True,
        metavar="URL",
        help="the URL DIR will be served at, for pith-mirrors.json",
    )
    p.add_argument("--name", default="pithsync mirror", help="mirror name in the manifest")
    p.set_defaults(func=Handler("mirror", "cmd_export"))

    # demo brings its own temporary store and embedded configuration: output options only.
    p = sub.add_parser(
        "demo",
        parents=[output_options()],
        help="offline demonstration: three local mirrors (honest, lagging, tampered)"
        " built from the shipped seeds; exits 0 when it shows what it should",
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the temporary store and print its path"
    )
    p.set_defaults(func=Handler("demo", "cmd_demo"), own_store=True)
