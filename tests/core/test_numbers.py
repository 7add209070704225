"""Pith numbers (PROTOCOL.md, "Pith numbers")."""

from __future__ import annotations

import base64

import pytest
from helpers import BUNDLE_SEEDS, EXPECTED_PITH, STATE_SEED

from pithsync.core import numbers
from pithsync.core.canonical import canon_sha256
from pithsync.core.errors import InvalidPithNumber
from pithsync.core.numbers import (
    PithNumber,
    PithRef,
    derive,
    find_in,
    parse_full,
    parse_ref,
    suffix_from_sha256,
)

FULL = "pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ22"
SUFFIX = "JTEVEPWHOAFN5TRRVEXHEIPZ22"


def test_parse_full():
    n = parse_full(FULL)
    assert n == PithNumber(2026, SUFFIX)
    assert str(n) == FULL
    assert n.short == "pith:JTEVEPWH"


def test_parse_ref_full():
    assert parse_ref(FULL) == PithRef(SUFFIX, 2026, is_prefix=False)


def test_parse_ref_bare_suffix():
    assert parse_ref(SUFFIX) == PithRef(SUFFIX, None, is_prefix=False)


@pytest.mark.parametrize(
    "text,prefix",
    [
        ("pith:JTEVEPWH", "JTEVEPWH"),
        ("JTEVEPWH", "JTEVEPWH"),
        ("JTEVEPWHOAFN", "JTEVEPWHOAFN"),
        ("pith:JTEVEPWHOAFN5TRR", "JTEVEPWHOAFN5TRR"),
    ],
)
def test_parse_ref_short_forms(text, prefix):
    ref = parse_ref(text)
    assert ref.is_prefix and ref.suffix == prefix and ref.year is None


@pytest.mark.parametrize(
    "text",
    [
        "pith:2026:jtevepwhoafn5trrvexheipz22",  # lowercase
        "pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ2",  # 25 chars
        "pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ222",  # 27 chars
        "pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ20",  # 0 is not base32
        "pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ21",  # 1 is not base32
        "pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ28",  # 8 is not base32
        "pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ29",  # 9 is not base32
        "pith::JTEVEPWHOAFN5TRRVEXHEIPZ22",  # empty year
        "pith:JTEVEPWHOAFN5TRRVEXHEIPZ22",  # missing year
        "pith:202:JTEVEPWHOAFN5TRRVEXHEIPZ22",  # 3-digit year
        "pith:20261:JTEVEPWHOAFN5TRRVEXHEIPZ22",
        "PITH:2026:JTEVEPWHOAFN5TRRVEXHEIPZ22",
        "pith-2026-JTEVEPWHOAFN5TRRVEXHEIPZ22",
        "pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ2=",
        "",
        "pith:",
    ],
)
def test_parse_full_rejects_malformed(text):
    with pytest.raises(InvalidPithNumber):
        parse_full(text)


@pytest.mark.parametrize(
    "text",
    [
        "pith:2026:jtevepwhoafn5trrvexheipz22",
        "jtevepwhoafn5trrvexheipz22",
        "JTEVEPWHOAFN5TRRVEXHEIPZ2",  # 25
        "pith:JTEVEPW",  # 7
        "pith:JTEVEPWHO",  # 9
        "pith:JTEVEPW0",
        "pith:JTEVEPW1",
        "pith:JTEVEPW8",
        "pith:JTEVEPW9",
        "pith:jtevepwh",
        "pith:2026:",
        "pith:JTEVEPWHOAFN5TRRVEXHEIPZ22",  # full suffix without a year
        "2606.07684",
        "",
    ],
)
def test_parse_ref_rejects_malformed(text):
    with pytest.raises(InvalidPithNumber):
        parse_ref(text)


@pytest.mark.parametrize("value", [None, 2026, b"pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ22", ["pith"]])
def test_non_strings_rejected(value):
    with pytest.raises(InvalidPithNumber):
        parse_ref(value)
    with pytest.raises(InvalidPithNumber):
        parse_full(value)


@pytest.mark.parametrize(
    "year",
    ["\u0662\u0660\u0662\u0666", "\uff12\uff10\uff12\uff16"],
    ids=["arabic-indic", "fullwidth"],
)
def test_non_ascii_digits_in_year_rejected(year):
    with pytest.raises(InvalidPithNumber):
        parse_full(f"pith:{year}:{SUFFIX}")


def test_suffix_from_sha256_is_rfc4648_base32_prefix():
    digest = canon_sha256({"x": 1})
    expected = base64.b32encode(bytes.fromhex(digest)).decode()[:26]
    assert suffix_from_sha256(digest) == expected
    assert len(expected) == 26 and "=" not in expected


@pytest.mark.parametrize("name", BUNDLE_SEEDS)
def test_derive_gives_each_bundle_seeds_number(seed_docs, name):
    b = seed_docs[name]
    assert str(derive(b["canonical_record"])) == EXPECTED_PITH[name] == b["pith_number"]
    assert derive(b["canonical_record"]).short == b["short_pith_number"]


def test_derive_gives_state_seeds_number(seed_docs):
    s = seed_docs[STATE_SEED]
    assert (
        str(derive(s["current"]["canonical_record"]))
        == EXPECTED_PITH[STATE_SEED]
        == s["pith_number"]
    )


@pytest.mark.parametrize("name", BUNDLE_SEEDS)
def test_seed_short_aliases_are_prefixes(seed_docs, name):
    b = seed_docs[name]
    suffix = b["pith_number"].split(":")[2]
    aliases = {a["alias_kind"]: a["alias_value"] for a in b["source_aliases"]}
    for n in (8, 12, 16):
        if f"pith_short_{n}" in aliases:
            assert aliases[f"pith_short_{n}"] == suffix[:n]
            ref = parse_ref(aliases[f"pith_short_{n}"])
            assert ref.is_prefix and suffix.startswith(ref.suffix)


def test_year_comes_from_submitted_at(seed_docs):
    record = seed_docs[BUNDLE_SEEDS[0]]["canonical_record"]
    record["metadata"]["submitted_at"] = "2019-03-19T00:00:00Z"
    n = derive(record)
    assert n.year == 2019
    assert n.suffix == suffix_from_sha256(canon_sha256(record))


@pytest.mark.parametrize("submitted", [None, 2026, "", "26-01-01", "June 2026"])
def test_derive_rejects_unusable_submitted_at(submitted):
    record = {"metadata": {"submitted_at": submitted}}
    with pytest.raises(InvalidPithNumber):
        derive(record)


def test_find_in_nested_payload():
    a = "pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ22"
    b = "pith:2019:N2VE6VSBAAAAAAAAAAAAAAAAAA"
    c = "pith:2025:CNPMIFD42NONUMCBYNP4XLPY53"
    payload = {
        "graph_snapshot": {
            "references": {"sample": [{"pith_number": a}, {"text": f"see ({b}), and more"}]},
            "deep": [[[{"x": [c]}]]],
        },
        a: "keys count too",
        "noise": ["pith:JTEVEPWH", "pith:2026:jtevepwhoafn5trrvexheipz22", 12, None, True],
    }
    assert find_in(payload) == {a, b, c}


def test_find_in_ignores_overlong_runs_and_scalars():
    assert find_in("pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ22A") == set()  # 27 chars: not a number
    assert find_in(None) == set() and find_in(42) == set()
    assert find_in("pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ22.") == {
        "pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ22"
    }


@pytest.mark.parametrize("name", BUNDLE_SEEDS)
def test_find_in_seed_bundle_finds_own_number(seed_docs, name):
    found = find_in(seed_docs[name]["events"])
    assert EXPECTED_PITH[name] in found
    assert all(parse_full(n) for n in found)


def test_pith_numbers_order_and_hash():
    a, b = PithNumber(2025, "Z" * 26), PithNumber(2026, "A" * 26)
    assert a < b
    assert {parse_full(FULL), parse_full(FULL)} == {PithNumber(2026, SUFFIX)}
    assert numbers.SUFFIX_LEN == 26 and numbers.SHORT_LEN == 8
