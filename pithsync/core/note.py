"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys.

A note is UTF-8 text ending in a newline, a blank line, then signature lines
`— <key name> base64(key ID || signature)`.  Verifier keys are `<name>+<hex key ID>+base64(0x01
|| public key)`; signing keys use Go sumdb's `PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 ||
seed)`, so Go's note tools read them.
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
    """Strict, canonical standard base64 (so that one signature has one spelling)."""
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
        return cls(name, key_id(name, public_key), public_key, VerifyKey(public_key))

    @classmethod
    def parse(cls, vkey: str) -> VerifierKey:
        """Parses `<name>+<hex key ID>+base64(0x01 || public key)`.

        Raises:
            InvalidVerifierKey: if the string is not such a key, or its key ID is wrong.
        """
        name, id_hex, material = _split_key(vkey.split("+", 2), f"{vkey!r}")
        key = cls.from_public_key(name, material)
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


def _split_key(parts: list[str], what: str) -> tuple[str, str, bytes]:
    """Name, hex key ID and key material of `<name>+<key ID>+base64(0x01 || material)`."""
    material = _b64decode(parts[2]) if len(parts) == 3 else None
    hex_digits = "0123456789abcdefABCDEF"
    if material is None or len(parts[1]) != 8 or not all(c in hex_digits for c in parts[1]):
        raise InvalidVerifierKey(f"{what} is not <name>+<key ID>+<key>")
    if len(material) != 33 or material[0] != ED25519:
        raise InvalidVerifierKey(f"{what} is not a 32-byte Ed25519 key (type 0x01)")
    return parts[0], parts[1], material[1:]


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
        if parts[:2] != ["PRIVATE", "KEY"]:
            raise InvalidVerifierKey("a signing key starts with PRIVATE+KEY+")
        name, id_hex, seed = _split_key(parts[2:], "the signing key")
        signer = cls(name, seed)
        if signer.verifier_key.key_id != int(id_hex, 16):
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
        raise MalformedNote("a note and its text must end with a newline")
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
    _check_text(message)
    split = message.rfind("\n\n")
    if split < 0 or split + 2 == len(message):
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
    """Parses a signed note and verifies it against the trusted keys; signatures by unknown
    keys (another name or another key ID) are set aside, unchecked.

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
