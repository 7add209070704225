"""Observation statements: what one observer saw one mirror serve for one record, once.

A statement is a leaf of the observer's Merkle log (core.merkle, RFC 9162): its leaf data is the
statement's canonical JSON (core.canonical), so that the same statement always hashes the same
and any edit of any field changes its leaf hash.  A statement is proven by an inclusion proof
under a checkpoint signed with the observer's key (core.tlog); on its own it proves nothing.

Pure: building, encoding and strictly parsing statements, and the log's published layout.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pithsync.core import strictjson
from pithsync.core.canonical import canon
from pithsync.core.errors import InvalidPithNumber, MalformedDocument
from pithsync.core.numbers import PithNumber, parse_full

STATEMENT_TYPE = "pithsync.observation/v1"
MAX_STATEMENT_BYTES = 65_535  # a tlog-tiles entry bundle frames entries with a uint16 length
MAX_FETCHES = 16  # a record's two documents, their redirects and a discovered copy or two
MAX_EVENTS = 10_000

# Where an observer publishes its log, below its base URL (serve and export write the same).
LOG_PREFIX = "log/"
CHECKPOINT_PATH = LOG_PREFIX + "checkpoint"  # the latest signed checkpoint (a signed note)
RECORDS_PREFIX = LOG_PREFIX + "records/"  # RECORDS_PREFIX + <suffix>.json: see record_path
RECORD_TYPE = "pithsync.observed-record/v1"  # the type of a record file's JSON object

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_EVENT_ID = re.compile(r"sha256:[0-9a-f]{64}\Z")  # PROTOCOL: "sha256:" + content_sha256
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z\Z")


class MalformedStatement(MalformedDocument):
    """Bytes that are not the canonical encoding of a valid observation statement."""


@dataclass(frozen=True)
class Fetch:
    """One URL asked of the mirror, and what came back.

    `status` is the HTTP status (None: no answer at all: refused, timed out, cut off).
    `sha256` is the hex digest of the body received; for a 304 it is the digest of the stored
    copy the answer confirmed; None when no body is known.
    """

    url: str
    status: int | None
    sha256: str | None

    def to_json(self) -> dict:
        return {"sha256": self.sha256, "status": self.status, "url": self.url}


@dataclass(frozen=True)
class Statement:
    """What `observer` saw `mirror` serve for `pith_number` at `observed_at`.

    Args:
        observer: the observer's key name (its checkpoints' origin).
        pith_number: the record.
        mirror: the mirror's base URL.
        fetched: every URL asked for this record, in the order asked.
        events: the sorted `event_id`s of the verified history the mirror served; empty when
            nothing it served verified.
        state_sha256: the `state_sha256` the merge of those events gives (core.merge, as the
            records table keeps it); None when no history verified.
        mirror_status: the mirror's status for the record (core.status.Status value, or
            `split_view`).
        observed_at: RFC 3339 UTC time, `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`.
    """

    observer: str
    pith_number: PithNumber
    mirror: str
    fetched: tuple[Fetch, ...]
    events: tuple[str, ...]
    state_sha256: str | None
    mirror_status: str
    observed_at: str

    def to_json(self) -> dict:
        """The statement as a JSON object (what `encode` writes canonically)."""
        return {
            "events": list(self.events),
            "fetched": [f.to_json() for f in self.fetched],
            "mirror": self.mirror,
            "mirror_status": self.mirror_status,
            "observed_at": self.observed_at,
            "observer": self.observer,
            "pith_number": str(self.pith_number),
            "state_sha256": self.state_sha256,
            "type": STATEMENT_TYPE,
        }

    def encode(self) -> bytes:
        """The statement's leaf data: its canonical JSON bytes.

        Raises:
            MalformedStatement: the statement breaks a rule `parse_statement` checks.
        """
        data = canon(self.to_json())
        _check(self, len(data))
        return data


def statement(
    observer: str,
    pith_number: PithNumber,
    mirror: str,
    fetched: Iterable[Fetch],
    events: Iterable[str],
    state_sha256: str | None,
    mirror_status: str,
    observed_at: str,
) -> Statement:
    """A statement with its events sorted and de-duplicated (the one order `encode` accepts)."""
    return Statement(
        observer,
        pith_number,
        mirror,
        tuple(fetched),
        tuple(sorted(set(events))),
        state_sha256,
        mirror_status,
        observed_at,
    )


def parse_statement(data: bytes) -> Statement:
    """Parses a statement strictly: the bytes must be the canonical encoding of a valid one.

    Raises:
        MalformedStatement: anything else (wrong type, missing or extra field, bad value, not
            canonical, too large).
    """
    if len(data) > MAX_STATEMENT_BYTES:
        raise MalformedStatement(f"a statement of {len(data)} bytes is over the cap")
    try:
        obj = strictjson.loads_object(data, max_bytes=MAX_STATEMENT_BYTES)
    except MalformedDocument as exc:
        raise MalformedStatement(f"not a JSON statement: {exc}") from None
    expected = {
        "events",
        "fetched",
        "mirror",
        "mirror_status",
        "observed_at",
        "observer",
        "pith_number",
        "state_sha256",
        "type",
    }
    if set(obj) != expected:
        raise MalformedStatement(f"statement fields {sorted(obj)} are not {sorted(expected)}")
    if obj["type"] != STATEMENT_TYPE:
        raise MalformedStatement(f"statement type {obj['type']!r} is not {STATEMENT_TYPE!r}")
    parsed = Statement(
        observer=_text(obj, "observer"),
        pith_number=_number(obj["pith_number"]),
        mirror=_text(obj, "mirror"),
        fetched=tuple(_fetch(f) for f in _list(obj, "fetched", MAX_FETCHES)),
        events=tuple(_event_id(e) for e in _list(obj, "events", MAX_EVENTS)),
        state_sha256=None if obj["state_sha256"] is None else _hex(obj["state_sha256"], "state"),
        mirror_status=_text(obj, "mirror_status"),
        observed_at=_text(obj, "observed_at"),
    )
    if parsed.encode() != data:
        raise MalformedStatement("the statement is not in its canonical encoding")
    return parsed


def record_path(pith_number: PithNumber) -> str:
    """Where an observer publishes a record's latest statements and their proofs."""
    return f"{RECORDS_PREFIX}{pith_number.suffix}.json"


def _check(s: Statement, size: int) -> None:
    if size > MAX_STATEMENT_BYTES:
        raise MalformedStatement(f"a statement of {size} bytes is over the cap")
    if not _TIME.match(s.observed_at):
        raise MalformedStatement(f"observed_at {s.observed_at[:40]!r} is not RFC 3339 UTC")
    if list(s.events) != sorted(set(s.events)):
        raise MalformedStatement("a statement's events are sorted and unique")
    if (s.state_sha256 is None) != (not s.events):
        raise MalformedStatement("a statement has a state digest exactly when it has events")
    if len(s.fetched) > MAX_FETCHES or len(s.events) > MAX_EVENTS:
        raise MalformedStatement("a statement lists too many fetches or events")


def _text(obj: dict, key: str) -> str:
    value = obj[key]
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise MalformedStatement(f"statement field {key!r} must be a non-empty string")
    return value


def _number(value: object) -> PithNumber:
    if not isinstance(value, str):
        raise MalformedStatement("statement field 'pith_number' must be a string")
    try:
        return parse_full(value)
    except InvalidPithNumber as exc:
        raise MalformedStatement(f"statement field 'pith_number': {exc}") from None


def _list(obj: dict, key: str, cap: int) -> list:
    value = obj[key]
    if not isinstance(value, list) or len(value) > cap:
        raise MalformedStatement(f"statement field {key!r} must be a list of at most {cap}")
    return value


def _hex(value: object, what: str) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise MalformedStatement(f"{what} must be 64 lower-case hex digits")
    return value


def _event_id(value: object) -> str:
    if not isinstance(value, str) or not _EVENT_ID.match(value):
        raise MalformedStatement("an event id is 'sha256:' and 64 lower-case hex digits")
    return value


def _fetch(value: object) -> Fetch:
    if not isinstance(value, dict) or set(value) != {"sha256", "status", "url"}:
        raise MalformedStatement("a fetch has exactly url, status and sha256")
    url = value["url"]
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise MalformedStatement("a fetch's url must be a non-empty string")
    status = value["status"]
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise MalformedStatement("a fetch's status must be an HTTP status code or null")
    if status is not None and not 100 <= status <= 599:
        raise MalformedStatement(f"a fetch's status {status} is not an HTTP status")
    digest = value["sha256"]
    return Fetch(url, status, None if digest is None else _hex(digest, "a body's sha256"))
