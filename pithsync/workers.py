"""Verification in worker processes, beside the event loop that fetches.

Parsing and verifying is CPU work; on a machine with a second core it runs there while the
main process keeps the wire busy. Workers receive bytes and the pinned keys, and send back
slim Assessments: the main process already holds the bytes, so they are not sent back.
"""

from __future__ import annotations

import anyio
import anyio.to_process

from pithsync.core.compare import Assessment, Assessor, MirrorCopy
from pithsync.core.keys import PinnedKey, TrustStore

# The fields of a bundle the main process reads (number, record, aliases, hints).
_BUNDLE_FIELDS = ("pith_number", "canonical_record", "source_aliases", "mirror_hints", "links")

_assessors: dict[tuple, Assessor] = {}  # in each worker process: one per (keys, cap), kept warm


def assess_copies(keys: tuple[tuple[str, str], ...], max_bytes: int, suffix: str, copies: list[MirrorCopy], known_good: frozenset) -> list[Assessment]:
    """Runs in a worker process."""
    assessor = _assessors.get((keys, max_bytes))
    if assessor is None:
        from pithsync.core.verify import Verifier

        assessor = Assessor(Verifier(TrustStore([PinnedKey.from_b64(k, b) for k, b in keys])), max_bytes)
        _assessors[(keys, max_bytes)] = assessor
    out = []
    for copy in copies:
        a = assessor.assess(copy, suffix, known_good)
        a.copy, a.report = None, None
        if a.bundle is not None:
            a.bundle = {k: a.bundle[k] for k in _BUNDLE_FIELDS if k in a.bundle}
        out.append(a)
    return out


class AssessPool:
    """Assesses copies in `workers` processes (or in this one, when workers is 0)."""

    def __init__(self, assessor: Assessor, trust: TrustStore, max_bytes: int, workers: int):
        self.assessor = assessor
        self.workers = workers
        self._keys = tuple((k.key_id, k.public_key_b64) for k in trust)
        self._max_bytes = max_bytes
        self._limiter = anyio.CapacityLimiter(workers) if workers > 0 else None

    async def assess(self, copies: list[MirrorCopy], suffix: str, known_good) -> list[Assessment]:
        if self._limiter is None or not any(c.bundle.body for c in copies):
            return [self.assessor.assess(c, suffix, known_good) for c in copies]
        slim = await anyio.to_process.run_sync(assess_copies, self._keys, self._max_bytes, suffix, copies, frozenset(known_good), limiter=self._limiter)
        for a, copy in zip(slim, copies):
            a.copy = copy
        return slim
