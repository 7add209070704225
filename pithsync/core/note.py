"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys.

A note is UTF-8 text ending in a newline, a blank line, then signature lines
`— <key name> base64(key ID || signature)`.  The key ID is the first four bytes of
SHA-256(name || 0x0A || 0x01 || public key); a verifier key is written
`<name>+<hex key ID>+base64(0x01 || public key)`.  Signing keys use the Go sumdb form
`PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 || seed)`, so Go's note tools read them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from pithsync.core.errors import InvalidKey, PithError

ED25519 = 0x01  # the signature type byte of c2sp.org/signed-note
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
MAX_SIGNATURES = 100  # the spec asks verifiers to accept at least 16


class NoteError(PithError):
    """A signed note that cannot be accepted."""


class MalformedNote(NoteError):
    """Bytes that are not a signed note in the c2sp.org/signed-note syntax."""


class UnverifiedNote(NoteError):
    """A well-formed note with no signature from any of the trusted keys."""


class InvalidNoteSignature(NoteError):
    """A signature by a trusted key (same name and key ID) that does not verify."""


class InvalidVerifierKey(InvalidKey):
    """A verifier or signing key string that is not a valid Ed25519 note key."""


def is_valid_key_name(name: str) -> bool:
    """Key names are non-empty and contain neither Unicode spaces nor `+`."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name: str, public_key: bytes) -> int:
    """The key ID of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ED25519]) + public_key)
    return int.from_bytes(digest.digest()[:4], "big")


def _b64decode(text: str) -> bytes | None:
    """Strict standard base64; a non-canonical spelling (other padding bits) is refused, so
    that one signature has one spelling."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the key's name and ID, and the signature bytes after the ID."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        """The signature line, newline included."""
        raw = self.key_id.to_bytes(4, "big") + self.signature
        return f"{SIGNATURE_PREFIX}{self.name} {base64.b64encode(raw).decode('ascii')}\n"


@dataclass(frozen=True)
class VerifierKey:
    """A trusted Ed25519 note key: its name, key ID and 32-byte public key."""

    name: str
    key_id: int
    public_key: bytes
    _verify_key: VerifyKey = field(repr=False, compare=False, hash=False)

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> VerifierKey:
        """The verifier key of `public_key` under `name`.

        Raises:
            InvalidVerifierKey: if the name or the key is not valid.
        """
        if not is_valid_key_name(name):
            raise InvalidVerifierKey(f"{name!r} is not a valid note key name")
        if len(public_key) != 32:
            raise InvalidVerifierKey(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
        try:
            verify_key = VerifyKey(public_key)
        except (CryptoError, ValueError, TypeError) as exc:
            raise InvalidVerifierKey(f"note key {name!r}: {exc}") from None
        return cls(name, key_id(name, public_key), public_key, verify_key)

    @classmethod
    def parse(cls, vkey: str) -> VerifierKey:
        """Parses `<name>+<hex key ID>+base64(0x01 || public key)`.

        Raises:
            InvalidVerifierKey: if the string is not such a key, or its key ID is wrong.
        """
        parts = vkey.split("+", 2)  # the base64 key may itself contain "+"
        if len(parts) != 3 or len(parts[1]) != 8:
            raise InvalidVerifierKey(f"{vkey!r} is not <name>+<key ID>+<key>")
        name, id_hex, key_b64 = parts
        material = _b64decode(key_b64)
        if material is None or not _is_hex(id_hex) or len(material) != 33:
            raise InvalidVerifierKey(f"{vkey!r} is not <name>+<key ID>+<key>")
        if material[0] != ED25519:
            raise InvalidVerifierKey(f"{vkey!r}: signature type {material[0]} is not Ed25519")
        key = cls.from_public_key(name, material[1:])
        if key.key_id != int(id_hex, 16):
            raise InvalidVerifierKey(f"{vkey!r}: the key ID does not match the name and key")
        return key

    def encode(self) -> str:
        """The verifier key string (`vkey`)."""
        material = base64.b64encode(bytes([ED25519]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id:08x}+{material}"

    def verifies(self, text: bytes, signature: NoteSignature) -> bool:
        """Whether `signature` is this key's valid signature over the note text."""
        if (signature.name, signature.key_id) != (self.name, self.key_id):
            return False
        try:
            self._verify_key.verify(text, signature.signature)
            return True
        except (BadSignatureError, CryptoError, ValueError, TypeError):
            return False


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


@dataclass(frozen=True)
class NoteSigner:
    """An Ed25519 note signing key.  Its repr never shows the seed."""

    name: str
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not is_valid_key_name(self.name):
            raise InvalidVerifierKey(f"{self.name!r} is not a valid note key name")
        if len(self.seed) != 32:
            raise InvalidVerifierKey(f"an Ed25519 seed is 32 bytes, got {len(self.seed)}")

    @classmethod
    def parse(cls, skey: str) -> NoteSigner:
        """Parses `PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 || seed)`.

        Raises:
            InvalidVerifierKey: if the string is not such a key, or its key ID is wrong.
        """
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"] or len(parts[3]) != 8:
            raise InvalidVerifierKey("not a PRIVATE+KEY+<name>+<key ID>+<key> signing key")
        material = _b64decode(parts[4])
        if material is None or not _is_hex(parts[3]) or len(material) != 33:
            raise InvalidVerifierKey("not a PRIVATE+KEY+<name>+<key ID>+<key> signing key")
        if material[0] != ED25519:
            raise InvalidVerifierKey(f"signing key type {material[0]} is not Ed25519")
        signer = cls(parts[2], material[1:])
        if signer.verifier_key.key_id != int(parts[3], 16):
            raise InvalidVerifierKey("the signing key's ID does not match its name and key")
        return signer

    def encode(self) -> str:
        """The signing key string, in the Go sumdb `PRIVATE+KEY+...` form (a secret)."""
        material = base64.b64encode(bytes([ED25519]) + self.seed).decode("ascii")
        return f"PRIVATE+KEY+{self.name}+{self.verifier_key.key_id:08x}+{material}"

    @property
    def verifier_key(self) -> VerifierKey:
        """The public half, as others pin it."""
        public = bytes(SigningKey(self.seed).verify_key)
        return VerifierKey.from_public_key(self.name, public)

    def sign(self, text: str) -> NoteSignature:
        """This key's signature over the note text.

        Raises:
            MalformedNote: if `text` cannot be the text of a note.
        """
        _check_text(text)
        raw = SigningKey(self.seed).sign(text.encode("utf-8")).signature
        return NoteSignature(self.name, self.verifier_key.key_id, raw)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedNote("a note's text must end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise MalformedNote("a note must not contain control characters other than newline")


@dataclass(frozen=True)
class SignedNote:
    """A note as written: its text and its signature lines, none of them verified."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def encode(self) -> bytes:
        """The note's bytes: text, blank line, signature lines."""
        _check_text(self.text)
        lines = "".join(signature.line() for signature in self.signatures)
        return (self.text + "\n" + lines).encode("utf-8")


@dataclass(frozen=True)
class VerifiedNote:
    """A note with at least one valid signature by a trusted key."""

    text: str
    signed_by: tuple[VerifierKey, ...]
    unverified: tuple[NoteSignature, ...]  # signatures by keys not trusted here


def sign_note(text: str, signers: Iterable[NoteSigner]) -> bytes:
    """The signed note of `text`, signed by each of `signers` in order.

    Raises:
        MalformedNote: if `text` cannot be the text of a note, or no signer is given.
    """
    signatures = tuple(signer.sign(text) for signer in signers)
    if not signatures:
        raise MalformedNote("a signed note needs at least one signature")
    return SignedNote(text, signatures).encode()


def parse_note(data: bytes) -> SignedNote:
    """Splits a note into its text and signature lines, checking only the syntax.

    Raises:
        MalformedNote: if `data` is not a signed note.
    """
    try:
        message = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedNote("a note must be UTF-8") from None
    if any(ord(c) < 0x20 and c != "\n" for c in message):
        raise MalformedNote("a note must not contain control characters other than newline")
    split = message.rfind("\n\n")
    if split < 0 or not message.endswith("\n") or split + 2 == len(message):
        raise MalformedNote("a note is text, a blank line and signature lines")
    text, block = message[: split + 1], message[split + 2 :]
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote(f"more than {MAX_SIGNATURES} signatures")
    return SignedNote(text, tuple(_parse_signature_line(line) for line in lines))


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise MalformedNote(f"not a signature line: {line[:80]!r}")
    name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
    raw = _b64decode(encoded)
    if not is_valid_key_name(name) or raw is None or len(raw) < 5:
        raise MalformedNote(f"not a signature line: {line[:80]!r}")
    return NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:])


def open_note(data: bytes, trusted: Iterable[VerifierKey]) -> VerifiedNote:
    """Parses a signed note and verifies it against the trusted keys.

    Signatures by unknown keys (another name or another key ID) are ignored.  A signature by
    a trusted key that fails rejects the whole note, and so does a note no trusted key signed.

    Raises:
        MalformedNote: if `data` is not a signed note.
        InvalidNoteSignature: if a trusted key's signature does not verify.
        UnverifiedNote: if no trusted key signed the note.
        InvalidVerifierKey: if two different trusted keys share a name and key ID.
    """
    keys: dict[tuple[str, int], VerifierKey] = {}
    for key in trusted:
        known = keys.setdefault((key.name, key.key_id), key)
        if known.public_key != key.public_key:
            raise InvalidVerifierKey(f"two trusted keys are named {key.name}+{key.key_id:08x}")
    note = parse_note(data)
    text = note.text.encode("utf-8")
    signed_by: dict[tuple[str, int], VerifierKey] = {}
    unverified: list[NoteSignature] = []
    for signature in note.signatures:
        key = keys.get((signature.name, signature.key_id))
        if key is None:
            if signature not in unverified:
                unverified.append(signature)
        elif not key.verifies(text, signature):
            raise InvalidNoteSignature(
                f"the signature of {signature.name}+{signature.key_id:08x} does not verify"
            )
        else:
            signed_by[(key.name, key.key_id)] = key
    if not signed_by:
        raise UnverifiedNote("the note has no signature by a trusted key")
    return VerifiedNote(note.text, tuple(signed_by.values()), tuple(unverified))
