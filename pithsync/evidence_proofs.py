"""The proofs an evidence file carries (core.attestation): this observer's statements from its
own log, each with its inclusion proof under the log's latest signed checkpoint, and the split
views found with peers, each with both observers' statements and the peer's signed checkpoint.
Reads the store; what is written is checked with the pure functions of core.attestation."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence

from pithsync.core import attestation
from pithsync.core.canonical import sha256hex
from pithsync.core.errors import PithError
from pithsync.core.evidence import Documents
from pithsync.core.merkle import HASH_SIZE
from pithsync.core.note import VerifierKey, parse_note
from pithsync.core.observation import parse_statement
from pithsync.core.tlog import parse_checkpoint

MAX_SPLIT_VIEWS = 32  # per record: one per mirror and peer is enough to prove it
SCANNED_STATEMENTS = 500  # of one mirror, newest first, looking for the one a claim needs


def _b64(hashes: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(h).decode("ascii") for h in hashes]


class Proofs:
    """The `checkpoints` and `statements` of one record's evidence file, filled as claims ask."""

    def __init__(self, store, pith_number: str, observers: Sequence[VerifierKey]):
        self.store = store
        self.pith = pith_number
        self.observers = list(observers)
        self.checkpoints: list[str] = []
        self.statements: list[dict] = []
        self._checkpoint_at: dict[str, int] = {}
        self._statement_at: dict[tuple[str, int], int] = {}
        note = store.observer_checkpoint()
        self.own = None if note is None else note.decode("utf-8")
        self.size = 0 if note is None else parse_checkpoint(parse_note(note).text).size

    def _checkpoint(self, note: str) -> int:
        if note not in self._checkpoint_at:
            self._checkpoint_at[note] = len(self.checkpoints)
            self.checkpoints.append(note)
        return self._checkpoint_at[note]

    def _add(self, data: bytes, index: int, proof: Sequence[bytes], note: str) -> int:
        """A statement of the file, added once; its position in `statements`."""
        at = self._checkpoint(note)
        key = (sha256hex(data), at)
        if key not in self._statement_at:
            self._statement_at[key] = len(self.statements)
            self.statements.append(
                {
                    "statement": data.decode("utf-8"),
                    "index": index,
                    "proof": _b64(proof),
                    "checkpoint": at,
                }
            )
        return self._statement_at[key]

    def _own(self, index: int, data: bytes) -> int:
        proof = self.store.inclusion_proof(index, self.size)
        return self._add(data, index, proof, self.own or "")

    def _proven(self) -> list:
        checkpoints, _ = attestation.open_checkpoints(self.checkpoints, self.observers)
        return attestation.prove_statements(self.statements, checkpoints)[0]

    def attest(self, claim: dict, docs: Documents) -> bool:
        """Cite the statement of this observer's log that proves a claim's mirror and url (a
        claim naming none needs none); False when the log holds none."""
        mirror, url = claim.get("mirror"), claim.get("url")
        if mirror is None and url is None:
            return True
        i = claim.get("document")
        if self.own is None or not isinstance(mirror, str) or not docs.has(i):
            return False
        digest = sha256hex(docs.bodies[i])
        for index, _, data in self.store.statements_of(self.pith, mirror, SCANNED_STATEMENTS):
            data = bytes(data)
            if any(f.url == url and f.sha256 == digest for f in parse_statement(data).fetched):
                claim["statements"] = [self._own(index, data)]
                return not attestation.check_attribution(claim, self._proven(), self.pith, digest)
        return False

    def split_views(self) -> list[dict]:
        """A `split_view` claim for the newest split view kept of each mirror and peer whose
        statements this file can prove (this observer's is still in its log)."""
        if self.own is None:
            return []
        claims, seen = [], set()
        mine_at = {
            bytes(data): index
            for index, _, data in self.store.statements_of(self.pith, None, SCANNED_STATEMENTS)
        }
        for row in self.store.split_views(self.pith):
            key = (row["mirror"], row["peer"])
            index = mine_at.get(bytes(row["mine"]))
            if key in seen or index is None or len(claims) >= MAX_SPLIT_VIEWS:
                continue
            claim = self._split_claim(row, index)
            if claim is not None:
                seen.add(key)
                claims.append(claim)
        return claims

    def _split_claim(self, row: dict, index: int) -> dict | None:
        proof = bytes(row["proof"])
        hashes = [proof[i : i + HASH_SIZE] for i in range(0, len(proof), HASH_SIZE)]
        try:
            mine = parse_statement(bytes(row["mine"]))
            theirs = parse_statement(bytes(row["statement"]))
        except PithError:
            return None
        asked = {g.url for g in theirs.fetched}
        url = next((f.url for f in mine.fetched if f.url in asked), "")
        kept = (len(self.checkpoints), len(self.statements))
        note = bytes(row["checkpoint"]).decode("utf-8")
        cited = [
            self._own(index, bytes(row["mine"])),
            self._add(bytes(row["statement"]), row["leaf_index"], hashes, note),
        ]
        claim = {
            "claim": "split_view",
            "mirror": mine.mirror,
            "url": url,
            "statements": cited,
            "window_s": math.ceil(row["window_s"]),
            "summary": (
                f"mirror {mine.mirror[:200]} showed observer {theirs.observer[:80]} state"
                f" {theirs.state_sha256} ({len(theirs.events)} events) and observer"
                f" {mine.observer[:80]} state {mine.state_sha256} ({len(mine.events)} events)"
            ),
        }
        checkpoints, unverified = attestation.open_checkpoints(self.checkpoints, self.observers)
        proven = attestation.prove_statements(self.statements, checkpoints)[0]
        if unverified or attestation.check_split_view(claim, proven, self.pith):
            self._take_back(*kept)  # e.g. a peer no longer pinned: its statement proves nothing
            return None
        return claim

    def _take_back(self, checkpoints: int, statements: int) -> None:
        del self.checkpoints[checkpoints:], self.statements[statements:]
        self._checkpoint_at = {n: i for n, i in self._checkpoint_at.items() if i < checkpoints}
        self._statement_at = {k: i for k, i in self._statement_at.items() if i < statements}
