"""What commands print (issue 14): a reader that goes away (`| head -1`) never costs a run what
it verified; every log line is logfmt; --json shapes; terminal tables and progress."""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import sqlite3
import subprocess
import sys

import anyio
import pytest
from synctools import ALWAYS_DUE_TOML, json_lines, serve_bad_copy, write_config

from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer, refused_spec

RECORDS = [forge.forge_record(4000 + i, 2) for i in range(400)]
TAMPERED = set(range(0, 400, 8))  # record index -> mirror b serves a tampered copy: diverged
SMALL_PIPE = 4096  # the least a Linux pipe holds: the output below is many times more


def _pithsync_with_early_close(*argv: str, timeout: float = 300) -> tuple[int, str, str]:
    """The real `pithsync` program with stdout a pipe that is closed once its first line has
    been read (as `| head -1` does); returns (exit status, first line, stderr)."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, getattr(fcntl, "F_SETPIPE_SZ", 1031), SMALL_PIPE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pithsync", *argv], stdout=write_end, stderr=subprocess.PIPE
    )
    os.close(write_end)
    first = b""
    with os.fdopen(read_end, "rb", buffering=0) as reader:
        while b"\n" not in first:
            chunk = reader.read(256)
            if not chunk:
                break
            first += chunk
    # The reader is closed now; the program still has most of its output to write.
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"pithsync {argv} did not finish within {timeout} s") from None
    return proc.returncode, first.decode().split("\n", 1)[0], err.decode()


def _store(db: str) -> dict:
    conn = sqlite3.connect(db)
    try:
        return {
            "records": {
                r[0]
                for r in conn.execute(
                    "select pith_number from records where state_sha256 is not null"
                )
            },
            "runs": conn.execute(
                "select command, finished_at, exit_code from runs order by started_at"
            ).fetchall(),
            "kinds": [r[0] for r in conn.execute("select kind from journal order by seq")],
            "alerts": conn.execute("select count(*) from alerts").fetchone()[0],
        }
    finally:
        conn.close()


def _journal_ok(db: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pithsync", "--db", db, "--json", "journal", "verify"],
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0 and json.loads(proc.stdout)["ok"] is True, proc.stdout


def _assert_quiet_stop(code: int, err: str) -> None:
    assert code == 141, err[-3000:]
    assert "Traceback" not in err and "BrokenPipe" not in err, err[-3000:]


@pytest.fixture
async def mirrors():
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        for i, r in enumerate(RECORDS):
            a.put_record(r.bundle())
            if i in TAMPERED:
                serve_bad_copy(b, r, "tampered")
            else:
                b.put_record(r.bundle())
        yield a, b


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2], ids=["one process", "worker processes"])
async def test_a_reader_that_goes_away_costs_the_run_nothing(tmp_path, mirrors, processes):
    a, b = mirrors
    conf = write_config(tmp_path, [a.spec(), b.spec()], extra=f"processes = {processes}\n")
    db = str(tmp_path / "s.db")
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(r.pith_number for r in RECORDS))
    every = {r.pith_number for r in RECORDS}

    def run(*argv):
        return _pithsync_with_early_close("--config", conf, "--db", db, *argv)

    # --json streams while the run goes on: the reader is gone long before the run ends.
    code, first, err = await anyio.to_thread.run_sync(run, "--json", "pull", "--from", str(listing))
    _assert_quiet_stop(code, err)
    assert json.loads(first)["pith_number"] in every
    stored = _store(db)
    assert stored["records"] == every
    assert [(c, bool(f), x) for c, f, x in stored["runs"]] == [
        ("pull", True, 1)
    ]  # finished, diverged
    assert stored["kinds"][0] == "run_started" and stored["kinds"][-1] == "run_finished"
    assert stored["kinds"].count("record_outcome") == len(RECORDS)
    assert stored["alerts"] == len(TAMPERED)
    _journal_ok(db)

    # Plain rows, and a sync over every tracked record.
    code, first, err = await anyio.to_thread.run_sync(run, "sync")
    _assert_quiet_stop(code, err)
    assert first.split() == ["pith_number", "verdict", "events", "mirrors"]
    stored = _store(db)
    assert [(c, bool(f)) for c, f, _ in stored["runs"]] == [("pull", True), ("sync", True)]
    assert stored["kinds"][-1] == "run_finished" and stored["kinds"].count(
        "record_outcome"
    ) >= 2 * len(TAMPERED)
    _journal_ok(db)

    # The commands that only read: the same quiet stop, plain and --json.
    for argv in (["journal"], ["--json", "journal"], ["status"], ["alerts"], ["--json", "alerts"]):
        code, first, err = await anyio.to_thread.run_sync(run, *argv)
        _assert_quiet_stop(code, err)
        assert first, argv
    _journal_ok(db)


# -- every log line is logfmt -----------------------------------------------------------------

_LOGFMT_KEY = r"[A-Za-z_][\w.]*"
_LOGFMT_VALUE = r'"(?:[^"\\\x00-\x1f]|\\["\\nrt]|\\u[0-9a-f]{4})*"|[^\s"=\\\x00-\x1f]+'
_LOGFMT_PAIR = re.compile(rf"({_LOGFMT_KEY})=({_LOGFMT_VALUE})")
_UNESCAPE = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def parse_logfmt(line: str) -> dict[str, str]:
    """One logfmt line, strictly: `key=value` pairs one space apart, a value bare or quoted with
    only the escapes pithsync writes; any other text is an error, as is a repeated key."""
    fields: dict[str, str] = {}
    pos = 0
    while True:
        m = _LOGFMT_PAIR.match(line, pos)
        assert m, f"not logfmt at column {pos}: {line!r}"
        key, raw = m.groups()
        assert key not in fields, f"key {key} twice: {line!r}"
        if raw.startswith('"'):
            raw = re.sub(
                r"\\(u[0-9a-f]{4}|.)",
                lambda e: (
                    chr(int(e[1][1:], 16)) if e[1][0] == "u" and len(e[1]) == 5 else _UNESCAPE[e[1]]
                ),
                raw[1:-1],
            )
        fields[key] = raw
        pos = m.end()
        if pos == len(line):
            return fields
        assert line[pos] == " " and pos + 1 < len(line), f"not logfmt at column {pos}: {line!r}"
        pos += 1


def test_the_strict_parser_refuses_what_is_not_logfmt():
    assert parse_logfmt('a=1 b="x \\"y\\" = z" c=ü') == {"a": "1", "b": 'x "y" = z', "c": "ü"}
    for bad in (
        'msg="a b',
        "a=1  b=2",
        "a=b c",
        'a=x"y',
        "record=x mirrors=Pith Resolver:unreachable",
        "a=1 a=2",
    ):
        with pytest.raises(AssertionError):
            parse_logfmt(bad)


def _toml_config(path, mirrors, extra: str = "") -> str:
    """write_config's file, with mirror names quoted as TOML strings (they hold quotes)."""
    from synctools import REGISTRY_KEY

    keys = [(forge.TEST_KEY.key_id, forge.TEST_KEY.public_key_b64), REGISTRY_KEY]
    text = "".join(
        f"[[trust.keys]]\nkey_id = {json.dumps(k)}\npublic_key_b64 = {json.dumps(b)}\n\n"
        for k, b in keys
    )
    text += "".join(
        f"[[mirrors]]\nname = {json.dumps(n)}\nbase_url = {json.dumps(u)}\n\n" for n, u in mirrors
    )
    text += f"[crawl]\nretries = 0\ntimeout_s = 10\nfollow_hints = false\n{extra}\n"
    path.write_text(text)
    return str(path)


NASTY_NAMES = ("Pith Resolver", 'say "hi"', "a=b c=d", "ünï cödé \t tab", "line\nbreak\x1b[31m")


@pytest.mark.parametrize("processes", [1, 2], ids=["one process", "worker processes"])
async def test_every_line_a_verbose_run_logs_is_logfmt(tmp_path, processes):
    records = RECORDS[:40]
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        for i, r in enumerate(records):
            a.put_record(r.bundle())
            serve_bad_copy(b, r, "tampered") if i % 4 == 0 else b.put_record(r.bundle())
        downs = {refused_spec().base_url for _ in range(20)}  # distinct closed ports
        assert len(downs) >= 3
        specs = [(NASTY_NAMES[0], a.base_url), (NASTY_NAMES[1], b.base_url)] + list(
            zip(NASTY_NAMES[2:], sorted(downs), strict=False)
        )
        conf = _toml_config(
            tmp_path / "p.toml",
            specs,
            extra=f"processes = {processes}\n\n{ALWAYS_DUE_TOML}\n"
            "[alerts]\nlog = true\nunreachable_runs = 1\n",
        )
        db = str(tmp_path / "s.db")
        argv = [sys.executable, "-m", "pithsync", "-v", "--config", conf, "--db", db]
        runs = []
        for command in (["pull", *[r.pith_number for r in records]], ["sync"]):
            runs.append(
                await anyio.to_thread.run_sync(
                    lambda c=command: subprocess.run(argv + c, capture_output=True, timeout=300)
                )
            )
    lines = [line for proc in runs for line in proc.stderr.decode().splitlines()]
    assert [proc.returncode for proc in runs] == [1, 1], lines[-20:]
    parsed = [parse_logfmt(line) for line in lines]
    assert all(
        p["level"] in ("debug", "info", "warning", "error") and p["logger"].startswith("pithsync")
        for p in parsed
    )
    events = {p.get("event") for p in parsed}
    assert {"record_checked", "run_finished", "alert"} <= events, events
    checked = [p for p in parsed if p.get("event") == "record_checked"]
    assert len(checked) == 2 * len(records)
    # The values come back whole: names with spaces, quotes, `=`, unicode and control bytes.
    assert all(p["mirrors"].startswith(f"{NASTY_NAMES[0]}:ok,{NASTY_NAMES[1]}:") for p in checked)
    assert all(f"{NASTY_NAMES[4]}:unreachable" in p["mirrors"] for p in checked)
    assert all("None" not in p.values() for p in parsed)
    assert not any("\x1b" in line for line in lines)  # no raw terminal escape reaches the log
    alerts = [p for p in parsed if p.get("event") == "alert"]
    assert {p["kind"] for p in alerts} >= {"divergence", "unreachable"}
    assert any(p.get("mirrors", "").startswith(NASTY_NAMES[1] + ":tampered") for p in alerts)


# -- --json shapes and errors; plain rows; terminal tables -------------------------------------


async def test_json_lines_sorted_rows_json_errors_and_alert_summaries(tmp_path):
    from synctools import run_cli

    records = RECORDS[:6]
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        for i, r in enumerate(records):
            a.put_record(r.bundle())
            serve_bad_copy(b, r, "tampered") if i == 2 else b.put_record(r.bundle())
        conf = write_config(tmp_path, [a.spec(), b.spec()])
        db = str(tmp_path / "s.db")
        code, out = await run_cli(
            "--config", conf, "--db", db, "--json", "pull", *[r.pith_number for r in records]
        )
        assert code == 1
        lines = json_lines(out)  # one whole object a line
        assert sorted(x["pith_number"] for x in lines) == sorted(r.pith_number for r in records)
        assert all(
            isinstance(x["event_count"], int) and isinstance(x["new_events"], int) for x in lines
        )
        code, out = await run_cli("--config", conf, "--db", db, "sync")
    assert code == 1
    rows = [line.split()[0] for line in out.splitlines() if not line.startswith("  ")]
    assert rows[0] == "pith_number" and rows[1:] == sorted(r.pith_number for r in records)

    for argv in (["journal"], ["alerts"]):
        code, out = await run_cli("--db", db, "--json", *argv)
        items = json_lines(out)
        assert code == 0 and items, argv
    assert all(
        isinstance(e["seq"], int) and isinstance(e["detail"], dict)
        for e in json_lines((await run_cli("--db", db, "--json", "journal"))[1])
    )

    # The alerts listing: each summary whole, without the pith number its row shows.
    code, out = await run_cli("--db", db, "alerts")
    [row] = [line for line in out.splitlines() if "divergence" in line]
    assert row.count(records[2].pith_number) == 1 and row.rstrip().endswith(")")


def test_errors_under_json_are_one_json_object_on_stderr(tmp_path, capsys):
    from pithsync import cli

    cases = [
        (["--json", "pull"], "usage", 2),
        (["--json", "bogus"], "usage", 2),
        (["--json", "--config", str(tmp_path / "none.toml"), "sync"], "config", 2),
    ]
    (tmp_path / "bad.db").write_bytes(b"not a database at all" * 100)
    cases.append((["--json", "--db", str(tmp_path / "bad.db"), "journal"], "store", 4))
    for argv, code, status in cases:
        assert cli.main(argv) == status, argv
        captured = capsys.readouterr()
        assert captured.out == "", argv
        [line] = captured.err.strip().splitlines()
        error = json.loads(line)["error"]
        assert error["code"] == code and error["exit"] == status and error["message"], argv
    assert cli.main(["pull"]) == 2 and capsys.readouterr().err.startswith("pithsync: ")


def test_a_terminal_table_never_breaks_a_pith_number():
    from rich.console import Console

    from pithsync.cli.output import Output

    number = RECORDS[0].pith_number
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=40, color_system=None)
    Output(False, stream=io.StringIO())._rich_table(
        "pithsync",
        ["pith_number", "verdict", "events", "mirrors"],
        [[number, "diverged", "3", "alpha=ok  beta=stale"]],
        console=console,
    )
    text = screen.getvalue()
    assert number in text and "verdict" in text and "diverged" in text


def test_log_lines_go_above_the_progress_bar_whole(tmp_path):
    """While the bar is drawn, a log line is printed through its console: whole, on a line of
    its own, and the logger's handlers are back afterwards."""
    import io
    import logging

    from pithsync import cli
    from pithsync.base.logfmt import log_event
    from pithsync.cli import output

    cli.configure_logging(0, False)
    logger = logging.getLogger("pithsync")
    before = list(logger.handlers)
    screen = io.StringIO()
    screen.isatty = lambda: True  # type: ignore[method-assign]
    with output.ProgressBar(10, stream=screen) as bar:
        bar.advance(None)
        log_event(
            logging.getLogger("pithsync.sync"),
            logging.WARNING,
            "mirror_slow",
            mirror="Pith Resolver",
            detail="a value long enough " * 8,
        )
        bar.advance(None)
    assert logger.handlers == before
    lines = [line for line in screen.getvalue().splitlines() if "event=mirror_slow" in line]
    assert len(lines) == 1, screen.getvalue()
    assert f'detail="{"a value long enough " * 8}"' in lines[0]  # not wrapped, not cut
    assert 'mirror="Pith Resolver"' in lines[0]
