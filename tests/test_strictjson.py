"""Strict JSON input (PROTOCOL.md: untrusted bytes become values only through strictjson)."""

from __future__ import annotations

import json

import pytest

from pithsync.core import strictjson
from pithsync.core.errors import DocumentTooLarge, MalformedDocument, PithError
from pithsync.core.strictjson import MAX_DEPTH, MAX_NUMBER_CHARS, loads, loads_object


def test_plain_document_parses():
    assert loads(b'{"a":[1,2.5,"x",true,false,null],"b":{"c":-3}}') == {
        "a": [1, 2.5, "x", True, False, None],
        "b": {"c": -3},
    }


def test_every_seed_parses_like_json(seeds):
    for name, data in seeds.items():
        assert loads_object(data) == json.loads(data), name


@pytest.mark.parametrize(
    "doc",
    [
        b'{"a":1,"a":2}',
        b'{"a":1,"b":2,"a":1}',  # even an identical value is ambiguous
        b'{"outer":{"k":"x","k":"y"}}',
        b'[{"ok":1},{"dup":1,"dup":1}]',
    ],
)
def test_duplicate_keys_rejected(doc):
    with pytest.raises(MalformedDocument, match="duplicate"):
        loads(doc)


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
@pytest.mark.parametrize("template", [b"%s", b"[%s]", b'{"x":%s}', b'{"a":[1,{"b":%s}]}'])
def test_non_finite_constants_rejected(token, template):
    with pytest.raises(MalformedDocument):
        loads(template % token)


@pytest.mark.parametrize(
    "doc",
    [
        b'{"a":"\xff"}',  # never valid in UTF-8
        b'{"a":"\xc0\xaf"}',  # overlong encoding of "/"
        b'{"a":"\xed\xa0\x80"}',  # UTF-8-encoded surrogate
        b'{"a":"\xe2\x82"}',  # truncated sequence
        '{"a":"é"}'.encode("latin-1"),
        '{"a":1}'.encode("utf-16"),
    ],
)
def test_invalid_utf8_rejected(doc):
    with pytest.raises(MalformedDocument):
        loads(doc)


def test_bom_rejected():
    with pytest.raises(MalformedDocument, match="byte order mark"):
        loads(b"\xef\xbb\xbf" + b'{"a":1}')


@pytest.mark.parametrize(
    "doc",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b"[" * 100_000,  # deep and unterminated
        b'[{"a":' * 50_000 + b"null" + b"}]" * 50_000,
    ],
    ids=["arrays", "objects", "unterminated", "mixed"],
)
def test_absurd_nesting_is_malformed_not_recursion_error(doc):
    # pytest.raises(MalformedDocument) lets a RecursionError escape and fail the test.
    with pytest.raises(MalformedDocument, match="nesting"):
        loads(doc)


def _nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _nested_objects(depth: int) -> bytes:
    return b'{"k":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


@pytest.mark.parametrize("make", [_nested_arrays, _nested_objects])
def test_depth_limit_boundary(make):
    assert loads(make(MAX_DEPTH)) is not None  # exactly at the limit is fine
    with pytest.raises(MalformedDocument, match="nesting"):
        loads(make(MAX_DEPTH + 1))


def test_depth_limit_is_configurable():
    assert loads(_nested_arrays(3), max_depth=3) == [[[]]]
    with pytest.raises(MalformedDocument):
        loads(_nested_arrays(4), max_depth=3)


@pytest.mark.parametrize(
    "number",
    [
        "9" * 10_000,
        "-" + "9" * 10_000,
        "1." + "0" * 10_000,
        "1" + "0" * 10_000 + "e1",
    ],
    ids=["int", "negative-int", "float", "exp"],
)
def test_ten_thousand_digit_number_rejected(number):
    with pytest.raises(MalformedDocument, match="exceeds"):
        loads(('{"n":%s}' % number).encode())


def test_number_length_boundary():
    ok = "9" * MAX_NUMBER_CHARS
    assert loads(ok.encode()) == int(ok)
    with pytest.raises(MalformedDocument):
        loads(("9" * (MAX_NUMBER_CHARS + 1)).encode())


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1.5E+999", b"[1e309]"])
def test_float_overflow_to_infinity_rejected(number):
    with pytest.raises(MalformedDocument, match="non-finite"):
        loads(number)


def test_tiny_float_underflow_is_still_finite():
    assert loads(b"1e-400") == 0.0


def test_oversized_document():
    doc = b'{"a":"' + b"x" * 100 + b'"}'
    with pytest.raises(DocumentTooLarge):
        loads(doc, max_bytes=50)
    assert loads(doc, max_bytes=len(doc)) == {"a": "x" * 100}  # the cap is inclusive
    with pytest.raises(DocumentTooLarge):
        loads(doc, max_bytes=len(doc) - 1)


def test_document_too_large_is_malformed_and_pith_error():
    assert issubclass(DocumentTooLarge, MalformedDocument)
    assert issubclass(MalformedDocument, PithError)


@pytest.mark.parametrize("doc", [b"[]", b'"a string"', b"1", b"null", b"true", b'[{"a":1}]'])
def test_loads_object_rejects_non_object_top_level(doc):
    loads(doc)  # valid JSON ...
    with pytest.raises(MalformedDocument, match="object"):
        loads_object(doc)  # ... but not an object


@pytest.mark.parametrize("doc", [b"", b" ", b"{", b'{"a":1}x', b'{"a":1} {"b":2}', b"{'a':1}", b'{"a":01}', b"[1,]"])
def test_not_json(doc):
    with pytest.raises(MalformedDocument):
        loads(doc)


@pytest.mark.parametrize("value", ['{"a":1}', {"a": 1}, None, 42])
def test_non_bytes_input_rejected(value):
    with pytest.raises(MalformedDocument):
        loads(value)


def test_bytearray_and_memoryview_accepted():
    assert loads(bytearray(b'{"a":1}')) == {"a": 1}
    assert loads(memoryview(b'{"a":1}')) == {"a": 1}


def test_unknown_fields_are_kept():
    doc = b'{"bundle_type":"pith_open_graph_bundle","x_future_field":{"nested":[1,"two"]},"zz":null}'
    value = loads_object(doc)
    assert value["x_future_field"] == {"nested": [1, "two"]}
    assert "zz" in value and value["zz"] is None
    assert list(value) == ["bundle_type", "x_future_field", "zz"]  # document order preserved


def test_default_cap_is_eight_mib():
    assert strictjson.DEFAULT_MAX_BYTES == 8 * 1024 * 1024
