"""Peers: other observers' logs, fetched and checked (issue 17).

A peer is hostile: everything it serves comes through the run's Fetcher (policy, size cap,
timeouts), is capped again here, and is used only once verified.  At the start of a run
(`check_peers`) each peer's `log/checkpoint` must be signed by its pinned key and extend the
last checkpoint seen (a consistency proof computed from its tiles, core.peers); a rewritten log
is reported with both signed checkpoints (journal, `peer_rewrites`, a `peer_rewritten` alert).
Per record (`PeerRecords.statements_for`), the peer's `log/records/<suffix>.json` must carry a
checkpoint signed by that key and consistent with the one checked at the start, and each
statement an inclusion proof under it; only those statements reach the record's comparison.

A peer that is unreachable or serves garbage is logged and journaled, and the run goes on
without it: nothing here raises for anything a peer does.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from pithsync.base.clock import utcnow
from pithsync.base.logfmt import log_event
from pithsync.config import Config, PeerSpec
from pithsync.core import strictjson
from pithsync.core.alerting import peer_rewritten, peer_scope
from pithsync.core.compare import Retrieval
from pithsync.core.errors import MalformedDocument, PithError
from pithsync.core.merkle import HASH_SIZE, leaf_hash, verify_inclusion
from pithsync.core.observation import (
    CHECKPOINT_PATH,
    LOG_PREFIX,
    RECORD_TYPE,
    RECORDS_PREFIX,
    parse_statement,
)
from pithsync.core.peers import (
    LogRewritten,
    PeerStatement,
    SignedCheckpoint,
    check_checkpoint,
    consistency_from_tiles,
    consistency_tiles,
    needs_consistency_proof,
)
from pithsync.core.tlog import TILE_WIDTH, Tile, open_checkpoint
from pithsync.delivery import channels
from pithsync.fetch import Fetcher
from pithsync.store import Store

log = logging.getLogger("pithsync.peers")

MAX_CHECKPOINT_BYTES = 16 * 1024  # a checkpoint note: a few lines and a few signatures
MAX_TILE_BYTES = TILE_WIDTH * HASH_SIZE
MAX_RECORD_STATEMENTS = 64  # a record's latest statement per mirror
MAX_RECORD_FILE_BYTES = 1 << 20  # statements are a few kB each; 64 of them fit
MAX_PROOF_HASHES = 64  # a tree of at most 2**64 leaves


class PeerError(Exception):
    """A peer's answer cannot be used: unreachable, not found, garbage, or not verified."""


@dataclass(frozen=True)
class PeerHead:
    """A peer checked at the start of the run, with the checkpoint it was checked at (what its
    record files are held to).  Plain data: passed to worker processes as it is."""

    peer: PeerSpec
    head: SignedCheckpoint


async def _get(fetcher: Fetcher, url: str, cap: int) -> bytes:
    """The body at `url`, at most `cap` bytes.

    Raises:
        PeerError: anything but a 200 with a body within the cap.
    """
    fetched = (await fetcher.get(url)).fetched
    if fetched.retrieval is not Retrieval.FOUND or fetched.body is None:
        detail = fetched.detail or fetched.retrieval.value
        raise PeerError(f"{url}: {fetched.retrieval.value}: {detail}")
    if len(fetched.body) > cap:
        raise PeerError(f"{url}: {len(fetched.body)} bytes, over the cap of {cap}")
    return fetched.body


async def fetch_checkpoint(fetcher: Fetcher, peer: PeerSpec) -> SignedCheckpoint:
    """The peer's latest checkpoint, verified with its pinned key (origin: the key's name).

    Raises:
        PeerError: unreachable, or not a checkpoint signed by the pinned key.
    """
    note = await _get(fetcher, f"{peer.url}/{CHECKPOINT_PATH}", MAX_CHECKPOINT_BYTES)
    return open_signed(peer, note)


def open_signed(peer: PeerSpec, note: bytes) -> SignedCheckpoint:
    """A checkpoint note verified with the peer's pinned key.

    Raises:
        PeerError: not a checkpoint of the peer's log signed by its key.
    """
    try:
        checkpoint, _ = open_checkpoint(note, [peer.observer_key], peer.observer_key.name)
    except PithError as exc:
        raise PeerError(f"checkpoint refused: {exc}") from None
    return SignedCheckpoint(checkpoint, note)


async def consistency_proof(
    fetcher: Fetcher, peer: PeerSpec, old_size: int, new_size: int
) -> list[bytes]:
    """The consistency proof between two sizes of the peer's tree, from its tiles.

    Raises:
        PeerError: a tile is unreachable or of the wrong length.
    """
    tiles: dict[Tile, bytes] = {}
    for tile in consistency_tiles(old_size, new_size):
        url = f"{peer.url}/{LOG_PREFIX}{tile.path()}"
        tiles[tile] = await _get(fetcher, url, MAX_TILE_BYTES)
    try:
        return consistency_from_tiles(old_size, new_size, tiles)
    except PithError as exc:
        raise PeerError(f"tiles unusable: {exc}") from None


async def extends(
    fetcher: Fetcher, peer: PeerSpec, old: SignedCheckpoint, new: SignedCheckpoint
) -> LogRewritten | None:
    """Whether `new` extends `old` (see core.peers.check_checkpoint), with its proof fetched.

    Raises:
        PeerError: the tiles the proof needs cannot be had.
    """
    proof: list[bytes] = []
    if needs_consistency_proof(old.checkpoint, new.checkpoint):
        proof = await consistency_proof(fetcher, peer, old.checkpoint.size, new.checkpoint.size)
    return check_checkpoint(peer.name, old, new, proof)


async def check_peers(cfg: Config, store: Store, fetcher: Fetcher, run_id: str) -> list[PeerHead]:
    """Check every configured peer's log at the start of a run, and report what was found.

    Returns:
        The peers whose checkpoint verified and extends the last one seen, at that checkpoint.
    """
    checked: dict[str, PeerHead | None] = {}

    async def one(peer: PeerSpec) -> None:
        checked[peer.url] = await _check_peer(cfg, store, fetcher, run_id, peer)

    async with anyio.create_task_group() as tg:
        for peer in cfg.peers:
            tg.start_soon(one, peer)
    return [head for p in cfg.peers if (head := checked.get(p.url)) is not None]


async def _check_peer(
    cfg: Config, store: Store, fetcher: Fetcher, run_id: str, peer: PeerSpec
) -> PeerHead | None:
    last = _last_checkpoint(store, peer)
    try:
        new = await fetch_checkpoint(fetcher, peer)
        rewrite = None if last is None else await extends(fetcher, peer, last, new)
    except PeerError as exc:
        log_event(log, logging.WARNING, "peer_unusable", peer=peer.name, error=str(exc))
        detail = {"name": peer.name, "error": str(exc)[:500]}
        store.record_peer_check(run_id, ("peer_checked", None, peer.url, "unusable", detail))
        return None
    if rewrite is not None:
        _report_rewrite(cfg, store, run_id, peer, rewrite)
        return None
    size = new.checkpoint.size
    detail = {"name": peer.name, "size": size}
    entry = ("peer_checked", None, peer.url, "ok", detail)
    store.record_peer_check(run_id, entry, (peer.name, new.note, size))
    log_event(log, logging.DEBUG, "peer_checked", peer=peer.name, size=size)
    return PeerHead(peer, new)


def _last_checkpoint(store: Store, peer: PeerSpec) -> SignedCheckpoint | None:
    """The last checkpoint seen, if it still verifies: after the peer's key is changed in the
    configuration, its log is another log, seen for the first time."""
    note = store.peer_checkpoint(peer.url)
    if note is None:
        return None
    try:
        return open_signed(peer, note)
    except PeerError:
        log_event(log, logging.WARNING, "peer_key_changed", peer=peer.name)
        return None


def _report_rewrite(
    cfg: Config, store: Store, run_id: str, peer: PeerSpec, found: LogRewritten
) -> None:
    """Journal, keep both checkpoints and alert (once while the alert is open)."""
    log_event(
        log, logging.ERROR, "peer_rewritten", peer=peer.name, how=str(found.how),
        error=found.message,
    )  # fmt: skip
    old, new = found.old.note, found.new.note
    detail = {"name": peer.name, "how": str(found.how), "message": found.message}
    detail |= {"old_checkpoint": old.decode(), "new_checkpoint": new.decode()}
    decision = None
    if not store.open_alert_in(peer_scope(peer.url)):
        decision = peer_rewritten(
            peer.name, peer.url, str(found.how), found.message, old.decode(), new.decode(),
            now=utcnow(), run_id=run_id,
        )  # fmt: skip
    entry = ("peer_rewritten", None, peer.url, str(found.how), detail)
    rewrite = (peer.name, str(found.how), old, new)
    store.record_peer_rewrite(run_id, entry, rewrite, decision, channels(cfg))


class PeerRecords:
    """The peers' verified statements for each record of a run (see statements_for)."""

    def __init__(self, fetcher: Fetcher, heads: Sequence[PeerHead]):
        self.fetcher = fetcher
        self.heads = list(heads)
        # Record files of one run mostly carry the same few checkpoints: each is checked once.
        self._consistent: dict[tuple[str, bytes], str | None] = {}

    async def statements_for(self, suffix: str) -> tuple[PeerStatement, ...]:
        """Every peer's verified statements about the record `suffix`; a peer whose file is
        missing, unreachable or fails a check gives none (and is logged)."""
        found: list[PeerStatement] = []

        async def one(head: PeerHead) -> None:
            try:
                found.extend(await self._record(head, suffix))
            except PeerError as exc:
                log_event(
                    log, logging.INFO, "peer_record_refused", peer=head.peer.name,
                    record=suffix, error=str(exc)[:300],
                )  # fmt: skip

        async with anyio.create_task_group() as tg:
            for head in self.heads:
                tg.start_soon(one, head)
        return tuple(sorted(found, key=lambda s: (s.peer, s.statement.mirror)))

    async def _record(self, head: PeerHead, suffix: str) -> list[PeerStatement]:
        peer = head.peer
        url = f"{peer.url}/{RECORDS_PREFIX}{suffix}.json"
        fetched = (await self.fetcher.get(url)).fetched
        if fetched.retrieval is Retrieval.NOT_FOUND:
            return []  # the peer has not checked this record
        if fetched.retrieval is not Retrieval.FOUND or fetched.body is None:
            raise PeerError(f"{url}: {fetched.retrieval.value}: {fetched.detail}")
        obj = _record_file(fetched.body, suffix)
        signed = open_signed(peer, obj["checkpoint"].encode("utf-8"))
        await self._check_consistent(head, signed)
        return [_statement(peer, signed, item, suffix) for item in obj["statements"]]

    async def _check_consistent(self, head: PeerHead, signed: SignedCheckpoint) -> None:
        """The record file's checkpoint must be the head, or one of the same log (either may
        be the larger: the peer may have grown since the run began)."""
        key = (head.peer.url, signed.note)
        if key not in self._consistent:
            old, new = head.head, signed
            if new.checkpoint.size < old.checkpoint.size:
                old, new = new, old
            found = await extends(self.fetcher, head.peer, old, new)
            self._consistent[key] = found.message if found is not None else None
        if (message := self._consistent[key]) is not None:
            raise PeerError(f"the record file's checkpoint is not of the log checked: {message}")


def _record_file(body: bytes, suffix: str) -> dict:
    """A `log/records` object, its shape checked (its contents are checked by the caller)."""
    if len(body) > MAX_RECORD_FILE_BYTES:
        raise PeerError(f"a record file of {len(body)} bytes is over the cap")
    try:
        obj = strictjson.loads_object(body, max_bytes=MAX_RECORD_FILE_BYTES)
    except MalformedDocument as exc:
        raise PeerError(f"the record file is not JSON: {exc}") from None
    expected = {"type", "pith_number", "checkpoint", "statements"}
    if set(obj) != expected or obj["type"] != RECORD_TYPE:
        raise PeerError(f"not a {RECORD_TYPE} object (fields {sorted(obj)[:8]})")
    statements = obj["statements"]
    if not isinstance(statements, list) or len(statements) > MAX_RECORD_STATEMENTS:
        raise PeerError(f"statements must be a list of at most {MAX_RECORD_STATEMENTS}")
    if not isinstance(obj["checkpoint"], str) or not str(obj["pith_number"]).endswith(suffix):
        raise PeerError("the record file is for another record, or has no checkpoint")
    return obj


def _statement(peer: PeerSpec, signed: SignedCheckpoint, item: object, suffix: str):
    """One statement of a record file, verified under its checkpoint.

    Raises:
        PeerError: the statement is malformed, about something else, or not in the log.
    """
    if not isinstance(item, dict) or set(item) != {"index", "statement", "proof"}:
        raise PeerError("a statement entry has exactly index, statement and proof")
    index, text, proof = item["index"], item["statement"], item["proof"]
    if isinstance(index, bool) or not isinstance(index, int) or not isinstance(text, str):
        raise PeerError("a statement entry's index is an integer and its statement a string")
    if not isinstance(proof, list) or len(proof) > MAX_PROOF_HASHES:
        raise PeerError("a statement entry's proof is a list of base64 hashes")
    try:
        hashes = tuple(base64.b64decode(h, validate=True) for h in proof)
    except (binascii.Error, TypeError, ValueError):
        raise PeerError("a proof hash is not base64") from None
    data = text.encode("utf-8")
    cp = signed.checkpoint
    try:
        statement = parse_statement(data)
        verify_inclusion(leaf_hash(data), index, cp.size, hashes, cp.root_hash)
    except PithError as exc:
        raise PeerError(f"statement {index} refused: {exc}") from None
    if statement.pith_number.suffix != suffix or statement.observer != cp.origin:
        raise PeerError(f"statement {index} is about another record or by another observer")
    return PeerStatement(peer.name, peer.window_s, statement, data, index, hashes, signed)
