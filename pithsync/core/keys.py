"""Pinned Ed25519 keys.  Trust comes only from here, never from keys a document carries."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import VerifyKey

from pithsync.core.errors import InvalidKey

REGISTRY_KEY_ID = "pith-v1-2026-05"
REGISTRY_KEY_B64 = "stVStoiQhXFxp4s2pdzPNoqVNBMojDU/fJ2db5S3CbM="


def fingerprint_hex(raw: bytes) -> str:
    """`fingerprint_sha256_hex`: the first 32 hex characters of sha256(raw key)."""
    return hashlib.sha256(raw).hexdigest()[:32]


def fingerprint_b32(raw: bytes) -> str:
    return base64.b32encode(hashlib.sha256(raw).digest()).decode("ascii")[:26]


def public_key_entry(key_id: str, raw: bytes, url: str | None = None) -> dict:
    """A key in the `public_keys` form of PROTOCOL.md ("Keys"), as bundles and manifests list it."""
    return {
        "key_id": key_id,
        "algorithm": "ed25519",
        "format": "raw",
        "public_key_b64": base64.b64encode(raw).decode("ascii"),
        "public_key_hex": raw.hex(),
        "fingerprint_sha256_hex": fingerprint_hex(raw),
        "fingerprint_sha256_b32_first128bits": fingerprint_b32(raw),
        "rotates_at": None,
        "url": url,
    }


@dataclass(frozen=True)
class PinnedKey:
    key_id: str
    raw: bytes
    fingerprint: str
    _verify_key: VerifyKey = field(repr=False, compare=False)

    @classmethod
    def from_b64(cls, key_id: str, public_key_b64: str) -> PinnedKey:
        try:
            raw = base64.b64decode(public_key_b64, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise InvalidKey(f"key {key_id!r}: public_key_b64 is not base64") from None
        if len(raw) != 32:
            raise InvalidKey(f"key {key_id!r}: an Ed25519 public key is 32 bytes, got {len(raw)}")
        try:
            vk = VerifyKey(raw)
        except (CryptoError, ValueError, TypeError) as exc:
            raise InvalidKey(f"key {key_id!r}: {exc}") from None
        return cls(key_id, raw, fingerprint_hex(raw), vk)

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._verify_key.verify(message, signature)
            return True
        except (BadSignatureError, CryptoError, ValueError, TypeError):
            return False


class TrustStore:
    """The pinned keys, by key_id.  Immutable after construction."""

    def __init__(self, keys: list[PinnedKey] | tuple[PinnedKey, ...]):
        self._keys = {k.key_id: k for k in keys}

    @classmethod
    def registry_default(cls) -> TrustStore:
        return cls([PinnedKey.from_b64(REGISTRY_KEY_ID, REGISTRY_KEY_B64)])

    @property
    def trust_id(self) -> str:
        """Names this exact set of pinned keys: a verification remembered under one set is
        never reused under another."""
        parts = sorted(f"{k.key_id}:{k.raw.hex()}" for k in self._keys.values())
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def get(self, key_id: object) -> PinnedKey | None:
        return self._keys.get(key_id) if isinstance(key_id, str) else None

    def __iter__(self):
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)


def decode_signature(signature_b64: object) -> bytes | None:
    if not isinstance(signature_b64, str):
        return None
    try:
        sig = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    return sig if len(sig) == 64 else None
