"""The observation log: statements as the leaves of an RFC 9162 Merkle tree, the hashes of its
tile levels beside them, and the signed checkpoints.

`log_nodes` holds the hash of every full aligned subtree of 2**level leaves, for the levels a
hash tile holds above level 0 (8, 16, ...: TILE_HEIGHT apart), each written when its last leaf is
appended, in the same transaction as the leaf.  Every other subtree hash is computed on demand
from the stored level below it: at most 2**7 hashes of the tile level under it, or the leaf
hashes of at most 2**7 statements (level 0 is never stored: it is derived from the statements).
Every hash a proof, a tile or a root needs is the hash of a range [start, end) whose start is
aligned to the largest power of two not above its width, and such a range splits into at most
log2(n) full aligned subtrees: each proof reads O(log n) subtrees of at most 2**7 stored hashes
each, a tile 256.

The statements themselves are kept a record check at a time (store/log_leaves.py).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlite_utils

from pithsync.core import merkle
from pithsync.core.observation import RECORD_TYPE
from pithsync.core.tlog import TILE_WIDTH, Tile, TileError
from pithsync.store import log_leaves
from pithsync.store.log_leaves import Leaf

# (level, index, hash) of one full aligned subtree
Node = tuple[int, int, bytes]

TILE_HEIGHT = 8  # log_nodes keeps the levels TILE_HEIGHT * k, k >= 1: the hash tiles' levels


def is_stored(level: int) -> bool:
    """Whether log_nodes keeps the subtree hashes of `level`."""
    return level > 0 and level % TILE_HEIGHT == 0


@dataclass
class LogHead:
    """The tree's size and its right edge: the full aligned subtrees that make it up, largest
    first (one for each bit set in the size).  All an append needs."""

    size: int
    edge: list[Node] = field(default_factory=list)


def edge_keys(size: int) -> list[tuple[int, int]]:
    """The (level, index) of each full aligned subtree on the right edge of a tree of `size`."""
    keys = []
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            start = size >> (level + 1) << (level + 1)
            keys.append((level, start >> level))
    return keys


def range_keys(start: int, end: int) -> list[tuple[int, int]]:
    """The (level, index) of the full aligned subtrees [start, end) splits into, left to right.

    Raises:
        merkle.ProofError: if the range is empty.
    """
    if not 0 <= start < end:
        raise merkle.ProofError(f"no subtree hash for the leaves [{start}, {end})")
    keys = []
    while start < end:
        level = (end - start).bit_length() - 1
        while start % (1 << level):
            level -= 1
        keys.append((level, start >> level))
        start += 1 << level
    return keys


def read_head(db: sqlite_utils.Database) -> LogHead:
    """The log's head as stored."""
    size = log_leaves.size(db)
    hashes = _hashes(db, edge_keys(size))
    return LogHead(size, [(level, index, hashes[level, index]) for level, index in edge_keys(size)])


def append(db: sqlite_utils.Database, leaves: Sequence[Leaf], head: LogHead | None) -> LogHead:
    """Appends statements as the next leaves, with every stored subtree hash they complete:
    one executemany for the statements (log_leaves.write), one for the hashes.  Call it inside
    a transaction.

    Args:
        db: the store's connection.
        leaves: the statements, in order.
        head: the head this transaction knows (None: read it).

    Returns:
        The new head.
    """
    head = read_head(db) if head is None else head
    log_leaves.write(db, head.size, leaves)
    size, edge, nodes = head.size, list(head.edge), []
    for leaf in leaves:
        digest, level = merkle.leaf_hash(leaf.statement), 0
        while edge and edge[-1][0] == level:
            digest = merkle.node_hash(edge.pop()[2], digest)
            level += 1
            if is_stored(level):
                nodes.append((level, size >> level, digest))
        edge.append((level, size >> level, digest))
        size += 1
    if nodes:
        db.conn.executemany("insert into log_nodes (level, idx, hash) values (?, ?, ?)", nodes)
    return LogHead(size, edge)


def _hashes(db: sqlite_utils.Database, keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The hashes of these full aligned subtrees (each must exist in the log)."""
    return {(level, index): level_hashes(db, level, index, 1)[0] for level, index in keys}


def level_hashes(db: sqlite_utils.Database, level: int, first: int, count: int) -> list[bytes]:
    """The hashes of `count` adjacent full aligned subtrees of `level`, from index `first`:
    folded from the stored level below (or the leaf hashes of the statements), at most 2**7
    hashes each.

    Raises:
        merkle.ProofError: the log does not hold every leaf of them.
    """
    base = level - level % TILE_HEIGHT
    width = 1 << (level - base)
    start, end = first * width, (first + count) * width
    if base == 0:
        hashes = [merkle.leaf_hash(statement) for statement in log_leaves.read(db, start, end)]
    else:
        rows = db.execute(
            "select hash from log_nodes where level = ? and idx >= ? and idx < ? order by idx",
            [base, start, end],
        ).fetchall()
        hashes = [row[0] for row in rows]
    if len(hashes) != end - start:
        missing = (level, first + len(hashes) // width)
        raise merkle.ProofError(f"the log holds no subtree hash at (level, index) {missing}")
    while width > 1:
        hashes = [merkle.node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        width //= 2
    return hashes


def _fold(hashes: list[bytes]) -> bytes:
    """The tree hash of adjacent subtrees of decreasing size: folded right to left."""
    digest = hashes[-1]
    for left in reversed(hashes[:-1]):
        digest = merkle.node_hash(left, digest)
    return digest


def range_hashes(db: sqlite_utils.Database, ranges: Sequence[merkle.LeafRange]) -> list[bytes]:
    """The tree hash of each leaf range, from the subtrees it splits into."""
    split = [range_keys(start, end) for start, end in ranges]
    hashes = _hashes(db, sorted({key for keys in split for key in keys}))
    return [_fold([hashes[key] for key in keys]) for keys in split]


def root_hash(db: sqlite_utils.Database, size: int) -> bytes:
    """The root of the tree of the first `size` leaves."""
    return merkle.EMPTY_ROOT if size == 0 else range_hashes(db, [(0, size)])[0]


def inclusion_proof(db: sqlite_utils.Database, index: int, size: int) -> list[bytes]:
    """The audit path of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3.1).

    Raises:
        merkle.ProofError: no such leaf, or the log is smaller than `size`.
    """
    return range_hashes(db, merkle.inclusion_ranges(index, size))


def consistency_proof(db: sqlite_utils.Database, old_size: int, new_size: int) -> list[bytes]:
    """The consistency proof from the tree of `old_size` leaves to that of `new_size`.

    Raises:
        merkle.ProofError: unless 0 < old_size <= new_size <= the log's size.
    """
    if old_size == new_size and old_size > 0:
        range_hashes(db, [(0, new_size)])  # the tree must exist
        return []
    return range_hashes(db, merkle.consistency_ranges(old_size, new_size))


def tile(db: sqlite_utils.Database, wanted: Tile) -> bytes:
    """A tlog-tiles hash tile: hash i of tile N at level L is the subtree hash at level 8L,
    index N*256 + i.

    Raises:
        TileError: the log does not hold every hash of the tile.
    """
    try:
        hashes = level_hashes(
            db, TILE_HEIGHT * wanted.level, wanted.index * TILE_WIDTH, wanted.width
        )
    except merkle.ProofError:
        raise TileError(f"the log does not hold {wanted.path()}") from None
    return b"".join(hashes)


def entries(db: sqlite_utils.Database, wanted: Tile) -> bytes:
    """A tlog-tiles entry bundle: each statement as a big-endian uint16 length and its bytes.

    Raises:
        TileError: not a level-0 tile, or the log does not hold every entry of it.
    """
    if wanted.level != 0:
        raise TileError("only level-0 tiles have entry bundles")
    entries = log_leaves.read(db, *wanted.leaf_range())
    if len(entries) != wanted.width:
        raise TileError(f"the log does not hold {wanted.entries_path()}")
    return b"".join(len(entry).to_bytes(2, "big") + entry for entry in entries)


def statements(db: sqlite_utils.Database, start: int, end: int) -> list[bytes]:
    """The statements of leaves [start, end), in order."""
    return log_leaves.read(db, start, end)


def add_checkpoint(db: sqlite_utils.Database, size: int, note: bytes, at: str) -> None:
    """Keep a signed checkpoint of the tree of `size` leaves."""
    db.conn.execute(
        "insert into log_checkpoints (size, note, at) values (?, ?, ?)", [size, note, at]
    )


def latest_checkpoint(db: sqlite_utils.Database) -> tuple[int, bytes] | None:
    """(size, signed note) of the latest checkpoint, or None."""
    row = db.execute("select size, note from log_checkpoints order by size desc limit 1").fetchone()
    return None if row is None else (row[0], row[1])


def statements_of(
    db: sqlite_utils.Database, pith_number: str, mirror: str | None, limit: int
) -> list[tuple]:
    """(leaf index, mirror, statement) of a record's statements under the latest checkpoint,
    of `mirror` (None: of every mirror), newest first, at most `limit`."""
    latest = latest_checkpoint(db)
    if latest is None:
        return []
    return log_leaves.of_record(db, pith_number, mirror, latest[0], limit)


def observed_record(db: sqlite_utils.Database, pith_number: str) -> dict | None:
    """The `log/records/<suffix>.json` object of a record: its latest statement per mirror
    under the latest checkpoint, each with its inclusion proof under that checkpoint; None
    when there is no checkpoint or it covers no statement of the record."""
    latest = latest_checkpoint(db)
    if latest is None:
        return None
    size, note = latest
    rows = log_leaves.latest_of(db, pith_number, size)
    if not rows:
        return None
    proofs = [inclusion_proof(db, index, size) for index, _, _ in rows]
    return {
        "type": RECORD_TYPE,
        "pith_number": pith_number,
        "checkpoint": note.decode("utf-8"),
        "statements": [
            {
                "index": index,
                "statement": statement.decode("utf-8"),
                "proof": [base64.b64encode(h).decode("ascii") for h in proof],
            }
            for (index, _, statement), proof in zip(rows, proofs, strict=True)
        ],
    }


def observed_numbers(db: sqlite_utils.Database, size: int) -> list[str]:
    """The pith numbers with a statement among the first `size` leaves, sorted."""
    return log_leaves.numbers(db, size)
