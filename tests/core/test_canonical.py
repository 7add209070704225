"""canon(x) is exactly Python's json.dumps(sort_keys, compact, ensure_ascii=False) as UTF-8."""

from __future__ import annotations

import hashlib
import json

import pytest
from helpers import BUNDLE_SEEDS
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonvalues import FLOATS, INTS, JSON_VALUES, TEXT

from pithsync.core import strictjson
from pithsync.core.canonical import canon, canon_sha256, sha256hex, without
from pithsync.core.errors import MalformedDocument


def reference(x) -> bytes:
    return json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_canon_is_byte_identical_to_reference(x):
    assert canon(x) == reference(x)


# orjson (the fast path) and json.dumps disagree on floats below 1e-4 and on ints beyond 64 bits;
# canon must notice every such case, alone or inside a document, and never in a string.
TINY_FLOATS = st.floats(min_value=-1e-4, max_value=1e-4, allow_nan=False) | st.floats(
    allow_nan=False, allow_infinity=False, width=32
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(FLOATS | TINY_FLOATS | INTS, max_size=4), TEXT)
def test_canon_of_numbers_is_byte_identical_to_reference(numbers, text):
    doc = {"n": numbers, "t": text, "merge": "pith-open-graph-merge-v1", "x": None}
    assert canon(doc) == reference(doc)
    assert canon(numbers) == reference(numbers)


@pytest.mark.parametrize(
    "value",
    [
        1e-05,
        -1e-05,
        1.5e-09,
        9.99e-05,
        1e-300,
        2**64,
        -(2**63) - 1,
        [0.0001, 1e-05],
        {"s": "1e-5 in text", "v": 1e-07},
    ],
)
def test_canon_takes_the_definition_where_orjson_differs(value):
    assert canon(value) == reference(value)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_strict_loads_round_trips_canon(x):
    back = strictjson.loads(canon(x))
    assert back == x
    assert canon(back) == canon(x)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=-(10**4000), max_value=10**4000))
def test_canon_of_huge_ints_matches_reference(n):
    assert canon({"n": n, "l": [n]}) == reference({"n": n, "l": [n]})


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(TEXT, st.integers(), min_size=2, max_size=8))
def test_canon_sorts_keys_by_code_point(d):
    decoded = json.loads(canon(d))
    assert list(decoded) == sorted(d)


def test_not_jcs_number_formatting():
    # RFC 8785 would write 10000000000000000 and 1; Python writes these.
    assert canon(1e16) == b"1e+16"
    assert canon(1.0) == b"1.0"
    assert canon([-0.0, 1e-7]) == b"[-0.0,1e-07]"


def test_not_jcs_key_order_outside_bmp():
    # By code point U+FB01 < U+1F600; by UTF-16 units (JCS) the emoji (0xD83D...) sorts first.
    assert canon({"\U0001f600": 1, "\ufb01": 2}) == '{"\ufb01":2,"\U0001f600":1}'.encode("utf-8")


def test_canon_is_compact_utf8_not_escaped():
    assert (
        canon({"b": "é", "a": [1, {"z": None, "y": True}]})
        == '{"a":[1,{"y":true,"z":null}],"b":"é"}'.encode()
    )
    assert canon("\U0001f600") == '"\U0001f600"'.encode("utf-8")
    assert canon("\u2028") == '"\u2028"'.encode("utf-8")
    assert canon('q"\\\n') == b'"q\\"\\\\\\n"'


@pytest.mark.parametrize(
    "bad",
    ["\ud800", {"\udfff": 1}, {1j: 1}, object(), {"s": {1, 2}}, b"bytes"],
    ids=repr,
)
def test_values_without_canonical_form_raise_malformed(bad):
    with pytest.raises(MalformedDocument):
        canon(bad)


def test_sha256hex_is_lowercase_hex():
    assert sha256hex(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert sha256hex(b"abc") == sha256hex(b"abc").lower()
    assert len(sha256hex(b"")) == 64


def test_canon_sha256():
    assert canon_sha256({"b": 1, "a": 2}) == hashlib.sha256(b'{"a":2,"b":1}').hexdigest()


def test_without_is_a_shallow_copy():
    d = {"a": 1, "b": 2, "c": {"x": 1}}
    w = without(d, "b", "missing")
    assert w == {"a": 1, "c": {"x": 1}}
    assert "b" in d  # the original is untouched
    assert w["c"] is d["c"]


def test_seed_canonical_sha256_values(seed_docs):
    for name in BUNDLE_SEEDS:
        b = seed_docs[name]
        assert canon_sha256(b["canonical_record"]) == b["canonical_sha256"], name
