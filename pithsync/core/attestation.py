"""Evidence attestations (issue 17): the signed observation statements that prove which mirror
served what, and the exporter's signature over the whole evidence file.  Pure.

An evidence file (core.evidence, version 2) carries:

    "checkpoints": ["<signed checkpoint note>", ...],
    "statements": [{"statement": "<statement bytes>", "index": <leaf index>,
                    "proof": ["<base64 hash>", ...], "checkpoint": <index into checkpoints>}],
    "signature": "<signed note by the exporter's observer key over the rest of the file>"

A statement is proven when it parses strictly (core.observation), its inclusion proof verifies
under its checkpoint (core.merkle), that checkpoint's note is signed by a pinned observer key
and the statement's observer is that checkpoint's origin.  A claim naming a mirror lists the
statements that prove it (`"statements": [i, ...]`): one of them must say that mirror was asked
the claim's url and answered the claim's document's bytes.  A `split_view` claim lists two
statements by two observers about one mirror whose histories fork (core.peers.compare_views).
The file's signature binds every other field (created_at, summaries, observations) to the
exporter's key, so that no field can be edited unnoticed.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from pithsync.core.canonical import canon, sha256hex
from pithsync.core.errors import PithError
from pithsync.core.merkle import leaf_hash, verify_inclusion
from pithsync.core.note import NoteSigner, VerifierKey, open_note, sign_note
from pithsync.core.observation import Statement, parse_statement
from pithsync.core.peers import SplitView, View, compare_views
from pithsync.core.tlog import Checkpoint, open_checkpoint
from pithsync.core.urls import base_key

MAX_CHECKPOINTS = 64
MAX_STATEMENTS = 256
MAX_PROOF_HASHES = 64
MAX_NOTE_CHARS = 16 * 1024
SIGNATURE_HEADER = "pithsync evidence file"


@dataclass(frozen=True)
class Proven:
    """A statement proven under a checkpoint signed by a pinned observer key."""

    statement: Statement
    checkpoint: Checkpoint


def signature_text(doc: dict) -> str:
    """The note text the exporter signs: the file's pith number and the sha256 of the canonical
    JSON of every field but `signature`.

    Raises:
        PithError: a value with no canonical encoding.
    """
    body = {k: v for k, v in doc.items() if k != "signature"}
    return f"{SIGNATURE_HEADER}\n{doc.get('pith_number')}\nsha256:{sha256hex(canon(body))}\n"


def sign_file(doc: dict, signer: NoteSigner) -> str:
    """The `signature` field of `doc`, signed by the exporter's observer key."""
    return sign_note(signature_text(doc), [signer]).decode("utf-8")


def check_signature(doc: dict, keys: Sequence[VerifierKey]) -> str:
    """'' when the file's signature is an observer key's over this very file, else why not."""
    note = doc.get("signature")
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        return "the file has no signature by an observer key"
    try:
        opened = open_note(note.encode("utf-8"), keys)
    except PithError as exc:
        return f"the file's signature does not verify under a pinned observer key: {exc}"
    if opened.text != signature_text(doc):
        return "the file was changed after its observer signed it (its digest differs)"
    return ""


def open_checkpoints(entries: object, keys: Sequence[VerifierKey]) -> tuple[list, list[str]]:
    """Each checkpoint note verified under the pinned observer keys (None where it fails), and
    the reasons of those that fail."""
    if not isinstance(entries, list) or len(entries) > MAX_CHECKPOINTS:
        return [], [f"checkpoints must be a list of at most {MAX_CHECKPOINTS} signed notes"]
    opened: list[Checkpoint | None] = []
    why: list[str] = []
    for i, note in enumerate(entries):
        try:
            if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
                raise PithError("not a signed note")
            opened.append(open_checkpoint(note.encode("utf-8"), keys)[0])
        except PithError as exc:
            opened.append(None)
            why.append(f"checkpoints[{i}] is not signed by a pinned observer key: {exc}")
    return opened, why


def prove_statements(
    entries: object, checkpoints: Sequence[Checkpoint | None]
) -> tuple[list[Proven | None], list[str]]:
    """Each statement proven under its checkpoint (None where it is not), and why not."""
    if not isinstance(entries, list) or len(entries) > MAX_STATEMENTS:
        return [], [f"statements must be a list of at most {MAX_STATEMENTS} objects"]
    proven: list[Proven | None] = []
    why: list[str] = []
    for i, entry in enumerate(entries):
        result, reason = _prove(entry, checkpoints)
        proven.append(result)
        if reason:
            why.append(f"statements[{i}]: {reason}")
    return proven, why


def _prove(entry: object, checkpoints: Sequence[Checkpoint | None]) -> tuple[Proven | None, str]:
    if not isinstance(entry, dict) or set(entry) != {"statement", "index", "proof", "checkpoint"}:
        return None, "needs exactly statement, index, proof and checkpoint"
    index, text, proof, at = (entry[k] for k in ("index", "statement", "proof", "checkpoint"))
    if not _is_int(index) or not _is_int(at) or not isinstance(text, str):
        return None, "index and checkpoint are integers, statement a string"
    if not 0 <= at < len(checkpoints) or checkpoints[at] is None:
        return None, f"checkpoint {at} is not a verified checkpoint of this file"
    if not isinstance(proof, list) or len(proof) > MAX_PROOF_HASHES:
        return None, "proof must be a list of base64 hashes"
    try:
        hashes = [base64.b64decode(h, validate=True) for h in proof]
    except (binascii.Error, TypeError, ValueError):
        return None, "a proof hash is not base64"
    cp = checkpoints[at]
    data = text.encode("utf-8")
    try:
        parsed = parse_statement(data)
        verify_inclusion(leaf_hash(data), index, cp.size, hashes, cp.root_hash)
    except PithError as exc:
        return None, f"not proven under checkpoint {at}: {exc}"
    if parsed.observer != cp.origin:
        return None, f"by observer {parsed.observer[:80]!r}, in the log of {cp.origin[:80]!r}"
    return Proven(parsed, cp), ""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _cited(claim: dict, proven: Sequence[Proven | None], pith: str) -> tuple[list, str]:
    refs = claim.get("statements")
    if not isinstance(refs, list) or not refs:
        return [], "names a mirror but lists no statement that proves it"
    cited = []
    for k in refs:
        if not _is_int(k) or not 0 <= k < len(proven) or proven[k] is None:
            return [], f"statement {str(k)[:20]!r} is not a proven statement of this file"
        if str(proven[k].statement.pith_number) != pith:
            return [], f"statement {k} is about {proven[k].statement.pith_number}, not {pith}"
        cited.append(proven[k])
    return cited, ""


def check_attribution(
    claim: dict, proven: Sequence[Proven | None], pith: str, digest: str | None
) -> str:
    """'' when a cited statement says the claim's mirror answered its url with the bytes of
    sha256 `digest` (the claim's document), else why not."""
    cited, why = _cited(claim, proven, pith)
    if why:
        return why
    mirror, url = claim.get("mirror"), claim.get("url")
    for p in cited:
        if p.statement.mirror != mirror:
            continue
        if any(f.url == url and f.sha256 == digest for f in p.statement.fetched):
            return ""
    return (
        "no statement it cites says that mirror answered that url with that document"
        f" (cited: {', '.join(sorted({p.statement.mirror[:80] for p in cited}))})"
    )


def check_split_view(claim: dict, proven: Sequence[Proven | None], pith: str) -> str:
    """'' when the claim's two statements are two observers' of its mirror and url whose
    histories fork, within the claim's window (core.peers.compare_views), else why not."""
    cited, why = _cited(claim, proven, pith)
    if why:
        return why
    window, mirror, url = claim.get("window_s"), claim.get("mirror"), claim.get("url")
    if len(cited) != 2 or not _is_int(window) or window < 0:
        return "a split_view cites exactly two statements and has an integer window_s"
    mine, theirs = (p.statement for p in cited)
    if mine.observer == theirs.observer:
        return "both statements are by the same observer"
    if mine.mirror != mirror or not isinstance(mirror, str):
        return f"statement {claim['statements'][0]} is about mirror {mine.mirror[:80]}"
    if base_key(theirs.mirror) != base_key(mirror):
        return f"statement {claim['statements'][1]} is about mirror {theirs.mirror[:80]}"
    if not all(any(f.url == url for f in s.fetched) for s in (mine, theirs)):
        return "the url was not asked in both statements"
    if not isinstance(compare_views(View.of(mine), View.of(theirs), window), SplitView):
        return "the two statements do not show two histories no honest mirror serves"
    return ""
