"""A forge of registry-like documents, signed with a test key, for tests, the demo and benchmarks.

Good documents follow PROTOCOL.md exactly (they verify with the same code as the real seeds when
the test key is pinned); the bad variants are what a broken or hostile mirror would serve.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from dataclasses import dataclass, field

from nacl.signing import SigningKey

from pithsync.core import numbers
from pithsync.core.canonical import canon_sha256, compact, without
from pithsync.core.keys import PinnedKey, TrustStore, fingerprint_hex, public_key_entry
from pithsync.core.merge import merge_state
from pithsync.core.verify import BUNDLE_TYPE, EVENT_HASH_EXCLUDES, SIGNED_MESSAGE

TEST_KEY_ID = "pithsync-test-2026"
EVENT_TYPES = (
    "record_created",
    "graph_snapshot",
    "author_attestation",
    "timestamp_anchor",
    "storage_attestation",
    "citation_signature",
    "replication_record",
    "correction",
    "mirror_hint",
)


@dataclass(frozen=True)
class ForgeKey:
    key_id: str
    signing_key: SigningKey = field(repr=False)

    @classmethod
    def from_seed(cls, key_id: str, seed: str) -> ForgeKey:
        return cls(key_id, SigningKey(hashlib.sha256(seed.encode()).digest()))

    @property
    def raw_public(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.raw_public).decode()

    @property
    def fingerprint(self) -> str:
        return fingerprint_hex(self.raw_public)

    def pinned(self) -> PinnedKey:
        return PinnedKey.from_b64(self.key_id, self.public_key_b64)

    def sign_digest(self, digest_hex: str) -> str:
        return base64.b64encode(self.signing_key.sign(bytes.fromhex(digest_hex)).signature).decode()

    def public_key_entry(self) -> dict:
        return public_key_entry(
            self.key_id, self.raw_public, "https://mirror.test/pith-signing-key.json"
        )

    def signer(self) -> dict:
        return {
            "signer_id": "pith.science",
            "signer_type": "pith_registry",
            "key_id": self.key_id,
            "public_key_fingerprint": self.fingerprint,
        }

    def signature_block(self, digest_hex: str, message: str, signed_at: str) -> dict:
        return {
            "signature_status": "signed_v1",
            "algorithm": "ed25519",
            "key_id": self.key_id,
            "public_key_fingerprint": self.fingerprint,
            "signature_b64": self.sign_digest(digest_hex),
            "signed_message": message,
            "signed_at": signed_at,
        }


TEST_KEY = ForgeKey.from_seed(TEST_KEY_ID, "pithsync test registry key")
ROGUE_KEY = ForgeKey.from_seed(
    "pith-v1-2026-05", "a mirror's own key, never pinned"
)  # claims the real key_id


def test_trust(*extra: ForgeKey) -> TrustStore:
    """The test key pinned (plus the real registry key, so seeds verify too)."""
    return TrustStore(
        [TEST_KEY.pinned(), *TrustStore.registry_default(), *(k.pinned() for k in extra)]
    )


dumps = compact  # bytes as the registry serves them: compact, not key-sorted


def make_record(i: int, year: int = 2026, arxiv_id: str | None = None) -> dict:
    arxiv_id = arxiv_id or f"{year % 100:02d}{(i % 12) + 1:02d}.{i:05d}"
    return {
        "source": {"id": arxiv_id, "kind": "arxiv", "version": 1},
        "metadata": {
            "license": "http://creativecommons.org/licenses/by/4.0/",
            "primary_cat": "cs.LG",
            "submitted_at": f"{year}-06-{(i % 28) + 1:02d}T02:46:04Z",
            "cross_cats_sorted": ["cs.AI"],
            "title_canon_sha256": hashlib.sha256(f"forged paper {i}".encode()).hexdigest(),
            "abstract_canon_sha256": hashlib.sha256(f"forged abstract {i}".encode()).hexdigest(),
        },
        "schema_version": "1.0",
    }


def pith_number_of(record: dict) -> str:
    return str(numbers.derive(record))


def sign_event(
    event: dict, key: ForgeKey = TEST_KEY, signed_at: str = "2026-07-03T06:28:49.539055Z"
) -> dict:
    """Fill in content_sha256, event_id and signature of an event (in place and returned)."""
    body = without(event, *EVENT_HASH_EXCLUDES)
    digest = canon_sha256(body)
    event.clear()
    event.update(body)
    event["signature"] = key.signature_block(digest, SIGNED_MESSAGE["event"], signed_at)
    event["content_sha256"] = digest
    event["event_id"] = "sha256:" + digest
    return event


def make_event(
    record: dict,
    event_type: str,
    payload: dict | None = None,
    *,
    created_at: str = "2026-06-09T00:04:46Z",
    key: ForgeKey = TEST_KEY,
    prev_event: str | None = None,
    supersedes: list[str] | None = None,
    target: str | None = None,
) -> dict:
    pith = pith_number_of(record)
    if event_type == "record_created" and payload is None:
        digest = canon_sha256(record)
        receipt = {
            "kind": "pith_receipt",
            **key.signature_block(digest, SIGNED_MESSAGE["receipt"], "2026-06-09T00:04:46.768779Z"),
            "builder_version": "pithsync-forge",
            "receipt_version": "0.3",
            "canonical_sha256": digest,
        }
        payload = {
            "canonical_record": record,
            "canonical_sha256": digest,
            "receipt": receipt,
            "attestation_state": "computed",
        }
    event = {
        "event_type": event_type,
        "subject_pith_number": pith,
        "target": target
        or (
            "record"
            if event_type == "record_created"
            else "graph"
            if event_type == "graph_snapshot"
            else event_type
        ),
        "payload": payload if payload is not None else {"note": f"forged {event_type}"},
        "signer": key.signer(),
        "created_at": created_at,
        "supersedes": list(supersedes or []),
        "prev_event": prev_event,
        "schema_version": "1.0",
    }
    return sign_event(event, key)


def graph_payload(i: int, cites: list[str] = ()) -> dict:
    return {
        "graph_snapshot": {
            "paper": {
                "title": f"Forged paper {i}",
                "authors_text": "A. Forger",
                "abstract_excerpt": "x" * 200,
            },
            "references": {"count": len(cites), "sample": [{"pith_number": c} for c in cites]},
            "claims": {"count": 0, "items": []},
        }
    }


def make_bundle(
    record: dict,
    events: list[dict],
    *,
    key: ForgeKey = TEST_KEY,
    state: dict | None = None,
    mirror_hints: list[dict] | None = None,
    base_url: str = "https://mirror.test",
    trust: TrustStore | None = None,
) -> dict:
    """A bundle signed by `key`; its state is the true merge unless `state` is given."""
    pith = pith_number_of(record)
    suffix = pith.split(":")[2]
    aliases = [
        {
            "alias_kind": "pith_short_8",
            "alias_value": suffix[:8],
            "created_at": "2026-06-09T00:04:46Z",
        }
    ]
    if record["source"]["kind"] == "arxiv":
        aliases.insert(
            0,
            {
                "alias_kind": "arxiv",
                "alias_value": record["source"]["id"],
                "created_at": "2026-06-09T00:04:46Z",
            },
        )
    if state is None:
        state = true_state(pith, record, aliases, events, trust)
    # The merge shares payload objects with the events; a bundle owns its own copies, so that
    # editing one part (as the bad variants do) never silently edits another.
    events, state = copy.deepcopy(events), copy.deepcopy(state)
    bundle = {
        "bundle_type": BUNDLE_TYPE,
        "bundle_version": "1.0",
        "pith_number": pith,
        "short_pith_number": f"pith:{suffix[:8]}",
        "canonical_record": record,
        "canonical_sha256": canon_sha256(record),
        "source": record["source"],
        "source_aliases": aliases,
        "events": events,
        "timestamp_proofs": [],
        "mirror_hints": mirror_hints if mirror_hints is not None else [],
        "public_keys": [key.public_key_entry()],
        "merge_version": "pith-open-graph-merge-v1",
        "built_at": "2026-07-03T06:28:49Z",
        "links": {
            "resolver": f"{base_url}/pith/{suffix}",
            "bundle": f"{base_url}/pith/{suffix}/bundle.json",
            "state": f"{base_url}/pith/{suffix}/state.json",
            "well_known_bundle": f"{base_url}/.well-known/pith/{suffix}/bundle.json",
        },
        "state": state,
    }
    return resign_bundle(bundle, key)


def resign_bundle(bundle: dict, key: ForgeKey = TEST_KEY) -> dict:
    bundle.pop("bundle_signature", None)
    digest = canon_sha256(bundle)
    bundle["bundle_signature"] = {
        **key.signature_block(digest, SIGNED_MESSAGE["bundle"], "2026-07-03T06:28:49.541486Z"),
        "bundle_sha256": digest,
    }
    return bundle


def true_state(
    pith: str, record: dict, aliases: list, events: list[dict], trust: TrustStore | None = None
) -> dict:
    from pithsync.core.verify import Verifier

    verifier = Verifier(trust or test_trust())
    invalid = {}
    for i, ev in enumerate(events):
        check = verifier.check_event(ev, i, subject=pith)
        if not check.valid:
            invalid[ev["event_id"]] = check.reasons[0].code
    return merge_state(pith, record, aliases, events, invalid)


# -- a record's history and the bad copies a mirror might serve --------------------------------


@dataclass
class ForgedRecord:
    record: dict
    events: list[dict]

    @property
    def pith_number(self) -> str:
        return pith_number_of(self.record)

    @property
    def suffix(self) -> str:
        return self.pith_number.split(":")[2]

    def bundle(self, upto: int | None = None, **kwargs) -> dict:
        """The bundle as published after the first `upto` events (all by default)."""
        return make_bundle(self.record, self.events[: upto or len(self.events)], **kwargs)


def forge_record(
    i: int, n_events: int = 2, *, cites: list[str] = (), year: int = 2026, all_types: bool = False
) -> ForgedRecord:
    """Record i with a record_created event and `n_events - 1` more, a day apart."""
    record = make_record(i, year)
    events = [make_event(record, "record_created", created_at=f"{year}-06-09T00:04:46Z")]
    types = [t for t in EVENT_TYPES if t != "record_created"] if all_types else ["graph_snapshot"]
    prev = None
    for n in range(1, n_events):
        etype = types[(n - 1) % len(types)]
        payload = (
            graph_payload(i, cites)
            if etype == "graph_snapshot"
            else {"note": f"{etype} {n} of forged record {i}"}
        )
        # Successive snapshots chain through prev_event, so they never claim the same place.
        ev = make_event(
            record,
            etype,
            payload,
            created_at=f"{year}-06-{9 + n:02d}T00:00:00Z",
            prev_event=prev if etype == "graph_snapshot" else None,
            target=f"{etype}:{n}" if etype != "graph_snapshot" else None,
        )
        if etype == "graph_snapshot":
            prev = ev["event_id"]
        events.append(ev)
    return ForgedRecord(record, events)


def tampered(bundle: dict) -> dict:
    """A payload edited after signing, hashes left as they were."""
    b = copy.deepcopy(bundle)
    b["events"][-1]["payload"]["tampered_by"] = "a hostile mirror"
    return b


def rewritten_with(bundle: dict, key: ForgeKey = ROGUE_KEY) -> dict:
    """A consistent rewrite: every hash recomputed and every signature made with `key`."""
    b = copy.deepcopy(bundle)
    events = []
    for ev in b["events"]:
        ev = copy.deepcopy(ev)
        ev["payload"]["rewritten"] = True
        ev["signer"] = key.signer()
        if ev["event_type"] == "record_created":
            receipt = ev["payload"]["receipt"]
            receipt.update(
                key.signature_block(
                    receipt["canonical_sha256"],
                    SIGNED_MESSAGE["receipt"],
                    receipt.get("signed_at", ""),
                )
            )
        events.append(sign_event(ev, key))
    b["events"] = events
    b["public_keys"] = [key.public_key_entry()]
    b["state"] = true_state(
        b["pith_number"], b["canonical_record"], b["source_aliases"], events, test_trust(key)
    )
    return resign_bundle(b, key)


def lying_state(state: dict) -> dict:
    """A state that does not follow from the events, with its own hash made consistent."""
    s = copy.deepcopy(state)
    s["applied_event_ids"] = s["applied_event_ids"][:1]
    s["valid_event_count"] = max(s["valid_event_count"] - 1, 0)
    s["event_count"] = s["valid_event_count"] + s["invalid_event_count"]
    for name in list(s["current"]):
        if isinstance(s["current"][name], list) and name != "source_aliases":
            s["current"][name] = []
    s["state_sha256"] = canon_sha256(without(s, "state_sha256"))
    return s


def bundle_with_lying_state(forged: ForgedRecord, key: ForgeKey = TEST_KEY) -> dict:
    """Signed by the registry key, yet its embedded state is not the merge of its events."""
    good = forged.bundle(key=key)
    return make_bundle(forged.record, forged.events, key=key, state=lying_state(good["state"]))


def equivocating_pair(forged: ForgedRecord, key: ForgeKey = TEST_KEY) -> tuple[dict, dict]:
    """Two bundles, each extending the history with a different validly signed event that
    claims the same place (same signer, subject, target and prev_event)."""
    last = forged.events[-1]
    forks = []
    for side in ("left", "right"):
        ev = make_event(
            forged.record,
            "correction",
            {"fork": side},
            created_at="2026-07-01T00:00:00Z",
            key=key,
            prev_event=last["event_id"],
            target="record",
        )
        forks.append(make_bundle(forged.record, [*forged.events, ev], key=key))
    return forks[0], forks[1]
