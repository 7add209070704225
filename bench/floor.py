"""The verification floor: the least work that checks one bundle and the state served beside it,
written straight through (PROTOCOL.md).  Parsing, the canonical encoding, sha256, and the
Ed25519 verify calls that cannot be avoided (each event, the receipt, the bundle signature) --
nothing else: no strict-JSON hooks, no schema reports, no re-merge of the events, no caches.

The served state is accepted when it equals the embedded state (which the bundle signature
covers); the floor does not recompute the merge, so pithsync's extra work there is part of the
ratio by design.

The canonical encoding is pithsync's own `canon` (orjson where it is byte-identical to json.dumps,
json.dumps where not), and parsing is plain orjson.loads (no strictness at all; pithsync's strict
parser takes orjson's reading when it is faithful): the fastest tools are part of the floor, so
pithsync gains nothing in this ratio from using them.
"""

from __future__ import annotations

import base64
import hashlib

import orjson
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from pithsync.core.canonical import canon

_EXCLUDED = ("signature", "content_sha256", "event_id")


class FloorVerifier:
    def __init__(self, key_id: str, public_key_b64: str):
        raw = base64.b64decode(public_key_b64)
        self.key_id = key_id
        self.fingerprint = hashlib.sha256(raw).hexdigest()[:32]
        self.vk = VerifyKey(raw)

    def _sig(self, sig: dict, digest: bytes) -> bool:
        if sig["key_id"] != self.key_id or sig["public_key_fingerprint"] != self.fingerprint:
            return False
        try:
            self.vk.verify(digest, base64.b64decode(sig["signature_b64"]))
        except BadSignatureError:
            return False
        return True

    def verify(self, bundle_bytes: bytes, state_bytes: bytes) -> bool:
        b = orjson.loads(bundle_bytes)
        s = orjson.loads(state_bytes)
        record = b["canonical_record"]
        record_digest = hashlib.sha256(canon(record)).digest()
        if record_digest.hex() != b["canonical_sha256"]:
            return False
        if base64.b32encode(record_digest).decode()[:26] != b["pith_number"][-26:]:
            return False
        pith = b["pith_number"]
        receipt_ok = False
        for ev in b["events"]:
            digest = hashlib.sha256(
                canon({k: v for k, v in ev.items() if k not in _EXCLUDED})
            ).digest()
            hexd = digest.hex()
            if (
                hexd != ev["content_sha256"]
                or ev["event_id"] != "sha256:" + hexd
                or ev["subject_pith_number"] != pith
            ):
                return False
            if not self._sig(ev["signature"], digest):
                return False
            if ev["event_type"] == "record_created":
                p = ev["payload"]
                receipt = p["receipt"]
                if (
                    p["canonical_record"] != record
                    or p["canonical_sha256"] != b["canonical_sha256"]
                    or receipt["canonical_sha256"] != b["canonical_sha256"]
                ):
                    return False
                if not self._sig(receipt, record_digest):
                    return False
                receipt_ok = True
        if not receipt_ok:
            return False
        bs = b["bundle_signature"]
        digest = hashlib.sha256(
            canon({k: v for k, v in b.items() if k != "bundle_signature"})
        ).digest()
        if digest.hex() != bs["bundle_sha256"] or not self._sig(bs, digest):
            return False
        return s == b["state"]
