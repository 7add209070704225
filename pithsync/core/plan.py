"""What the store is to write for one record: the write plan a comparison comes to (pure data;
the run plans it, the store writes it, nothing else decides)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pithsync.core import numbers
from pithsync.core.canonical import canon, sha256hex


def number_of(state: "EncodedState") -> str:
    """The pith number a stored state's canonical record derives, from its stored bytes."""
    return _derived_number(state.canonical_record)


def _derived_number(canonical_record_json: str) -> str:
    record = json.loads(canonical_record_json)
    suffix = numbers.suffix_from_sha256(sha256hex(canonical_record_json.encode()))
    return str(numbers.PithNumber(numbers.year_of(record), suffix))


@dataclass
class MirrorRow:
    base_url: str
    name: str
    configured: bool
    status: str
    reasons: list[dict]
    bundle_sha256: str | None = None
    state_sha256: str | None = None
    unreachable: bool = False


@dataclass(frozen=True)
class EncodedState:
    """A record's merged state as the records table keeps it, encoded once by whoever merged it
    (in a large run, a worker process), so that the one writer only writes."""

    canonical_record: str
    canonical_sha256: str
    source_aliases: str
    aliases: tuple[tuple[str, str], ...]  # (alias_kind, alias_value): the aliases table
    state: str
    state_sha256: str
    event_count: int

    @classmethod
    def of(cls, canonical_record: dict, source_aliases: list, state: dict) -> "EncodedState":
        record_json = canon(canonical_record)
        aliases = tuple(
            (a["alias_kind"], a["alias_value"])
            for a in source_aliases or []
            if isinstance(a, dict) and isinstance(a.get("alias_kind"), str) and isinstance(a.get("alias_value"), str)
        )
        return cls(record_json.decode(), sha256hex(record_json), canon(source_aliases).decode(), aliases, canon(state).decode(), state["state_sha256"], state["event_count"])


@dataclass
class RecordWrite:
    """Everything one sync learned about one record, written in one transaction.  Documents and
    events arrive encoded: the bytes to store, not objects to encode again."""

    pith_number: str
    verdict: str
    tracked: bool
    state: EncodedState | None = None  # the new merge of all verified events, if any
    documents: list[tuple[str, str, bytes]] = field(default_factory=list)  # (sha256, kind, body)
    events: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # event_id -> (event_type, canonical JSON), new ones only
    event_sources: list[tuple[str, str]] = field(default_factory=list)  # (event_id, mirror base_url)
    mirrors: list[MirrorRow] = field(default_factory=list)
    evidence: list[dict] = field(default_factory=list)  # mirror, url, status, reasons, body
    validators: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    verified_copies: list[tuple[str, str]] = field(default_factory=list)  # (bundle sha, state sha)
    trust_id: str = ""
    journal_detail: dict = field(default_factory=dict)

    def payload_bytes(self) -> int:
        """About how many bytes of documents, events, state and evidence this write carries."""
        n = sum(len(body) for _, _, body in self.documents) + sum(len(body) for _, body in self.events.values())
        n += sum(len(ev.get("body") or b"") for ev in self.evidence)
        if self.state is not None:
            n += len(self.state.state) + len(self.state.canonical_record)
        return n

    def add_events(self, events, source: str, stored: dict | set = frozenset()) -> None:
        """Verified `events` seen at `source`: each encoded once, and only if not `stored` yet."""
        for ev in events:
            eid = ev["event_id"]
            if eid not in stored and eid not in self.events:
                self.events[eid] = (ev.get("event_type"), canon(ev).decode("utf-8"))
            self.event_sources.append((eid, source))
