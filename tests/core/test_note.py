"""C2SP signed notes (pithsync/core/note.py), byte for byte against published examples.

Vectors:
- c2sp.org/signed-note, "Verifier keys / Example" (github.com/C2SP/C2SP signed-note.md at
  5ba5ee83): the example.com/foo key and the note it verifies.
- golang.org/x/mod/sumdb/note/note_test.go (github.com/golang/mod at fe2ec04f): the
  PeterNeumann and EnochRoot keys, TestSign's exact output, TestOpen's cases, TestNewVerifier's
  manglings.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pithsync.core import note
from pithsync.core.errors import InvalidKey, PithError
from pithsync.core.note import (
    InvalidNoteSignature,
    InvalidVerifierKey,
    MalformedNote,
    NoteError,
    NoteSigner,
    UnverifiedNote,
    VerifierKey,
)

C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2O"
    "NncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
).encode()

PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotp"
    "RZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox3"
    "3WWd1RvMc+QQ=\n"
)
PETER = VerifierKey.parse(PETER_VKEY)
ENOCH = VerifierKey.parse(ENOCH_VKEY)


def test_the_c2sp_example_key_verifies_the_c2sp_example_note():
    key = VerifierKey.parse(C2SP_VKEY)
    assert (key.name, key.key_id) == ("example.com/foo", 0x530D903A)
    assert key.encode() == C2SP_VKEY
    opened = note.open_note(C2SP_NOTE, [key])
    assert opened.text == "This is an example message.\n"
    assert opened.signed_by == (key,) and opened.unverified == ()


def test_key_id_is_the_truncated_sha256_of_name_type_and_key():
    assert note.key_id(PETER.name, PETER.public_key) == 0xC74F20A3
    assert note.key_id(ENOCH.name, ENOCH.public_key) == 0xAF0CFE78


def test_go_signing_key_gives_the_go_verifier_key_and_signature_byte_for_byte():
    signer = NoteSigner.parse(PETER_SKEY)
    assert signer.encode() == PETER_SKEY
    assert signer.verifier_key.encode() == PETER_VKEY
    assert note.sign_note(TEXT, [signer]) == (TEXT + "\n" + PETER_SIG).encode()


def test_the_signer_repr_hides_the_seed():
    signer = NoteSigner.parse(PETER_SKEY)
    assert signer.seed.hex() not in repr(signer) and "AYEK" not in repr(signer)


def test_one_trusted_signature_verifies_and_the_unknown_one_is_kept_aside():
    opened = note.open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [PETER])
    assert opened.text == TEXT
    assert opened.signed_by == (PETER,)
    assert [(s.name, s.key_id) for s in opened.unverified] == [("EnochRoot", 0xAF0CFE78)]


def test_both_trusted_signatures_verify():
    opened = note.open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [PETER, ENOCH])
    assert opened.signed_by == (PETER, ENOCH) and opened.unverified == ()


def test_a_note_without_a_trusted_signature_is_unverified():
    with pytest.raises(UnverifiedNote):
        note.open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [])
    with pytest.raises(UnverifiedNote):
        note.open_note(C2SP_NOTE, [PETER, ENOCH])


def test_a_key_sharing_only_the_name_or_only_the_id_is_ignored():
    other = NoteSigner("PeterNeumann", bytes(range(32)))  # same name, another key ID
    forged = note.sign_note(TEXT, [other])
    with pytest.raises(UnverifiedNote):
        note.open_note(forged, [PETER])
    renamed = (TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "CarmenSandiego")).encode()
    with pytest.raises(UnverifiedNote):
        note.open_note(renamed, [PETER])


def test_a_bad_signature_by_a_trusted_key_rejects_the_note():
    corrupt = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(InvalidNoteSignature):
        note.open_note((TEXT + "\n" + corrupt).encode(), [PETER])
    with pytest.raises(InvalidNoteSignature):  # even beside a good one by another key
        note.open_note((TEXT + "\n" + ENOCH_SIG + corrupt).encode(), [PETER, ENOCH])


@pytest.mark.parametrize(
    "message",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNX"
        "gKvqfqdngotpRZb6KE6RyyBwJnAM=",
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + PETER_SIG.replace("—", "-"),
        TEXT + "\n" + PETER_SIG * 101,
    ],
    ids=[
        "no-signatures",
        "blank-line-only",
        "no-final-newline",
        "control-character",
        "space-in-name",
        "trailing-line",
        "hyphen-not-em-dash",
        "101-signatures",
    ],
)
def test_go_malformed_notes_are_rejected(message):
    with pytest.raises(MalformedNote):
        note.open_note(message.encode(), [PETER])


def test_invalid_utf8_is_malformed():
    with pytest.raises(MalformedNote):
        note.open_note(b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), [PETER])


def test_sixteen_signatures_are_accepted():
    signers = [NoteSigner(f"witness{i}.example/w", bytes([i]) * 32) for i in range(16)]
    signed = note.sign_note(TEXT, signers)
    opened = note.open_note(signed, [s.verifier_key for s in signers])
    assert len(opened.signed_by) == 16


def test_the_verifier_key_rejects_every_mangling():
    # golang.org/x/mod/sumdb/note TestNewVerifier: every proper substring, every byte + 1.
    for i in range(len(PETER_VKEY) + 1):
        for j in range(i + 1, len(PETER_VKEY) + 1):
            if (i, j) != (0, len(PETER_VKEY)):
                with pytest.raises(InvalidVerifierKey):
                    VerifierKey.parse(PETER_VKEY[i:j])
    for i in range(len(PETER_VKEY)):
        mangled = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1 :]
        with pytest.raises(InvalidVerifierKey):
            VerifierKey.parse(mangled)


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
    ids=["wrong-length-key", "unknown-algorithm"],
)
def test_go_bad_verifier_keys(vkey):
    with pytest.raises(InvalidVerifierKey):
        VerifierKey.parse(vkey)


def test_the_signing_key_rejects_manglings():
    for cut in range(len(PETER_SKEY)):
        with pytest.raises(InvalidVerifierKey):
            NoteSigner.parse(PETER_SKEY[:cut])
    for i in range(len(PETER_SKEY)):
        mangled = PETER_SKEY[:i] + chr(ord(PETER_SKEY[i]) + 1) + PETER_SKEY[i + 1 :]
        with pytest.raises(InvalidVerifierKey):
            NoteSigner.parse(mangled)


@pytest.mark.parametrize("name", ["", "a+b", "a b", "tab\there", "nbsp\u00a0here"])
def test_invalid_key_names_are_refused(name):
    with pytest.raises(InvalidVerifierKey):
        NoteSigner(name, bytes(32))


def test_text_must_end_in_a_newline_and_hold_no_control_characters():
    signer = NoteSigner.parse(PETER_SKEY)
    with pytest.raises(MalformedNote):
        note.sign_note("abc", [signer])
    with pytest.raises(MalformedNote):
        note.sign_note("a\tb\n", [signer])
    with pytest.raises(MalformedNote):
        note.sign_note(TEXT, [])


def test_errors_are_typed():
    assert issubclass(NoteError, PithError) and issubclass(InvalidVerifierKey, InvalidKey)
    assert all(
        issubclass(e, NoteError) for e in (MalformedNote, UnverifiedNote, InvalidNoteSignature)
    )


def test_a_non_canonical_base64_signature_is_refused():
    # The final base64 character carries 2 unused bits; another spelling of the same bytes
    # must not pass as a second, distinct signature line.
    line = PETER_SIG.rstrip("\n")
    last = line[-2]  # the character before "="
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = alphabet[alphabet.index(last) ^ 1]
    with pytest.raises(MalformedNote):
        note.open_note((TEXT + "\n" + line[:-2] + twin + "=\n").encode(), [PETER])


note_texts = st.lists(
    st.text(st.characters(blacklist_categories=("Cs",), min_codepoint=0x20), max_size=30),
    min_size=1,
    max_size=5,
).map(lambda lines: "".join(line + "\n" for line in lines))


@settings(max_examples=60, deadline=None)
@given(note_texts)
def test_a_signed_note_opens_to_its_text(text):
    signer = NoteSigner.parse(PETER_SKEY)
    opened = note.open_note(note.sign_note(text, [signer]), [PETER])
    assert opened.text == text and opened.signed_by == (PETER,)


@settings(max_examples=150, deadline=None)
@given(note_texts, st.data())
def test_any_flipped_bit_fails_to_open(text, data):
    signed = bytearray(note.sign_note(text, [NoteSigner.parse(PETER_SKEY)]))
    position = data.draw(st.integers(0, len(signed) - 1))
    signed[position] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(NoteError):
        note.open_note(bytes(signed), [PETER])
