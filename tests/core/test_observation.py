"""Observation statements: canonical encoding, strict parsing, every field bound."""

from __future__ import annotations

import json

import pytest

from pithsync.core import merkle
from pithsync.core.numbers import parse_full
from pithsync.core.observation import (
    Fetch,
    MalformedStatement,
    parse_statement,
    record_path,
    statement,
)

NUMBER = parse_full("pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ22")
EVENT_A = "sha256:" + "a" * 64
EVENT_B = "sha256:" + "b" * 64


def example(**changes):
    fields = dict(
        observer="example.org/pithsync",
        pith_number=NUMBER,
        mirror="https://mirror.example/",
        fetched=[
            Fetch("https://mirror.example/pith/X/bundle.json", 200, "c" * 64),
            Fetch("https://mirror.example/pith/X/state.json", None, None),
        ],
        events=[EVENT_B, EVENT_A, EVENT_B],
        state_sha256="d" * 64,
        mirror_status="ok",
        observed_at="2026-12-06T23:00:00.123456Z",
    )
    fields.update(changes)
    return statement(**fields)


def test_round_trip_is_exact_and_events_sorted_once():
    s = example()
    assert s.events == (EVENT_A, EVENT_B)
    data = s.encode()
    assert parse_statement(data) == s
    assert parse_statement(data).encode() == data


def test_every_field_changes_the_leaf_hash():
    base = merkle.leaf_hash(example().encode())
    variants = [
        example(observer="other.example/pithsync"),
        example(pith_number=parse_full("pith:2025:JTEVEPWHOAFN5TRRVEXHEIPZ22")),
        example(mirror="https://other.example/"),
        example(fetched=[Fetch("https://mirror.example/pith/X/bundle.json", 304, "c" * 64)]),
        example(events=[EVENT_A]),
        example(state_sha256="e" * 64),
        example(mirror_status="stale"),
        example(observed_at="2026-12-06T23:00:01Z"),
    ]
    hashes = {merkle.leaf_hash(v.encode()) for v in variants}
    assert base not in hashes and len(hashes) == len(variants)


@pytest.mark.parametrize(
    "edit",
    [
        lambda o: o.update(type="pithsync.observation/v2"),
        lambda o: o.update(extra=1),
        lambda o: o.pop("mirror"),
        lambda o: o.update(events=[EVENT_B, EVENT_A]),
        lambda o: o.update(events=["a" * 64]),
        lambda o: o.update(state_sha256=None),
        lambda o: o.update(observed_at="2026-12-06 23:00:00"),
        lambda o: o.update(pith_number="pith:JTEVEPWH"),
        lambda o: o["fetched"][0].update(status=True),
        lambda o: o["fetched"][0].update(status=700),
        lambda o: o["fetched"][0].update(sha256="C" * 64),
        lambda o: o.update(fetched=[{"url": "u", "status": 200}]),
        lambda o: o.update(mirror=""),
    ],
)
def test_invalid_statements_are_refused(edit):
    obj = json.loads(example().encode())
    edit(obj)
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(MalformedStatement):
        parse_statement(data)


def test_non_canonical_bytes_are_refused():
    data = example().encode()
    spaced = json.dumps(json.loads(data), sort_keys=True).encode()
    with pytest.raises(MalformedStatement, match="canonical"):
        parse_statement(spaced)
    with pytest.raises(MalformedStatement):
        parse_statement(b"\xff" + data)
    with pytest.raises(MalformedStatement, match="over the cap"):
        parse_statement(b" " * 70_000)


def test_a_statement_without_history_has_no_state_digest():
    s = example(events=[], state_sha256=None, mirror_status="unreachable", fetched=[])
    assert parse_statement(s.encode()) == s
    with pytest.raises(MalformedStatement):
        example(events=[], state_sha256="d" * 64).encode()


def test_record_path():
    assert record_path(NUMBER) == "log/records/JTEVEPWHOAFN5TRRVEXHEIPZ22.json"
