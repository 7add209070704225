"""Peers: checking another observer's log, and comparing what it saw with what this one saw.

Pure.  Three parts:
- a peer's new checkpoint against the last one seen: a log that shrank, changed its root at
  one size, or cannot prove it extends the old tree was rewritten (`LogRewritten`);
- the proof hashes such a check needs, read from the peer's c2sp.org/tlog-tiles hash tiles
  (`consistency_tiles`, `consistency_from_tiles`; the same for inclusion proofs);
- one record and one mirror, this observer's view against a peer's verified statement
  (`compare_views`): a split view, lag, or nothing to say.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pithsync.core.merkle import (
    HASH_SIZE,
    LeafRange,
    ProofError,
    consistency_ranges,
    inclusion_ranges,
    node_hash,
    root,
    verify_consistency,
)
from pithsync.core.observation import Statement
from pithsync.core.status import Reason, Status
from pithsync.core.tlog import TILE_WIDTH, Checkpoint, Tile, TileError
from pithsync.core.urls import base_key

TILE_LEVEL_BITS = 8  # a tile is 256 = 2**8 hashes wide


# -- a peer's checkpoint against the last one seen ----------------------------------------------


class Rewrite(str, enum.Enum):
    """How a peer's log shows it was rewritten."""

    OTHER_ROOT = "other_root"  # the same size with another root
    SHRANK = "shrank"  # a smaller size than a checkpoint it signed before
    INCONSISTENT = "inconsistent"  # a consistency proof from its tiles does not verify

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint and the signed note it came in (the note is the proof: keep its bytes)."""

    checkpoint: Checkpoint
    note: bytes


@dataclass(frozen=True)
class LogRewritten:
    """A peer signed two checkpoints no append-only log can have: both notes prove it."""

    peer: str
    how: Rewrite
    message: str
    old: SignedCheckpoint
    new: SignedCheckpoint


def needs_consistency_proof(old: Checkpoint, new: Checkpoint) -> bool:
    """Whether `new` can only be checked against `old` with a consistency proof: it is larger,
    and the old tree is not empty (every tree extends the empty one)."""
    return 0 < old.size < new.size


def check_checkpoint(
    peer: str, old: SignedCheckpoint, new: SignedCheckpoint, proof: Sequence[bytes] = ()
) -> LogRewritten | None:
    """A peer's newly fetched checkpoint against the last one seen.

    Args:
        peer: the peer's name, for the finding.
        old: the last checkpoint seen (verified then).
        new: the checkpoint just fetched (verified now, same origin).
        proof: the consistency proof from old.size to new.size, when `needs_consistency_proof`.

    Returns:
        None when `new` extends `old` (or equals it); else the finding, holding both notes.
    """
    a, b = old.checkpoint, new.checkpoint
    if b.size < a.size:
        message = f"peer {peer} signed size {b.size} after size {a.size}"
        return LogRewritten(peer, Rewrite.SHRANK, message, old, new)
    if b.size == a.size:
        if b.root_hash == a.root_hash:
            return None
        message = f"peer {peer} signed two roots for size {a.size}"
        return LogRewritten(peer, Rewrite.OTHER_ROOT, message, old, new)
    if a.size == 0:
        return None
    try:
        verify_consistency(a.size, b.size, a.root_hash, b.root_hash, proof)
    except ProofError as exc:
        message = f"peer {peer}: size {b.size} does not extend size {a.size}: {exc}"
        return LogRewritten(peer, Rewrite.INCONSISTENT, message, old, new)
    return None


# -- proof hashes from tlog-tiles ---------------------------------------------------------------


@dataclass(frozen=True)
class _Stride:
    """A perfect subtree of 2**k leaves at an aligned start: 2**(k % 8) consecutive hashes of
    tile level k // 8, from hash `first` of that level."""

    level: int
    first: int
    count: int


def _perfect_parts(leaves: LeafRange) -> list[LeafRange]:
    """[start, end) cut left to right into the largest aligned power-of-two ranges."""
    start, end = leaves
    parts = []
    while start < end:
        size = 1 << ((end - start).bit_length() - 1)
        while start % size:
            size //= 2
        parts.append((start, start + size))
        start += size
    return parts


def _stride(part: LeafRange) -> _Stride:
    start, end = part
    k = (end - start).bit_length() - 1
    level = k // TILE_LEVEL_BITS
    return _Stride(level, start >> (TILE_LEVEL_BITS * level), 1 << (k % TILE_LEVEL_BITS))


def _tile_of(level: int, hash_index: int, size: int) -> Tile:
    """The tile of the tree of `size` leaves holding hash `hash_index` of level `level`."""
    index = hash_index // TILE_WIDTH
    width = min(TILE_WIDTH, (size >> (TILE_LEVEL_BITS * level)) - index * TILE_WIDTH)
    if width <= 0:
        raise TileError(f"a tree of {size} leaves has no hash {hash_index} at level {level}")
    return Tile(level, index, width)


def _tiles_for(ranges: Sequence[LeafRange], size: int) -> list[Tile]:
    tiles: dict[Tile, None] = {}
    for leaves in ranges:
        for part in _perfect_parts(leaves):
            s = _stride(part)
            tiles.setdefault(_tile_of(s.level, s.first, size))
    return list(tiles)


def _range_hash(leaves: LeafRange, size: int, tiles: Mapping[Tile, bytes]) -> bytes:
    """The tree hash of the leaves [start, end) of the tree of `size` leaves, from its tiles:
    each perfect part from its tile level, the parts folded right to left."""
    hashes = []
    for part in _perfect_parts(leaves):
        s = _stride(part)
        tile = _tile_of(s.level, s.first, size)
        content = tiles.get(tile)
        if content is None:
            raise TileError(f"{tile.path()} is needed and was not given")
        if len(content) != tile.width * HASH_SIZE:
            raise TileError(f"{tile.path()} holds {len(content)} bytes, not {tile.width} hashes")
        offset = (s.first - tile.index * TILE_WIDTH) * HASH_SIZE
        chunk = content[offset : offset + s.count * HASH_SIZE]
        hashes.append(root([chunk[i : i + HASH_SIZE] for i in range(0, len(chunk), HASH_SIZE)]))
    digest = hashes[-1]
    for left in reversed(hashes[:-1]):
        digest = node_hash(left, digest)
    return digest


def consistency_tiles(old_size: int, new_size: int) -> list[Tile]:
    """The tiles of the tree of `new_size` leaves a consistency proof from `old_size` needs.

    Raises:
        ProofError: unless 0 < old_size <= new_size.
    """
    return _tiles_for(consistency_ranges(old_size, new_size), new_size)


def consistency_from_tiles(
    old_size: int, new_size: int, tiles: Mapping[Tile, bytes]
) -> list[bytes]:
    """The consistency proof from `old_size` to `new_size`, computed from the new tree's tiles
    (those `consistency_tiles` names); verify it with core.merkle.verify_consistency.

    Raises:
        ProofError: unless 0 < old_size <= new_size.
        TileError: a tile needed is missing or of the wrong length.
    """
    return [_range_hash(r, new_size, tiles) for r in consistency_ranges(old_size, new_size)]


def inclusion_tiles(index: int, size: int) -> list[Tile]:
    """The tiles of the tree of `size` leaves the inclusion proof of leaf `index` needs.

    Raises:
        ProofError: if `index` is not below `size`.
    """
    return _tiles_for(inclusion_ranges(index, size), size)


def inclusion_from_tiles(index: int, size: int, tiles: Mapping[Tile, bytes]) -> list[bytes]:
    """The inclusion proof of leaf `index` in the tree of `size` leaves, from its tiles.

    Raises:
        ProofError: if `index` is not below `size`.
        TileError: a tile needed is missing or of the wrong length.
    """
    return [_range_hash(r, size, tiles) for r in inclusion_ranges(index, size)]


# -- split views --------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """What one observer saw one mirror serve for one record: the verified events, the state
    digest their merge gives (None when nothing verified), and when (RFC 3339 UTC)."""

    events: frozenset[str]
    state_sha256: str | None
    observed_at: str

    @classmethod
    def of(cls, statement: Statement) -> View:
        """The view a statement records."""
        return cls(frozenset(statement.events), statement.state_sha256, statement.observed_at)


@dataclass(frozen=True)
class PeerStatement:
    """A peer's statement, verified: its inclusion proof under the peer's signed checkpoint,
    and that checkpoint's consistency with the peer's log as this observer knows it.  Carries
    everything an evidence file needs to prove the statement offline with the peer's key."""

    peer: str
    window_s: float
    statement: Statement
    leaf_data: bytes  # the statement's bytes, as the peer's log holds them
    index: int
    proof: tuple[bytes, ...]
    checkpoint: SignedCheckpoint


class SplitKind(str, enum.Enum):
    FORK = "fork"  # neither event set contains the other
    STATE = "state"  # the same events, another state digest

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SplitView:
    """A mirror showed this observer and a peer two histories no honest mirror serves."""

    kind: SplitKind
    mine: View
    theirs: View


@dataclass(frozen=True)
class Lag:
    """One observer saw a history the other's extends: the mirror grew between the two looks."""

    behind: str  # "mine" or "theirs"


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm); the core
    keeps no clock, so no datetime either."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def seconds_since_epoch(text: str) -> float:
    """Seconds since the Unix epoch of an RFC 3339 UTC time as statements and the store write
    it (`YYYY-MM-DDTHH:MM:SS[.ffffff]Z`, checked by core.observation)."""
    date, _, clock = text.rstrip("Z").partition("T")
    year, month, day = (int(x) for x in date.split("-"))
    hours, minutes, seconds = clock.split(":")
    days = _days_from_civil(year, month, day)
    return days * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def within(a: str, b: str, window_s: float) -> bool:
    """Whether two RFC 3339 UTC times are at most `window_s` seconds apart."""
    return abs(seconds_since_epoch(a) - seconds_since_epoch(b)) <= window_s


def compare_views(mine: View, theirs: View, window_s: float) -> SplitView | Lag | None:
    """This observer's view of a mirror's copy of a record against a peer's.

    A split view needs both observers to have verified a history, within `window_s` seconds of
    each other, and then either a fork (neither event set contains the other) or the same
    events with different state digests.  A history that is a subset of the other is lag, not
    a split view: a mirror that gained events between two looks is honest.

    Returns:
        SplitView, Lag, or None (the same history, a view without one, or too far apart).
    """
    if not mine.events or not theirs.events:
        return None
    if not within(mine.observed_at, theirs.observed_at, window_s):
        return None
    if mine.events == theirs.events:
        if mine.state_sha256 != theirs.state_sha256:
            return SplitView(SplitKind.STATE, mine, theirs)
        return None
    if mine.events < theirs.events:
        return Lag("mine")
    if theirs.events < mine.events:
        return Lag("theirs")
    return SplitView(SplitKind.FORK, mine, theirs)


@dataclass(frozen=True)
class PeerViews:
    """What the peers saw for one record (their verified statements), and when this observer
    looked: an input of the record's comparison (core.compare.compare_record)."""

    observed_at: str
    statements: tuple[PeerStatement, ...] = ()


@dataclass(frozen=True)
class PeerSplit:
    """A split view of one mirror, with the peer's statement that shows it."""

    seen: PeerStatement
    split: SplitView

    def reason(self) -> Reason:
        """The divergence reason: the peer, the mirror, both digests."""
        mine, theirs = self.split.mine, self.split.theirs
        what = "a forked history" if self.split.kind is SplitKind.FORK else "the same events"
        return Reason(
            Status.SPLIT_VIEW,
            "split_view",
            f"showed peer {self.seen.peer} {what} with state {theirs.state_sha256}"
            f" ({len(theirs.events)} events, at {theirs.observed_at}); this observer saw state"
            f" {mine.state_sha256} ({len(mine.events)} events)",
        )


def split_views(mirror: str, mine: View, peers: PeerViews) -> list[PeerSplit]:
    """The split views of `mirror` the peers' statements show against this observer's view."""
    found = []
    for seen in peers.statements:
        if base_key(seen.statement.mirror) != base_key(mirror):
            continue
        result = compare_views(mine, View.of(seen.statement), seen.window_s)
        if isinstance(result, SplitView):
            found.append(PeerSplit(seen, result))
    return found
