"""`pithsync verify FILE...`: offline verification of local files, exit codes and output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import BUNDLE_SEEDS, EXPECTED_PITH, SEED_NAMES, STATE_SEED, flip_b64

from pithsync import cli
from pithsync.testing import forge

REPO = Path(__file__).resolve().parents[2]


# A configuration that pins only the forge's test key.
TEST_KEY_TOML = (
    f'[[trust.keys]]\nkey_id = "{forge.TEST_KEY_ID}"\n'
    f'public_key_b64 = "{forge.TEST_KEY.public_key_b64}"\n'
)


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_all_seeds_ok(seed_paths, capsys):
    code, out, err = run(["verify", *seed_paths.values()], capsys)
    assert code == 0, out + err
    header, *lines = [line for line in out.splitlines() if line.strip()]
    assert header.split() == ["status", "kind", "pith_number", "file", "reasons"]  # as in the table
    assert len(lines) == 5
    for name, line in zip(SEED_NAMES, lines, strict=True):
        status, kind, pith, path = line.split("  ")[:4]
        assert status == "ok"
        assert kind == ("state" if name == STATE_SEED else "bundle")
        assert pith == EXPECTED_PITH[name] and path.endswith(name)


def test_all_seeds_json(seed_paths, capsys):
    code, out, _ = run(["verify", "--json", *seed_paths.values()], capsys)
    assert code == 0
    doc = json.loads(out)
    assert list(doc) == ["files"] and len(doc["files"]) == 5
    for name, entry in zip(SEED_NAMES, doc["files"], strict=True):
        assert set(entry) == {"file", "kind", "status", "pith_number", "reasons", "notes"}
        assert entry["file"] == seed_paths[name]
        assert entry["status"] == "ok" and entry["reasons"] == []
        assert entry["pith_number"] == EXPECTED_PITH[name]
        assert entry["kind"] == ("state" if name == STATE_SEED else "bundle")
        assert isinstance(entry["notes"], list)
    assert doc["files"][1]["notes"]  # the state-only seed says its events are not proven


def test_module_entry_point(seed_paths):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PITHSYNC_CONFIG", "PITHSYNC_DB", "STATE_DIRECTORY")
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pithsync", "verify", "--json", *seed_paths.values()],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    statuses = [f["status"] for f in json.loads(proc.stdout)["files"]]
    assert statuses == ["ok"] * 5


def test_module_entry_point_failure_exit_code(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"not json")
    env = {k: v for k, v in os.environ.items() if k not in ("PITHSYNC_CONFIG", "PITHSYNC_DB")}
    proc = subprocess.run(
        [sys.executable, "-m", "pithsync", "verify", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "malformed" in proc.stdout


def _write(tmp_path, name, doc) -> str:
    p = tmp_path / name
    p.write_bytes(forge.dumps(doc))
    return str(p)


def test_tampered_seed_exits_1_with_reason(tmp_path, seed_docs, seed_paths, capsys):
    b = seed_docs[BUNDLE_SEEDS[0]]
    next(e for e in b["events"] if e["event_type"] == "graph_snapshot")["payload"]["verdict_id"] = (
        "edited"
    )
    path = _write(tmp_path, "tampered.json", b)
    code, out, _ = run(["verify", seed_paths[BUNDLE_SEEDS[1]], path], capsys)
    assert code == 1
    _header, good, bad = [line for line in out.splitlines() if line.strip()]
    assert good.startswith("ok  ")
    assert bad.startswith("tampered  bundle") and "event_hash_mismatch" in bad and path in bad


def test_tampered_json_reasons(tmp_path, seed_docs, capsys):
    b = seed_docs[BUNDLE_SEEDS[2]]
    b["bundle_signature"]["signature_b64"] = flip_b64(b["bundle_signature"]["signature_b64"])
    code, out, _ = run(["verify", "--json", _write(tmp_path, "x.json", b)], capsys)
    assert code == 1
    entry = json.loads(out)["files"][0]
    assert entry["status"] == "bad_signature"
    assert [r["code"] for r in entry["reasons"]] == ["signature_invalid"]
    assert entry["reasons"][0]["status"] == "bad_signature"


def test_non_json_file_is_malformed(tmp_path, capsys):
    p = tmp_path / "page.html"
    p.write_bytes(b"<html>not json</html>")
    code, out, _ = run(["verify", "--json", str(p)], capsys)
    assert code == 1
    entry = json.loads(out)["files"][0]
    assert entry["status"] == "malformed" and entry["kind"] == "unknown"
    assert entry["reasons"][0]["code"] == "not_strict_json"


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1,"a":2}',
        b"[NaN]",
        b"\xef\xbb\xbf{}",
        b"[" * 5000 + b"]" * 5000,
        b"",
        b'{"x":"\xff"}',
    ],
)
def test_strictly_invalid_files_are_malformed(tmp_path, capsys, data):
    p = tmp_path / "doc.json"
    p.write_bytes(data)
    code, out, _ = run(["verify", "--json", str(p)], capsys)
    assert code == 1
    assert json.loads(out)["files"][0]["reasons"][0]["code"] == "not_strict_json"


def test_json_that_is_no_pith_document(tmp_path, capsys):
    p = tmp_path / "other.json"
    p.write_bytes(b'{"hello":"world"}')
    code, out, _ = run(["verify", "--json", str(p)], capsys)
    assert code == 1
    assert json.loads(out)["files"][0]["reasons"][0]["code"] == "unknown_document"


def test_missing_file_exits_2(tmp_path, seed_paths, capsys):
    missing = tmp_path / "nope.json"
    code, out, err = run(["verify", seed_paths[BUNDLE_SEEDS[0]], str(missing)], capsys)
    assert code == 2
    assert "cannot read" in err and str(missing) in err


def test_directory_argument_exits_2(tmp_path, capsys):
    code, _, err = run(["verify", str(tmp_path)], capsys)
    assert code == 2 and "cannot read" in err


def test_no_files_is_usage_error(capsys):
    code, _, err = run(["verify"], capsys)
    assert code == 2 and "usage" in err.lower()


def test_seeds_fail_when_config_pins_another_key(tmp_path, seed_paths, capsys):
    cfg = tmp_path / "other-key.toml"
    cfg.write_text(TEST_KEY_TOML)
    code, out, _ = run(["verify", "--json", "--config", str(cfg), *seed_paths.values()], capsys)
    assert code == 1
    files = json.loads(out)["files"]
    assert [f["status"] for f in files] == ["bad_signature"] * 5
    assert all("key_not_pinned" in {r["code"] for r in f["reasons"]} for f in files)


def test_forged_bundle_needs_its_key_pinned(tmp_path, capsys):
    path = _write(tmp_path, "forged.json", forge.forge_record(5, 3).bundle())
    code, out, _ = run(["verify", path], capsys)
    assert code == 1 and "key_not_pinned" in out
    cfg = tmp_path / "test-key.toml"
    cfg.write_text(TEST_KEY_TOML)
    code, out, _ = run(["verify", "--config", str(cfg), path], capsys)
    assert code == 0 and out.splitlines()[1].startswith("ok  bundle")


def test_lying_state_bundle_via_cli(tmp_path, capsys):
    path = _write(tmp_path, "lying.json", forge.bundle_with_lying_state(forge.forge_record(6, 3)))
    cfg = tmp_path / "test-key.toml"
    cfg.write_text(TEST_KEY_TOML)
    code, out, _ = run(["verify", "--json", "--config", str(cfg), path], capsys)
    assert code == 1
    entry = json.loads(out)["files"][0]
    assert entry["status"] == "state_mismatch" and [r["code"] for r in entry["reasons"]] == [
        "state_not_merge"
    ]


def test_quiet_prints_nothing_but_keeps_exit_code(tmp_path, seed_paths, capsys):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"{")
    code, out, _ = run(["verify", "-q", seed_paths[BUNDLE_SEEDS[0]], str(bad)], capsys)
    assert code == 1 and out == ""


def test_a_closed_pipe_ends_quietly(seed_paths):
    """`pithsync verify ... | head -1`: no traceback when the reader stops early."""
    import subprocess
    import sys

    many = list(seed_paths.values()) * 400
    proc = subprocess.Popen(
        [sys.executable, "-m", "pithsync", "verify", *many],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert b"Traceback" not in err, err.decode()[-2000:]
    assert proc.returncode in (0, 141)
