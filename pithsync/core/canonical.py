"""The one canonical encoder of the project (PROTOCOL.md, "Canonical JSON and hashes").

The definition is Python's own `json.dumps` output, not RFC 8785; nothing else in pithsync may
encode bytes that get hashed.  orjson produces the same bytes faster (the benchmark checks both)
for every JSON value except in two cases, where the standard encoder (the definition itself) is
used:
- integers beyond 64 bits, which orjson refuses;
- floats below 1e-4 in magnitude, which orjson writes as `0.00001` or `1e-9` where Python writes
  `1e-05` and `1e-09`.  The guard is on the output: such a float always shows `0.0000` or a digit
  before `e-`, and a string that happens to contain one only costs the slower path.

NaN and infinities are outside canon's domain: strictjson refuses them on input and nothing in
pithsync computes a float, so none reaches here (orjson would write `null`; checking every
`null` for a NaN would give back much of orjson's speed).  tests/core/test_canonical.py checks byte
identity with hypothesis.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import orjson

from pithsync.core.errors import MalformedDocument

_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
# Anything orjson would encode differently from json (subclasses, dataclasses, dates, enums)
# raises instead, and falls through to the definition.
_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
)


def _reference(value: Any) -> bytes:
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except (UnicodeEncodeError, ValueError, TypeError) as exc:
        # Lone surrogates, NaN or non-JSON types cannot have a canonical form.
        raise MalformedDocument(f"value has no canonical JSON encoding: {exc}") from None


# A digit, then "e-": an exponent, not text such as "merge-v1".  The literal "e-" comes first so
# that the regex engine scans for it at memchr speed; the lookbehind then checks the digit.
_NEGATIVE_EXPONENT = re.compile(rb"e-(?<=[0-9]e-)")


def _small_float_in(out: bytes) -> bool:
    """Whether orjson's output `out` may hold a float below 1e-4 (then the definition encodes)."""
    # Such a float shows either "0.0000" where a value starts (after ":", "," or "[", or at the
    # very start, with an optional "-"), or a digit before "e-".  Scanning for the rare ".0000"
    # and then looking back keeps timestamps such as `12:00:00.000000Z` off the slow path, where
    # a plain substring test sent them.  find() scans at memchr speed; one regex with these
    # alternatives cannot, and would cost canon several times its own time (bench/README.md).
    i = out.find(b".0000")
    while i >= 1:
        if out[i - 1] == 48:  # "0"
            j = i - 2
            if j >= 0 and out[j] == 45:  # "-"
                j -= 1
            if j < 0 or out[j] in b":,[":
                return True
        i = out.find(b".0000", i + 5)
    return _NEGATIVE_EXPONENT.search(out) is not None


def canon(value: Any) -> bytes:
    """The canonical bytes of `value`: json.dumps(x, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False) as UTF-8.

    Raises:
        MalformedDocument: `value` has no canonical JSON encoding.
    """
    try:
        out = orjson.dumps(value, option=_ORJSON_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        return _reference(value)
    return _reference(value) if _small_float_in(out) else out


def compact(value: Any) -> bytes:
    """JSON as the registry serves it: compact, keys in their own order.  Not canonical (never
    what a hash is computed over): the wire form pithsync writes when it has no original bytes."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256hex(data: bytes) -> str:
    """The SHA-256 of `data`, in lower-case hex."""
    return hashlib.sha256(data).hexdigest()


def canon_sha256(value: Any) -> str:
    """The SHA-256 (hex) of `value`'s canonical bytes."""
    return sha256hex(canon(value))


def without(mapping: dict, *keys: str) -> dict:
    """A shallow copy of `mapping` without `keys` (the fields a hash is computed over)."""
    return {k: v for k, v in mapping.items() if k not in keys}
