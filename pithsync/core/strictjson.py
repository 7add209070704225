"""Strict JSON input: the only way untrusted bytes become Python values.

Rejects what `json.loads` would quietly accept: duplicate keys (which of two values did the
signer see?), NaN/Infinity, invalid UTF-8, absurd nesting or numbers, and oversized documents.
Unknown fields are kept.

Most documents take a fast path: orjson reads them, and its reading is kept only when orjson
writes the value back as exactly the bytes received.  orjson rejects invalid UTF-8, a BOM, lone
surrogates and non-finite numbers; a duplicate key, an integer beyond 64 bits (which it reads as
a float), a number or escape spelled any other way, or any whitespace changes the bytes written
back.  So a document that round-trips was read exactly as the strict parser below reads it, and
everything else (including every malformed document, which gets its specific error there) goes
the strict way.  The registry's compact UTF-8 round-trips, so its documents take the fast path.
tests/core/test_strictjson.py holds the two paths equal with hypothesis.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

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
    # Level by level, touching only containers.
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


def _check_depth_indented(value: Any, limit: int) -> None:
    """_check_depth, decided without the walk where it can be.  In orjson's two-space indented
    form a value inside k containers starts a line indented k levels, so when no line is indented
    `limit` levels no container nests deeper than `limit` (an empty one at level k has depth k + 1).
    orjson writes that form in C, where the walk visits every container in Python: on the
    registry's bundles the walk is a measurable share of verification (bench/README.md)."""
    try:
        if limit >= 1 and b"\n" + b"  " * limit not in orjson.dumps(
            value, option=orjson.OPT_INDENT_2
        ):
            return
    except orjson.JSONEncodeError:
        pass
    _check_depth(value, limit)


def _round_trip(data: bytes) -> tuple[bool, Any]:
    """(True, value) when orjson reads `data` and writes it back byte for byte (see the module's
    docstring)."""
    try:
        value = orjson.loads(data)
        return orjson.dumps(value) == data, value
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return False, None


def loads(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `data` as one strict JSON document.

    Args:
        data: the untrusted bytes.
        max_bytes: the largest document accepted.
        max_depth: the deepest nesting accepted.

    Returns:
        The value, read exactly as the strict parser reads it.

    Raises:
        DocumentTooLarge: `data` is longer than `max_bytes`.
        MalformedDocument: `data` is not one strict JSON document (saying why).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedDocument("document must be bytes")
    if len(data) > max_bytes:
        raise DocumentTooLarge(f"document of {len(data)} bytes exceeds the {max_bytes}-byte cap")
    data = bytes(data)
    same, value = _round_trip(data)
    if same:
        _check_depth_indented(value, max_depth)
        return value
    return _strict_loads(data, max_depth)


def _strict_loads(data: bytes, max_depth: int) -> Any:
    """The definition: the standard library's parser, every lax acceptance turned into an error."""
    try:
        text = data.decode("utf-8")
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
    _check_depth_indented(value, max_depth)
    return value


_JSON_NAMES = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def loads_object(data: bytes, **kwargs: Any) -> dict:
    """`loads` for a document that must be a JSON object (same arguments).

    Raises:
        MalformedDocument: as `loads`, or the document is not an object.
    """
    value = loads(data, **kwargs)
    if not isinstance(value, dict):
        raise MalformedDocument(
            f"expected a JSON object, got {_JSON_NAMES.get(type(value), type(value).__name__)}"
        )
    return value
