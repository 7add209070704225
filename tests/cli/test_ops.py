"""Operations (issue 4, part B): serve, export, demo, the run lock across processes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
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
from synctools import make_config, pull, run_cli, serving, statuses, write_config

from pithsync import cli, publishing
from pithsync.cli import mirror
from pithsync.core import numbers
from pithsync.core.canonical import canon, sha256hex
from pithsync.core.keys import TrustStore
from pithsync.core.urls import MirrorSpec
from pithsync.publishing.server import CATALOG, build_app
from pithsync.store import Store
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer, bundle_path, state_path, well_known_path

REPO = Path(__file__).resolve().parents[1]


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
            assert {p: r.verdict.value for p, r in res.items()} == {
                r1.pith_number: "in_sync",
                r2.pith_number: "in_sync",
                r3.pith_number: "in_sync",
            }

            # r1: the full bundle (3 events) wins over the stale one, byte for byte.
            async with http.get(base + bundle_path(r1.suffix)) as resp:
                assert resp.status == 200 and resp.content_type == "application/json"
                body, etag, lm = (
                    await resp.read(),
                    resp.headers["ETag"],
                    resp.headers["Last-Modified"],
                )
            assert body == forge.dumps(r1.bundle())
            async with http.get(base + well_known_path(r1.suffix)) as resp:
                assert await resp.read() == body
            async with http.get(
                base + bundle_path(r1.suffix), headers={"If-None-Match": etag}
            ) as resp:
                assert resp.status == 304 and await resp.read() == b""
            async with http.get(
                base + bundle_path(r1.suffix), headers={"If-Modified-Since": lm}
            ) as resp:
                assert resp.status == 304
            async with http.get(
                base + bundle_path(r1.suffix), headers={"If-None-Match": '"other"'}
            ) as resp:
                assert resp.status == 200

            # r2: one of the two split bundles, and exactly its merge beside it (not the stored
            # state).
            async with http.get(base + bundle_path(r2.suffix)) as resp:
                served = json.loads(await resp.read())
            async with http.get(base + state_path(r2.suffix)) as resp:
                state_body = await resp.read()
            assert canon(served) in (canon(split_a), canon(split_b))
            assert json.loads(state_body) == served["state"] and state_body == forge.dumps(
                served["state"]
            )
            assert json.loads(state_body)["state_sha256"] != stored_r2["state_sha256"]

            for path in (
                bundle_path("A" * 26),
                state_path("A" * 26),
                "/pith/not-a-suffix/bundle.json",
            ):
                async with http.get(base + path) as resp:
                    assert resp.status == 404, path

            async with http.get(base + "/pith-mirrors.json") as resp:
                doc = await resp.json()
            m = doc["mirrors"][0]
            assert (
                doc["manifest_type"] == "pith_mirror_manifest" and doc["manifest_version"] == "1.0"
            )
            assert (
                m["base_url"] == base and m["bundle_pattern"] == base + "/pith/{suffix}/bundle.json"
            )
            assert (
                m["state_pattern"] == base + "/pith/{suffix}/state.json"
                and m["well_known_pattern"] == base + "/.well-known/pith/{suffix}/bundle.json"
            )
            assert {k["key_id"] for k in m["public_keys"]} == {
                forge.TEST_KEY.key_id,
                "pith-v1-2026-05",
            }
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
    assert mirror.parse_bind("[::1]:9000") == ("::1", 9000)
    assert mirror.parse_bind(":8080") == ("0.0.0.0", 8080)
    with pytest.raises(cli.UsageError):
        mirror.parse_bind("localhost")


# -- export ------------------------------------------------------------------------------------


async def test_export_round_trip(tmp_path):
    out_dir = tmp_path / "www"
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        origin = make_config(tmp_path / "origin", [a.spec(), b.spec()])
        r1, r2, r3, _, _ = await fill_origin(a, b, origin)
    conf = write_config(tmp_path / "origin.toml", [])
    url = "https://mirror.example.org/pith-data"
    code, out = await run_cli(
        "--config", conf, "--db", origin.db_path, "export", out_dir, "--base-url", url, "--json"
    )
    assert code == 0, out
    report = json.loads(out)
    assert sorted(report["records"]) == sorted([r1.pith_number, r2.pith_number, r3.pith_number])
    assert report["files_written"] == 13 and report["files_unchanged"] == 0  # 3 x 4, the page
    files = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    per_record = ("bundle.json", "state.json", "index.html")  # index.html: the resolver document
    expected = ["pith-mirrors.json", "index.html"]  # index.html at the root: the status page
    expected += [f"pith/{r.suffix}/{n}" for r in (r1, r2, r3) for n in per_record]
    expected += [f".well-known/pith/{r.suffix}/bundle.json" for r in (r1, r2, r3)]
    assert files == sorted(expected)  # no temporary files left behind
    assert all((out_dir / f).stat().st_mode & 0o777 == 0o644 for f in files)
    assert (out_dir / "pith" / r1.suffix / "bundle.json").read_bytes() == forge.dumps(r1.bundle())
    manifest = json.loads((out_dir / "pith-mirrors.json").read_text())
    assert (
        manifest["mirrors"][0]["base_url"] == url
        and manifest["mirrors"][0]["bundle_pattern"] == url + "/pith/{suffix}/bundle.json"
    )

    # Unchanged files are not rewritten (their mtime, a static server's Last-Modified, stays).
    code, out = await run_cli(
        "--config", conf, "--db", origin.db_path, "export", out_dir, "--base-url", url, "--json"
    )
    again = json.loads(out)
    assert code == 0 and again["files_written"] == 0 and again["files_unchanged"] == 13

    async with MirrorServer("static") as static:
        for f in files:
            static.put("/" + f, (out_dir / f).read_bytes())
        replica = make_config(tmp_path / "replica", [static.spec()])
        res = await pull(replica, r1.pith_number, r2.pith_number, r3.pith_number)
    assert {r.verdict.value for r in res.values()} == {"in_sync"} and len(res) == 3

    # Under trust that cannot verify the forged documents nothing is exported.
    untrusting = write_config(tmp_path / "registry-only.toml", [], test_key=False)
    code, out = await run_cli(
        "--config",
        untrusting,
        "--db",
        origin.db_path,
        "export",
        tmp_path / "www2",
        "--base-url",
        url,
        "--json",
    )
    assert (
        code == 0
        and json.loads(out)["records"] == []
        and len(json.loads(out)["not_published"]) == 3
    )
    code, _ = await run_cli(
        "--config",
        conf,
        "--db",
        origin.db_path,
        "export",
        tmp_path / "www3",
        "--base-url",
        "ftp://x",
    )
    assert code == cli.ExitCode.USAGE


# -- demo --------------------------------------------------------------------------------------


def test_demo_subprocess_exits_0_and_shows_verdicts():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "pithsync", "demo"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "in_sync" in out and "diverged" in out
    assert re.search(r"7EWU5DCQS5YPYOCE7L36SQEXQI\s+diverged.*lagging=missing", out), out
    assert re.search(r"MVBWYJXHQT5HUHVFAKRI63NKTK\s+diverged.*tampered=tampered", out), out
    assert "as expected" in out
    raised = [line for line in out.splitlines() if re.match(r"  #\d+ open divergence ", line)]
    assert len(raised) == 2, out
    for line in raised:  # the number is shown once; the summary does not repeat it
        assert len(re.findall(r"pith:2026:[A-Z2-7]{26}", line)) == 1, line


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
    assert seen and all(
        (a[0] if isinstance(a, tuple) else a) in ("127.0.0.1", "localhost", "::1") for a in seen
    ), seen
    assert isinstance(doc["seconds"], float)  # reported, not timed: the benchmark measures speed


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
        patient = write_config(
            tmp_path / "patient.toml", [m.spec()], timeout_s=120, extra=patient_store
        )
        hasty = write_config(
            tmp_path / "hasty.toml",
            [m.spec()],
            timeout_s=5,
            extra="[store]\nlock_timeout_s = 0.3\n",
        )
        code, out = await run_cli("--config", patient, "--db", db, "pull", r.pith_number)
        assert code == 0, out
        # The first sync holds the lock until the test releases its request, however slowly the
        # other runs start on a loaded machine.
        release = asyncio.Event()
        m.fault("delay", path=bundle_path(r.suffix), seconds=300, until=release)

        async def sync(conf):
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "pithsync",
                "--config",
                conf,
                "--db",
                db,
                "sync",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=REPO,
                env=env,
            )

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
        runs = conn.execute(
            "select command, started_at, finished_at, exit_code from runs order by started_at"
        ).fetchall()
    assert [(c, e) for c, _, _, e in runs] == [("pull", 0), ("sync", 0), ("sync", 0)]
    assert runs[2][1] >= runs[1][2], "the waiting sync started before the first one finished"
    code, out = await run_cli("--db", db, "journal", "verify")
    assert code == 0 and "intact" in out


# -- systemd: tests/test_systemd.py ---------------------------------------------------------


def test_only_serve_imports_the_server_side_of_aiohttp():
    # Only `serve` needs the server side of aiohttp; keep it off every other command's start.
    code = (
        "import sys; from pithsync import cli; from pithsync.cli import records; "
        "cli.build_parser(); "
        "assert 'aiohttp.web' not in sys.modules, 'aiohttp.web imported by the CLI'; "
        "from pithsync.publishing import server; assert 'aiohttp.web' in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# -- the resolver page, by the registry's verification recipe ---------------------------------

CURL = shutil.which("curl")
RECIPE_ACCEPT = "Accept: application/ld+json"
BROWSER_ACCEPT = "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
# A title and a licence that need escaping in a page and whose hash needs ensure_ascii=False.
ODD_TITLE = "<script>alert('x')</script> Über & \"Quotes\" 𝔘"


def odd_record() -> forge.ForgedRecord:
    record = forge.make_record(41)
    record["metadata"]["license"] = "https://example.org/Lizenz-ü?a=1&b=<i>"
    paper = {"graph_snapshot": {"paper": {"title": ODD_TITLE}}}
    events = [
        forge.make_event(record, "record_created"),
        forge.make_event(record, "graph_snapshot", paper, created_at="2026-06-10T00:00:00Z"),
    ]
    return forge.ForgedRecord(record, events)


async def curl(*argv: str) -> bytes:
    """The real curl binary, argv as given (no shell), proxies out of the way."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = await asyncio.create_subprocess_exec(
        CURL, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, (argv, err)
    return out


def recipe_sha256(body: bytes) -> str:
    """The registry's recipe: take canonical_record, hash its compact sorted JSON."""
    record = json.loads(body)["canonical_record"]
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stored_canonical_sha256(db_path: str, pith: str) -> str:
    store = Store.open_reader(db_path)
    try:
        return store.record(pith)["canonical_sha256"]
    finally:
        store.close()


@contextlib.asynccontextmanager
async def static_server(directory: Path):
    """Python's own http.server, unmodified, on a free port of 127.0.0.1."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-u",
        "-m",
        "http.server",
        "0",
        "--bind",
        "127.0.0.1",
        "--directory",
        str(directory),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        port = re.search(r" port (\d+)", line)
        assert port, line
        yield f"http://127.0.0.1:{port.group(1)}"
    finally:
        proc.terminate()
        await proc.wait()


async def test_resolver_recipe_works_against_serve_and_a_static_export(tmp_path):
    if CURL is None:
        pytest.skip("the curl binary is not installed: the recipe is a curl command")
    r = odd_record()
    async with MirrorServer("a") as a:
        a.put_record(r.bundle())
        origin = make_config(tmp_path / "origin", [a.spec()])
        await pull(origin, r.pith_number)
        verified = stored_canonical_sha256(origin.db_path, r.pith_number)
        assert verified == sha256hex(canon(r.record))
        url_tail = f"/pith/{r.suffix}"

        async with serving(build_app(origin, refresh_s=0)) as base:
            # The recipe, word for word.
            doc_body = await curl("-sH", RECIPE_ACCEPT, base + url_tail)
            doc = json.loads(doc_body)
            assert recipe_sha256(doc_body) == verified == doc["canonical_sha256"]
            assert numbers.suffix_from_sha256(recipe_sha256(doc_body)) == r.suffix
            assert doc["@context"] and doc["@id"] == base + url_tail
            assert doc["pith_number"] == r.pith_number and doc["name"] == ODD_TITLE
            assert doc["canonical_record"] == r.record
            assert doc["links"]["bundle"] == base + bundle_path(r.suffix)
            assert json.loads(await curl("-sH", "Accept: application/json", base + url_tail)) == doc

            page = (await curl("-sH", BROWSER_ACCEPT, base + url_tail)).decode()
            assert page.startswith("<!doctype html>") and r.pith_number in page
            assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; Über &amp;" in page
            assert "<script" not in page and ODD_TITLE not in page
            headers = (await curl("-sI", "-H", BROWSER_ACCEPT, base + url_tail)).decode().lower()
            assert "content-type: text/html" in headers and "vary: accept" in headers
            for missing in (f"/pith/{'A' * 26}", "/pith/not-a-suffix"):
                code = await curl("-s", "-o", os.devnull, "-w", "%{http_code}", base + missing)
                assert code == b"404", missing

            # The served bundle's links.resolver answers, whoever it names: a bundle signed
            # with this mirror as its base names it whole; any other bundle's resolver path is
            # answered here too.
            own = forge.forge_record(42, 2)
            a.put_record(own.bundle(base_url=base))
            await pull(origin, own.pith_number)
            for rec in (own, r):
                served = json.loads(await curl("-s", base + bundle_path(rec.suffix)))
                resolver = served["links"]["resolver"]
                if rec is own:
                    assert resolver == base + f"/pith/{own.suffix}"
                else:
                    assert resolver == f"https://mirror.test/pith/{rec.suffix}"
                    resolver = base + resolver.removeprefix("https://mirror.test")
                body = await curl("-sH", RECIPE_ACCEPT, resolver)
                assert numbers.suffix_from_sha256(recipe_sha256(body)) == rec.suffix

    # export, served by a plain static server: /pith/{SUFFIX} is a directory there (it holds
    # bundle.json), so the server redirects to /pith/{SUFFIX}/ and the recipe follows it (-L).
    out_dir = tmp_path / "www"
    out_dir.mkdir()
    async with static_server(out_dir) as static:
        code, out = await run_cli(
            "--config",
            write_config(tmp_path / "o.toml", []),
            "--db",
            origin.db_path,
            "export",
            out_dir,
            "--base-url",
            static,
        )
        assert code == 0, out
        status = await curl("-s", "-o", os.devnull, "-w", "%{http_code}", static + url_tail)
        assert status == b"301"
        doc_body = await curl("-sLH", RECIPE_ACCEPT, static + url_tail)
        assert recipe_sha256(doc_body) == verified
        doc = json.loads(doc_body)
        assert doc["@id"] == static + url_tail and doc["name"] == ODD_TITLE
        assert b"<" not in doc_body and b"&" not in doc_body  # inert where labelled text/html
        bundle_body = await curl("-s", doc["links"]["bundle"])
        assert bundle_body == forge.dumps(r.bundle())


@pytest.mark.parametrize(
    "accept, wanted",
    [
        ("application/ld+json", "application/ld+json"),
        ("application/json", "application/json"),
        ("application/json, application/ld+json", "application/ld+json"),
        ("application/ld+json;q=0.5, text/html", None),
        ("text/html;q=0.5, application/ld+json", "application/ld+json"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", None),
        ("*/*", None),
        ("", None),
        (None, None),
        ("application/ld+json;q=0", None),
        ("application/ld+json;q=nan", None),
        ("application/ld+json;q=bogus", None),
    ],
)
def test_resolver_negotiation(accept, wanted):
    assert publishing.wants_json_ld(accept) == wanted
