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


_CONTAINERS = (dict, list)


def _check_depth(value: Any, limit: int) -> None:
    # Level by level, touching only containers: on the hot path for every document.
    level = [value] if type(value) in _CONTAINERS else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            raise MalformedDocument(f"nesting deeper than {limit} levels")
        below = []
        for node in level:
            children = node.values() if type(node) is dict else node
            below += [c for c in children if type(c) in _CONTAINERS]
        level = below


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
        if not text.strip():
            raise MalformedDocument("empty document, not JSON") from None
        if isinstance(exc, json.JSONDecodeError) and exc.pos == len(text) - len(text.lstrip()):
            # Not JSON from the first byte: say what it looks like (an HTML error page, text).
            raise MalformedDocument(f"not JSON: begins with {text.lstrip()[:40]!r}") from None
        raise MalformedDocument(f"not JSON: {exc}") from None
    _check_depth(value, max_depth)
    return value


_JSON_NAMES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null"}


def loads_object(data: bytes, **kwargs: Any) -> dict:
    value = loads(data, **kwargs)
    if not isinstance(value, dict):
        raise MalformedDocument(f"expected a JSON object, got {_JSON_NAMES.get(type(value), type(value).__name__)}")
    return value
