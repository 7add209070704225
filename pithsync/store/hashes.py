"""Hashes as the store keeps them in its widest tables: a sha256 in hex is kept as its 32
bytes, half its size; every reader gets the hex back."""

from __future__ import annotations


def packed(value: str | bytes | None) -> str | bytes | None:
    """A sha256 in lower-case hex as its 32 bytes; any other value as it is (so that what the
    store held before, a tampered journal row say, is kept exactly)."""
    if isinstance(value, str) and len(value) == 64:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            return value
        if raw.hex() == value:  # fromhex also reads upper case and spaces
            return raw
    return value


def unpacked(value: str | bytes | None) -> str | None:
    """A stored hash as hex (what packed was given)."""
    return value.hex() if isinstance(value, bytes) else value
