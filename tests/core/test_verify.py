"""Verification: every check, broken one at a time, gives its own status and reason code."""

from __future__ import annotations

import base64
import copy

import pytest
from helpers import (
    BUNDLE_SEEDS,
    EXPECTED_PITH,
    OTHER_KEY,
    SEED_NAMES,
    STATE_SEED,
    UNPINNED_KEY,
    codes,
    flip_b64,
    forged,
    other_suffix,
    rehash_state,
)

from pithsync.core.canonical import canon, canon_sha256
from pithsync.core.keys import REGISTRY_KEY_B64, TrustStore, fingerprint_hex
from pithsync.core.status import SEVERITY, Reason, Status, most_severe
from pithsync.core.verify import (
    BUNDLE_TYPE,
    Report,
    Verifier,
    detect_kind,
    verify_bundle,
    verify_document,
    verify_pair,
    verify_state,
)
from pithsync.testing import forge

OK, TAMPERED, BAD_SIG, STATE_MISMATCH, MALFORMED = (
    Status.OK,
    Status.TAMPERED,
    Status.BAD_SIGNATURE,
    Status.STATE_MISMATCH,
    Status.MALFORMED,
)
REGISTRY_FP = fingerprint_hex(base64.b64decode(REGISTRY_KEY_B64))

# Every reason code and the one status it implies.
CODE_STATUS = {
    "canonical_sha256_mismatch": TAMPERED,
    "pith_number_mismatch": TAMPERED,
    "event_hash_mismatch": TAMPERED,
    "event_id_mismatch": TAMPERED,
    "event_subject_mismatch": TAMPERED,
    "receipt_hash_mismatch": TAMPERED,
    "receipt_other_record": TAMPERED,
    "no_valid_receipt": TAMPERED,
    "bundle_hash_mismatch": TAMPERED,
    "state_hash_mismatch": TAMPERED,
    "signature_invalid": BAD_SIG,
    "key_not_pinned": BAD_SIG,
    "fingerprint_mismatch": BAD_SIG,
    "signature_algorithm": BAD_SIG,
    "signature_encoding": BAD_SIG,
    "signed_message": BAD_SIG,
    "state_not_merge": STATE_MISMATCH,
    "state_other_record": STATE_MISMATCH,
    "state_inconsistent": STATE_MISMATCH,
    "pith_number_syntax": MALFORMED,
    "bundle_schema": MALFORMED,
    "state_schema": MALFORMED,
    "event_schema": MALFORMED,
    "record_schema": MALFORMED,
    "receipt_schema": MALFORMED,
    "unencodable": MALFORMED,
    "unknown_document": MALFORMED,
}


def assert_reason_statuses(report):
    for reason in report.reasons:
        assert reason.status is CODE_STATUS[reason.code], reason


# --------------------------------------------------------------------------------------------
# The seeds verify


@pytest.mark.parametrize("name", BUNDLE_SEEDS)
def test_seed_bundles_verify(verifier, seed_docs, name):
    b = seed_docs[name]
    r = verifier.verify_bundle(b)
    assert r.ok and r.status is OK and r.reasons == []
    assert r.kind == "bundle"
    assert r.pith_number == EXPECTED_PITH[name]
    assert r.canonical_sha256 == b["canonical_sha256"]
    assert len(r.valid_events) == len(b["events"])
    assert canon(r.merged_state) == canon(b["state"])


def test_seed_state_verifies_with_a_note(verifier, seed_docs):
    r = verifier.verify_state(seed_docs[STATE_SEED])
    assert r.ok and r.status is OK
    assert r.kind == "state" and r.pith_number == EXPECTED_PITH[STATE_SEED]
    assert any("not proven" in n for n in r.notes)


@pytest.mark.parametrize("name", BUNDLE_SEEDS)
def test_seed_pair_with_own_state_verifies(trust, seed_docs, name):
    b = seed_docs[name]
    r = verify_pair(b, copy.deepcopy(b["state"]), trust)
    assert r.ok and r.kind == "pair"


@pytest.mark.parametrize("name", SEED_NAMES)
def test_verify_document_dispatches(verifier, seed_docs, name):
    r = verify_document(seed_docs[name], verifier)
    assert r.ok
    assert r.kind == ("state" if name == STATE_SEED else "bundle") == detect_kind(seed_docs[name])


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_fails_when_its_key_is_not_pinned(seed_docs, name):
    only_test_key = TrustStore([forge.TEST_KEY.pinned()])
    r = verify_document(seed_docs[name], Verifier(only_test_key))
    assert r.status is BAD_SIG
    assert "key_not_pinned" in codes(r)
    assert not r.ok


def test_seeds_verify_under_forge_trust_too(forge_verifier, seed_docs):
    # forge.test_trust() pins the registry key as well as the test key.
    assert all(verify_document(d, forge_verifier).ok for d in seed_docs.values())


def test_module_level_helpers(trust, seed_docs):
    b = seed_docs[BUNDLE_SEEDS[0]]
    assert verify_bundle(b, trust).ok
    assert verify_state(seed_docs[STATE_SEED], trust).ok
    assert verify_pair(b, b["state"], trust).ok


def test_signature_cache_does_not_mask_a_flip(verifier, seed_docs):
    b = seed_docs[BUNDLE_SEEDS[0]]
    assert verifier.verify_bundle(b).ok
    assert verifier.verify_bundle(b).ok  # served from the cache
    bad = copy.deepcopy(b)
    bad["bundle_signature"]["signature_b64"] = flip_b64(bad["bundle_signature"]["signature_b64"])
    assert codes(verifier.verify_bundle(bad)) == ["signature_invalid"]
    assert verifier.verify_bundle(b).ok


# --------------------------------------------------------------------------------------------
# Seeds broken one thing at a time (they cannot be re-signed with the registry key, so the
# layers above may fail too: assert the specific code is present and the overall status).


def _event(b, etype):
    return next(e for e in b["events"] if e["event_type"] == etype)


def _set(path, value):
    def mutate(b):
        node = b
        for p in path[:-1]:
            node = node[p] if not callable(p) else p(node)
        node[path[-1]] = value

    return mutate


def _edit_graph_payload(b):
    _event(b, "graph_snapshot")["payload"]["verdict_id"] = "edited by a mirror"


def _event_id(b):
    _event(b, "graph_snapshot")["event_id"] = "sha256:" + "0" * 64


def _event_subject(b):
    _event(b, "graph_snapshot")["subject_pith_number"] = (
        EXPECTED_PITH["002_c29682bb9f15fda1.txt"]
        if b["pith_number"] != EXPECTED_PITH["002_c29682bb9f15fda1.txt"]
        else EXPECTED_PITH["003_6e91d627b8b42126.txt"]
    )


def _event_sig(field, value=None):
    def mutate(b):
        sig = _event(b, "graph_snapshot")["signature"]
        sig[field] = value if value is not None else flip_b64(sig[field])

    return mutate


def _receipt_flip(b):
    receipt = _event(b, "record_created")["payload"]["receipt"]
    receipt["signature_b64"] = flip_b64(receipt["signature_b64"])


def _bundle_sig(field, value=None):
    def mutate(b):
        sig = b["bundle_signature"]
        sig[field] = value if value is not None else flip_b64(sig[field])

    return mutate


def _pith_suffix(b):
    _, year, suffix = b["pith_number"].split(":")
    b["pith_number"] = f"pith:{year}:{other_suffix(suffix)}"


def _pith_year(b):
    _, year, suffix = b["pith_number"].split(":")
    b["pith_number"] = f"pith:{int(year) - 1}:{suffix}"


def _embedded_lying_state(b):
    b["state"]["applied_event_ids"] = b["state"]["applied_event_ids"][:1]
    rehash_state(b["state"])


def _reorder_events(b):
    b["events"].reverse()


def _unknown_field(b):
    b["x_mirror_addition"] = {"anything": [1, 2]}


SEED_CASES = [
    # (id, mutate, overall status, code, exactly this one code?)
    (
        "canonical_sha256",
        _set(["canonical_sha256"], "0" * 64),
        TAMPERED,
        "canonical_sha256_mismatch",
        False,
    ),
    ("pith_suffix", _pith_suffix, TAMPERED, "pith_number_mismatch", False),
    ("pith_year", _pith_year, TAMPERED, "pith_number_mismatch", False),
    (
        "pith_syntax",
        lambda b: b.__setitem__("pith_number", b["pith_number"].lower()),
        MALFORMED,
        "pith_number_syntax",
        True,
    ),
    ("event_payload", _edit_graph_payload, TAMPERED, "event_hash_mismatch", False),
    ("event_id", _event_id, TAMPERED, "event_id_mismatch", False),
    ("event_subject", _event_subject, TAMPERED, "event_subject_mismatch", False),
    ("event_sig_flip", _event_sig("signature_b64"), BAD_SIG, "signature_invalid", False),
    ("event_key_unpinned", _event_sig("key_id", "pith-v9-rogue"), BAD_SIG, "key_not_pinned", False),
    (
        "event_fingerprint",
        _event_sig("public_key_fingerprint", "0" * 32),
        BAD_SIG,
        "fingerprint_mismatch",
        False,
    ),
    ("event_algorithm", _event_sig("algorithm", "rsa-pss"), BAD_SIG, "signature_algorithm", False),
    (
        "event_sig_base64",
        _event_sig("signature_b64", "not*base64!"),
        BAD_SIG,
        "signature_encoding",
        False,
    ),
    (
        "event_signed_message",
        _event_sig("signed_message", "bundle_sha256_bytes"),
        BAD_SIG,
        "signed_message",
        False,
    ),
    # The receipt sits inside the event payload, so the event hash catches its edit first.
    ("receipt_flip", _receipt_flip, TAMPERED, "event_hash_mismatch", False),
    (
        "bundle_sha256",
        _bundle_sig("bundle_sha256", "0" * 64),
        TAMPERED,
        "bundle_hash_mismatch",
        True,
    ),
    ("bundle_sig_flip", _bundle_sig("signature_b64"), BAD_SIG, "signature_invalid", True),
    (
        "bundle_sig_last_byte",
        lambda b: b["bundle_signature"].__setitem__(
            "signature_b64", flip_b64(b["bundle_signature"]["signature_b64"], 63)
        ),
        BAD_SIG,
        "signature_invalid",
        True,
    ),
    (
        "bundle_key_unpinned",
        _bundle_sig("key_id", "pith-v9-rogue"),
        BAD_SIG,
        "key_not_pinned",
        True,
    ),
    (
        "bundle_fingerprint",
        _bundle_sig("public_key_fingerprint", "f" * 32),
        BAD_SIG,
        "fingerprint_mismatch",
        True,
    ),
    ("bundle_algorithm", _bundle_sig("algorithm", "ecdsa"), BAD_SIG, "signature_algorithm", True),
    (
        "bundle_sig_base64",
        _bundle_sig("signature_b64", "@@@@"),
        BAD_SIG,
        "signature_encoding",
        True,
    ),
    (
        "bundle_sig_short",
        _bundle_sig("signature_b64", base64.b64encode(b"\x00" * 63).decode()),
        BAD_SIG,
        "signature_encoding",
        True,
    ),
    (
        "bundle_signed_message",
        _bundle_sig("signed_message", "canonical_sha256_bytes"),
        BAD_SIG,
        "signed_message",
        True,
    ),
    (
        "embedded_state_sha256",
        _set(["state", "state_sha256"], "0" * 64),
        TAMPERED,
        "state_hash_mismatch",
        False,
    ),
    ("embedded_state_lies", _embedded_lying_state, TAMPERED, "state_not_merge", False),
    ("events_reordered", _reorder_events, TAMPERED, "bundle_hash_mismatch", True),
    ("unknown_field_added", _unknown_field, TAMPERED, "bundle_hash_mismatch", True),
]


@pytest.mark.parametrize("name", BUNDLE_SEEDS[:2])
@pytest.mark.parametrize(
    "mutate,status,code,exact", [c[1:] for c in SEED_CASES], ids=[c[0] for c in SEED_CASES]
)
def test_broken_seed(verifier, seed_docs, name, mutate, status, code, exact):
    b = seed_docs[name]
    assert verifier.verify_bundle(b).ok  # the seed is good before we break it
    mutate(b)
    r = verifier.verify_bundle(b)
    assert not r.ok
    assert r.status is status, r.reasons
    assert code in codes(r), r.reasons
    if exact:
        assert codes(r) == [code], r.reasons
    assert_reason_statuses(r)


def test_seed_resigned_by_rogue_key_claiming_the_registry_key_id(verifier, seed_docs):
    b = forge.resign_bundle(seed_docs[BUNDLE_SEEDS[0]], forge.ROGUE_KEY)
    assert codes(verifier.verify_bundle(b)) == ["fingerprint_mismatch"]
    b["bundle_signature"]["public_key_fingerprint"] = REGISTRY_FP  # spoof the fingerprint too
    r = verifier.verify_bundle(b)
    assert codes(r) == ["signature_invalid"] and r.status is BAD_SIG


def test_seed_consistently_rewritten_by_rogue_key(verifier, seed_docs):
    r = verifier.verify_bundle(forge.rewritten_with(seed_docs[BUNDLE_SEEDS[1]]))
    assert r.status is BAD_SIG
    assert "fingerprint_mismatch" in codes(r)
    assert r.valid_events == []


# --------------------------------------------------------------------------------------------
# Forged documents: re-signed with the test key so that exactly one thing is broken.


def _rebuild(fr, events=None, **kw):
    return forge.make_bundle(fr.record, fr.events if events is None else events, **kw)


def _break_event(index, mutate, resign=False, key=forge.TEST_KEY):
    fr = forged()
    mutate(fr.events[index])
    if resign:
        forge.sign_event(fr.events[index], key)
    return _rebuild(fr)


def _bundle_claiming(fr, pith):
    """A bundle claiming `pith` whose events, state and signature all agree with that claim."""
    events = [
        forge.sign_event({**copy.deepcopy(e), "subject_pith_number": pith}) for e in fr.events
    ]
    b = _rebuild(fr, events)
    b["pith_number"] = pith
    b["state"] = forge.true_state(pith, fr.record, b["source_aliases"], b["events"])
    return forge.resign_bundle(b)


def test_forged_bundle_verifies(forge_verifier):
    fr = forged()
    b = fr.bundle()
    r = forge_verifier.verify_bundle(b)
    assert r.ok and r.pith_number == fr.pith_number and len(r.valid_events) == 3
    assert canon(r.merged_state) == canon(b["state"])
    assert forge_verifier.verify_state(b["state"]).ok
    assert forge_verifier.verify_pair(b, b["state"]).ok


def test_forged_bundle_needs_the_test_key(verifier):
    r = verifier.verify_bundle(forged().bundle())  # registry key only
    assert r.status is BAD_SIG and "key_not_pinned" in codes(r)


FORGED_CASES = [
    # (id, build, status, codes exactly)
    (
        "canonical_sha256",
        lambda: forge.resign_bundle({**forged().bundle(), "canonical_sha256": "ab" * 32}),
        TAMPERED,
        ["canonical_sha256_mismatch"],
    ),
    (
        "pith_suffix",
        lambda: (lambda fr: _bundle_claiming(fr, f"pith:2026:{other_suffix(fr.suffix)}"))(forged()),
        TAMPERED,
        ["pith_number_mismatch"],
    ),
    (
        "pith_year",
        lambda: (lambda fr: _bundle_claiming(fr, f"pith:2025:{fr.suffix}"))(forged()),
        TAMPERED,
        ["pith_number_mismatch"],
    ),
    (
        "pith_syntax_lower",
        lambda: (lambda fr: _bundle_claiming(fr, fr.pith_number.lower()))(forged()),
        MALFORMED,
        ["pith_number_syntax"],
    ),
    (
        "pith_syntax_no_year",
        lambda: (lambda fr: _bundle_claiming(fr, f"pith:{fr.suffix}"))(forged()),
        MALFORMED,
        ["pith_number_syntax"],
    ),
    (
        "pith_syntax_bad_chars",
        lambda: (lambda fr: _bundle_claiming(fr, f"pith:2026:{fr.suffix[:-2]}01"))(forged()),
        MALFORMED,
        ["pith_number_syntax"],
    ),
    (
        "event_payload",
        lambda: _break_event(2, lambda e: e["payload"].update(edited=True)),
        TAMPERED,
        ["event_hash_mismatch"],
    ),
    (
        "event_created_at",
        lambda: _break_event(2, lambda e: e.update(created_at="2030-01-01T00:00:00Z")),
        TAMPERED,
        ["event_hash_mismatch"],
    ),
    (
        "event_id",
        lambda: _break_event(2, lambda e: e.update(event_id="sha256:" + "1" * 64)),
        TAMPERED,
        ["event_id_mismatch"],
    ),
    (
        "event_id_prefix",
        lambda: _break_event(2, lambda e: e.update(event_id=e["content_sha256"])),
        TAMPERED,
        ["event_id_mismatch"],
    ),
    (
        "event_subject",
        lambda: _break_event(
            2,
            lambda e: e.update(subject_pith_number=forge.pith_number_of(forge.make_record(99))),
            resign=True,
        ),
        TAMPERED,
        ["event_subject_mismatch"],
    ),
    (
        "event_sig_flip",
        lambda: _break_event(
            2,
            lambda e: e["signature"].update(
                signature_b64=flip_b64(e["signature"]["signature_b64"])
            ),
        ),
        BAD_SIG,
        ["signature_invalid"],
    ),
    (
        "event_sig_of_other_event",
        lambda: (
            lambda fr: (
                fr.events[2]["signature"].update(
                    signature_b64=fr.events[1]["signature"]["signature_b64"]
                ),
                _rebuild(fr),
            )[1]
        )(forged()),
        BAD_SIG,
        ["signature_invalid"],
    ),
    (
        "event_signed_by_unpinned_key",
        lambda: _break_event(2, lambda e: None, resign=True, key=UNPINNED_KEY),
        BAD_SIG,
        ["key_not_pinned"],
    ),
    (
        "event_key_id_unpinned",
        lambda: _break_event(2, lambda e: e["signature"].update(key_id="nobody")),
        BAD_SIG,
        ["key_not_pinned"],
    ),
    (
        "event_fingerprint",
        lambda: _break_event(
            2, lambda e: e["signature"].update(public_key_fingerprint=REGISTRY_FP)
        ),
        BAD_SIG,
        ["fingerprint_mismatch"],
    ),
    (
        "event_algorithm",
        lambda: _break_event(2, lambda e: e["signature"].update(algorithm="Ed25519ph")),
        BAD_SIG,
        ["signature_algorithm"],
    ),
    (
        "event_sig_not_base64",
        lambda: _break_event(2, lambda e: e["signature"].update(signature_b64="%%%not base64%%%")),
        BAD_SIG,
        ["signature_encoding"],
    ),
    (
        "event_sig_wrong_length",
        lambda: _break_event(
            2,
            lambda e: e["signature"].update(signature_b64=base64.b64encode(b"\x01" * 65).decode()),
        ),
        BAD_SIG,
        ["signature_encoding"],
    ),
    (
        "event_sig_not_string",
        lambda: _break_event(2, lambda e: e["signature"].update(signature_b64=None)),
        BAD_SIG,
        ["signature_encoding"],
    ),
    (
        "event_signed_message",
        lambda: _break_event(
            2, lambda e: e["signature"].update(signed_message="canonical_sha256_bytes")
        ),
        BAD_SIG,
        ["signed_message"],
    ),
    (
        "event_schema_missing_created_at",
        lambda: _break_event(2, lambda e: e.pop("created_at")),
        MALFORMED,
        ["event_schema"],
    ),
    (
        "event_schema_payload_not_object",
        lambda: _break_event(2, lambda e: e.update(payload=[1])),
        MALFORMED,
        ["event_schema"],
    ),
    (
        "event_not_an_object",
        lambda: forge.resign_bundle((lambda b: (b["events"].append(42), b)[1])(forged().bundle())),
        MALFORMED,
        ["event_schema"],
    ),
    (
        "receipt_sig_flip",
        lambda: _break_event(
            0,
            lambda e: e["payload"]["receipt"].update(
                signature_b64=flip_b64(e["payload"]["receipt"]["signature_b64"])
            ),
            resign=True,
        ),
        BAD_SIG,
        ["signature_invalid", "no_valid_receipt"],
    ),
    (
        "receipt_canonical_sha256",
        lambda: _break_event(
            0, lambda e: e["payload"]["receipt"].update(canonical_sha256="0" * 64), resign=True
        ),
        TAMPERED,
        ["receipt_hash_mismatch", "no_valid_receipt"],
    ),
    (
        "receipt_payload_record_edited",
        lambda: _break_event(
            0, lambda e: e["payload"]["canonical_record"].update(schema_version="9"), resign=True
        ),
        TAMPERED,
        ["receipt_hash_mismatch", "no_valid_receipt"],
    ),
    (
        "receipt_key_unpinned",
        lambda: _break_event(
            0, lambda e: e["payload"]["receipt"].update(key_id="nobody"), resign=True
        ),
        BAD_SIG,
        ["key_not_pinned", "no_valid_receipt"],
    ),
    (
        "receipt_fingerprint",
        lambda: _break_event(
            0,
            lambda e: e["payload"]["receipt"].update(public_key_fingerprint="0" * 32),
            resign=True,
        ),
        BAD_SIG,
        ["fingerprint_mismatch", "no_valid_receipt"],
    ),
    (
        "receipt_signed_message",
        lambda: _break_event(
            0,
            lambda e: e["payload"]["receipt"].update(
                signed_message="open_graph_event_sha256_bytes"
            ),
            resign=True,
        ),
        BAD_SIG,
        ["signed_message", "no_valid_receipt"],
    ),
    (
        "receipt_missing",
        lambda: _break_event(0, lambda e: e["payload"].pop("receipt"), resign=True),
        TAMPERED,
        ["receipt_schema", "no_valid_receipt"],
    ),
    (
        "no_record_created",
        lambda: (lambda fr: _rebuild(fr, fr.events[1:]))(forged()),
        TAMPERED,
        ["no_valid_receipt"],
    ),
    (
        "bundle_sha256",
        lambda: (
            forged().bundle()
            | {
                "bundle_signature": {
                    **forged().bundle()["bundle_signature"],
                    "bundle_sha256": "0" * 64,
                }
            }
        ),
        TAMPERED,
        ["bundle_hash_mismatch"],
    ),
    (
        "bundle_sig_flip",
        lambda: (
            lambda b: (
                b["bundle_signature"].update(
                    signature_b64=flip_b64(b["bundle_signature"]["signature_b64"])
                ),
                b,
            )[1]
        )(forged().bundle()),
        BAD_SIG,
        ["signature_invalid"],
    ),
    (
        "bundle_signed_by_unpinned_key",
        lambda: forge.resign_bundle(forged().bundle(), UNPINNED_KEY),
        BAD_SIG,
        ["key_not_pinned"],
    ),
    (
        "bundle_edited_after_signing",
        lambda: (lambda b: (b["links"].update(bundle="https://evil.test/x"), b)[1])(
            forged().bundle()
        ),
        TAMPERED,
        ["bundle_hash_mismatch"],
    ),
    (
        "embedded_state_sha256",
        lambda: forge.resign_bundle(
            (lambda b: (b["state"].update(state_sha256="0" * 64), b)[1])(forged().bundle())
        ),
        TAMPERED,
        ["state_hash_mismatch"],
    ),  # content is still the merge: only the hash lies
    (
        "lying_state",
        lambda: forge.bundle_with_lying_state(forged()),
        STATE_MISMATCH,
        ["state_not_merge"],
    ),
    (
        "state_of_other_record",
        lambda: forge.resign_bundle({**forged().bundle(), "state": forged(8).bundle()["state"]}),
        STATE_MISMATCH,
        ["state_not_merge"],
    ),
    (
        "record_without_metadata",
        lambda: forge.resign_bundle(
            (lambda b: (b["canonical_record"].pop("metadata"), b)[1])(forged().bundle())
        ),
        MALFORMED,
        ["record_schema"],
    ),
    (
        "record_without_submitted_at",
        lambda: forge.resign_bundle(
            (
                lambda b: (
                    b["canonical_record"]["metadata"].pop("submitted_at"),
                    b.update(canonical_sha256=canon_sha256(b["canonical_record"])),
                    b,
                )[2]
            )(forged().bundle())
        ),
        MALFORMED,
        ["record_schema"],
    ),
]


@pytest.mark.parametrize(
    "build,status,expected", [c[1:] for c in FORGED_CASES], ids=[c[0] for c in FORGED_CASES]
)
def test_forged_one_thing_broken(forge_verifier, build, status, expected):
    r = forge_verifier.verify_bundle(build())
    assert codes(r) == expected, r.reasons
    assert r.status is status
    assert_reason_statuses(r)
    assert not r.ok


def test_receipt_for_another_record(forge_verifier):
    fr, other = forged(7), forged(8)
    ev = copy.deepcopy(other.events[0])  # a valid record_created, but for record 8
    ev["subject_pith_number"] = fr.pith_number
    forge.sign_event(ev)
    r = forge_verifier.verify_bundle(_rebuild(fr, [ev, *fr.events[1:]]))
    assert codes(r) == ["receipt_other_record"]
    assert r.status is TAMPERED


def test_consistent_rewrite_by_rogue_key_is_bad_signature(forge_verifier):
    b = forge.rewritten_with(forged().bundle())  # the rogue key claims the registry key_id
    r = forge_verifier.verify_bundle(b)
    assert r.status is BAD_SIG
    assert "fingerprint_mismatch" in codes(r)
    assert r.valid_events == []
    assert {x.status for x in r.reasons} <= {BAD_SIG, TAMPERED, STATE_MISMATCH}


def test_consistent_rewrite_by_unpinned_key_is_bad_signature(forge_verifier):
    r = forge_verifier.verify_bundle(forge.rewritten_with(forged().bundle(), UNPINNED_KEY))
    assert r.status is BAD_SIG
    assert set(codes(r)) >= {"key_not_pinned"}
    assert r.valid_events == []


def test_rewrite_verifies_once_its_key_is_pinned():
    # Proof that the rewrite is internally consistent: the only thing wrong is the key.
    r = Verifier(forge.test_trust(OTHER_KEY)).verify_bundle(
        forge.rewritten_with(forged().bundle(), OTHER_KEY)
    )
    assert r.ok, r.reasons


def test_unknown_fields_are_kept_and_signed(forge_verifier):
    b = forged().bundle()
    b["x_future_field"] = {"kept": True}
    forge.resign_bundle(b)
    assert forge_verifier.verify_bundle(b).ok
    b["x_future_field"]["kept"] = False  # covered by the signature, so editing it is caught
    assert codes(forge_verifier.verify_bundle(b)) == ["bundle_hash_mismatch"]


@pytest.mark.parametrize(
    "form",
    ["pith:\u0662\u0660\u0662\u0666:{s}", "pith:2026:{s}\n", " pith:2026:{s}"],
    ids=["arabic-digits", "trailing-newline", "leading-space"],
)
def test_non_canonical_pith_number_string_is_rejected(forge_verifier, form):
    fr = forged()
    r = forge_verifier.verify_bundle(_bundle_claiming(fr, form.format(s=fr.suffix)))
    assert not r.ok
    assert set(codes(r)) & {"pith_number_syntax", "pith_number_mismatch"}


# --------------------------------------------------------------------------------------------
# Bundle and state.json served side by side


def test_pair_lying_state(forge_verifier):
    b = forged().bundle()
    r = forge_verifier.verify_pair(b, forge.lying_state(b["state"]))
    assert codes(r) == ["state_not_merge"] and r.status is STATE_MISMATCH and r.kind == "pair"


def test_pair_state_for_another_record(forge_verifier):
    b = forged(7).bundle()
    r = forge_verifier.verify_pair(b, forged(8).bundle()["state"])
    assert codes(r) == ["state_other_record"] and r.status is STATE_MISMATCH


def test_pair_seed_with_other_seeds_state(verifier, seed_docs):
    r = verifier.verify_pair(seed_docs[BUNDLE_SEEDS[0]], seed_docs[BUNDLE_SEEDS[1]]["state"])
    assert codes(r) == ["state_other_record"]


def test_pair_state_hash_broken(forge_verifier):
    b = forged().bundle()
    s = copy.deepcopy(b["state"])
    s["state_sha256"] = "f" * 64
    r = forge_verifier.verify_pair(b, s)
    assert codes(r) == ["state_hash_mismatch"] and r.status is TAMPERED


def test_pair_state_not_an_object(forge_verifier):
    r = forge_verifier.verify_pair(forged().bundle(), ["not", "a", "state"])
    assert codes(r) == ["state_schema"] and r.status is MALFORMED


def test_pair_state_unencodable(forge_verifier):
    b = forged().bundle()
    s = copy.deepcopy(b["state"])
    s["current"]["graph_snapshots"][0]["payload"]["x"] = "\ud800"
    r = forge_verifier.verify_pair(b, s)
    assert codes(r) == ["unencodable"] and r.status is MALFORMED


def test_pair_with_broken_bundle_reports_the_bundle(forge_verifier):
    b = forged().bundle()
    state = b["state"]
    b["bundle_signature"]["signature_b64"] = flip_b64(b["bundle_signature"]["signature_b64"])
    assert codes(forge_verifier.verify_pair(b, state)) == ["signature_invalid"]


# --------------------------------------------------------------------------------------------
# A standalone state (seed 001): its hash, its number, its receipt, its consistency.


def _state_case(mutate):
    def build(seed_docs):
        s = seed_docs[STATE_SEED]
        mutate(s)
        return rehash_state(s)

    return build


def _receipt(s):
    return s["current"]["record_created"]["payload"]["receipt"]


STATE_CASES = [
    (
        "hash_broken",
        lambda d: (lambda s: (s.update(state_sha256="0" * 64), s)[1])(d[STATE_SEED]),
        TAMPERED,
        {"state_hash_mismatch"},
    ),
    (
        "content_edited",
        lambda d: (lambda s: (s["current"]["graph_snapshots"][0]["payload"].update(x=1), s)[1])(
            d[STATE_SEED]
        ),
        TAMPERED,
        {"state_hash_mismatch"},
    ),
    (
        "receipt_flip",
        _state_case(
            lambda s: _receipt(s).update(signature_b64=flip_b64(_receipt(s)["signature_b64"]))
        ),
        BAD_SIG,
        {"signature_invalid"},
    ),
    (
        "receipt_canonical_sha256",
        _state_case(lambda s: _receipt(s).update(canonical_sha256="0" * 64)),
        TAMPERED,
        {"receipt_hash_mismatch"},
    ),
    (
        "receipt_key_unpinned",
        _state_case(lambda s: _receipt(s).update(key_id="nobody")),
        BAD_SIG,
        {"key_not_pinned"},
    ),
    (
        "receipt_fingerprint",
        _state_case(lambda s: _receipt(s).update(public_key_fingerprint="0" * 32)),
        BAD_SIG,
        {"fingerprint_mismatch"},
    ),
    (
        "receipt_missing",
        _state_case(lambda s: s["current"]["record_created"]["payload"].pop("receipt")),
        MALFORMED,
        {"receipt_schema"},
    ),
    (
        "pith_suffix",
        _state_case(
            lambda s: s.update(
                pith_number="pith:2026:" + other_suffix(s["pith_number"].split(":")[2])
            )
        ),
        TAMPERED,
        {"pith_number_mismatch"},
    ),
    (
        "pith_year",
        _state_case(lambda s: s.update(pith_number=s["pith_number"].replace("2026", "2024"))),
        TAMPERED,
        {"pith_number_mismatch"},
    ),
    (
        "pith_syntax",
        _state_case(lambda s: s.update(pith_number=s["pith_number"].lower())),
        MALFORMED,
        {"pith_number_syntax"},
    ),
    (
        "record_edited",
        _state_case(lambda s: s["current"]["canonical_record"].update(schema_version="2.0")),
        TAMPERED,
        {"pith_number_mismatch", "receipt_other_record"},
    ),
    (
        "count_event",
        _state_case(lambda s: s.update(event_count=s["event_count"] + 1)),
        STATE_MISMATCH,
        {"state_inconsistent"},
    ),
    (
        "count_invalid",
        _state_case(lambda s: s.update(invalid_event_count=1)),
        STATE_MISMATCH,
        {"state_inconsistent"},
    ),
    (
        "count_equivocation",
        _state_case(lambda s: s.update(equivocation_count=1)),
        STATE_MISMATCH,
        {"state_inconsistent"},
    ),
    (
        "count_valid_below_applied",
        _state_case(lambda s: s.update(valid_event_count=1, invalid_event_count=1)),
        STATE_MISMATCH,
        {"state_inconsistent"},
    ),
    (
        "applied_missing_one",
        _state_case(lambda s: s.update(applied_event_ids=s["applied_event_ids"][:1])),
        STATE_MISMATCH,
        {"state_inconsistent"},
    ),
    (
        "applied_duplicated",
        _state_case(
            lambda s: s.update(
                applied_event_ids=s["applied_event_ids"] + s["applied_event_ids"][:1]
            )
        ),
        STATE_MISMATCH,
        {"state_inconsistent"},
    ),
    (
        "applied_unknown_id",
        _state_case(lambda s: s["applied_event_ids"].append("sha256:" + "0" * 64)),
        STATE_MISMATCH,
        {"state_inconsistent"},
    ),
    (
        "no_record_created",
        _state_case(lambda s: s["current"].update(record_created=None)),
        TAMPERED,
        {"no_valid_receipt", "state_inconsistent"},
    ),
    (
        "schema_missing_field",
        lambda d: (lambda s: (s.pop("applied_event_ids"), s)[1])(d[STATE_SEED]),
        MALFORMED,
        {"state_schema"},
    ),
    (
        "schema_count_is_bool",
        lambda d: (lambda s: (s.update(event_count=True), s)[1])(d[STATE_SEED]),
        MALFORMED,
        {"state_schema"},
    ),
    (
        "schema_state_type",
        lambda d: (lambda s: (s.update(state_type="pith_open_graph_bundle"), s)[1])(d[STATE_SEED]),
        MALFORMED,
        {"state_schema"},
    ),
    ("not_an_object", lambda d: [d[STATE_SEED]], MALFORMED, {"state_schema"}),
]


@pytest.mark.parametrize(
    "build,status,expected", [c[1:] for c in STATE_CASES], ids=[c[0] for c in STATE_CASES]
)
def test_state_one_thing_broken(verifier, seed_docs, build, status, expected):
    r = verifier.verify_state(build(seed_docs))
    assert set(codes(r)) == expected, r.reasons
    assert r.status is status
    assert_reason_statuses(r)


def test_state_receipt_for_another_record(seed_docs):
    s = seed_docs[STATE_SEED]
    other = forged(8).events[0]  # a valid record_created (test key) for another record
    s["current"]["record_created"]["payload"] = copy.deepcopy(other["payload"])
    rehash_state(s)
    r = Verifier(forge.test_trust()).verify_state(s)
    assert codes(r) == ["receipt_other_record"] and r.status is TAMPERED


def test_state_merge_version_difference_is_a_note(verifier, seed_docs):
    s = rehash_state({**seed_docs[STATE_SEED], "merge_version": "pith-open-graph-merge-v2"})
    r = verifier.verify_state(s)
    assert r.ok and any("merge_version" in n for n in r.notes)


@pytest.mark.parametrize("where", ["applied_event_ids", "entry_event_id"])
def test_state_with_unhashable_ids_does_not_raise(verifier, seed_docs, where):
    s = seed_docs[STATE_SEED]
    if where == "applied_event_ids":
        s["applied_event_ids"][0] = ["not", "a", "string"]
    else:
        s["current"]["graph_snapshots"][0]["event_id"] = {"not": "a string"}
    rehash_state(s)
    r = verifier.verify_state(s)
    assert not r.ok


# --------------------------------------------------------------------------------------------
# Schema errors and robustness: nothing raises on bad input.


def test_bundle_not_an_object(verifier):
    for doc in ([], "bundle", 1, None, True):
        r = verifier.verify_bundle(doc)
        assert codes(r) == ["bundle_schema"] and r.status is MALFORMED


@pytest.mark.parametrize(
    "field",
    [
        "bundle_type",
        "pith_number",
        "canonical_record",
        "canonical_sha256",
        "source_aliases",
        "events",
        "state",
        "bundle_signature",
    ],
)
def test_bundle_missing_field(verifier, seed_docs, field):
    b = seed_docs[BUNDLE_SEEDS[0]]
    del b[field]
    r = verifier.verify_bundle(b)
    assert codes(r) == ["bundle_schema"] and r.status is MALFORMED
    assert field in r.reasons[0].message


@pytest.mark.parametrize(
    "field,value",
    [("events", {}), ("state", []), ("pith_number", 2026), ("bundle_signature", "sig")],
)
def test_bundle_field_of_wrong_type(verifier, seed_docs, field, value):
    b = seed_docs[BUNDLE_SEEDS[0]]
    b[field] = value
    assert codes(verifier.verify_bundle(b)) == ["bundle_schema"]


def test_wrong_bundle_type(verifier, seed_docs):
    b = seed_docs[BUNDLE_SEEDS[0]]
    b["bundle_type"] = "pith_open_graph_bundle_v2"
    assert codes(verifier.verify_bundle(b)) == ["bundle_schema"]
    assert codes(verify_document(b, verifier)) == ["unknown_document"]
    assert verify_document(b, verifier).status is MALFORMED


@pytest.mark.parametrize("doc", [{}, [], None, "x", {"state_type": "other"}, {"bundle_type": 1}])
def test_unknown_document(verifier, doc):
    r = verify_document(doc, verifier)
    assert codes(r) == ["unknown_document"] and r.kind == "unknown" and r.status is MALFORMED


def test_bundle_with_lone_surrogate_is_malformed_not_an_exception(forge_verifier):
    b = forged().bundle()
    b["events"][1]["payload"]["x"] = "\udc00"
    r = forge_verifier.verify_bundle(b)
    assert "unencodable" in codes(r) and r.status is MALFORMED


def test_state_with_lone_surrogate_is_malformed(verifier, seed_docs):
    s = seed_docs[STATE_SEED]
    s["current"]["graph_snapshots"][0]["payload"]["x"] = "\ud800"
    r = verifier.verify_state(s)
    assert codes(r) == ["unencodable"] and r.status is MALFORMED


@pytest.mark.parametrize(
    "junk",
    [
        {"bundle_type": BUNDLE_TYPE},
        {
            "bundle_type": BUNDLE_TYPE,
            "pith_number": "x",
            "canonical_record": {},
            "canonical_sha256": "",
            "source_aliases": [],
            "events": [],
            "state": {},
            "bundle_signature": {},
        },
        {
            "bundle_type": BUNDLE_TYPE,
            "pith_number": "pith:2026:AAAAAAAAAAAAAAAAAAAAAAAAAA",
            "canonical_record": {"metadata": {}},
            "canonical_sha256": "",
            "source_aliases": [],
            "events": [None, [], {"event_id": 5}],
            "state": {},
            "bundle_signature": {},
        },
    ],
)
def test_junk_bundles_report_not_raise(verifier, junk):
    r = verifier.verify_bundle(junk)
    assert isinstance(r, Report) and not r.ok


@pytest.mark.parametrize("mutation", ["supersedes", "signer_id"])
def test_validly_signed_odd_event_does_not_raise(forge_verifier, mutation):
    b = forged().bundle()
    ev = b["events"][2]
    if mutation == "supersedes":
        ev["supersedes"] = [["not", "an", "id"]]
    else:
        ev["signer"] = {**ev["signer"], "signer_id": ["pith.science"]}
    forge.sign_event(ev)  # validly signed by the pinned test key
    forge.resign_bundle(b)
    r = forge_verifier.verify_bundle(b)  # currently raises TypeError from merge_state
    assert isinstance(r, Report)
    assert r.merged_state is not None


# --------------------------------------------------------------------------------------------
# Reports and statuses


def test_report_to_json(forge_verifier):
    b = forge.bundle_with_lying_state(forged())
    j = forge_verifier.verify_bundle(b).to_json()
    assert j["kind"] == "bundle" and j["status"] == "state_mismatch"
    assert j["pith_number"] == b["pith_number"]
    assert (
        j["reasons"][0]["code"] == "state_not_merge"
        and j["reasons"][0]["status"] == "state_mismatch"
    )
    assert isinstance(j["reasons"][0]["message"], str) and j["notes"] == []


def test_severity_order():
    assert most_severe([]) is Status.OK
    assert (
        most_severe([Status.MALFORMED, Status.BAD_SIGNATURE, Status.TAMPERED])
        is Status.BAD_SIGNATURE
    )
    assert most_severe([Status.STATE_MISMATCH, Status.TAMPERED]) is Status.TAMPERED
    assert most_severe([Status.MALFORMED, Status.STATE_MISMATCH]) is Status.STATE_MISMATCH
    assert SEVERITY[:2] == (Status.SPLIT_VIEW, Status.EQUIVOCATION) and SEVERITY[-1] is Status.OK
    assert most_severe([Status.EQUIVOCATION, Status.SPLIT_VIEW]) is Status.SPLIT_VIEW
    assert str(Reason(Status.TAMPERED, "x", "y")) == "tampered/x: y"
