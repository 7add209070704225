"""The deterministic merge (PROTOCOL.md, "The deterministic merge")."""

from __future__ import annotations

import copy
import functools

import pytest
from helpers import BUNDLE_SEEDS, OTHER_KEY, UNPINNED_KEY, codes, rehash_event
from hypothesis import given, settings
from hypothesis import strategies as st

from pithsync.core.canonical import canon, canon_sha256, without
from pithsync.core.merge import DEFAULT_LISTS, MERGE_VERSION, list_name, merge_state, order_key
from pithsync.core.verify import Verifier
from pithsync.testing import forge


def invalid_map(events, pith, trust=None) -> dict[str, str]:
    v = Verifier(trust or forge.test_trust())
    out = {}
    for i, ev in enumerate(events):
        check = v.check_event(ev, i, subject=pith)
        if not check.valid:
            out[ev["event_id"]] = check.reasons[0].code
    return out


def merge(fr, events, trust=None, aliases=()):
    return merge_state(
        fr.pith_number, fr.record, list(aliases), events, invalid_map(events, fr.pith_number, trust)
    )


# --------------------------------------------------------------------------------------------
# The seeds


@pytest.mark.parametrize("name", BUNDLE_SEEDS)
def test_merge_reproduces_seed_state_byte_for_byte(seed_docs, name):
    b = seed_docs[name]
    state = merge_state(
        b["pith_number"], b["canonical_record"], b["source_aliases"], b["events"], {}
    )
    assert canon(state) == canon(b["state"])
    assert state["state_sha256"] == b["state"]["state_sha256"]


@pytest.mark.parametrize("name", BUNDLE_SEEDS)
def test_merge_of_seed_is_independent_of_event_order(seed_docs, name):
    b = seed_docs[name]
    state = merge_state(
        b["pith_number"],
        b["canonical_record"],
        b["source_aliases"],
        list(reversed(b["events"])),
        {},
    )
    assert canon(state) == canon(b["state"])


def test_merge_state_hash_and_shape():
    fr = forge.forge_record(30, 3)
    s = merge(fr, fr.events)
    assert s["state_sha256"] == canon_sha256(without(s, "state_sha256"))
    assert s["merge_version"] == MERGE_VERSION and s["state_type"] == "pith_open_graph_state"
    for name in DEFAULT_LISTS:
        assert name in s["current"]
    assert s["current"]["record_created"]["event_id"] == fr.events[0]["event_id"]
    assert set(s["current"]["record_created"]) == {
        "event_id",
        "target",
        "created_at",
        "signer",
        "payload",
    }
    assert (
        s["event_count"],
        s["valid_event_count"],
        s["invalid_event_count"],
        s["equivocation_count"],
    ) == (3, 3, 0, 0)


# --------------------------------------------------------------------------------------------
# Order


def test_record_created_sorts_first_at_equal_time():
    fr = forge.forge_record(31, 1)
    same_time = fr.events[0]["created_at"]
    others = [
        forge.make_event(
            fr.record,
            "graph_snapshot",
            forge.graph_payload(31, []),
            created_at=same_time,
            target=f"graph:{n}",
        )
        for n in range(4)
    ]
    # Whatever the event ids, record_created goes first at the same created_at.
    s = merge(fr, [*others, fr.events[0]])
    assert s["applied_event_ids"][0] == fr.events[0]["event_id"]
    assert s["applied_event_ids"][1:] == sorted(e["event_id"] for e in others)
    assert order_key(fr.events[0]) < min(order_key(e) for e in others)


def test_events_ordered_by_created_at():
    fr = forge.forge_record(32, 5)
    s = merge(fr, list(reversed(fr.events)))
    assert s["applied_event_ids"] == [e["event_id"] for e in fr.events]
    assert [e["created_at"] for e in s["current"]["graph_snapshots"]] == sorted(
        e["created_at"] for e in fr.events[1:]
    )


def test_types_map_to_lists():
    assert list_name("graph_snapshot") == "graph_snapshots"
    assert list_name("timestamp_anchor") == "timestamp_anchors"
    assert list_name("replication_record") == "replication_records"
    assert list_name("brand_new_kind") == "brand_new_kinds"
    fr = forge.forge_record(33, 9, all_types=True)
    extra = forge.make_event(
        fr.record, "brand_new_kind", {"x": 1}, created_at="2026-07-02T00:00:00Z"
    )
    s = merge(fr, [*fr.events, extra])
    for ev in fr.events[1:]:
        assert [e["event_id"] for e in s["current"][list_name(ev["event_type"])]] == [
            ev["event_id"]
        ]
    assert s["current"]["brand_new_kinds"][0]["payload"] == {"x": 1}


def test_duplicate_events_count_once():
    fr = forge.forge_record(34, 3)
    s = merge(fr, [*fr.events, *copy.deepcopy(fr.events)])
    assert (
        s["event_count"] == 3 and len(s["applied_event_ids"]) == 3 and s["equivocation_count"] == 0
    )


# --------------------------------------------------------------------------------------------
# Equivocation


def test_equivocating_pair_union():
    fr = forge.forge_record(40, 3)
    left, right = forge.equivocating_pair(fr)
    fork_l, fork_r = left["events"][-1], right["events"][-1]
    assert fork_l["event_id"] != fork_r["event_id"]
    for side in (left, right):  # each fork alone is a clean history
        assert merge(fr, side["events"])["equivocation_count"] == 0
    union = [*left["events"], fork_r]
    assert invalid_map(union, fr.pith_number) == {}
    s = merge(fr, union)
    assert s["equivocation_count"] == 1 == len(s["equivocations"])
    eq = s["equivocations"][0]
    assert eq["event_ids"] == sorted([fork_l["event_id"], fork_r["event_id"]])
    assert eq["prev_event"] == fr.events[-1]["event_id"] and eq["target"] == "record"
    assert eq["subject_pith_number"] == fr.pith_number and eq["key_id"] == forge.TEST_KEY_ID
    assert (
        fork_l["event_id"] not in s["applied_event_ids"]
        and fork_r["event_id"] not in s["applied_event_ids"]
    )
    assert s["current"]["corrections"] == []
    assert s["applied_event_ids"] == [e["event_id"] for e in fr.events]
    assert s["valid_event_count"] == 5 and s["invalid_event_count"] == 0


def test_equivocation_found_by_verifier_in_a_bundle(forge_verifier):
    fr = forge.forge_record(41, 2)
    left, right = forge.equivocating_pair(fr)
    both = forge.make_bundle(fr.record, [*left["events"], right["events"][-1]])
    r = forge_verifier.verify_bundle(both)
    assert r.ok and r.merged_state["equivocation_count"] == 1


def test_same_place_different_signers_is_not_equivocation():
    fr = forge.forge_record(42, 2)
    last = fr.events[-1]["event_id"]
    a = forge.make_event(
        fr.record,
        "correction",
        {"fork": "a"},
        created_at="2026-07-01T00:00:00Z",
        prev_event=last,
        target="record",
    )
    b = forge.make_event(
        fr.record,
        "correction",
        {"fork": "b"},
        created_at="2026-07-01T00:00:00Z",
        prev_event=last,
        target="record",
        key=OTHER_KEY,
    )
    s = merge(fr, [*fr.events, a, b], trust=forge.test_trust(OTHER_KEY))
    assert s["equivocation_count"] == 0
    assert {a["event_id"], b["event_id"]} <= set(s["applied_event_ids"])


def test_invalid_event_cannot_cause_equivocation():
    fr = forge.forge_record(43, 2)
    left, right = forge.equivocating_pair(fr)
    fork_r = copy.deepcopy(right["events"][-1])
    fork_r["signature"]["signature_b64"] = left["events"][-1]["signature"][
        "signature_b64"
    ]  # now invalid
    s = merge(fr, [*left["events"], fork_r])
    assert s["equivocation_count"] == 0
    assert left["events"][-1]["event_id"] in s["applied_event_ids"]
    assert s["invalid_events"] == [{"event_id": fork_r["event_id"], "reason": "signature_invalid"}]


# --------------------------------------------------------------------------------------------
# Supersedes


def _attestation(fr, n, *, key=forge.TEST_KEY, supersedes=(), created_at="2026-06-20T00:00:00Z"):
    return forge.make_event(
        fr.record,
        "author_attestation",
        {"n": n},
        created_at=created_at,
        key=key,
        supersedes=list(supersedes),
        target=f"author:{key.key_id}:{n}",
    )


def test_supersedes_by_same_signer_replaces():
    fr = forge.forge_record(50, 2)
    old = _attestation(fr, 1)
    new = _attestation(fr, 2, supersedes=[old["event_id"]], created_at="2026-06-21T00:00:00Z")
    s = merge(fr, [*fr.events, old, new])
    assert old["event_id"] not in s["applied_event_ids"]
    assert new["event_id"] in s["applied_event_ids"]
    assert [e["event_id"] for e in s["current"]["author_attestations"]] == [new["event_id"]]
    assert s["valid_event_count"] == 4 and s["equivocation_count"] == 0


def test_supersedes_at_the_same_place_is_not_equivocation():
    fr = forge.forge_record(51, 2)
    old = _attestation(fr, 1)
    new = forge.make_event(
        fr.record,
        "author_attestation",
        {"n": "revised"},
        created_at="2026-06-22T00:00:00Z",
        supersedes=[old["event_id"]],
        target=old["target"],
    )
    s = merge(fr, [*fr.events, new, old])
    assert s["equivocation_count"] == 0
    assert s["current"]["author_attestations"] == [
        {k: new[k] for k in ("event_id", "target", "created_at", "signer", "payload")}
    ]


def test_supersedes_by_a_different_key_does_not_replace():
    fr = forge.forge_record(52, 2)
    old = _attestation(fr, 1)
    other = _attestation(
        fr, 2, key=OTHER_KEY, supersedes=[old["event_id"]], created_at="2026-06-21T00:00:00Z"
    )
    s = merge(fr, [*fr.events, old, other], trust=forge.test_trust(OTHER_KEY))
    assert invalid_map([other], fr.pith_number, forge.test_trust(OTHER_KEY)) == {}
    assert old["event_id"] in s["applied_event_ids"] and other["event_id"] in s["applied_event_ids"]


def test_supersedes_of_unknown_event_is_harmless():
    fr = forge.forge_record(53, 2)
    new = _attestation(fr, 1, supersedes=["sha256:" + "0" * 64])
    s = merge(fr, [*fr.events, new])
    assert s["applied_event_ids"] == [*(e["event_id"] for e in fr.events), new["event_id"]]


def test_invalid_event_cannot_supersede():
    fr = forge.forge_record(54, 2)
    old = _attestation(fr, 1)
    bad = _attestation(fr, 2, supersedes=[old["event_id"]], created_at="2026-06-21T00:00:00Z")
    bad["signature"]["signature_b64"] = old["signature"]["signature_b64"]
    s = merge(fr, [*fr.events, old, bad])
    assert (
        old["event_id"] in s["applied_event_ids"] and bad["event_id"] not in s["applied_event_ids"]
    )


def test_supersedes_cannot_be_claimed_by_impersonating_the_signer():
    trust = forge.test_trust(OTHER_KEY)
    fr = forge.forge_record(55, 2)
    old = _attestation(fr, 1)
    impostor = forge.make_event(
        fr.record,
        "author_attestation",
        {"n": 2},
        created_at="2026-06-21T00:00:00Z",
        key=OTHER_KEY,
        supersedes=[old["event_id"]],
        target="author:x",
    )
    impostor["signer"] = forge.TEST_KEY.signer()  # claims to be the test key's signer ...
    forge.sign_event(impostor, OTHER_KEY)  # ... but is signed by OTHER_KEY
    s = merge(fr, [*fr.events, old, impostor], trust=trust)
    assert old["event_id"] in s["applied_event_ids"] or impostor["event_id"] in {
        e["event_id"] for e in s["invalid_events"]
    }


# --------------------------------------------------------------------------------------------
# Invalid events


def test_invalid_events_listed_with_reason():
    fr = forge.forge_record(60, 4)
    events = copy.deepcopy(fr.events)
    events[2]["payload"]["edited"] = True  # hash mismatch, id unchanged
    s = merge(fr, events)
    assert s["invalid_events"] == [
        {"event_id": events[2]["event_id"], "reason": "event_hash_mismatch"}
    ]
    assert events[2]["event_id"] not in s["applied_event_ids"]
    assert (s["event_count"], s["valid_event_count"], s["invalid_event_count"]) == (4, 3, 1)


def test_invalid_map_reason_is_used_verbatim():
    fr = forge.forge_record(61, 3)
    eid = fr.events[1]["event_id"]
    s = merge_state(fr.pith_number, fr.record, [], fr.events, {eid: "any_reason_code"})
    assert s["invalid_events"] == [{"event_id": eid, "reason": "any_reason_code"}]
    assert eid not in s["applied_event_ids"]


def test_verifier_feeds_invalid_events_to_merge(forge_verifier):
    fr = forge.forge_record(62, 3)
    b = forge.tampered(fr.bundle())
    r = forge_verifier.verify_bundle(b)
    assert "event_hash_mismatch" in codes(r)
    assert r.merged_state["invalid_events"] == [
        {"event_id": b["events"][-1]["event_id"], "reason": "event_hash_mismatch"}
    ]


# --------------------------------------------------------------------------------------------
# Order independence (property)


@functools.cache
def _scenario():
    """Six events of every type, an equivocating fork, a superseding event, invalid events
    (each with its own event_id) and an exact duplicate."""
    fr = forge.forge_record(70, n_events=6, all_types=True)
    events = copy.deepcopy(fr.events)
    last = events[-1]["event_id"]
    forks = [
        forge.make_event(
            fr.record,
            "correction",
            {"fork": side},
            created_at="2026-07-01T00:00:00Z",
            prev_event=last,
            target="record",
        )
        for side in ("left", "right")
    ]
    superseding = forge.make_event(
        fr.record,
        events[2]["event_type"],
        {"revised": True},
        created_at="2026-06-30T00:00:00Z",
        supersedes=[events[2]["event_id"]],
        target=events[2]["target"],
    )
    bad_sig = rehash_event(
        {**copy.deepcopy(events[1]), "payload": {"forged": 1}}
    )  # new id, stale signature
    bad_hash = copy.deepcopy(events[3])
    bad_hash["payload"]["edited"] = True
    bad_hash["event_id"] = "sha256:" + "e" * 64  # distinct id, content hash stale
    unpinned = forge.make_event(
        fr.record,
        "timestamp_anchor",
        {"x": 1},
        created_at=events[1]["created_at"],
        key=UNPINNED_KEY,
    )
    same_time = forge.make_event(
        fr.record,
        "mirror_hint",
        {"x": 2},
        created_at=events[1]["created_at"],
        target="mirror_hint:t",
    )
    all_events = [
        *events,
        *forks,
        superseding,
        bad_sig,
        bad_hash,
        unpinned,
        same_time,
        copy.deepcopy(events[4]),
    ]
    invalid = invalid_map(all_events, fr.pith_number)
    baseline = merge_state(fr.pith_number, fr.record, [], all_events, invalid)
    return fr, tuple(all_events), invalid, canon(baseline), baseline, events, forks, superseding


def test_scenario_exercises_everything():
    fr, all_events, invalid, _, s, events, forks, superseding = _scenario()
    assert s["equivocation_count"] == 1
    assert s["equivocations"][0]["event_ids"] == sorted(f["event_id"] for f in forks)
    assert sorted(invalid.values()) == [
        "event_hash_mismatch",
        "key_not_pinned",
        "signature_invalid",
    ]
    assert s["invalid_event_count"] == 3
    assert (
        events[2]["event_id"] not in s["applied_event_ids"]
        and superseding["event_id"] in s["applied_event_ids"]
    )
    assert s["event_count"] == len(all_events) - 1  # the duplicate counts once


@settings(max_examples=150, deadline=None)
@given(st.permutations(range(len(_scenario()[1]))))
def test_merge_is_order_independent(perm):
    fr, all_events, invalid, baseline, *_ = _scenario()
    events = [all_events[i] for i in perm]
    assert canon(merge_state(fr.pith_number, fr.record, [], events, invalid)) == baseline


@functools.cache
def _scenario_bundle():
    fr, all_events, *_ = _scenario()
    b = forge.make_bundle(fr.record, list(all_events))
    return b, canon(Verifier(forge.test_trust()).verify_bundle(b).merged_state)


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False))
def test_verified_merge_is_order_independent(rnd):
    b, baseline = _scenario_bundle()
    shuffled = copy.deepcopy(b)
    rnd.shuffle(shuffled["events"])
    r = Verifier(forge.test_trust()).verify_bundle(shuffled)
    assert canon(r.merged_state) == baseline
    assert canon(r.merged_state) == canon(b["state"])


def test_merge_order_independent_with_same_id_copies():
    fr = forge.forge_record(71, 4)
    events = copy.deepcopy(fr.events)
    copy_of_1 = copy.deepcopy(events[1])
    copy_of_1["created_at"] = "2026-12-31T00:00:00Z"  # same event_id, different (unsigned) content
    other_bad = rehash_event({**copy.deepcopy(events[2]), "payload": {"x": 1}})
    all_events = [*events, copy_of_1, other_bad]
    invalid = invalid_map(all_events, fr.pith_number)
    a = merge_state(fr.pith_number, fr.record, [], all_events, invalid)
    b = merge_state(fr.pith_number, fr.record, [], [copy_of_1, *events, other_bad], invalid)
    assert canon(a) == canon(b)
