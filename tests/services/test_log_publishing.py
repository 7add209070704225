"""The observer's log published (issue #17): `serve` answers log/checkpoint, tiles, entry
bundles and record files from a real server on 127.0.0.1; a client verifies all of it with
only the observer's verifier key; `export` writes the same bytes."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import aiohttp
from synctools import run_cli, serving, write_config

from pithsync import config
from pithsync.core import merkle
from pithsync.core.numbers import parse_full
from pithsync.core.observation import parse_statement, record_path, statement
from pithsync.core.tlog import open_checkpoint, parse_tile_path, tiles_for_size
from pithsync.observer import load_or_create
from pithsync.publishing.server import build_app
from pithsync.store import Store
from pithsync.store.observations import Leaf
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer


def grow_log(db: str, pith_number: str, n: int) -> None:
    """`n` more statements about the record, from seven more mirrors, and a new signed
    checkpoint, so that the tree has full and partial tiles on two levels."""
    signer = load_or_create(db)
    store = Store.open(db)
    try:
        leaves = []
        for i in range(n):
            pith = parse_full(pith_number)
            s = statement(signer.name, pith, f"https://m{i % 7}.example", [], [], None, "missing",
                          "2026-01-01T00:00:00Z")  # fmt: skip
            leaves.append(Leaf(str(pith), s.mirror, s.encode()))
        with store.group():
            store.append_statements(leaves)
        store.sign_checkpoint(signer)
    finally:
        store.close()


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes, dict]:
    async with http.get(url) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def test_serve_and_export_the_verifiable_log(tmp_path):
    record = forge.forge_record(21, n_events=3)
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        b.put_record(record.bundle(upto=2))
        conf = write_config(tmp_path, [a.spec(), b.spec()])
        db = str(tmp_path / "s.db")
        assert (await run_cli("--config", conf, "--db", db, "pull", record.pith_number))[0] == 1
    grow_log(
        db, record.pith_number, 600
    )  # 602 leaves: tiles 0/000, 0/001, 0/002.p/90 and 1/000.p/2
    vkey = load_or_create(db).verifier_key
    cfg = config.replace_db(config.load(conf), db)

    served: dict[str, bytes] = {}
    async with serving(build_app(cfg, refresh_s=0)) as base, aiohttp.ClientSession() as http:
        status, note, headers = await get(http, f"{base}/log/checkpoint")
        assert status == 200 and headers["Content-Type"] == "text/plain; charset=utf-8"
        checkpoint, _ = open_checkpoint(note, [vkey], origin=vkey.name)
        assert checkpoint.size == 602
        served["log/checkpoint"] = note

        tiles = tiles_for_size(checkpoint.size)
        assert {t.level for t in tiles} == {0, 1} and any(t.is_partial for t in tiles)
        leaf_hashes, statements = [], []
        for tile in tiles:
            status, body, headers = await get(http, f"{base}/log/{tile.path()}")
            assert status == 200 and len(body) == 32 * tile.width
            immutable = "immutable" in headers["Cache-Control"]
            assert immutable == (not tile.is_partial)
            served[f"log/{tile.path()}"] = body
            if tile.level == 0:
                leaf_hashes += [body[i : i + 32] for i in range(0, len(body), 32)]
                status, bundle, _ = await get(http, f"{base}/log/{tile.entries_path()}")
                assert status == 200
                served[f"log/{tile.entries_path()}"] = bundle
                at = 0
                while at < len(bundle):
                    n = int.from_bytes(bundle[at : at + 2], "big")
                    statements.append(bundle[at + 2 : at + 2 + n])
                    at += 2 + n
        # The tree recomputed from the entries is the one the tiles and the checkpoint give.
        assert [merkle.leaf_hash(s) for s in statements] == leaf_hashes
        assert merkle.root(leaf_hashes) == checkpoint.root_hash
        level1 = served["log/tile/1/000.p/2"]
        assert level1 == merkle.root(leaf_hashes[:256]) + merkle.root(leaf_hashes[256:512])

        # The record's file: its latest statement per mirror, each proven under the checkpoint.
        path = record_path(parse_full(record.pith_number))
        status, body, _ = await get(http, f"{base}/{path}")
        assert status == 200
        served[path] = body
        doc = json.loads(body)
        assert doc["type"] == "pithsync.observed-record/v1"
        assert doc["pith_number"] == record.pith_number
        under, _ = open_checkpoint(doc["checkpoint"].encode(), [vkey])
        assert under == checkpoint
        mirrors = []
        for item in doc["statements"]:
            data = item["statement"].encode()
            proof = [base64.b64decode(h) for h in item["proof"]]
            merkle.verify_inclusion(
                merkle.leaf_hash(data), item["index"], under.size, proof, under.root_hash
            )
            mirrors.append(parse_statement(data).mirror)
        fillers = [f"https://m{i}.example" for i in range(7)]
        assert mirrors == sorted([a.base_url, b.base_url, *fillers])
        # The latest statement per mirror: the pull's two, and each filler mirror's last one.
        assert sorted(item["index"] for item in doc["statements"]) == [0, 1, *range(595, 602)]

        # What does not exist is 404: a tile beyond the tree, a partial tile at another width,
        # a non-canonical path, an unknown record.
        for missing in (
            "log/tile/0/003", "log/tile/0/002", "log/tile/0/002.p/89", "log/tile/0/002.p/91",
            "log/tile/1/000", "log/tile/0/0", "log/tile/entries/003", "log/tile/2/000.p/1",
            "log/records/" + "A" * 26 + ".json", "log/records/x.json", "log/nothing",
        ):  # fmt: skip
            assert (await get(http, f"{base}/{missing}"))[0] == 404, missing

        # `export` writes the same files, byte for byte: each one is what serve answers.
        code, _ = await run_cli("--config", conf, "--db", db, "export", str(tmp_path / "out"),
                                "--base-url", "https://observer.example")  # fmt: skip
        assert code == 0
        exported = {
            str(p.relative_to(tmp_path / "out")): p.read_bytes()
            for p in (tmp_path / "out" / "log").rglob("*")
            if p.is_file()
        }
        assert exported == served
        for path, body in exported.items():
            assert (await get(http, f"{base}/{path}"))[1] == body, path


async def test_no_checkpoint_no_log(tmp_path):
    db = str(tmp_path / "s.db")
    Store.open(db).close()
    conf = write_config(tmp_path, [])
    cfg = config.replace_db(config.load(conf), db)
    async with serving(build_app(cfg, refresh_s=0)) as base, aiohttp.ClientSession() as http:
        assert (await get(http, f"{base}/log/checkpoint"))[0] == 404
        assert (await get(http, f"{base}/log/tile/0/000.p/1"))[0] == 404
    code, _ = await run_cli("--config", conf, "--db", db, "export", str(tmp_path / "out"),
                            "--base-url", "https://observer.example")  # fmt: skip
    assert code == 0 and (tmp_path / "out").is_dir()
    assert not Path(tmp_path / "out" / "log").exists()


def test_tile_paths_served_are_the_canonical_ones():
    for tile in tiles_for_size(70_000):
        assert parse_tile_path(tile.path()) == tile
