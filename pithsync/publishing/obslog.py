"""The observer's log as published below an observer's base URL (`serve`, `export`): the latest
signed checkpoint, c2sp.org/tlog-tiles hash tiles and entry bundles of the tree it signs, and
per record its latest statements with their inclusion proofs under that checkpoint.

Everything is cut to the latest checkpoint's tree, never to leaves appended since (a sync may be
appending while `serve` answers): a client can check every byte against the signed root.
"""

from __future__ import annotations

from dataclasses import dataclass

from pithsync.core.canonical import canon
from pithsync.core.numbers import parse_full
from pithsync.core.observation import CHECKPOINT_PATH, LOG_PREFIX, RECORDS_PREFIX, record_path
from pithsync.core.tlog import TILE_WIDTH, Tile, TileError, parse_tile_path, tiles_for_size
from pithsync.publishing.catalog import SUFFIX_RE
from pithsync.store import Store

TEXT_TYPE = "text/plain; charset=utf-8"
JSON_TYPE = "application/json"
TILE_TYPE = "application/octet-stream"
IMMUTABLE = "public, max-age=31536000, immutable"  # a full tile never changes
CHANGING = "no-cache"


@dataclass(frozen=True)
class LogFile:
    """One published file of the log: its body, content type and Cache-Control."""

    body: bytes
    content_type: str
    cache_control: str


def checkpoint_size(store: Store) -> int | None:
    """The size of the tree the latest checkpoint signs (None: no checkpoint yet)."""
    latest = store.observer_checkpoint()
    return None if latest is None else int(latest.split(b"\n", 2)[1])


def in_tree(tile: Tile, size: int) -> bool:
    """Whether `tile` is a tile of the tree of `size` leaves, at exactly that width."""
    full, partial = divmod(size // TILE_WIDTH**tile.level, TILE_WIDTH)
    if tile.is_partial:
        return tile.index == full and tile.width == partial
    return tile.index < full


def log_file(store: Store, path: str) -> LogFile | None:
    """The file at `path` below the base URL (`log/...`), or None when there is none."""
    if not path.startswith(LOG_PREFIX):
        return None
    size = checkpoint_size(store)
    if size is None:
        return None
    if path == CHECKPOINT_PATH:
        return LogFile(store.observer_checkpoint(), TEXT_TYPE, CHANGING)
    if path.startswith(RECORDS_PREFIX):
        return _record_file(store, path[len(RECORDS_PREFIX) :])
    entries = path.startswith(LOG_PREFIX + "tile/entries/")
    tile_path = path[len(LOG_PREFIX) :]
    if entries:
        tile_path = "tile/0/" + tile_path[len("tile/entries/") :]
    try:
        tile = parse_tile_path(tile_path)
    except TileError:
        return None
    if not in_tree(tile, size):
        return None
    body = store.log_entries(tile) if entries else store.log_tile(tile)
    return LogFile(body, TILE_TYPE, CHANGING if tile.is_partial else IMMUTABLE)


def _record_file(store: Store, name: str) -> LogFile | None:
    suffix = name.removesuffix(".json")
    if suffix == name or not SUFFIX_RE.match(suffix):
        return None
    pith = store.numbers_for_suffixes([suffix]).get(suffix)
    record = store.observed_record(pith) if pith else None
    return None if record is None else LogFile(canon(record), JSON_TYPE, CHANGING)


def log_files(store: Store) -> dict[str, bytes]:
    """Every file of the log, path -> body, for `export` (read it inside a snapshot)."""
    size = checkpoint_size(store)
    if size is None:
        return {}
    files = {CHECKPOINT_PATH: store.observer_checkpoint()}
    for tile in tiles_for_size(size):
        files[LOG_PREFIX + tile.path()] = store.log_tile(tile)
        if tile.level == 0:
            files[LOG_PREFIX + tile.entries_path()] = store.log_entries(tile)
    for pith in store.observed_numbers():
        record = store.observed_record(pith)
        if record is not None:
            files[record_path(parse_full(pith))] = canon(record)
    return files
