"""A peer observer's published log, built from the core and served from 127.0.0.1, for tests.

`PeerLog` is a MirrorServer (so its faults work too) that publishes what another pithsync
observer publishes below its base URL (issue 17's contract): `log/checkpoint`, the hash tiles
and entry bundles of c2sp.org/tlog-tiles, and `log/records/<suffix>.json` with each record's
latest statement per mirror and their inclusion proofs.  Its history can be rewritten on demand
(`rewrite_leaf`, `truncate`, `publish(checkpoint_only=...)`) for the rewritten-log tests.

    async with PeerLog("b") as peer:
        peer.observe(pith, mirror_url, events, state_sha256, observed_at)
        peer.publish()
        ...configure peer.spec_toml() as a [[peers]] entry...

Nothing in the product imports it.
"""

from __future__ import annotations

import base64
import hashlib
import json

from pithsync.core import merkle, tlog
from pithsync.core.note import NoteSigner, VerifierKey, parse_note
from pithsync.core.numbers import PithNumber, parse_full
from pithsync.core.observation import (
    CHECKPOINT_PATH,
    LOG_PREFIX,
    RECORD_TYPE,
    Fetch,
    Statement,
    record_path,
    statement,
)
from pithsync.core.tlog import Checkpoint
from pithsync.testing.mirror import MirrorServer


def observer_signer(label: str) -> NoteSigner:
    """A fixed observer key for `label` (its seed is sha256 of the label: tests only)."""
    seed = hashlib.sha256(f"pithsync test observer {label}".encode()).digest()
    return NoteSigner(f"{label}.test/pithsync/{seed[:4].hex()}", seed)


class PeerLog(MirrorServer):
    """Another observer's log on 127.0.0.1.  `observe` appends statements, `publish` signs a
    checkpoint over all of them and serves the files."""

    def __init__(self, label: str = "peer", signer: NoteSigner | None = None) -> None:
        super().__init__(label)
        self.signer = signer or observer_signer(label)
        self.entries: list[bytes] = []  # leaf data, in log order
        self.latest: dict[tuple[str, str], int] = {}  # (pith, mirror) -> leaf index

    @property
    def verifier_key(self) -> VerifierKey:
        return self.signer.verifier_key

    def peer_toml(self, name: str | None = None, window_s: float | None = None) -> str:
        """This peer as a [[peers]] entry of a pithsync.toml."""
        text = f'[[peers]]\nname = "{name or self.name}"\nurl = "{self.base_url}"\n'
        text += f'observer_key = "{self.verifier_key.encode()}"\n'
        return text + (f"window_s = {window_s}\n" if window_s is not None else "") + "\n"

    def append(self, s: Statement) -> int:
        """Append a statement; returns its leaf index."""
        self.entries.append(s.encode())
        index = len(self.entries) - 1
        self.latest[(str(s.pith_number), s.mirror)] = index
        return index

    def observe(
        self,
        pith_number: str | PithNumber,
        mirror: str,
        events,
        state_sha256: str | None,
        observed_at: str,
        mirror_status: str = "ok",
    ) -> int:
        """Append this observer's statement that `mirror` served `events` for the record."""
        pith = parse_full(str(pith_number))
        base = mirror.rstrip("/")
        fetched = [Fetch(f"{base}/pith/{pith.suffix}/bundle.json", 200, "0" * 64)]
        s = statement(
            self.signer.name, pith, base, fetched, events, state_sha256, mirror_status, observed_at
        )
        return self.append(s)

    def leaf_hashes(self) -> list[bytes]:
        return [merkle.leaf_hash(e) for e in self.entries]

    def signed_checkpoint(self, size: int | None = None, signer: NoteSigner | None = None) -> bytes:
        """The signed checkpoint of the first `size` entries (all by default)."""
        leaves = self.leaf_hashes()[: len(self.entries) if size is None else size]
        cp = Checkpoint(self.signer.name, len(leaves), merkle.root(leaves))
        return tlog.sign_checkpoint(cp, [signer or self.signer])

    def publish(self, *, checkpoint: bytes | None = None) -> bytes:
        """Serve the log as it is now: checkpoint (or the one given), tiles, entry bundles and
        the record files (their proofs under the checkpoint served).  Returns the checkpoint."""
        note = checkpoint if checkpoint is not None else self.signed_checkpoint()
        leaves = self.leaf_hashes()
        size = tlog.parse_checkpoint(parse_note(note).text).size
        self.put("/" + CHECKPOINT_PATH, note, "text/plain; charset=utf-8")
        for tile in tlog.tiles_for_size(size):
            self.put(f"/{LOG_PREFIX}{tile.path()}", tlog.tile_hashes(leaves[:size], tile), BINARY)
            if tile.level == 0:
                start, end = tile.leaf_range()
                bundle = b"".join(len(e).to_bytes(2, "big") + e for e in self.entries[start:end])
                self.put(f"/{LOG_PREFIX}{tile.entries_path()}", bundle, BINARY)
        by_record: dict[str, list[int]] = {}
        for (pith, _mirror), index in sorted(self.latest.items()):
            if index < size:
                by_record.setdefault(pith, []).append(index)
        for pith, indexes in by_record.items():
            self.put("/" + record_path(parse_full(pith)), self.record_file(pith, indexes, note))
        return note

    def record_file(self, pith: str, indexes: list[int], note: bytes, size: int | None = None):
        """The `log/records` object of a record: its statements with inclusion proofs."""
        leaves = self.leaf_hashes()
        size = size if size is not None else len(leaves)
        statements = [
            {
                "index": i,
                "statement": self.entries[i].decode(),
                "proof": [
                    base64.b64encode(h).decode() for h in merkle.inclusion_proof(leaves[:size], i)
                ],
            }
            for i in indexes
        ]
        return {
            "type": RECORD_TYPE,
            "pith_number": pith,
            "checkpoint": note.decode(),
            "statements": statements,
        }

    def put_json(self, path: str, value) -> None:
        """Serve a JSON value canonically at `path` (a record file edited by a test)."""
        self.put(path, json.dumps(value, sort_keys=True, separators=(",", ":")).encode())

    # -- rewriting history ---------------------------------------------------------------------

    def rewrite_leaf(self, index: int, s: Statement) -> None:
        """Replace entry `index` (a rewritten log: publish again to serve it)."""
        self.entries[index] = s.encode()

    def truncate(self, size: int) -> None:
        """Drop every entry from `size` on (a log that shrinks)."""
        del self.entries[size:]
        self.latest = {k: i for k, i in self.latest.items() if i < size}


BINARY = "application/octet-stream"
