"""Operations (issue 4, part B): serve, export, demo, the run lock across processes, systemd units."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from synctools import make_config, pull, run_cli, statuses, write_config
from pithsync import cli, ops
from pithsync.serving import CATALOG, build_app
from pithsync.core.canonical import canon
from pithsync.core.keys import TrustStore
from pithsync.core.urls import MirrorSpec
from pithsync.store import Store
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer, bundle_path, state_path, well_known_path

REPO = Path(__file__).resolve().parents[1]
SYSTEMD = REPO / "systemd"


@contextlib.asynccontextmanager
async def serving(app: web.Application):
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def records():
    """r1: full on a, stale on b.  r2: a and b each hold a different later event, so the store's
    state merges 3 events while no single signed bundle has them all.  r3: the same everywhere."""
    r1, r2, r3 = forge.forge_record(11, 3), forge.forge_record(12, 3), forge.forge_record(13, 2)
    split_a = forge.make_bundle(r2.record, [r2.events[0], r2.events[1]])
    split_b = forge.make_bundle(r2.record, [r2.events[0], r2.events[2]])
    return r1, r2, r3, split_a, split_b


async def fill_origin(a: MirrorServer, b: MirrorServer, cfg) -> tuple:
    r1, r2, r3, split_a, split_b = records()
    a.put_record(r1.bundle())
    b.put_record(r1.bundle(upto=2))
    a.put_record(split_a)
    b.put_record(split_b)
    a.put_record(r3.bundle())
    b.put_record(r3.bundle())
    res = await pull(cfg, r1.pith_number, r2.pith_number, r3.pith_number)
    assert statuses(res[r1.pith_number]) == {"a": "ok", "b": "stale"}
    assert statuses(res[r2.pith_number]) == {"a": "stale", "b": "stale"}
    assert res[r3.pith_number].verdict.value == "in_sync"
    return r1, r2, r3, split_a, split_b


# -- serve -------------------------------------------------------------------------------------


async def test_serve_round_trip_second_pithsync_sees_in_sync(tmp_path):
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        origin = make_config(tmp_path / "origin", [a.spec(), b.spec()])
        r1, r2, r3, split_a, split_b = await fill_origin(a, b, origin)
        store = Store.open(origin.db_path)
        stored_r2 = json.loads(store.record(r2.pith_number)["state"])
        store.close()
        assert stored_r2["event_count"] == 3  # more than any one bundle proves

        async with serving(build_app(origin, refresh_s=0)) as base, aiohttp.ClientSession() as http:
            replica = make_config(tmp_path / "replica", [MirrorSpec("served", base)])
            res = await pull(replica, r1.pith_number, r2.pith_number, r3.pith_number)
            assert {p: r.verdict.value for p, r in res.items()} == {r1.pith_number: "in_sync", r2.pith_number: "in_sync", r3.pith_number: "in_sync"}

            # r1: the full bundle (3 events) wins over the stale one, byte for byte.
            async with http.get(base + bundle_path(r1.suffix)) as resp:
                assert resp.status == 200 and resp.content_type == "application/json"
                body, etag, lm = await resp.read(), resp.headers["ETag"], resp.headers["Last-Modified"]
            assert body == forge.dumps(r1.bundle())
            async with http.get(base + well_known_path(r1.suffix)) as resp:
                assert await resp.read() == body
            async with http.get(base + bundle_path(r1.suffix), headers={"If-None-Match": etag}) as resp:
                assert resp.status == 304 and await resp.read() == b""
            async with http.get(base + bundle_path(r1.suffix), headers={"If-Modified-Since": lm}) as resp:
                assert resp.status == 304
            async with http.get(base + bundle_path(r1.suffix), headers={"If-None-Match": '"other"'}) as resp:
                assert resp.status == 200

            # r2: one of the two split bundles, and exactly its merge beside it (not the stored state).
            async with http.get(base + bundle_path(r2.suffix)) as resp:
                served = json.loads(await resp.read())
            async with http.get(base + state_path(r2.suffix)) as resp:
                state_body = await resp.read()
            assert canon(served) in (canon(split_a), canon(split_b))
            assert json.loads(state_body) == served["state"] and state_body == forge.dumps(served["state"])
            assert json.loads(state_body)["state_sha256"] != stored_r2["state_sha256"]

            for path in (bundle_path("A" * 26), state_path("A" * 26), "/pith/not-a-suffix/bundle.json"):
                async with http.get(base + path) as resp:
                    assert resp.status == 404, path

            async with http.get(base + "/pith-mirrors.json") as resp:
                doc = await resp.json()
            m = doc["mirrors"][0]
            assert doc["manifest_type"] == "pith_mirror_manifest" and doc["manifest_version"] == "1.0"
            assert m["base_url"] == base and m["bundle_pattern"] == base + "/pith/{suffix}/bundle.json"
            assert m["state_pattern"] == base + "/pith/{suffix}/state.json" and m["well_known_pattern"] == base + "/.well-known/pith/{suffix}/bundle.json"
            assert {k["key_id"] for k in m["public_keys"]} == {forge.TEST_KEY.key_id, "pith-v1-2026-05"}
            assert m["public_key"]["fingerprint_sha256_hex"] == forge.TEST_KEY.fingerprint

            # A record the origin syncs while we serve appears without a restart.
            r4 = forge.forge_record(14, 2)
            async with http.get(base + bundle_path(r4.suffix)) as resp:
                assert resp.status == 404
            a.put_record(r4.bundle())
            b.put_record(r4.bundle())
            await pull(origin, r4.pith_number)
            async with http.get(base + bundle_path(r4.suffix)) as resp:
                assert resp.status == 200 and await resp.read() == forge.dumps(r4.bundle())

    replica_store = Store.open(replica.db_path)
    try:
        assert json.loads(replica_store.record(r1.pith_number)["state"]) == r1.bundle()["state"]
    finally:
        replica_store.close()


async def test_serve_publishes_only_what_the_pinned_keys_verify(tmp_path):
    async with MirrorServer("a") as a:
        r = forge.forge_record(21, 2)
        a.put_record(r.bundle())
        origin = make_config(tmp_path, [a.spec()])
        await pull(origin, r.pith_number)
    # Same store, served under a configuration that pins only the registry key.
    registry_only = make_config(tmp_path, [a.spec()], trust=TrustStore.registry_default())
    app = build_app(registry_only, refresh_s=0)
    async with serving(app) as base, aiohttp.ClientSession() as http:
        async with http.get(base + bundle_path(r.suffix)) as resp:
            assert resp.status == 404
        assert r.pith_number in app[CATALOG].rejected


async def test_serve_without_store_exits_2_and_parse_bind(tmp_path, capsys):
    code, _ = await run_cli("--db", tmp_path / "none.db", "serve", "--bind", "127.0.0.1:0")
    assert code == cli.ExitCode.USAGE
    assert "no store at" in capsys.readouterr().err
    assert ops.parse_bind("[::1]:9000") == ("::1", 9000)
    assert ops.parse_bind(":8080") == ("0.0.0.0", 8080)
    with pytest.raises(cli.UsageError):
        ops.parse_bind("localhost")


# -- export ------------------------------------------------------------------------------------


async def test_export_round_trip(tmp_path):
    out_dir = tmp_path / "www"
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        origin = make_config(tmp_path / "origin", [a.spec(), b.spec()])
        r1, r2, r3, _, _ = await fill_origin(a, b, origin)
    conf = write_config(tmp_path / "origin.toml", [])
    url = "https://mirror.example.org/pith-data"
    code, out = await run_cli("--config", conf, "--db", origin.db_path, "export", out_dir, "--base-url", url, "--json")
    assert code == 0, out
    report = json.loads(out)
    assert sorted(report["records"]) == sorted([r1.pith_number, r2.pith_number, r3.pith_number])
    assert report["files_written"] == 9 and report["files_unchanged"] == 0
    files = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    expected = ["pith-mirrors.json"] + [f"pith/{r.suffix}/{n}" for r in (r1, r2, r3) for n in ("bundle.json", "state.json")] + [f".well-known/pith/{r.suffix}/bundle.json" for r in (r1, r2, r3)]
    assert files == sorted(expected)  # no temporary files left behind
    assert all((out_dir / f).stat().st_mode & 0o777 == 0o644 for f in files)
    assert (out_dir / "pith" / r1.suffix / "bundle.json").read_bytes() == forge.dumps(r1.bundle())
    manifest = json.loads((out_dir / "pith-mirrors.json").read_text())
    assert manifest["mirrors"][0]["base_url"] == url and manifest["mirrors"][0]["bundle_pattern"] == url + "/pith/{suffix}/bundle.json"

    # Unchanged files are not rewritten (their mtime, a static server's Last-Modified, stays).
    code, out = await run_cli("--config", conf, "--db", origin.db_path, "export", out_dir, "--base-url", url, "--json")
    assert code == 0 and json.loads(out)["files_written"] == 0 and json.loads(out)["files_unchanged"] == 9

    async with MirrorServer("static") as static:
        for f in files:
            static.put("/" + f, (out_dir / f).read_bytes())
        replica = make_config(tmp_path / "replica", [static.spec()])
        res = await pull(replica, r1.pith_number, r2.pith_number, r3.pith_number)
    assert {r.verdict.value for r in res.values()} == {"in_sync"} and len(res) == 3

    # Under trust that cannot verify the forged documents nothing is exported.
    untrusting = write_config(tmp_path / "registry-only.toml", [], test_key=False)
    code, out = await run_cli("--config", untrusting, "--db", origin.db_path, "export", tmp_path / "www2", "--base-url", url, "--json")
    assert code == 0 and json.loads(out)["records"] == [] and len(json.loads(out)["not_published"]) == 3
    code, _ = await run_cli("--config", conf, "--db", origin.db_path, "export", tmp_path / "www3", "--base-url", "ftp://x")
    assert code == cli.ExitCode.USAGE


# -- demo --------------------------------------------------------------------------------------


def test_demo_subprocess_exits_0_and_shows_verdicts():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pithsync", "demo"], capture_output=True, text=True, timeout=30, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "in_sync" in out and "diverged" in out
    assert re.search(r"7EWU5DCQS5YPYOCE7L36SQEXQI\s+diverged.*lagging=missing", out), out
    assert re.search(r"MVBWYJXHQT5HUHVFAKRI63NKTK\s+diverged.*tampered=tampered", out), out
    assert "as expected" in out


async def test_demo_json_stays_on_loopback(monkeypatch):
    """In-process, with every outgoing connection and name lookup watched: only 127.0.0.1."""
    seen: list = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self, address):
        seen.append(address)
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1"):
            raise OSError(f"test forbids a connection to {address}")
        return real_connect(self, address)

    def getaddrinfo(host, *a, **kw):
        seen.append(host)
        if host not in ("127.0.0.1", "localhost", "::1", None):
            raise OSError(f"test forbids resolving {host}")
        return real_getaddrinfo(host, *a, **kw)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    code, out = await run_cli("demo", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["as_expected"] is True and doc["pull_exit_code"] == 1
    assert sorted(doc["verdicts"].values()) == ["diverged", "diverged", "in_sync", "in_sync"]
    assert doc["verdicts"] == doc["expected"]
    assert all(n > 0 for n in doc["requests"].values())
    assert doc["store"] is None  # temporary store, removed
    assert seen and all((a[0] if isinstance(a, tuple) else a) in ("127.0.0.1", "localhost", "::1") for a in seen), seen
    assert doc["seconds"] < 5


# -- one run at a time -------------------------------------------------------------------------


def _holds_open(pid: int, path: str) -> bool:
    """Whether process `pid` has `path` open (Linux /proc)."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        links = [os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir)]
    except OSError:
        return False
    return os.path.realpath(path) in links


async def test_concurrent_syncs_wait_or_refuse_and_store_stays_sound(tmp_path):
    r = forge.forge_record(31, 2)
    db = str(tmp_path / "s.db")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    async with MirrorServer("slow") as m:
        m.put_record(r.bundle())
        patient_store = "[store]\nlock_timeout_s = 120\n"
        patient = write_config(tmp_path / "patient.toml", [m.spec()], timeout_s=120,
                               extra=patient_store)
        hasty = write_config(tmp_path / "hasty.toml", [m.spec()], timeout_s=5, extra="[store]\nlock_timeout_s = 0.3\n")
        code, out = await run_cli("--config", patient, "--db", db, "pull", r.pith_number)
        assert code == 0, out
        # The first sync holds the lock until the test releases its request, however slowly the
        # other runs start on a loaded machine.
        release = asyncio.Event()
        m.fault("delay", path=bundle_path(r.suffix), seconds=300, until=release)

        async def sync(conf):
            return await asyncio.create_subprocess_exec(sys.executable, "-m", "pithsync", "--config", conf, "--db", db, "sync", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO, env=env)

        first = await sync(patient)
        deadline = time.monotonic() + 60
        while m.count(bundle_path(r.suffix)) < 2:  # the pull's request, then the first sync's
            assert time.monotonic() < deadline, "first sync never reached the mirror"
            await asyncio.sleep(0.02)
        refused = await sync(hasty)
        ref_out, ref_err = await refused.communicate()
        waiting = await sync(patient)
        while not _holds_open(waiting.pid, db + ".lock"):  # it is waiting for the lock now
            assert time.monotonic() < deadline and waiting.returncode is None, "never waited"
            await asyncio.sleep(0.02)
        release.set()
        first_out, first_err = await first.communicate()
        wait_out, wait_err = await waiting.communicate()

    assert refused.returncode == cli.ExitCode.STORE, (ref_out, ref_err)
    assert b"another pithsync run holds" in ref_err and b"gave up after 0.3s" in ref_err
    assert first.returncode == 0, first_err
    assert waiting.returncode == 0, wait_err
    assert m.count(bundle_path(r.suffix)) == 3  # the refused run never fetched anything

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        runs = conn.execute("select command, started_at, finished_at, exit_code from runs order by started_at").fetchall()
    assert [(c, e) for c, _, _, e in runs] == [("pull", 0), ("sync", 0), ("sync", 0)]
    assert runs[2][1] >= runs[1][2], "the waiting sync started before the first one finished"
    code, out = await run_cli("--db", db, "journal", "verify")
    assert code == 0 and "intact" in out


# -- systemd -----------------------------------------------------------------------------------


def unit_directives(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_systemd_units_verify(tmp_path):
    sync = unit_directives(SYSTEMD / "pithsync-sync.service")
    timer = unit_directives(SYSTEMD / "pithsync-sync.timer")
    serve = unit_directives(SYSTEMD / "pithsync-serve.service")
    assert sync["Type"] == ["oneshot"] and sync["ExecStart"] == ["/usr/local/bin/pithsync sync"]
    assert sync["User"] == ["pithsync"] and sync["Group"] == ["pithsync"] and "DynamicUser" not in sync
    assert sync["StateDirectory"] == ["pithsync"]
    assert "PITHSYNC_CONFIG=/etc/pithsync/pithsync.toml" in sync["Environment"]
    assert "PITHSYNC_DB=/var/lib/pithsync/pithsync.db" in sync["Environment"]
    for unit in (sync, serve):
        for key, value in {"ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX"}.items():
            assert unit[key] == [value], key
    assert sync["SuccessExitStatus"] == ["1"]  # divergence is reported by [alerts], not a unit failure
    assert timer["Persistent"] == ["true"] and timer["OnCalendar"] and timer["RandomizedDelaySec"]
    assert serve["ExecStart"][0].startswith("/usr/local/bin/pithsync serve")

    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed")
    # The units name /usr/local/bin/pithsync, which this machine may not have: point them at
    # an executable that exists so verify checks everything else.
    exe = shutil.which("pithsync", path=str(Path(sys.executable).parent)) or sys.executable
    for unit in SYSTEMD.iterdir():
        (tmp_path / unit.name).write_text(unit.read_text().replace("/usr/local/bin/pithsync", exe))
    proc = subprocess.run([tool, "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr


def test_only_serve_imports_the_server_side_of_aiohttp():
    # 20 ms of every start (a timer-driven sync, a pull) went to importing aiohttp.web.
    code = (
        "import sys; from pithsync import cli, commands; cli.build_parser(); "
        "assert 'aiohttp.web' not in sys.modules, 'aiohttp.web imported by the CLI'; "
        "from pithsync import serving; assert 'aiohttp.web' in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
