"""The observation log in the store (issue #17): leaves with their subtree hashes, appended
atomically with a record's group; roots, proofs and tiles from stored hashes agree with
core.merkle and core.tlog over every leaf recomputed from the stored statements."""

from __future__ import annotations

import random
import sqlite3

import pytest

from pithsync.core import merkle
from pithsync.core.tlog import TILE_WIDTH, Tile, TileError, tile_hashes, tiles_for_size
from pithsync.store import Store
from pithsync.store.observations import Leaf


def leaves(start: int, n: int) -> list[Leaf]:
    return [Leaf("pith:2026:X", f"https://m{i % 3}.example", b"statement %d" % i)
            for i in range(start, start + n)]  # fmt: skip


def grow(store: Store, sizes: list[int], *, batch_records: int = 1000) -> None:
    """Append groups of the given sizes, as a run's record groups do."""
    done = store.log_size()
    for n in sizes:
        with store.group(batch_records=batch_records):
            store.append_statements(leaves(done, n))
        done += n
    store.commit_batch()


def all_leaf_hashes(store: Store) -> list[bytes]:
    return [merkle.leaf_hash(s) for s in store.log_statements(0, store.log_size())]


@pytest.fixture
def store(tmp_path):
    s = Store.open(str(tmp_path / "pithsync.db"))
    yield s
    s.close()


def test_roots_and_proofs_agree_with_the_merkle_module(store):
    rng = random.Random(17)
    sizes = [1, 1, 2, 3, 5, 8, 13, 40, 100, 127, 150, 150]  # 600 leaves, in groups
    grow(store, sizes)
    hashes = all_leaf_hashes(store)
    assert len(hashes) == 600
    assert hashes == [merkle.leaf_hash(b"statement %d" % i) for i in range(600)]
    for size in [1, 2, 3, 255, 256, 257, 511, 512, 513, 600, *rng.sample(range(1, 601), 40)]:
        root = merkle.root(hashes[:size])
        assert store.log_root(size) == root
        for index in {0, size - 1, *rng.sample(range(size), min(size, 5))}:
            proof = store.inclusion_proof(index, size)
            assert proof == merkle.inclusion_proof(hashes[:size], index)
            merkle.verify_inclusion(hashes[index], index, size, proof, root)
        for old in {1, size, *rng.sample(range(1, size + 1), min(size, 5))}:
            proof = store.consistency_proof(old, size)
            assert proof == merkle.consistency_proof(hashes[:size], old)
            merkle.verify_consistency(old, size, merkle.root(hashes[:old]), root, proof)


def test_tiles_and_entry_bundles(store):
    size = 256 * 2 + 44  # two full level-0 tiles, a partial one, and a partial level-1 tile
    grow(store, [size // 4] * 4)
    hashes = all_leaf_hashes(store)
    tiles = tiles_for_size(size)
    assert {t.level for t in tiles} == {0, 1}
    for t in tiles:
        assert store.log_tile(t) == tile_hashes(hashes, t)
        if t.level == 0:
            bundle, at = store.log_entries(t), 0
            start, end = t.leaf_range()
            for i in range(start, end):
                n = int.from_bytes(bundle[at : at + 2], "big")
                assert bundle[at + 2 : at + 2 + n] == b"statement %d" % i
                at += 2 + n
            assert at == len(bundle)
    # A tile the tree does not have yet (wider, or further) is refused.
    for missing in (Tile(0, 2, 45), Tile(0, 3, 1), Tile(1, 0, 3), Tile(2, 0, 1)):
        with pytest.raises(TileError):
            store.log_tile(missing)
    with pytest.raises(TileError):
        store.log_entries(Tile(0, 2, TILE_WIDTH))


def test_proofs_beyond_the_tree_are_refused(store):
    grow(store, [5])
    with pytest.raises(merkle.ProofError):
        store.inclusion_proof(5, 5)
    with pytest.raises(merkle.ProofError):
        store.inclusion_proof(0, 6)
    with pytest.raises(merkle.ProofError):
        store.consistency_proof(3, 7)


def test_a_group_rolled_back_leaves_no_leaf_and_no_hash(store):
    grow(store, [3])
    with pytest.raises(RuntimeError):
        with store.group(batch_records=1000):
            store.append_statements(leaves(3, 4))
            raise RuntimeError("a bug in the record's write")
    grow(store, [2])  # the head the batch knew was dropped with the group
    store.commit_batch()
    assert store.log_size() == 5
    hashes = all_leaf_hashes(store)
    assert hashes == [merkle.leaf_hash(b"statement %d" % i) for i in (0, 1, 2, 3, 4)]
    assert store.log_root(5) == merkle.root(hashes)
    with sqlite3.connect(store.path) as conn:
        nodes = conn.execute("select count(*) from log_nodes").fetchone()[0]
    assert nodes == 0  # 5 leaves complete no subtree of a stored level (8, 16, ...)


def test_a_batch_rolled_back_takes_its_leaves_with_it(store):
    grow(store, [3])
    with store.group(batch_records=1000):
        store.append_statements(leaves(3, 2))
    store.rollback_batch()
    grow(store, [1])
    assert store.log_size() == 4
    assert store.log_root(4) == merkle.root(all_leaf_hashes(store))


def test_a_checkpoint_is_signed_only_when_the_log_grew(store):
    from pithsync.core.note import NoteSigner
    from pithsync.core.tlog import open_checkpoint

    signer = NoteSigner("observer.example/test", bytes(range(32)))
    assert store.sign_checkpoint(signer) is None  # an empty log: nothing to sign
    grow(store, [7])
    note = store.sign_checkpoint(signer)
    checkpoint, _ = open_checkpoint(note, [signer.verifier_key], origin=signer.name)
    assert (checkpoint.size, checkpoint.root_hash) == (7, merkle.root(all_leaf_hashes(store)))
    assert store.observer_checkpoint() == note
    assert store.sign_checkpoint(signer) is None  # nothing appended since
    grow(store, [2])
    newer = store.sign_checkpoint(signer)
    assert open_checkpoint(newer, [signer.verifier_key])[0].size == 9
    assert store.observer_checkpoint() == newer


def test_only_tile_levels_are_stored_and_statements_are_kept_compressed(store):
    grow(store, [300, 300])  # 600 leaves: two full subtrees of 256 leaves
    with sqlite3.connect(store.path) as conn:
        nodes = conn.execute("select level, idx from log_nodes order by level, idx").fetchall()
        stored = conn.execute("select first_leaf, mirrors, statements from log_checks").fetchall()
    assert nodes == [(8, 0), (8, 1)]  # level 0 and levels 1-7 are derived on demand
    # One record's leaves, a row of at most 64 each, each row one zstd frame.
    assert [first for first, _, _ in stored] == [*range(0, 300, 64), *range(300, 600, 64)]
    assert sum(len(mirrors) // 2 for _, mirrors, _ in stored) == 600
    assert all(blob.startswith(b"\x28\xb5\x2f\xfd") for _, _, blob in stored)
    assert store.log_statements(0, 600) == [b"statement %d" % i for i in range(600)]


def test_a_log_with_a_second_stored_level_gives_exact_roots_proofs_and_tiles(store):
    size = 65_536 + 300  # a full subtree of level 16, then 300 leaves
    grow(store, [20_000, 20_000, 25_536, 300])
    hashes = all_leaf_hashes(store)
    assert hashes == [merkle.leaf_hash(b"statement %d" % i) for i in range(size)]
    with sqlite3.connect(store.path) as conn:
        levels = dict(conn.execute("select level, count(*) from log_nodes group by level"))
    assert levels == {8: 257, 16: 1}
    for n in (65_535, 65_536, 65_537, size):
        root = merkle.root(hashes[:n])
        assert store.log_root(n) == root
        for index in (0, 255, 256, 65_535, n - 1):
            if index < n:
                proof = store.inclusion_proof(index, n)
                assert proof == merkle.inclusion_proof(hashes[:n], index)
                merkle.verify_inclusion(hashes[index], index, n, proof, root)
        for old in (1, 300, 65_536):
            if old <= n:
                assert store.consistency_proof(old, n) == merkle.consistency_proof(hashes[:n], old)
    tiles = tiles_for_size(size)
    assert {t.level for t in tiles} == {0, 1, 2}
    for t in [t for t in tiles if t.level > 0 or t.index in (0, 255, 256)]:
        assert store.log_tile(t) == tile_hashes(hashes, t)


def test_a_corrupt_stored_statement_is_refused_not_served(store):
    from pithsync.base.exits import StoreError

    grow(store, [3])
    with sqlite3.connect(store.path) as conn:
        blob = conn.execute("select statements from log_checks where first_leaf = 0").fetchone()
        edited = blob[0][:-1] + bytes([blob[0][-1] ^ 1])
        conn.execute("update log_checks set statements = ? where first_leaf = 0", [edited])
    with pytest.raises(StoreError):
        store.log_statements(0, 3)
    with pytest.raises(StoreError):
        store.log_root(3)


def test_statements_are_kept_with_their_own_dictionary_and_come_back_exact(store):
    import zstandard

    from pithsync.core import numbers
    from pithsync.core.observation import Fetch, statement
    from pithsync.store import bodies
    from pithsync.testing import forge

    record = forge.forge_record(7)
    pith = numbers.parse_full(record.pith_number)
    mirror = "https://mirror.test.example"
    fetched = [Fetch(f"{mirror}/pith/{pith.suffix}/bundle.json", 200, "ab" * 32)]
    events = [e["event_id"] for e in record.bundle()["events"]]
    stated = statement(
        "observer.test", pith, mirror, fetched, events, "cd" * 32, "ok", "2026-12-07T00:00:00Z"
    ).encode()
    with store.group(batch_records=1000):
        store.append_statements([Leaf(record.pith_number, mirror, stated)])
    store.commit_batch()
    with sqlite3.connect(store.path) as conn:
        (blob,) = conn.execute("select statements from log_checks").fetchone()
    assert zstandard.get_frame_parameters(blob).dict_id == bodies.STATEMENTS
    assert len(blob) < len(bodies.compress(stated))  # the statements' dictionary pays
    assert store.log_statements(0, 1) == [stated]
    assert store.log_entries(Tile(0, 0, 1)) == len(stated).to_bytes(2, "big") + stated
    assert store.log_root(1) == merkle.leaf_hash(stated)
