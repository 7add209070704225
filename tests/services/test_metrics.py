"""Prometheus textfile metrics (issue 4), written atomically after every run."""

from __future__ import annotations

import os
import re

import pytest
from synctools import run_cli
from synctools import write_config as shared_write_config

from pithsync import metrics
from pithsync.base import files
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer

SAMPLE = re.compile(
    r'^([a-z_]+)(\{([a-z_]+="(?:[^"\\]|\\.)*"(?:,[a-z_]+="(?:[^"\\]|\\.)*")*)\})? (-?[0-9.e+]+)$'
)


def write_config(tmp_path, mirrors, textfile) -> str:
    return shared_write_config(
        tmp_path, mirrors, extra=f'[alerts]\nlog = false\n\n[metrics]\ntextfile = "{textfile}"\n'
    )


def parse(text: str) -> dict[tuple, float]:
    """Strict parse of the exposition format: every metric has HELP and TYPE, every sample
    parses."""
    samples, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("# HELP "):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a valid sample line: {line!r}"
        assert m.group(1) in typed, f"{m.group(1)} has no TYPE"
        labels = tuple(sorted(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', m.group(3) or "")))
        samples[(m.group(1), labels)] = float(m.group(4))
    return samples


async def test_textfile_after_each_run(tmp_path):
    ok_rec, bad_rec = forge.forge_record(51), forge.forge_record(52, n_events=3)
    prom = tmp_path / "textfile" / "pithsync.prom"
    prom.parent.mkdir()
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        for m in (a, b):
            m.put_record(ok_rec.bundle())
            m.put_record(bad_rec.bundle())
        b.put_record(bad_rec.bundle(upto=2))
        conf = write_config(tmp_path, [a.spec(), b.spec()], prom)
        db = str(tmp_path / "s.db")
        code, _ = await run_cli(
            "--config", conf, "--db", db, "pull", ok_rec.pith_number, bad_rec.pith_number
        )
        assert code == 1
        m1 = parse(prom.read_text())
        assert m1[("pithsync_records", (("verdict", "diverged"),))] == 1
        assert m1[("pithsync_records", (("verdict", "in_sync"),))] == 1
        assert m1[("pithsync_records", (("verdict", "unverifiable"),))] == 0
        assert (
            m1[
                (
                    "pithsync_mirror_records",
                    (("base_url", b.base_url), ("mirror", "b"), ("status", "stale")),
                )
            ]
            == 1
        )
        assert (
            m1[
                (
                    "pithsync_mirror_records",
                    (("base_url", b.base_url), ("mirror", "b"), ("status", "ok")),
                )
            ]
            == 1
        )
        assert (
            m1[
                (
                    "pithsync_mirror_records",
                    (("base_url", a.base_url), ("mirror", "a"), ("status", "ok")),
                )
            ]
            == 2
        )
        assert m1[("pithsync_alerts_open", (("kind", "divergence"),))] == 1
        assert m1[("pithsync_alerts_open", (("kind", "unreachable"),))] == 0
        assert m1[("pithsync_last_run_exit_code", ())] == 1
        assert m1[("pithsync_last_success_timestamp_seconds", ())] == 0  # never succeeded yet
        assert m1[("pithsync_last_run_timestamp_seconds", ())] > 1.7e9
        assert 0 < m1[("pithsync_run_duration_seconds", ())] < 30

        b.put_record(bad_rec.bundle())
        code, _ = await run_cli("--config", conf, "--db", db, "sync")
        assert code == 0
        m2 = parse(prom.read_text())
        assert m2[("pithsync_records", (("verdict", "in_sync"),))] == 2
        assert m2[("pithsync_alerts_open", (("kind", "divergence"),))] == 0
        assert m2[("pithsync_last_run_exit_code", ())] == 0
        assert (
            m2[("pithsync_last_success_timestamp_seconds", ())]
            == m2[("pithsync_last_run_timestamp_seconds", ())]
            >= m1[("pithsync_last_run_timestamp_seconds", ())]
        )
    assert os.listdir(prom.parent) == ["pithsync.prom"]  # no temp files left behind
    assert oct(prom.stat().st_mode & 0o777) == oct(0o644)  # readable by the node exporter


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.prom"
    files.write_atomically(str(path), b"old 1\n")

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        files.write_atomically(str(path), b"new 2\n")
    assert path.read_bytes() == b"old 1\n"  # the reader still sees the whole old file
    assert os.listdir(tmp_path) == ["m.prom"]  # and the temp file is gone
    monkeypatch.undo()
    files.write_atomically(str(path), b"new 2\n")
    assert path.read_bytes() == b"new 2\n"


def test_label_escaping():
    t = metrics._Text()
    t.metric("x", "help", [({"mirror": 'we"ird\\name\nx'}, 3)])
    assert t.render().splitlines()[-1] == 'x{mirror="we\\"ird\\\\name\\nx"} 3'
    assert parse(t.render())[("x", (("mirror", 'we\\"ird\\\\name\\nx'),))] == 3


async def test_unwritable_textfile_does_not_change_exit_code(tmp_path, capsys):
    record = forge.forge_record(53)
    async with MirrorServer("a") as a:
        a.put_record(record.bundle())
        conf = write_config(tmp_path, [a.spec()], tmp_path / "no-such-dir" / "m.prom")
        code, out = await run_cli(
            "--config", conf, "--db", str(tmp_path / "s.db"), "pull", "--json", record.pith_number
        )
    assert code == 0 and '"in_sync"' in out
    assert not (tmp_path / "no-such-dir").exists()
    err = [
        line
        for line in capsys.readouterr().err.splitlines()
        if "event=metrics outcome=error" in line
    ]
    assert len(err) == 1 and "level=error" in err[0] and "no-such-dir" in err[0]  # logged, one line
