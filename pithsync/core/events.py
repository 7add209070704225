"""Event-level checks: an event's hash, id, subject, signature, signer and receipt.

Pure, like the rest of the core: parsed JSON and a TrustStore go in, reasons come out, and bad
input never raises.  `pithsync.core.verify` builds bundles and states on these checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pithsync.core.canonical import canon_sha256, without
from pithsync.core.keys import PinnedKey, TrustStore, decode_signature
from pithsync.core.status import Reason, Status

EVENT_HASH_EXCLUDES = ("signature", "content_sha256", "event_id")
SIGNED_MESSAGE = {
    "receipt": "canonical_sha256_bytes",
    "event": "open_graph_event_sha256_bytes",
    "bundle": "bundle_sha256_bytes",
}

_EVENT_FIELDS: dict[str, type | tuple] = {
    "event_type": str,
    "subject_pith_number": str,
    "payload": dict,
    "signer": dict,
    "created_at": str,
    "signature": dict,
    "content_sha256": str,
    "event_id": str,
}
_HEX64 = frozenset("0123456789abcdef")


def _is_sha256hex(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX64


def missing_fields(doc: Mapping, spec: Mapping[str, Any]) -> list[str]:
    """The fields of `doc` that are absent or not of the type `spec` names, each with why.

    Args:
        doc: the parsed document.
        spec: field name -> the type (or tuple of types) it must have; a bool is not an int.

    Returns:
        One "name (absent)" or "name (not type)" entry per bad field, in `spec` order.
    """
    return [
        f"{name} ({'absent' if name not in doc else 'not ' + getattr(t, '__name__', str(t))})"
        for name, t in spec.items()
        if not isinstance(doc.get(name), t) or (t is int and isinstance(doc.get(name), bool))
    ]


def _content_reasons(
    event: dict, event_id: str, digest: str, what: str, subject: str | None
) -> list[Reason]:
    """Whether an event is what its hash, id and subject say: digest is its recomputed hash."""
    reasons: list[Reason] = []
    if event["content_sha256"] != digest:
        reasons.append(
            Reason(
                Status.TAMPERED,
                "event_hash_mismatch",
                f"{what}: content_sha256 does not match its content (computed {digest})",
            )
        )
    if event_id != "sha256:" + event["content_sha256"]:
        reasons.append(
            Reason(
                Status.TAMPERED,
                "event_id_mismatch",
                f"{what}: event_id is not sha256:<content_sha256>",
            )
        )
    if subject is not None and event["subject_pith_number"] != subject:
        reasons.append(
            Reason(
                Status.TAMPERED,
                "event_subject_mismatch",
                f"{what}: subject {event['subject_pith_number'][:80]!r} is not {subject}",
            )
        )
    return reasons


@dataclass(frozen=True)
class EventCheck:
    event_id: str
    reasons: tuple[Reason, ...]

    @property
    def valid(self) -> bool:
        return not self.reasons


class EventChecker:
    """Checks events and signatures against one TrustStore.

    Holds a cache of signature checks (pure: the same message, signature and pinned key always
    give the same answer), so an event served by three mirrors is checked once.  An event
    belongs to one record, so the cache only needs to span the records in flight.
    """

    def __init__(self, trust: TrustStore, cache_size: int = 8192):
        self.trust = trust
        self._sig_cache: dict[tuple, bool] = {}
        self._cache_size = cache_size

    # -- signatures --------------------------------------------------------------------
    def check_signature(
        self, sig: object, digest_hex: str, what: str, expected_message: str
    ) -> list[Reason]:
        """Whether `sig` is a valid Ed25519 signature by a pinned key over `digest_hex`.

        Args:
            sig: the signature object as served (untrusted).
            digest_hex: the sha256 (hex) the signature must cover.
            what: names the signed thing in the reasons' messages.
            expected_message: the `signed_message` value this kind of signature must carry.

        Returns:
            No reasons if it verifies, else the one reason it does not.
        """
        if not isinstance(sig, dict):
            return [Reason(Status.MALFORMED, "signature_missing", f"{what}: no signature object")]
        key = self._pinned_key(sig, what, expected_message)
        if isinstance(key, Reason):
            return [key]
        raw_sig = decode_signature(sig.get("signature_b64"))
        if raw_sig is None:
            return [
                Reason(
                    Status.BAD_SIGNATURE,
                    "signature_encoding",
                    f"{what}: signature_b64 is not a 64-byte base64 signature",
                )
            ]
        if not self._verifies(key, digest_hex, raw_sig):
            return [
                Reason(
                    Status.BAD_SIGNATURE,
                    "signature_invalid",
                    f"{what}: Ed25519 signature does not verify with pinned key {key.key_id}",
                )
            ]
        return []

    def _pinned_key(self, sig: dict, what: str, expected_message: str) -> PinnedKey | Reason:
        """The pinned Ed25519 key a signature object names, if all it says of it is true;
        else the reason it is not."""
        if sig.get("algorithm") != "ed25519":
            return Reason(
                Status.BAD_SIGNATURE,
                "signature_algorithm",
                f"{what}: algorithm {sig.get('algorithm')!r} is not ed25519",
            )
        key = self.trust.get(sig.get("key_id"))
        if key is None:
            return Reason(
                Status.BAD_SIGNATURE,
                "key_not_pinned",
                f"{what}: key_id {str(sig.get('key_id'))[:80]!r} is not a pinned key",
            )
        if sig.get("public_key_fingerprint") != key.fingerprint:
            return Reason(
                Status.BAD_SIGNATURE,
                "fingerprint_mismatch",
                f"{what}: fingerprint {str(sig.get('public_key_fingerprint'))[:80]!r}"
                f" is not that of pinned key {key.key_id}",
            )
        if sig.get("signed_message") != expected_message:
            return Reason(
                Status.BAD_SIGNATURE,
                "signed_message",
                f"{what}: signed_message is {str(sig.get('signed_message'))[:80]!r},"
                f" expected {expected_message!r}",
            )
        return key

    def _verifies(self, key: PinnedKey, digest_hex: str, raw_sig: bytes) -> bool:
        """The Ed25519 check itself, answered from the cache when this triple was seen."""
        cache_key = (key.key_id, digest_hex, raw_sig)
        ok = self._sig_cache.get(cache_key)
        if ok is None:
            ok = key.verify(bytes.fromhex(digest_hex), raw_sig)
            if len(self._sig_cache) >= self._cache_size:
                self._sig_cache.clear()
            self._sig_cache[cache_key] = ok
        return ok

    # -- events ------------------------------------------------------------------------
    def check_event(self, event: object, index: int, subject: str | None = None) -> EventCheck:
        """One event: its schema, hash, id, subject, signature, signer and (for record_created)
        its receipt.  The signature stages run only when the earlier ones found nothing.

        Args:
            event: the event as served (untrusted).
            index: its position in the bundle, naming it when it has no usable event_id.
            subject: the pith number the event must be about (None: not checked).

        Returns:
            The event's id and every reason it is not valid (none: valid).
        """
        what = f"event[{index}]"
        if not isinstance(event, dict):
            return EventCheck(
                f"#{index}", (Reason(Status.MALFORMED, "event_schema", f"{what} is not an object"),)
            )
        event_id = event.get("event_id")
        event_id = event_id if isinstance(event_id, str) else f"#{index}"
        what = f"event {event_id[:80]}"
        bad = missing_fields(event, _EVENT_FIELDS)
        if bad:
            return EventCheck(
                event_id,
                (
                    Reason(
                        Status.MALFORMED, "event_schema", f"{what}: bad fields: {', '.join(bad)}"
                    ),
                ),
            )
        digest = canon_sha256(without(event, *EVENT_HASH_EXCLUDES))
        reasons = _content_reasons(event, event_id, digest, what, subject)
        if not reasons:
            reasons.extend(
                self.check_signature(event["signature"], digest, what, SIGNED_MESSAGE["event"])
            )
        if not reasons:
            reasons.extend(self._check_signer(event, what))
        if not reasons and event["event_type"] == "record_created":
            reasons.extend(self.check_record_created(event, what))
        return EventCheck(event_id, tuple(reasons))

    def _check_signer(self, event: dict, what: str) -> list[Reason]:
        """The merge groups events by signer, so the signer an event names must be the key
        that signed it: otherwise one pinned key could speak for another."""
        signer, sig = event["signer"], event["signature"]
        key = self.trust.get(sig.get("key_id"))
        if (
            signer.get("key_id") != sig.get("key_id")
            or key is None
            or signer.get("public_key_fingerprint") != key.fingerprint
        ):
            return [
                Reason(
                    Status.BAD_SIGNATURE,
                    "signer_mismatch",
                    f"{what}: signer names key {str(signer.get('key_id'))[:80]!r},"
                    f" but it is signed by {str(sig.get('key_id'))[:80]!r}",
                )
            ]
        if not isinstance(signer.get("signer_id"), str):
            return [
                Reason(
                    Status.MALFORMED, "event_schema", f"{what}: signer.signer_id is not a string"
                )
            ]
        return []

    def check_record_created(self, event: dict, what: str) -> list[Reason]:
        """The receipt: the registry's signature over the canonical record's digest.

        Args:
            event: a record_created event, or any mapping whose "payload" is one's payload.
            what: names the event in the reasons' messages.

        Returns:
            No reasons if the receipt matches its record and verifies, else why not.
        """
        payload = event["payload"]
        record, digest, receipt = (
            payload.get("canonical_record"),
            payload.get("canonical_sha256"),
            payload.get("receipt"),
        )
        if not (isinstance(record, dict) and _is_sha256hex(digest) and isinstance(receipt, dict)):
            return [
                Reason(
                    Status.MALFORMED,
                    "receipt_schema",
                    f"{what}: record_created payload lacks canonical_record, canonical_sha256"
                    " or receipt",
                )
            ]
        if canon_sha256(record) != digest or receipt.get("canonical_sha256") != digest:
            return [
                Reason(
                    Status.TAMPERED,
                    "receipt_hash_mismatch",
                    f"{what}: receipt does not match the canonical record's sha256",
                )
            ]
        return self.check_signature(receipt, digest, f"{what} receipt", SIGNED_MESSAGE["receipt"])
