"""C2SP transparency-log formats: checkpoints (c2sp.org/tlog-checkpoint) and the tile layout
(c2sp.org/tlog-tiles).

A checkpoint is the text of a signed note: origin, decimal tree size, base64 root hash, then
optional extension lines.  Tiles are 256-hash-wide slices of the Merkle tree served at
`tile/<L>/<N>[.p/<W>]`, entry bundles at `tile/entries/<N>[.p/<W>]`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pithsync.core.errors import PithError
from pithsync.core.merkle import HASH_SIZE, root
from pithsync.core.note import (
    NoteError,
    NoteSigner,
    VerifiedNote,
    VerifierKey,
    open_note,
    sign_note,
)

TILE_WIDTH = 256
MAX_TILE_LEVEL = 63
MAX_TREE_SIZE = 2**64 - 1  # tree sizes are uint64 in every tlog implementation


class CheckpointError(NoteError):
    """A checkpoint whose text breaks c2sp.org/tlog-checkpoint."""


class TileError(PithError):
    """A tile that cannot exist (bad level, index or width)."""


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, tree size, RFC 6962 root hash, extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise CheckpointError("the origin must be one non-empty line")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise CheckpointError(f"the tree size must be an integer: {self.size!r}")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"the tree size {self.size} is not in 0..2**64-1")
        if len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"the root hash must be {HASH_SIZE} bytes")
        for line in self.extensions:
            if not line or "\n" in line:
                raise CheckpointError("extension lines must be non-empty single lines")

    def text(self) -> str:
        """The checkpoint as note text, final newline included."""
        root_b64 = base64.b64encode(self.root_hash).decode("ascii")
        lines = [self.origin, str(self.size), root_b64, *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """Parses checkpoint note text strictly.

    Raises:
        CheckpointError: if the text breaks c2sp.org/tlog-checkpoint.
    """
    if not text.endswith("\n"):
        raise CheckpointError("checkpoint text must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("a checkpoint has an origin, a tree size and a root hash")
    origin, size_text, root_b64, *extensions = lines
    if not size_text.isascii() or not size_text.isdigit():
        raise CheckpointError(f"the tree size is not a decimal number: {size_text[:40]!r}")
    if size_text != "0" and size_text.startswith("0"):
        raise CheckpointError(f"the tree size has leading zeroes: {size_text[:40]!r}")
    try:
        root_hash = base64.b64decode(root_b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise CheckpointError(f"the root hash is not base64: {root_b64[:60]!r}") from None
    if base64.b64encode(root_hash).decode("ascii") != root_b64:
        raise CheckpointError("the root hash is not in canonical base64")
    return Checkpoint(origin, int(size_text), root_hash, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signers: Iterable[NoteSigner]) -> bytes:
    """The checkpoint as a signed note.

    Raises:
        MalformedNote: if no signer is given.
    """
    return sign_note(checkpoint.text(), signers)


def open_checkpoint(
    data: bytes, trusted: Iterable[VerifierKey], origin: str | None = None
) -> tuple[Checkpoint, VerifiedNote]:
    """Verifies a signed checkpoint against the trusted keys and parses it.

    Args:
        data: the signed note's bytes.
        trusted: the pinned verifier keys of the log.
        origin: the origin the checkpoint must carry, if known.

    Raises:
        NoteError: if the note does not verify (see `note.open_note`).
        CheckpointError: if its text is not a checkpoint, or of another origin.

    Returns:
        The checkpoint and the verified note it came in.
    """
    note = open_note(data, trusted)
    checkpoint = parse_checkpoint(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(f"checkpoint of origin {checkpoint.origin!r}, not {origin!r}")
    return checkpoint, note


@dataclass(frozen=True)
class Tile:
    """One tile: level (0 holds leaf hashes), index within the level, width in hashes."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not 0 <= self.level <= MAX_TILE_LEVEL:
            raise TileError(f"tile level {self.level} is not in 0..{MAX_TILE_LEVEL}")
        if self.index < 0:
            raise TileError(f"tile index {self.index} is negative")
        if not 1 <= self.width <= TILE_WIDTH:
            raise TileError(f"tile width {self.width} is not in 1..{TILE_WIDTH}")

    @property
    def is_partial(self) -> bool:
        """Whether the tile holds fewer than 256 hashes."""
        return self.width < TILE_WIDTH

    def path(self) -> str:
        """The tile's path below the log prefix, e.g. `tile/0/x001/x234/067.p/8`."""
        return f"tile/{self.level}/{encode_tile_index(self.index, self.width)}"

    def entries_path(self) -> str:
        """The path of the entry bundle of a level-0 tile, e.g. `tile/entries/000`."""
        if self.level != 0:
            raise TileError("only level-0 tiles have entry bundles")
        return f"tile/entries/{encode_tile_index(self.index, self.width)}"

    def leaf_range(self) -> tuple[int, int]:
        """The entries [start, end) this tile's hashes span."""
        span = TILE_WIDTH**self.level
        start = self.index * TILE_WIDTH * span
        return start, start + self.width * span


def encode_tile_index(index: int, width: int = TILE_WIDTH) -> str:
    """`<N>[.p/<W>]`: the index in 3-digit groups, all but the last prefixed with `x`
    (1234067 -> x001/x234/067), and the width of a partial tile."""
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    encoded = "/".join(reversed(groups))
    return encoded if width == TILE_WIDTH else f"{encoded}.p/{width}"


def tiles_for_size(size: int) -> list[Tile]:
    """Every tile of a tree of `size` leaves: the full ones and the partial one at each level
    where the width floor(size / 256**L) mod 256 is not 0; lowest level first."""
    if size < 0:
        raise TileError(f"tree size {size} is negative")
    tiles: list[Tile] = []
    level, hashes = 0, size  # hashes at this level: floor(size / 256**level)
    while hashes and level <= MAX_TILE_LEVEL:
        full, partial = divmod(hashes, TILE_WIDTH)
        tiles.extend(Tile(level, index) for index in range(full))
        if partial:
            tiles.append(Tile(level, full, partial))
        level, hashes = level + 1, full
    return tiles


def parse_tile_path(path: str) -> Tile:
    """The tile a `tile/<L>/<N>[.p/<W>]` path names, accepting only the canonical spelling.

    Raises:
        TileError: if `path` is not a canonical tile path.
    """
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile" or not _is_decimal(parts[1]):
        raise TileError(f"not a tile path: {path[:120]!r}")
    width = TILE_WIDTH
    if len(parts) >= 4 and parts[-2].endswith(".p"):
        if not _is_decimal(parts[-1]):
            raise TileError(f"not a tile path: {path[:120]!r}")
        width = int(parts[-1])
        parts = parts[:-2] + [parts[-2][: -len(".p")]]
    groups = parts[2:]
    digits = [g[1:] for g in groups[:-1] if g.startswith("x")] + groups[-1:]
    well_formed = all(len(d) == 3 and d.isascii() and d.isdigit() for d in digits)
    if len(digits) != len(groups) or not well_formed:
        raise TileError(f"not a tile path: {path[:120]!r}")
    tile = Tile(int(parts[1]), int("".join(digits)), width)
    if tile.path() != path:
        raise TileError(f"not the canonical path of {tile.path()}: {path[:120]!r}")
    return tile


def _is_decimal(text: str) -> bool:
    return text.isascii() and text.isdigit() and (text == "0" or not text.startswith("0"))


def tile_hashes(leaf_hashes: Sequence[bytes], tile: Tile) -> bytes:
    """The content of `tile` in the tree of the given leaves: its hashes, concatenated.

    Hash i of tile n at level L is MTH(D[(n*256 + i) * 256**L : (n*256 + i + 1) * 256**L]).

    Raises:
        TileError: if the tree is too small to hold the tile.
    """
    start, end = tile.leaf_range()
    if end > len(leaf_hashes):
        raise TileError(f"{tile.path()} needs {end} leaves, the tree has {len(leaf_hashes)}")
    span = TILE_WIDTH**tile.level
    return b"".join(root(leaf_hashes[at : at + span]) for at in range(start, end, span))
