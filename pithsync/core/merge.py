"""The deterministic merge (PROTOCOL.md, reconstructed).  The *inferred* rules all live here.

Input: the bundle's canonical record and aliases, the events, and which of them failed
verification.  Output: the state document, identical for any order the events arrive in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pithsync.core.canonical import canon, canon_sha256

MERGE_VERSION = "pith-open-graph-merge-v1"
STATE_TYPE = "pith_open_graph_state"
STATE_VERSION = "1.0"

# Event type -> list in `current`.  Inferred: other types map to the plural of their name.
LIST_FOR_TYPE = {
    "graph_snapshot": "graph_snapshots",
    "author_attestation": "author_attestations",
    "timestamp_anchor": "timestamp_anchors",
    "storage_attestation": "storage_attestations",
    "citation_signature": "citation_signatures",
    "replication_record": "replication_records",
    "correction": "corrections",
    "mirror_hint": "mirror_hints",
}
DEFAULT_LISTS = tuple(LIST_FOR_TYPE.values())


def list_name(event_type: str) -> str:
    return LIST_FOR_TYPE.get(event_type, f"{event_type}s")


def order_key(event: Mapping) -> tuple:
    """(created_at, record_created first, event_id)."""
    return (
        str(event.get("created_at", "")),
        0 if event.get("event_type") == "record_created" else 1,
        str(event.get("event_id", "")),
    )


def entry(event: Mapping) -> dict:
    return {k: event.get(k) for k in ("event_id", "target", "created_at", "signer", "payload")}


def _signer_id(event: Mapping) -> tuple[str, str]:
    """Who signed: verify has bound `signer` to the signing key, so its key_id is the key's."""
    signer = event.get("signer")
    if isinstance(signer, dict):
        return (str(signer.get("signer_id")), str(signer.get("key_id")))
    return ("None", "None")


def _supersedes(event: Mapping) -> list[str]:
    s = event.get("supersedes")
    return [x for x in s if isinstance(x, str)] if isinstance(s, list) else []


def _place(event: Mapping) -> tuple:
    """The place an event claims: same signer, subject, target and predecessor."""
    return (
        _signer_id(event),
        str(event.get("subject_pith_number")),
        str(event.get("target")),
        str(event.get("prev_event")),
    )


def find_equivocations(valid_events: Iterable[Mapping]) -> list[dict]:
    """Groups of validly signed events that claim the same place without superseding each other."""
    by_place: dict[tuple, list[Mapping]] = {}
    for ev in valid_events:
        by_place.setdefault(_place(ev), []).append(ev)
    found = []
    for place, group in by_place.items():
        if len(group) < 2:
            continue
        conflicting: set[str] = set()
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                if a["event_id"] in _supersedes(b) or b["event_id"] in _supersedes(a):
                    continue
                conflicting.update((a["event_id"], b["event_id"]))
        if conflicting:
            (signer_id, key_id), subject, target, prev = place
            found.append(
                {
                    "signer_id": signer_id,
                    "key_id": key_id,
                    "subject_pith_number": subject,
                    "target": target,
                    "prev_event": None if prev == "None" else prev,
                    "event_ids": sorted(conflicting),
                }
            )
    found.sort(key=lambda e: e["event_ids"])
    return found


def _distinct(events: Iterable[Mapping]) -> dict[str, Mapping]:
    """One copy per event id.  Two different copies under one id (one of them forged): keep the
    same one whatever the arrival order.  The verifier passes the valid copy alone when there is
    one."""
    distinct: dict[str, Mapping] = {}
    for ev in events:
        eid = str(ev.get("event_id"))
        seen = distinct.get(eid)
        if seen is None or (seen is not ev and canon(ev) < canon(seen)):
            distinct[eid] = ev
    return distinct


def _current(canonical_record: dict, source_aliases: list, applied: list[Mapping]) -> dict:
    """The record as its applied events leave it: each event type's entries in merge order,
    the first `record_created`."""
    current: dict = {
        "canonical_record": canonical_record,
        "source_aliases": source_aliases,
        **{name: [] for name in DEFAULT_LISTS},
    }
    record_created = None
    for ev in applied:
        etype = ev.get("event_type")
        if etype == "record_created":
            if record_created is None:
                record_created = entry(ev)
        else:
            current.setdefault(list_name(str(etype)), []).append(entry(ev))
    current["record_created"] = record_created
    return current


def merge_state(
    pith_number: str,
    canonical_record: dict,
    source_aliases: list,
    events: Iterable[Mapping],
    invalid: Mapping[str, str],
) -> dict:
    """The state that follows from `events`; `invalid` maps event_id -> why it failed
    verification."""
    distinct = _distinct(events)
    ordered = sorted(distinct.values(), key=order_key)

    valid = [ev for ev in ordered if ev["event_id"] not in invalid]
    equivocations = find_equivocations(valid)
    in_conflict = {eid for e in equivocations for eid in e["event_ids"]}
    candidates = [ev for ev in valid if ev["event_id"] not in in_conflict]

    # An event naming an earlier one of the same signer in `supersedes` replaces it.
    superseded: set[str] = set()
    for ev in candidates:
        for old in _supersedes(ev):
            if old in distinct and _signer_id(distinct[old]) == _signer_id(ev):
                superseded.add(old)
    applied = [ev for ev in candidates if ev["event_id"] not in superseded]

    current = _current(canonical_record, source_aliases, applied)
    invalid_events = [
        {"event_id": ev["event_id"], "reason": invalid[ev["event_id"]]}
        for ev in ordered
        if ev["event_id"] in invalid
    ]
    state = {
        "state_type": STATE_TYPE,
        "state_version": STATE_VERSION,
        "pith_number": pith_number,
        "merge_version": MERGE_VERSION,
        "event_count": len(ordered),
        "valid_event_count": len(valid),
        "invalid_event_count": len(invalid_events),
        "equivocation_count": len(equivocations),
        "current": current,
        "equivocations": equivocations,
        "invalid_events": invalid_events,
        "applied_event_ids": [ev["event_id"] for ev in applied],
    }
    state["state_sha256"] = canon_sha256(state)
    return state
