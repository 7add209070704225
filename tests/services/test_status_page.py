"""The status page (issue 17, "Publishing"): what `serve` answers at / and `export` writes as
index.html, built from the store's last checks; every value escaped; opened in a real headless
browser, which keeps a screenshot among the test artifacts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest
from synctools import make_config, pull, serving, statuses

from pithsync.config import Config
from pithsync.core.urls import MirrorSpec
from pithsync.observer import load_or_create
from pithsync.publishing import export_tree
from pithsync.publishing.server import build_app
from pithsync.publishing.statuspage import duration, status_page
from pithsync.store import Store
from pithsync.store.publishing import (
    DivergingRecord,
    MirrorOverview,
    MirrorProblem,
    OpenAlertSummary,
    StatusOverview,
)
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer

CHROMIUM = "/usr/bin/chromium"
REPO_ROOT = Path(__file__).resolve().parents[2]
HOSTILE = '<script>alert("x")</script>"q\'&'
BROWSER_TIMEOUT_S = 180  # two cores shared with CPU-bound neighbours: Chromium starts slowly


# -- the page from plain values ----------------------------------------------------------------


def hostile_overview(**kw) -> StatusOverview:
    """An overview whose every mirror-supplied value tries to inject markup."""
    values = dict(
        records=2,
        last_run_finished="2026-12-01T10:00:00.000000Z",
        mirrors=(
            MirrorOverview(
                HOSTILE, 'https://good.example/p?a=1&b="2"', True, {"ok": 2}, None, 0, None
            ),
            MirrorOverview("js", "javascript:alert(1)", False, {"stale": 1}, None, 1, 90.0),
            MirrorOverview("data", "data:text/html,<script>x</script>", True, {}, None, 0, None),
        ),
        diverging_total=1,
        diverging=(
            DivergingRecord(
                "pith:2026:" + "A" * 26,
                "2026-12-01T10:00:00.000000Z",
                (MirrorProblem(HOSTILE, "http://x.example", "stale", (f"not_found: {HOSTILE}",)),),
            ),
        ),
        alerts_total=1,
        alerts=(OpenAlertSummary(1, "divergence", None, None, "2026-12-01T10:00:00Z", HOSTILE),),
    )
    return StatusOverview(**{**values, **kw})


def test_every_value_is_escaped_and_only_http_urls_are_links():
    page = status_page(hostile_overview(), checkpoint=HOSTILE.encode()).decode("utf-8")
    assert "<script" not in page and 'alert("x")' not in page
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&quot;q&#x27;&amp;"
    # name (mirror table, diverging table), reason, alert summary, checkpoint
    assert page.count(escaped) == 5
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert hrefs == ["https://good.example/p?a=1&amp;b=&quot;2&quot;"]
    # the other two URLs are shown, as text
    assert ">javascript:alert(1)</span>" in page
    assert "data:text/html,&lt;script&gt;x&lt;/script&gt;" in page


def test_page_is_self_contained_and_readable_on_a_phone():
    page = status_page(hostile_overview(), checkpoint=None).decode("utf-8")
    assert page.count("<style>") == 1 and "<script" not in page
    assert not re.search(r"\b(src|srcset)=|<link|@import|url\(", page)  # nothing fetched
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "max-width: 72rem" in page
    assert "No checkpoint yet." in page
    assert status_page(hostile_overview(), None) == status_page(hostile_overview(), None)


def test_lists_are_capped_with_their_totals():
    rows = tuple(DivergingRecord(f"pith:2026:{i:026d}", None, ()) for i in range(3))
    page = status_page(
        hostile_overview(diverging_total=250, diverging=rows), checkpoint=None
    ).decode()
    assert "The first 3 of 250 diverging records." in page
    assert page.count('<tr class="diverging">') == 3


def test_lag_and_durations_read_as_people_say_them():
    assert [duration(s) for s in (45, 720, 11100, 190800)] == [
        "45 s",
        "12 min",
        "3 h 5 min",
        "2 d 5 h",
    ]
    page = status_page(hostile_overview(), None).decode()
    assert "1 record, up to 1 min" in page and "up to date" in page


# -- a real store --------------------------------------------------------------------------------


async def diverging_store(tmp_path, a: MirrorServer, b: MirrorServer, c: MirrorServer) -> tuple:
    """r1: b serves a stale copy; r2: the same everywhere; r3: b has none (404).  Mirror c's
    name is hostile.  Returns (config, r1, r2, r3)."""
    r1, r2, r3 = forge.forge_record(31, 3), forge.forge_record(32, 2), forge.forge_record(33, 2)
    for m in (a, c):
        for r in (r1, r2, r3):
            m.put_record(r.bundle())
    b.put_record(r1.bundle(upto=2))
    b.put_record(r2.bundle())
    specs = [a.spec(), b.spec(), MirrorSpec(HOSTILE, c.base_url)]
    cfg = make_config(tmp_path, specs)
    res = await pull(cfg, r1.pith_number, r2.pith_number, r3.pith_number)
    assert statuses(res[r1.pith_number])["lagging"] == "stale"
    assert statuses(res[r3.pith_number])["lagging"] == "missing"
    assert res[r2.pith_number].verdict.value == "in_sync"
    return cfg, r1, r2, r3


@contextlib.asynccontextmanager
async def three_mirrors():
    async with (
        MirrorServer("honest") as a,
        MirrorServer("lagging") as b,
        MirrorServer("hostile") as c,
    ):
        yield a, b, c


def overview_of(cfg: Config, limit: int = 100) -> StatusOverview:
    store = Store.open_reader(cfg.db_path)
    try:
        with store.snapshot():
            return store.status_overview(limit)
    finally:
        store.close()


async def test_overview_reads_statuses_lag_divergence_and_alerts(tmp_path):
    async with three_mirrors() as (a, b, c):
        cfg, r1, r2, r3 = await diverging_store(tmp_path, a, b, c)
    o = overview_of(cfg)
    assert o.records == 3 and o.last_run_finished is not None
    by_name = {m.name: m for m in o.mirrors}
    assert set(by_name) == {"honest", "lagging", HOSTILE}
    assert by_name["honest"].statuses == {"ok": 3} and by_name["honest"].behind == 0
    lagging = by_name["lagging"]
    assert lagging.statuses == {"ok": 1, "stale": 1, "missing": 1}
    assert lagging.behind == 2 and lagging.base_url == b.base_url
    assert lagging.last_checked is not None
    assert [d.pith_number for d in o.diverging] == sorted([r1.pith_number, r3.pith_number])
    assert o.diverging_total == 2
    problems = {d.pith_number: d.mirrors for d in o.diverging}
    assert [(p.name, p.status) for p in problems[r3.pith_number]] == [("lagging", "missing")]
    assert problems[r3.pith_number][0].reasons[0].startswith("not_found: ")
    assert o.alerts_total == 2 and {x.kind for x in o.alerts} == {"divergence"}
    assert {x.pith_number for x in o.alerts} == {r1.pith_number, r3.pith_number}

    # The caps hold, the totals do not move.
    capped = overview_of(cfg, limit=1)
    assert (len(capped.diverging), capped.diverging_total) == (1, 2)
    assert (len(capped.alerts), capped.alerts_total) == (1, 2)

    # Lag: from when the store first held a verified event the mirror was never seen serving,
    # to the mirror's last check of that record.  The events it did serve do not count, however
    # old; nor does r3, whose events it never served but that it lacks whole (404): it counts.
    db = sqlite3.connect(cfg.db_path)
    with db:
        db.execute("update events set first_seen = '2025-01-01T00:00:00.000000Z'")
        third = r1.events[2]["event_id"]
        db.execute(
            "update events set first_seen = '2026-01-01T00:00:00.000000Z' where event_id = ?",
            [third],
        )
        db.execute(
            "update mirror_status set checked_at = '2026-01-01T02:30:00.000000Z'"
            " where mirror = ? and pith_number = ?",
            [b.base_url, r1.pith_number],
        )
        db.execute(
            "update mirror_status set checked_at = '2025-01-01T01:00:00.000000Z'"
            " where mirror = ? and pith_number = ?",
            [b.base_url, r3.pith_number],
        )
    db.close()
    lagging = {m.name: m for m in overview_of(cfg).mirrors}["lagging"]
    assert lagging.lag_s == 2.5 * 3600  # r1's 2 h 30 min, more than r3's 1 h
    assert "2 records, up to 2 h 30 min" in status_page(overview_of(cfg), None).decode()


@contextlib.asynccontextmanager
async def serving_store(cfg: Config):
    """`serve`'s application on a free port of 127.0.0.1."""
    async with serving(build_app(cfg, refresh_s=0)) as base:
        yield base


async def test_serve_answers_the_page_at_root_and_export_writes_it(tmp_path):
    async with three_mirrors() as (a, b, c):
        cfg, r1, _, _ = await diverging_store(tmp_path, a, b, c)
    expected = status_page(overview_of(cfg), None)
    async with serving_store(cfg) as base, aiohttp.ClientSession() as http:
        for path in ("/", "/index.html"):
            async with http.get(base + path) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
                assert resp.headers["Cache-Control"] == "no-cache"
                assert "script-src" not in resp.headers["Content-Security-Policy"]
                assert await resp.read() == expected
        # The mirror paths are where they were.
        async with http.get(f"{base}/pith/{r1.suffix}/bundle.json") as resp:
            assert resp.status == 200 and json.loads(await resp.read())["events"]

    out = tmp_path / "www"
    store = Store.open_reader(cfg.db_path)
    try:
        report = export_tree(store, cfg, str(out), "https://mirror.example")
        assert (out / "index.html").read_bytes() == expected
        again = export_tree(store, cfg, str(out), "https://mirror.example")
    finally:
        store.close()
    assert report["files_written"] == 13  # 3 records x 4 files, and the page
    assert again["files_written"] == 0 and again["files_unchanged"] == 13


# -- in a real browser -------------------------------------------------------------------------


def artifacts_dir() -> Path:
    path = Path(os.environ.get("PITHSYNC_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_chromium() -> None:
    if Path(CHROMIUM).is_file():
        return
    if os.environ.get("PITHSYNC_ALLOW_NO_BROWSER") == "1":
        pytest.skip(f"{CHROMIUM} is missing and PITHSYNC_ALLOW_NO_BROWSER=1")
    pytest.fail(
        f"{CHROMIUM} is missing: install Debian's Chromium (as root: apt-get update &&"
        " apt-get install -y chromium), or set PITHSYNC_ALLOW_NO_BROWSER=1 to skip this test"
    )


async def chromium(tmp_path: Path, *args: str) -> bytes:
    """Run headless Chromium (an argument list, no shell) and return its stdout."""
    profile = tmp_path / "chromium-profile"
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), BROWSER_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


class Rows(HTMLParser):
    """The text of each table row, by the row's class, and every element name seen."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.tags: set[str] = set()
        self._row: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag == "tr":
            self._row = (dict(attrs).get("class") or "", [])

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            cls, parts = self._row
            self.rows.setdefault(cls, []).append(" ".join(" ".join(parts).split()))
            self._row = None

    def handle_data(self, data):
        if self._row is not None:
            self._row[1].append(data)


async def test_status_page_in_headless_chromium(tmp_path):
    require_chromium()
    async with three_mirrors() as (a, b, c):
        cfg, r1, r2, r3 = await diverging_store(tmp_path, a, b, c)
    store = Store.open(cfg.db_path)  # as a run ends: a checkpoint of what the pulls observed
    try:
        note = store.sign_checkpoint(load_or_create(cfg.db_path, None)).decode("utf-8")
    finally:
        store.close()
    async with serving_store(cfg) as base:
        dom = (await chromium(tmp_path, "--dump-dom", base + "/")).decode("utf-8")
        shot = artifacts_dir() / "status-page.png"
        shot.unlink(missing_ok=True)
        await chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", base + "/")

    parsed = Rows()
    parsed.feed(dom)
    assert "script" not in parsed.tags  # the hostile name did not become markup
    mirrors = parsed.rows["mirror"]
    assert len(mirrors) == 3
    row = {r.split(" ")[0]: r for r in mirrors}
    assert row["honest"].startswith(f"honest {a.base_url} ok 3 up to date")
    assert row["lagging"].startswith(f"lagging {b.base_url} stale 1 missing 1 ok 1 2 records")
    assert [r for r in mirrors if r.startswith(HOSTILE)], mirrors  # shown as text, whole
    diverging = parsed.rows["diverging"]
    assert [d.split(" ")[0] for d in diverging] == sorted([r1.pith_number, r3.pith_number])
    assert all(r2.pith_number not in d for d in diverging)
    assert "missing lagging not_found" in " ".join(diverging)
    alerts = parsed.rows["alert"]
    assert len(alerts) == 2 and all(" divergence " in x for x in alerts)
    # The observer's signed checkpoint: its origin, and the tree size the pulls left.
    origin, size = note.splitlines()[:2]
    assert "No checkpoint yet." not in dom
    assert origin in dom and int(size) > 0 and size in dom

    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
