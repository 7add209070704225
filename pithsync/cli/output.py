"""Where results go: JSON, a rich table on a terminal, or plain lines; the progress bar; the
streaming writer of a sync's records."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the run package imports aiohttp: not for `status` or `verify`
    from pithsync.run.results import RecordResult

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
        self._unless_reader_gone(lambda: self.stream.write(text))

    def flush(self) -> None:
        """Push buffered output out now (a pipe's buffer would otherwise fail only at exit)."""
        self._unless_reader_gone(self.stream.flush)

    def _unless_reader_gone(self, action) -> None:
        """One write or flush of the stream; a reader that has gone closes the output."""
        if self.closed:
            return
        try:
            action()
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
        """One line of text for people; nothing under -q."""
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


class ProgressBar:
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
        self._p = Progress(
            TextColumn("syncing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
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
        """One more record done."""
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
            self.console.print(
                self.format(record), markup=False, highlight=False, emoji=False, soft_wrap=True
            )
        except Exception:  # noqa: BLE001 - as logging.StreamHandler does
            self.handleError(record)


def progress_bar(out, total: int):
    """A progress bar for a run of `total` records, or None: only when the output is a rich
    terminal, stderr a terminal too, and there is more than one record."""
    return ProgressBar(total) if out.rich and sys.stderr.isatty() and total > 1 else None


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
        """One record's result: written now under --json, else kept for `finish`."""
        if self.out.as_json:
            self.out.json_line(r.to_json())
        else:
            self._rows.append(r)

    def finish(self) -> None:
        """The kept rows, sorted by pith number, then each record's problems (not under
        --json, whose lines are already written)."""
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
                    why = f"{reason['status']}/{reason['code']}: {reason['message']}"
                    self.out.line(f"  {r.pith_number} {m.name}: {why}")
        for h in r.refused_hints[:5]:
            self.out.line(f"  {r.pith_number} refused hint {h['base_url']}: {h['reason']}")
        if r.error:
            self.out.line(f"  {r.pith_number}: {r.error}")


def listed_summary(summary: str, pith_number: str | None) -> str:
    """A notification's summary as `alerts` lists it: whole (a table folds it, a hash is never
    cut), without the pith number its row already shows in `about`."""
    if pith_number:
        for prefix in (f"{pith_number}: ", f"{pith_number} "):
            if summary.startswith(prefix):
                return summary[len(prefix) :]
    return summary
