"""The one canonical encoder of the project (PROTOCOL.md, "Canonical JSON and hashes").

This is Python's own `json.dumps` output, not RFC 8785; nothing else in pithsync may encode
bytes that get hashed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pithsync.core.errors import MalformedDocument

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canon(value: Any) -> bytes:
    """canon(x) = json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=False) as UTF-8."""
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except (UnicodeEncodeError, ValueError, TypeError) as exc:
        # Lone surrogates, NaN or non-JSON types cannot have a canonical form.
        raise MalformedDocument(f"value has no canonical JSON encoding: {exc}") from None


def sha256hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canon_sha256(value: Any) -> str:
    return sha256hex(canon(value))


def without(mapping: dict, *keys: str) -> dict:
    """A shallow copy of `mapping` without `keys` (the fields a hash is computed over)."""
    return {k: v for k, v in mapping.items() if k not in keys}
