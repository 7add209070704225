"""What the verification measurements share: forged records as a mirror serves them, and
`Assessor.assess` over them as a sync does it (bench/assess_timing.py, depth_check.py,
float_guard.py)."""

from pithsync.core.compare import Assessor, Fetched, MirrorCopy, Retrieval
from pithsync.core.keys import TrustStore
from pithsync.core.verify import Verifier
from pithsync.testing import forge

BASE = "http://127.0.0.1:1"


def forged_documents(n: int) -> list[tuple[str, bytes, bytes]]:
    """(suffix, bundle bytes, state bytes) of forged records 0 to n - 1."""
    docs = []
    for i in range(n):
        record = forge.forge_record(i)
        bundle = record.bundle()
        docs.append((record.suffix, forge.dumps(bundle), forge.dumps(bundle["state"])))
    return docs


def fresh_assessor() -> Assessor:
    """An Assessor on a new Verifier (empty caches) that pins the forge's key."""
    return Assessor(Verifier(TrustStore([forge.TEST_KEY.pinned()])))


def assess_all(assessor: Assessor, docs: list[tuple[str, bytes, bytes]]) -> None:
    """Every record's bundle and state assessed as one mirror's copy."""
    for suffix, bundle, state in docs:
        copy = MirrorCopy(
            BASE,
            Fetched(Retrieval.FOUND, f"{BASE}/{suffix}/b", bundle),
            Fetched(Retrieval.FOUND, f"{BASE}/{suffix}/s", state),
        )
        assessor.assess(copy, suffix)
