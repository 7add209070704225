"""The RFC 9162 (RFC 6962) Merkle tree: tree hashes, inclusion and consistency proofs.

Hashing is SHA-256 with the RFC's domain separation: a leaf is SHA-256(0x00 || data), an inner
node SHA-256(0x01 || left || right), and a tree of n > 1 leaves splits at the largest power of
two below n (no duplicated odd nodes).  Proof generation is split in two: the `*_ranges`
functions say which subtrees a proof consists of (pure index arithmetic, O(log n)), so that a
store keeping subtree hashes can answer in O(log n); `inclusion_proof` and `consistency_proof`
compute those subtrees from the leaf hashes.  Verification follows RFC 9162 §2.1.3.2 and
§2.1.4.2 step by step.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from pithsync.core.errors import PithError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

LeafRange = tuple[int, int]


class ProofError(PithError):
    """A proof that does not verify, or a request for a proof that cannot exist."""


def leaf_hash(data: bytes) -> bytes:
    """The RFC 9162 hash of one leaf: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 9162 hash of an inner node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of the leaves whose hashes are given, in O(n) and O(log n) memory.

    The leaves are folded left to right into a stack of perfect subtrees (as a compact range),
    which is then folded right to left; this equals the RFC's recursive definition without
    recursing.
    """
    stack: list[tuple[int, bytes]] = []  # (number of leaves, hash), sizes strictly decreasing
    for value in leaf_hashes:
        size, digest = 1, value
        while stack and stack[-1][0] == size:
            left_size, left = stack.pop()
            size, digest = left_size + size, node_hash(left, digest)
        stack.append((size, digest))
    if not stack:
        return EMPTY_ROOT
    digest = stack[-1][1]
    for _, left in reversed(stack[:-1]):
        digest = node_hash(left, digest)
    return digest


def _split(width: int) -> int:
    """The number of leaves in the left subtree of a tree of `width` > 1 leaves."""
    return 1 << ((width - 1).bit_length() - 1)


def inclusion_ranges(index: int, size: int) -> list[LeafRange]:
    """The leaf ranges [start, end) whose tree hashes form the audit path of leaf `index` in a
    tree of `size` leaves (RFC 9162 §2.1.3.1), nearest the leaf first.

    Raises:
        ProofError: if `index` is not below `size`.
    """
    if not 0 <= index < size:
        raise ProofError(f"no inclusion proof for leaf {index} in a tree of {size} leaves")
    siblings: list[LeafRange] = []
    start, end = 0, size
    while end - start > 1:
        middle = start + _split(end - start)
        if index < middle:
            siblings.append((middle, end))
            end = middle
        else:
            siblings.append((start, middle))
            start = middle
    siblings.reverse()
    return siblings


def consistency_ranges(old_size: int, new_size: int) -> list[LeafRange]:
    """The leaf ranges whose tree hashes form the consistency proof between the trees of
    `old_size` and `new_size` leaves (RFC 9162 §2.1.4.1, SUBPROOF), in proof order.

    Raises:
        ProofError: unless 0 < old_size <= new_size.
    """
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to size {new_size}")
    nodes: list[LeafRange] = []
    start, end, old_end, whole = 0, new_size, old_size, True
    while old_end != end:
        middle = start + _split(end - start)
        if old_end <= middle:
            nodes.append((middle, end))
            end = middle
        else:
            nodes.append((start, middle))
            start, whole = middle, False
    if not whole:
        nodes.append((start, end))  # the old tree's last subtree, unless it is the old tree
    nodes.reverse()
    return nodes


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of leaf `index` in the tree of all the given leaves.

    Raises:
        ProofError: if `index` is not a leaf of the tree.
    """
    ranges = inclusion_ranges(index, len(leaf_hashes))
    return [root(leaf_hashes[start:end]) for start, end in ranges]


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """The consistency proof from the tree of the first `old_size` leaves to the tree of all.

    Raises:
        ProofError: unless 0 < old_size <= len(leaf_hashes).
    """
    ranges = consistency_ranges(old_size, len(leaf_hashes))
    return [root(leaf_hashes[start:end]) for start, end in ranges]


def _check_hashes(what: str, hashes: Sequence[bytes]) -> None:
    for position, value in enumerate(hashes):
        if not isinstance(value, bytes) or len(value) != HASH_SIZE:
            raise ProofError(f"{what} {position} is not a {HASH_SIZE}-byte hash")


def _same(computed: bytes, expected: bytes) -> bool:
    return isinstance(expected, bytes) and hmac.compare_digest(computed, expected)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """Checks that the leaf hash `leaf` is leaf `index` of the tree of `size` leaves whose
    hash is `root_hash`, by the algorithm of RFC 9162 §2.1.3.2.

    Raises:
        ProofError: if the proof does not verify.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not below the tree size {size}")
    _check_hashes("the leaf hash", [leaf])
    _check_hashes("proof hash", proof)
    fn, sn, digest = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            digest = node_hash(sibling, digest)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            digest = node_hash(digest, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the inclusion proof is shorter than the tree is deep")
    if not _same(digest, root_hash):
        raise ProofError(f"the inclusion proof of leaf {index} does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Checks that the tree of `new_size` leaves hashing to `new_root` extends the tree of
    `old_size` leaves hashing to `old_root`, by the algorithm of RFC 9162 §2.1.4.2.

    Equal sizes need an empty proof and equal roots.  A proof from the empty tree is rejected
    (as transparency-dev/merkle does): every tree extends it, so there is nothing to prove.

    Raises:
        ProofError: if the proof does not verify.
    """
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size == new_size:
        if proof:
            raise ProofError("trees of the same size need an empty consistency proof")
        if not _same(old_root, new_root):
            raise ProofError(f"two different roots for the same tree size {old_size}")
        return
    if not proof:
        raise ProofError("an empty consistency proof between different tree sizes")
    _check_hashes("proof hash", proof)
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # the old tree is a complete subtree of the new one
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    old_digest = new_digest = path[0]
    for node in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is longer than the new tree is deep")
        if fn & 1 or fn == sn:
            old_digest, new_digest = node_hash(node, old_digest), node_hash(node, new_digest)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            new_digest = node_hash(new_digest, node)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the consistency proof is shorter than the new tree is deep")
    if not _same(old_digest, old_root):
        raise ProofError(f"the consistency proof does not lead to the size-{old_size} root")
    if not _same(new_digest, new_root):
        raise ProofError(f"the consistency proof does not lead to the size-{new_size} root")
