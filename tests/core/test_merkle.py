"""The RFC 9162 Merkle tree (pithsync/core/merkle.py) against published vectors and properties.

Vectors: github.com/transparency-dev/merkle (the successor of certificate-transparency-go's
merkle package), commit 417fb0c3: the leaf inputs, node hashes and root hashes of
testonly/constants.go (below), and the testdata/inclusion and testdata/consistency probes
(tests/vectors/merkle_transparency_dev.json).
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pithsync.core import merkle
from pithsync.core.errors import PithError
from pithsync.core.merkle import ProofError

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "merkle_transparency_dev.json").read_text("utf-8")
)

# testonly/constants.go: LeafInputs, NodeHashes (level -> index), RootHashes (by size 0..8).
LEAF_INPUTS = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
NODE_HASHES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]
ROOT_HASHES = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
LEAVES = [merkle.leaf_hash(data) for data in LEAF_INPUTS]


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _proof(probe: dict) -> list[bytes]:
    return [_b64(h) for h in probe["proof"] or []]


def _probe_id(probe: dict) -> str:
    return probe["file"].removeprefix("testdata/")


def reference_root(leaf_hashes: list[bytes]) -> bytes:
    """MTH exactly as RFC 9162 §2.1.1 defines it, recursively (for small trees only)."""
    if not leaf_hashes:
        return hashlib.sha256(b"").digest()
    if len(leaf_hashes) == 1:
        return leaf_hashes[0]
    k = 1
    while k * 2 < len(leaf_hashes):
        k *= 2
    return merkle.node_hash(reference_root(leaf_hashes[:k]), reference_root(leaf_hashes[k:]))


def test_leaf_and_node_hashes_match_the_published_node_hashes():
    assert [h.hex() for h in LEAVES] == NODE_HASHES[0]
    for level in range(1, 4):
        below = [bytes.fromhex(h) for h in NODE_HASHES[level - 1]]
        pairs = [merkle.node_hash(below[i], below[i + 1]) for i in range(0, len(below), 2)]
        assert [h.hex() for h in pairs] == NODE_HASHES[level]


@pytest.mark.parametrize("size", range(9))
def test_root_of_every_prefix_matches_the_published_root(size):
    assert merkle.root(LEAVES[:size]).hex() == ROOT_HASHES[size]


def _published_subtree(start: int, end: int) -> str | None:
    """The published hash of leaves [start, end) if that is a complete aligned subtree."""
    width = end - start
    if width & (width - 1) or start % width:
        return None
    level = width.bit_length() - 1
    return NODE_HASHES[level][start // width]


@pytest.mark.parametrize("size", range(1, 9))
def test_every_inclusion_proof_of_the_8_leaf_set_verifies_against_the_published_root(size):
    published_root = bytes.fromhex(ROOT_HASHES[size])
    for index in range(size):
        proof = merkle.inclusion_proof(LEAVES[:size], index)
        merkle.verify_inclusion(LEAVES[index], index, size, proof, published_root)
        for (start, end), node in zip(merkle.inclusion_ranges(index, size), proof, strict=True):
            expected = _published_subtree(start, end)
            assert expected is None or node.hex() == expected


@pytest.mark.parametrize("new_size", range(1, 9))
def test_every_consistency_proof_of_the_8_leaf_set_verifies_against_published_roots(new_size):
    for old_size in range(1, new_size + 1):
        proof = merkle.consistency_proof(LEAVES[:new_size], old_size)
        merkle.verify_consistency(
            old_size,
            new_size,
            bytes.fromhex(ROOT_HASHES[old_size]),
            bytes.fromhex(ROOT_HASHES[new_size]),
            proof,
        )
        ranges = merkle.consistency_ranges(old_size, new_size)
        for (start, end), node in zip(ranges, proof, strict=True):
            expected = _published_subtree(start, end)
            assert expected is None or node.hex() == expected


HAPPY_INCLUSION = [p for p in VECTORS["inclusion_probes"] if not p["wantErr"]]
HAPPY_CONSISTENCY = [p for p in VECTORS["consistency_probes"] if not p["wantErr"]]


@pytest.mark.parametrize(
    "probe",
    [p for p in HAPPY_INCLUSION if p["file"].endswith("happy-path.json")],
    ids=_probe_id,
)
def test_generated_inclusion_proofs_equal_the_published_ones(probe):
    size = probe["treeSize"]
    leaf_hashes = LEAVES[:size]
    assert leaf_hashes[probe["leafIdx"]] == _b64(probe["leafHash"])
    assert merkle.inclusion_proof(leaf_hashes, probe["leafIdx"]) == _proof(probe)


@pytest.mark.parametrize(
    "probe",
    [p for p in HAPPY_CONSISTENCY if p["file"].endswith("happy-path.json")],
    ids=_probe_id,
)
def test_generated_consistency_proofs_equal_the_published_ones(probe):
    leaf_hashes = LEAVES[: probe["size2"]]
    assert merkle.root(leaf_hashes[: probe["size1"]]) == _b64(probe["root1"])
    assert merkle.consistency_proof(leaf_hashes, probe["size1"]) == _proof(probe)


def test_the_probe_files_were_all_loaded():
    # 98 of each at that commit; a truncated vector file must not pass quietly.
    assert len(VECTORS["inclusion_probes"]) == 98 and len(VECTORS["consistency_probes"]) == 98
    assert len(HAPPY_INCLUSION) == 6 and len(HAPPY_CONSISTENCY) == 6


@pytest.mark.parametrize("probe", VECTORS["inclusion_probes"], ids=_probe_id)
def test_inclusion_probe_verdicts(probe):
    def check():
        merkle.verify_inclusion(
            _b64(probe["leafHash"]),
            probe["leafIdx"],
            probe["treeSize"],
            _proof(probe),
            _b64(probe["root"]),
        )

    if probe["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


@pytest.mark.parametrize("probe", VECTORS["consistency_probes"], ids=_probe_id)
def test_consistency_probe_verdicts(probe):
    def check():
        merkle.verify_consistency(
            probe["size1"],
            probe["size2"],
            _b64(probe["root1"]),
            _b64(probe["root2"]),
            _proof(probe),
        )

    if probe["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


def test_proof_error_is_a_pith_error():
    assert issubclass(ProofError, PithError)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 1), (-1, 3), (8, 7)])
def test_no_inclusion_proof_outside_the_tree(index, size):
    with pytest.raises(ProofError):
        merkle.inclusion_ranges(index, size)


@pytest.mark.parametrize(("old", "new"), [(0, 0), (0, 5), (6, 5), (-1, 2)])
def test_no_consistency_proof_for_impossible_sizes(old, new):
    with pytest.raises(ProofError):
        merkle.consistency_ranges(old, new)


def test_root_of_a_large_tree_does_not_recurse_per_leaf():
    leaf_hashes = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(1 << 17)]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100)
    try:
        value = merkle.root(leaf_hashes)
        proof = merkle.inclusion_proof(leaf_hashes, 77_777)
    finally:
        sys.setrecursionlimit(limit)
    assert len(proof) == 17
    merkle.verify_inclusion(leaf_hashes[77_777], 77_777, len(leaf_hashes), proof, value)


def _tree(size: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(2, "big")) for i in range(size)]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 64))
def test_root_equals_the_recursive_definition(size):
    assert merkle.root(_tree(size)) == reference_root(_tree(size))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 64))
def test_every_inclusion_proof_verifies(size):
    leaf_hashes = _tree(size)
    value = merkle.root(leaf_hashes)
    for index in range(size):
        proof = merkle.inclusion_proof(leaf_hashes, index)
        merkle.verify_inclusion(leaf_hashes[index], index, size, proof, value)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40))
def test_every_consistency_proof_verifies(new_size):
    leaf_hashes = _tree(new_size)
    new_root = merkle.root(leaf_hashes)
    for old_size in range(1, new_size + 1):
        proof = merkle.consistency_proof(leaf_hashes, old_size)
        old_root = merkle.root(leaf_hashes[:old_size])
        merkle.verify_consistency(old_size, new_size, old_root, new_root, proof)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_flipped_bit_in_an_inclusion_proof_or_root_fails(data):
    size = data.draw(st.integers(2, 64))
    index = data.draw(st.integers(0, size - 1))
    leaf_hashes = _tree(size)
    value = merkle.root(leaf_hashes)
    proof = merkle.inclusion_proof(leaf_hashes, index)
    target = data.draw(st.integers(0, len(proof)))  # len(proof) means: the root
    bit = data.draw(st.integers(0, 8 * merkle.HASH_SIZE - 1))
    flipped = bytearray(proof[target] if target < len(proof) else value)
    flipped[bit // 8] ^= 1 << (bit % 8)
    if target < len(proof):
        proof[target] = bytes(flipped)
    else:
        value = bytes(flipped)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaf_hashes[index], index, size, proof, value)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_flipped_bit_in_a_consistency_proof_or_root_fails(data):
    new_size = data.draw(st.integers(2, 40))
    old_size = data.draw(st.integers(1, new_size - 1))
    leaf_hashes = _tree(new_size)
    roots = [merkle.root(leaf_hashes[:old_size]), merkle.root(leaf_hashes)]
    proof = merkle.consistency_proof(leaf_hashes, old_size)
    target = data.draw(st.integers(0, len(proof) + 1))  # past the proof: one of the roots
    bit = data.draw(st.integers(0, 8 * merkle.HASH_SIZE - 1))
    hashes = proof + roots
    flipped = bytearray(hashes[target])
    flipped[bit // 8] ^= 1 << (bit % 8)
    hashes[target] = bytes(flipped)
    with pytest.raises(ProofError):
        merkle.verify_consistency(old_size, new_size, hashes[-2], hashes[-1], hashes[:-2])


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_a_proof_for_another_position_or_size_fails(data):
    size = data.draw(st.integers(2, 64))
    index = data.draw(st.integers(0, size - 1))
    leaf_hashes = _tree(size)
    proof = merkle.inclusion_proof(leaf_hashes, index)
    other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaf_hashes[index], other, size, proof, merkle.root(leaf_hashes))
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaf_hashes[other], index, size, proof, merkle.root(leaf_hashes))
