"""The observation log's leaves kept a record check a row (store/log_leaves.py, issue 16): every
statement comes back byte for byte through a real `serve`, `export`, reads by leaf range and by
record; a check's statements share one small frame; a hostile or corrupted row is a StoreError,
never other bytes; and the schema 9 migration moves a schema 8 log's every leaf exactly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from helpers import log_as_schema8
from synctools import run_cli, serving, write_config

from pithsync import config
from pithsync.core import merkle, numbers
from pithsync.core.canonical import sha256hex
from pithsync.core.observation import Fetch, parse_statement, record_path, statement
from pithsync.core.tlog import Tile, tiles_for_size
from pithsync.observer import load_or_create
from pithsync.publishing.server import build_app
from pithsync.store import SCHEMA_VERSION, Store, StoreError, bodies, log_leaves
from pithsync.store.observations import Leaf
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer


def check(record: forge.ForgedRecord, mirrors: list[str], at: str) -> list[Leaf]:
    """One check of a record: a real statement per mirror asked."""
    pith = numbers.parse_full(record.pith_number)
    events = [e["event_id"] for e in record.bundle()["events"]]
    leaves = []
    for mirror in mirrors:
        fetched = [Fetch(f"{mirror}/pith/{pith.suffix}/bundle.json", 200, sha256hex(at.encode()))]
        stated = statement("observer.test", pith, mirror, fetched, events, "cd" * 32, "ok", at)
        leaves.append(Leaf(record.pith_number, mirror, stated.encode()))
    return leaves


async def build_log(into: Path) -> list[Leaf]:
    """A log as runs write it: a real pull of 30 records from three mirrors (a check of three
    statements each), then three more runs' record groups, each run ending with a signed
    checkpoint (most checks ask the three mirrors, some one), then one check of 70 leaves from
    five more mirrors (more than a row holds).  Returns every leaf, in order: the pull's as it
    stored them, every other as appended."""
    records = [forge.forge_record(600 + i, n_events=2) for i in range(30)]
    db = str(into / "s.db")
    async with MirrorServer("a") as a, MirrorServer("b") as b, MirrorServer("c") as c:
        for record in records:
            for server in (a, b, c):
                server.put_record(record.bundle())
        conf = write_config(into, [a.spec(), b.spec(), c.spec()])
        code, out = await run_cli("--config", conf, "--db", db, "pull",
                                  *[r.pith_number for r in records])  # fmt: skip
        assert code == 0, out
    signer = load_or_create(db)
    with contextlib.closing(Store.open(db)) as store:
        pulled = [parse_statement(s) for s in store.log_statements(0, store.log_size())]
        leaves = [Leaf(str(s.pith_number), s.mirror, s.encode()) for s in pulled]
        mirrors = sorted({leaf.mirror for leaf in leaves})
        assert len(leaves) == 90 and len(mirrors) == 3
        for run in range(3):
            at = f"2026-12-0{run + 1}T00:00:00Z"
            for k in range(0, len(records), 4):  # groups of four records, as a worker sends
                group = []
                for j, record in enumerate(records[k : k + 4]):
                    group += check(record, mirrors if (run + j) % 4 else mirrors[1:2], at)
                with store.group():
                    store.append_statements(group)
                leaves += group
            store.sign_checkpoint(signer)
        big = check(
            records[0], [f"https://big{i % 5}.example" for i in range(70)], "2026-12-09T00:00:00Z"
        )
        with store.group():
            store.append_statements(big)
        store.sign_checkpoint(signer)
    return leaves + big


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, list[Leaf]]:
    into = tmp_path_factory.mktemp("log")
    return into, asyncio.run(build_log(into))


@pytest.fixture
def log(tmp_path, built) -> tuple[str, list[Leaf]]:
    """A copy of the built store (and its observer key), for a test to read or damage."""
    into, leaves = built
    for path in into.iterdir():
        if path.is_file():
            shutil.copy2(path, tmp_path / path.name)
    return str(tmp_path / "s.db"), leaves


def latest_per_mirror(leaves: list[Leaf], pith: str, size: int) -> list[tuple]:
    """(index, mirror, statement) of a record's latest leaf per mirror below `size`, by mirror."""
    latest = {
        leaf.mirror: (i, leaf) for i, leaf in enumerate(leaves[:size]) if leaf.pith_number == pith
    }
    return [(i, m, leaf.statement) for m, (i, leaf) in sorted(latest.items())]


def of_record(leaves: list[Leaf], pith: str, mirror: str | None, limit: int) -> list[tuple]:
    """(index, mirror, statement) of a record's leaves (of one mirror), newest first."""
    found = [
        (i, leaf.mirror, leaf.statement)
        for i, leaf in enumerate(leaves)
        if leaf.pith_number == pith and mirror in (None, leaf.mirror)
    ]
    return found[::-1][:limit]


def entries_of(bundle: bytes) -> list[bytes]:
    """The statements of a tlog entry bundle."""
    out, at = [], 0
    while at < len(bundle):
        n = int.from_bytes(bundle[at : at + 2], "big")
        out.append(bundle[at + 2 : at + 2 + n])
        at += 2 + n
    return out


async def test_every_statement_comes_back_byte_exact_through_serve_and_export(tmp_path, log):
    db, leaves = log
    statements = [leaf.statement for leaf in leaves]
    size = len(leaves)
    conf = write_config(tmp_path, [])
    cfg = config.replace_db(config.load(conf), db)
    records = sorted({leaf.pith_number for leaf in leaves})
    served: dict[str, bytes] = {}
    async with serving(build_app(cfg, refresh_s=0)) as base, aiohttp.ClientSession() as http:
        for tile in [t for t in tiles_for_size(size) if t.level == 0]:
            path = f"log/{tile.entries_path()}"
            async with http.get(f"{base}/{path}") as resp:
                assert resp.status == 200
                served[path] = await resp.read()
            start, end = tile.leaf_range()
            assert entries_of(served[path]) == statements[start:end]
        for pith in records:
            path = record_path(numbers.parse_full(pith))
            async with http.get(f"{base}/{path}") as resp:
                assert resp.status == 200
                served[path] = await resp.read()
            got = [
                (s["index"], s["statement"].encode())
                for s in json.loads(served[path])["statements"]
            ]
            want = [(i, s) for i, _, s in latest_per_mirror(leaves, pith, size)]
            assert got == want, pith
    code, out = await run_cli("--config", conf, "--db", db, "export", str(tmp_path / "out"),
                              "--base-url", "https://observer.example")  # fmt: skip
    assert code == 0, out
    for path, body in served.items():
        assert (tmp_path / "out" / path).read_bytes() == body, path


def test_reads_by_leaf_range_and_by_record_give_the_statements_appended(log):
    db, leaves = log
    statements = [leaf.statement for leaf in leaves]
    size = len(leaves)
    with contextlib.closing(Store.open_reader(db)) as store:
        assert store.log_size() == size
        ranges = [(0, size), (0, 1), (2, 5), (89, 92), (100, 229), (size - 70, size),
                  (size - 65, size - 63), (size - 1, size + 5), (size, size + 3)]  # fmt: skip
        for start, end in ranges:
            assert store.log_statements(start, end) == statements[start:end], (start, end)
        assert store.log_root(size) == merkle.root([merkle.leaf_hash(s) for s in statements])
        assert store.log_entries(Tile(0, 0, 256)) == b"".join(
            len(s).to_bytes(2, "big") + s for s in statements[:256]
        )
        checked = sorted({leaf.pith_number for leaf in leaves})[:5] + [leaves[-1].pith_number]
        for pith in checked:  # five records, and the one with the 70 leaves' check
            mirrors = sorted({leaf.mirror for leaf in leaves if leaf.pith_number == pith})
            for mirror in (None, *mirrors, "https://never.example"):
                for limit in (1, 4, 500):
                    assert store.statements_of(pith, mirror, limit) == of_record(
                        leaves, pith, mirror, limit
                    ), (pith, mirror, limit)
            # Under any size, one that cuts a row too: the latest statement per mirror below it.
            for cut in (1, 2, 3, 100, 227, size - 69, size - 10, size):
                got = log_leaves.latest_of(store.db, pith, cut)
                assert got == latest_per_mirror(leaves, pith, cut), (pith, cut)


def zstd_alone():
    import zstandard

    return zstandard.ZstdCompressor(level=1, dict_data=bodies.dictionary(bodies.STATEMENTS))


def test_a_record_check_is_one_row_of_one_small_frame(log):
    db, leaves = log
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select first_leaf, mirrors, statements from log_checks").fetchall()
    checks = 30 + 30 * 3 + 2  # a row a check; the 70 leaves' check in rows of 64 and 6
    assert len(rows) == checks and sum(len(m) // 2 for _, m, _ in rows) == len(leaves)
    alone = zstd_alone()
    for first, mirrors, blob in rows:
        kept = [leaf.statement for leaf in leaves[first : first + len(mirrors) // 2]]
        if len(kept) == 3:  # the three mirrors' statements, together: well under half alone
            assert len(blob) < 0.5 * sum(len(alone.compress(s)) for s in kept)


def _damage(conn: sqlite3.Connection, how: str) -> int:
    """Edit the newest row of a check of three mirrors (its record's latest statements);
    returns its first leaf."""
    first, mirrors, blob = conn.execute(
        "select first_leaf, mirrors, statements from log_checks where length(mirrors) = 6"
        " order by first_leaf desc limit 1"
    ).fetchone()
    framed = bodies.expand(blob)
    edits = {
        "flipped": ("statements", blob[:20] + bytes([blob[20] ^ 1]) + blob[21:]),
        "truncated": ("statements", blob[:-5]),
        "fewer_statements": ("statements", bodies.compress_statements([b"one", b"two"])),
        "length_past_the_end": ("statements", bodies.compress(framed[:-1])),
        "more_bytes": ("statements", bodies.compress(framed + b"\x00")),
        "not_a_blob": ("statements", "text"),
        "mirror_ids_cut": ("mirrors", mirrors[:-1]),
        "unknown_mirror": ("mirrors", mirrors[:-2] + b"\x7f\x7f"),
        "rows_overlap": ("first_leaf", first - 1),
    }
    column, value = edits[how]
    conn.execute(f"update log_checks set {column} = ? where first_leaf = ?", [value, first])
    return first


@pytest.mark.parametrize(
    "how",
    ["flipped", "truncated", "fewer_statements", "length_past_the_end", "more_bytes",
     "not_a_blob", "mirror_ids_cut", "unknown_mirror", "rows_overlap"],
)  # fmt: skip
def test_a_hostile_or_corrupted_row_is_a_store_error_never_other_bytes(log, how):
    db, leaves = log
    with sqlite3.connect(db) as conn:
        first = _damage(conn, how)
    pith = leaves[first].pith_number
    with contextlib.closing(Store.open_reader(db)) as store:
        if how != "unknown_mirror":  # the leaves' bytes do not depend on their mirrors' names
            with pytest.raises(StoreError):
                store.log_statements(0, len(leaves))
            with pytest.raises(StoreError):
                store.log_entries(Tile(0, first // 256, 256))
            with pytest.raises(StoreError):
                store.log_root(len(leaves))
        if how != "rows_overlap":  # a record's rows alone do not show it; its proofs do
            with pytest.raises(StoreError):
                store.statements_of(pith, None, 500)
        with pytest.raises(StoreError):
            store.observed_record(pith)


async def test_the_schema_9_migration_moves_every_leaf_byte_exact(log):
    db, leaves = log
    with contextlib.closing(Store.open_reader(db)) as store:
        size = store.log_size()
        root = store.log_root(size)
        records = sorted({leaf.pith_number for leaf in leaves})
        observed = {p: store.observed_record(p) for p in records}
        recent = {p: store.statements_of(p, None, 500) for p in records}
        checkpoint = store.observer_checkpoint()
    with sqlite3.connect(db) as conn:  # back to what schema 8 wrote, a run per group of 37
        log_as_schema8(conn, run_of=lambda index: f"run-{index // 37}")
        conn.execute("update meta set value = '8' where key = 'schema_version'")
        assert conn.execute("select count(*) from log_statements").fetchone()[0] == size
    with contextlib.closing(Store.open(db)) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.log_size() == size and store.log_root(size) == root
        assert store.log_statements(0, size) == [leaf.statement for leaf in leaves]
        assert {p: store.observed_record(p) for p in records} == observed
        assert {p: store.statements_of(p, None, 500) for p in records} == recent
        assert store.observer_checkpoint() == checkpoint
        tables = {r[0] for r in store.db.execute("select name from sqlite_master")}
        assert "log_statements" not in tables and "log_statements_record" not in tables
        rows = store.db.execute("select count(*) from log_checks").fetchone()[0]
    assert rows < size / 2  # checks' leaves kept together again, runs apart


@pytest.mark.parametrize("damage", ["statement", "gap"])
async def test_the_schema_9_migration_refuses_a_corrupt_schema_8_log(log, damage):
    db, leaves = log
    with sqlite3.connect(db) as conn:
        log_as_schema8(conn)
        conn.execute("update meta set value = '8' where key = 'schema_version'")
        if damage == "statement":
            conn.execute("update log_statements set statement = x'00' where leaf_index = 5")
        else:
            conn.execute("delete from log_statements where leaf_index = 5")
        before = conn.execute("select * from log_statements order by 1").fetchall()
    with pytest.raises(StoreError):
        Store.open(db).close()
    with sqlite3.connect(db) as conn:  # left as it was: schema 8, its log untouched
        assert conn.execute("select value from meta where key = 'schema_version'").fetchone() == (
            "8",
        )
        assert conn.execute("select * from log_statements order by 1").fetchall() == before
        tables = {r[0] for r in conn.execute("select name from sqlite_master")}
        assert "log_checks" not in tables


def test_a_mirror_past_the_ids_a_row_can_hold_is_a_store_error(tmp_path):
    # Mirror ids are 2 bytes: the 65,536th mirror the log names stops the write with a
    # StoreError (a clean exit 4), not an OverflowError from int.to_bytes.
    record = forge.forge_record(690, n_events=2)
    with contextlib.closing(Store.open(str(tmp_path / "s.db"))) as store:
        store.db.execute("insert into log_mirrors (id, mirror) values (65535, 'http://last')")
        log_leaves.write(store.db, 0, check(record, ["http://last"], "2026-12-07T00:00:00Z"))
        with pytest.raises(StoreError, match="65,535 mirrors"):
            later = check(record, ["http://one-more"], "2026-12-07T00:00:01Z")
            log_leaves.write(store.db, 1, later)
