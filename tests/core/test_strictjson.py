"""Strict JSON input (PROTOCOL.md: untrusted bytes become values only through strictjson)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonvalues import JSON_VALUES

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
        loads(f'{{"n":{number}}}'.encode())


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


@pytest.mark.parametrize(
    "doc", [b"", b" ", b"{", b'{"a":1}x', b'{"a":1} {"b":2}', b"{'a':1}", b'{"a":01}', b"[1,]"]
)
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
    doc = (
        b'{"bundle_type":"pith_open_graph_bundle","x_future_field":{"nested":[1,"two"]},"zz":null}'
    )
    value = loads_object(doc)
    assert value["x_future_field"] == {"nested": [1, "two"]}
    assert "zz" in value and value["zz"] is None
    assert list(value) == ["bundle_type", "x_future_field", "zz"]  # document order preserved


def test_default_cap_is_eight_mib():
    assert strictjson.DEFAULT_MAX_BYTES == 8 * 1024 * 1024


# --- The fast path (orjson, kept only when it writes the bytes back exactly) must read every
# document exactly as the strict parser does, or refuse it with the strict parser's own error.


def _typed(value):
    """A value with its JSON types spelled out: 1, 1.0 and True differ, and so do 0.0 and -0.0."""
    if isinstance(value, dict):
        return ("object", [(k, _typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("array", [_typed(v) for v in value])
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)


def _outcome(parse, data: bytes, **kw):
    try:
        return ("ok", _typed(parse(data, **kw)))
    except MalformedDocument as exc:
        return ("error", type(exc).__name__, str(exc))


def _strict(data: bytes, max_depth: int = MAX_DEPTH):
    return strictjson._strict_loads(data, max_depth)


def _encodings(value) -> list[bytes]:
    return [
        json.dumps(
            value, separators=(",", ":"), ensure_ascii=False
        ).encode(),  # the registry's form
        json.dumps(value).encode(),  # spaces and \u escapes: never round-trips
        json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode(),
    ]


@settings(max_examples=500, deadline=None)
@given(JSON_VALUES)
def test_fast_path_reads_every_document_as_the_strict_parser_does(value):
    for data in _encodings(value):
        assert _outcome(loads, data) == _outcome(_strict, data)


@settings(max_examples=500, deadline=None)
@given(
    JSON_VALUES,
    st.integers(min_value=0),
    st.binary(max_size=3),
    st.integers(min_value=0, max_value=3),
)
def test_fast_path_agrees_on_damaged_documents(value, at, insert, delete):
    # Bytes spliced into and cut out of a document that would otherwise take the fast path:
    # duplicate keys, stray escapes, broken UTF-8, numbers respelled, truncation.
    data = json.dumps(
        {"v": value, "w": [value]}, separators=(",", ":"), ensure_ascii=False
    ).encode()
    at %= len(data) + 1
    damaged = data[:at] + insert + data[at + delete :]
    assert _outcome(loads, damaged) == _outcome(_strict, damaged)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1,"a":1}',
        b'{"a":{"b":1,"b":1}}',
        b"1180591620717411303425",  # orjson reads it as a float
        b"[18446744073709551616]",
        b"-9223372036854775809",
        b'"\\ud800"',
        b'"\\ud83d\\ude00"',
        b'"\\u0041"',
        b"1E5",
        b"1e-05",
        b"-0",
        b"[1.50]",
        b"\xef\xbb\xbf{}",
        b"[NaN]",
        b"[1e400]",
        b'{"a" :1}',
        b"[" * 300 + b"]" * 300,  # beyond orjson's writer (254) and the strict limit
    ],
)
def test_fast_path_agrees_where_orjson_and_json_differ(data):
    assert _outcome(loads, data) == _outcome(_strict, data)


@settings(max_examples=500, deadline=None)
@given(JSON_VALUES, st.integers(min_value=0, max_value=6))
def test_indented_depth_check_matches_the_walk(value, limit):
    def run(check):
        try:
            check(value, limit)
            return None
        except MalformedDocument as exc:
            return str(exc)

    assert run(strictjson._check_depth_indented) == run(strictjson._check_depth)


@pytest.mark.parametrize(
    "make",
    [_nested_arrays, _nested_objects, lambda d: b'{"k":[' * (d // 2) + b"0" + b"]}" * (d // 2)],
)
@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 2])
def test_depth_limit_holds_on_the_fast_path(make, depth):
    data = make(depth)
    assert strictjson._round_trip(data)[0], "this document should take the fast path"
    assert _outcome(loads, data) == _outcome(_strict, data)


def test_registry_documents_take_the_fast_path(seeds):
    # The speed claim (bench/README.md) rests on this: the registry's compact UTF-8 round-trips.
    for name, data in seeds.items():
        assert strictjson._round_trip(data)[0], name
    from pithsync.testing import forge

    bundle = forge.forge_record(3, all_types=True).bundle()
    for doc in (bundle, bundle["state"]):
        assert strictjson._round_trip(forge.dumps(doc))[0]
