"""Strict JSON input: the only way untrusted bytes become Python values.

Rejects what `json.loads` would quietly accept: duplicate keys (which of two values did the
signer see?), NaN/Infinity, invalid UTF-8, absurd nesting or numbers, and oversized documents.
Unknown fields are kept.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pithsync.core.errors import DocumentTooLarge, MalformedDocument

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
MAX_NUMBER_CHARS = 64


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise MalformedDocument(f"duplicate object key {key!r}")
            seen.add(key)
    return obj


def _reject_constant(name: str) -> Any:
    raise MalformedDocument(f"non-finite number {name} is not JSON")


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise MalformedDocument(f"number with {len(text)} characters exceeds {MAX_NUMBER_CHARS}")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise MalformedDocument(f"number with {len(text)} characters exceeds {MAX_NUMBER_CHARS}")
    value = float(text)
    if not math.isfinite(value):
        raise MalformedDocument(f"number {text[:20]} overflows to a non-finite value")
    return value


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs_without_duplicates,
    parse_constant=_reject_constant,
    parse_int=_parse_int,
    parse_float=_parse_float,
)


def _check_depth(value: Any, limit: int) -> None:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise MalformedDocument(f"nesting deeper than {limit} levels")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values() if isinstance(child, (dict, list)))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))


def loads(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `data` as one strict JSON document or raise MalformedDocument."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedDocument("document must be bytes")
    if len(data) > max_bytes:
        raise DocumentTooLarge(f"document of {len(data)} bytes exceeds the {max_bytes}-byte cap")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedDocument(f"invalid UTF-8 at byte {exc.start}") from None
    if text.startswith("\ufeff"):
        raise MalformedDocument("byte order mark before JSON document")
    try:
        value = _DECODER.decode(text)
    except MalformedDocument:
        raise
    except RecursionError:
        raise MalformedDocument(f"nesting deeper than {max_depth} levels") from None
    except ValueError as exc:
        # JSONDecodeError carries position; int() overflow of huge numbers lands here too.
        raise MalformedDocument(f"not JSON: {exc}") from None
    _check_depth(value, max_depth)
    return value


def loads_object(data: bytes, **kwargs: Any) -> dict:
    value = loads(data, **kwargs)
    if not isinstance(value, dict):
        raise MalformedDocument(f"expected a JSON object, got {type(value).__name__}")
    return value
