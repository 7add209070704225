"""Fuzzing the verifier (issue 6): mutated documents never crash it and are never wrongly `ok`.

Real seeds (pithsync/data/seeds) and forged documents are mutated at random, at the byte level
(flip, insert, delete, overwrite bytes) and at the structure level (change, delete or add a value
at a random JSON path, then re-encode in a random but equivalent style).  For every mutant:

* `strictjson.loads` returns a value or raises a PithError, nothing else;
* `Verifier.verify_bundle` / `verify_state` / `verify_document` / `verify_pair`,
  `Assessor.assess` and `compare_record` never raise (they report);
* nothing is `ok` unless its signed or hashed part is canonically identical to the valid
  original: a bundle's content under `bundle_signature` (everything but that block), a state's
  content under `state_sha256` (all of it).  Whitespace, key order or an unsigned field such as
  `bundle_signature.signed_at` may change and stay ok;
* a mutated copy never makes the honest mirror beside it anything but `ok`.

Examples: PITHSYNC_FUZZ_EXAMPLES in total (default 1,200, split over the four properties, run
derandomized so CI sees the same cases every time); set it higher, e.g. 20000, for a longer,
randomized run:  PITHSYNC_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz.py
"""

from __future__ import annotations

import json
import os
from functools import cache, lru_cache

import pytest
import reliability_counts
from helpers import BUNDLE_SEEDS, SEED_DIR, STATE_SEED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pithsync.core import strictjson
from pithsync.core.canonical import canon, without
from pithsync.core.compare import Assessor, Fetched, MirrorCopy, Retrieval, compare_record
from pithsync.core.errors import PithError
from pithsync.core.status import Status
from pithsync.core.verify import Verifier, verify_document
from pithsync.testing import forge

pytestmark = pytest.mark.slow  # real subprocesses, hundreds of records or many examples

TOTAL = int(os.environ.get("PITHSYNC_FUZZ_EXAMPLES", "1200"))
PER_TEST = max(TOTAL // 4, 10)
LONG = TOTAL > 1200
FUZZ = settings(
    max_examples=PER_TEST,
    deadline=None,
    derandomize=not LONG,
    suppress_health_check=list(HealthCheck),
    database=None if not LONG else settings.default.database,
)

TRUST = forge.test_trust()  # the forge's test key and the registry key


# -- the originals ------------------------------------------------------------------------------


class Original:
    """A valid document: its bytes, its parse, what it is, and the state.json served beside it."""

    def __init__(self, name: str, data: bytes, state_bytes: bytes | None = None):
        self.name = name
        self.data = data
        self.doc = strictjson.loads_object(data)
        self.kind = "bundle" if "bundle_type" in self.doc else "state"
        self.state_bytes = state_bytes
        if self.kind == "bundle" and state_bytes is None:
            self.state_bytes = forge.dumps(self.doc["state"])
        self.suffix = self.doc["pith_number"].split(":")[2]
        report = verify_document(self.doc, Verifier(TRUST))
        assert report.ok, (name, report.reasons)  # the originals are valid


@lru_cache(maxsize=1)
def originals() -> tuple[Original, ...]:
    out = [Original(name, (SEED_DIR / name).read_bytes()) for name in (*BUNDLE_SEEDS, STATE_SEED)]
    rich = forge.forge_record(3, n_events=5, all_types=True)
    left, _ = forge.equivocating_pair(forge.forge_record(4, n_events=3))
    for name, bundle in (
        ("forged all event types", rich.bundle()),
        ("forged with a correction", left),
    ):
        out.append(Original(name, forge.dumps(bundle)))
        out.append(Original(name + " (state.json)", forge.dumps(bundle["state"])))
    return tuple(out)


REAL = tuple(o for o in originals() if not o.name.startswith("forged"))
FORGED = tuple(o for o in originals() if o.name.startswith("forged"))


def signed_part(doc: dict, kind: str) -> bytes:
    """What the signature (bundle) or the hash (state) covers, canonically."""
    return canon(without(doc, "bundle_signature")) if kind == "bundle" else canon(doc)


# -- the property ----------------------------------------------------------------------------------


def check_mutant(original: Original, data: bytes) -> None:
    try:
        doc = strictjson.loads(data)
    except PithError:
        doc = None  # refused as input: fine, nothing to verify
    verifier = Verifier(TRUST)
    if doc is not None:
        for report in (
            verifier.verify_bundle(doc),
            verifier.verify_state(doc),
            verify_document(doc, verifier),
        ):
            if report.ok:
                assert report.kind == original.kind, (
                    f"a mutated {original.kind} verified as a {report.kind}"
                )
                assert isinstance(doc, dict) and signed_part(doc, report.kind) == signed_part(
                    original.doc, original.kind
                ), "ok, yet its signed/hashed part differs"
        if original.kind == "bundle":
            pair = verifier.verify_pair(doc, original.doc["state"])
            if pair.ok:
                assert signed_part(doc, "bundle") == signed_part(original.doc, "bundle")

    # Through the crawler's path: the mutant served by one mirror, the original by another.
    if original.kind == "bundle":
        bad = MirrorCopy(
            "bad",
            Fetched(Retrieval.FOUND, "b", data),
            Fetched(Retrieval.FOUND, "s", original.state_bytes),
        )
    else:
        # A mutated state.json beside the bundle it belongs to (forged), or on its own (seed).
        bundle_bytes = _bundle_for_state(original)
        bad = MirrorCopy(
            "bad",
            Fetched(Retrieval.FOUND, "b", bundle_bytes)
            if bundle_bytes
            else Fetched(Retrieval.NOT_FOUND, "b"),
            Fetched(Retrieval.FOUND, "s", data),
        )
    honest = _honest_copy(original)
    assessor = Assessor(verifier)
    a_bad = assessor.assess(bad, original.suffix)
    a_honest = assessor.assess(honest, original.suffix)
    if a_bad.bundle_ok:
        assert signed_part(strictjson.loads_object(bad.bundle.body), "bundle") == signed_part(
            strictjson.loads_object(honest.bundle.body), "bundle"
        )
    if a_bad.state_ok:
        assert canon(strictjson.loads_object(bad.state.body)) == canon(
            strictjson.loads_object(honest.state.body)
        )
    comparison = compare_record([a_bad, a_honest], {})
    outcome = {o.mirror: o for o in comparison.outcomes}
    if honest.bundle.retrieval is Retrieval.FOUND:
        assert outcome["honest"].status is Status.OK, outcome["honest"].reasons
    if outcome["bad"].status is Status.OK:
        assert a_bad.bundle_ok or honest.bundle.retrieval is not Retrieval.FOUND


def _bundle_for_state(original: Original) -> bytes | None:
    if original.name.endswith("(state.json)"):
        return next(o.data for o in FORGED if o.name == original.name.removesuffix(" (state.json)"))
    return None


def _honest_copy(original: Original) -> MirrorCopy:
    if original.kind == "bundle":
        return MirrorCopy(
            "honest",
            Fetched(Retrieval.FOUND, "b", original.data),
            Fetched(Retrieval.FOUND, "s", original.state_bytes),
        )
    bundle_bytes = _bundle_for_state(original)
    if bundle_bytes is None:
        return MirrorCopy(
            "honest",
            Fetched(Retrieval.NOT_FOUND, "b"),
            Fetched(Retrieval.FOUND, "s", original.data),
        )
    return MirrorCopy(
        "honest",
        Fetched(Retrieval.FOUND, "b", bundle_bytes),
        Fetched(Retrieval.FOUND, "s", original.data),
    )


# -- byte-level mutations -------------------------------------------------------------------------

INTERESTING = b'{}[]",:\\0123456789-+.eE \t\n\xff\xc3\xed\xa0'


@st.composite
def byte_mutant(draw, pool: tuple[Original, ...]):
    original = draw(st.sampled_from(pool))
    data = bytearray(original.data)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(("flip", "insert", "delete", "overwrite", "splice")))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(
                st.binary(min_size=1, max_size=4)
                | st.sampled_from([bytes([c]) for c in INTERESTING])
            )
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "overwrite" and data:
            data[pos] = draw(st.sampled_from(INTERESTING))
        elif op == "splice" and data:  # a slice of the document copied elsewhere in it
            start = draw(st.integers(0, len(data) - 1))
            data[pos:pos] = data[start : start + draw(st.integers(1, 64))]
    return original, bytes(data)


@FUZZ
@given(byte_mutant(REAL))
def test_byte_mutations_of_the_real_seeds(case):
    check_mutant(*case)
    reliability_counts.add("fuzz")


@FUZZ
@given(byte_mutant(FORGED))
def test_byte_mutations_of_forged_documents(case):
    check_mutant(*case)
    reliability_counts.add("fuzz")


# -- structure-level mutations --------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


@cache
def paths_of(name: str) -> tuple[tuple, ...]:
    original = next(o for o in originals() if o.name == name)
    return tuple(_paths(original.doc))


def _get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def nearby(draw, value):
    """A value like `value`: the kind of edit a forger would try first."""
    if isinstance(value, bool):
        return draw(st.sampled_from([not value, int(value), str(value).lower()]))
    if isinstance(value, int):
        return draw(
            st.sampled_from([value + 1, value - 1, -value, float(value), str(value), 10**70])
        )
    if isinstance(value, float):
        return draw(st.sampled_from([value + 1, int(value), str(value)]))
    if isinstance(value, str):
        if not value:
            return draw(st.sampled_from(["x", " ", None]))
        i = draw(st.integers(0, len(value) - 1))
        return draw(
            st.sampled_from(
                [
                    value[:i]
                    + chr(
                        (ord(value[i]) + 1) % 0x110000
                        if ord(value[i]) + 1 not in range(0xD800, 0xE000)
                        else 0x41
                    )
                    + value[i + 1 :],
                    value.upper() if value.upper() != value else value.lower(),
                    value + " ",
                    value[:i],
                    value[:i] + "\ud800" + value[i:],  # a lone surrogate: no canonical encoding
                    value[:i] + "\u00e9" + value[i:],
                ]
            )
        )
    if value is None:
        return draw(st.sampled_from([0, "", False, "null"]))
    if isinstance(value, list):
        return draw(st.sampled_from([value[::-1], value + value[:1], value[1:], []]))
    return draw(st.sampled_from([{}, {k: value[k] for k in list(value)[1:]}, [value]]))


@st.composite
def structure_mutant(draw, pool: tuple[Original, ...]):
    original = draw(st.sampled_from(pool))
    doc = json.loads(original.data)  # a fresh copy (the original parsed strictly already)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths_of(original.name)))
        try:
            node = _get(doc, path)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit moved it
        op = draw(st.sampled_from(("nearby", "replace", "delete", "add")))
        if op == "delete" and path:
            parent = _get(doc, path[:-1])
            del parent[path[-1]]
            continue
        if op == "add" and isinstance(node, dict):
            node[
                draw(
                    st.sampled_from(["x", "signature", "tampered_by", "state_sha256", "event_id"])
                    | st.text(max_size=6)
                )
            ] = draw(JSON_VALUES)
            continue
        if op == "add" and isinstance(node, list):
            node.insert(
                draw(st.integers(0, len(node))), draw(JSON_VALUES | st.sampled_from(node or [None]))
            )
            continue
        new = draw(nearby(node)) if op == "nearby" else draw(JSON_VALUES)
        if path:
            _get(doc, path[:-1])[path[-1]] = new
        else:
            doc = new
    style = draw(st.sampled_from(("compact", "spaced", "sorted", "ascii")))
    if style == "compact":
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    elif style == "spaced":
        text = json.dumps(doc, indent=draw(st.integers(0, 3)), ensure_ascii=False)
    elif style == "sorted":
        text = json.dumps(doc, sort_keys=True, ensure_ascii=False)
    else:
        text = json.dumps(doc, ensure_ascii=True)
    return original, text.encode("utf-8", "surrogatepass")


@FUZZ
@given(structure_mutant(REAL))
def test_structure_mutations_of_the_real_seeds(case):
    check_mutant(*case)
    reliability_counts.add("fuzz")


@FUZZ
@given(structure_mutant(FORGED))
def test_structure_mutations_of_forged_documents(case):
    check_mutant(*case)
    reliability_counts.add("fuzz")


# -- the property itself can fail ------------------------------------------------------------------


def test_a_re_encoded_original_stays_ok_and_a_real_edit_does_not():
    """Guards the property: equivalent bytes are ok; an edit under the signature is not."""
    for original in originals():
        spaced = json.dumps(original.doc, indent=2, sort_keys=True, ensure_ascii=True).encode()
        report = verify_document(strictjson.loads(spaced), Verifier(TRUST))
        assert report.ok, (original.name, report.reasons)
        check_mutant(original, spaced)
        edited = json.loads(original.data)
        edited["pith_number" if "pith_number" in edited else "x"] += "A"
        report = verify_document(edited, Verifier(TRUST))
        assert not report.ok, original.name
    # An unsigned field of bundle_signature may change and stay ok; the signed content may not.
    bundle = json.loads(REAL[0].data)
    bundle["bundle_signature"]["signed_at"] = "2030-01-01T00:00:00Z"
    assert verify_document(bundle, Verifier(TRUST)).ok
    assert signed_part(bundle, "bundle") == signed_part(REAL[0].doc, "bundle")


def test_tampered_bundle_with_an_unencodable_value_beside_its_state_json():
    """Found by this fuzzer: a tampered event plus a lone surrogate elsewhere left the bundle
    `tampered` (not `malformed`) with no merged state, and the state.json check crashed."""
    original = next(o for o in REAL if o.name.startswith("004_"))
    bundle = json.loads(original.data)
    bundle["events"][0]["prev_event"] = 0
    bundle["source_aliases"][0]["alias_kind"] = "\ud800" + bundle["source_aliases"][0]["alias_kind"]
    data = json.dumps(bundle).encode()
    copy = MirrorCopy(
        "bad",
        Fetched(Retrieval.FOUND, "b", data),
        Fetched(Retrieval.FOUND, "s", original.state_bytes),
    )
    a = Assessor(Verifier(TRUST)).assess(copy, original.suffix)
    assert not a.bundle_ok and not a.state_ok
    assert {"event_hash_mismatch", "unencodable", "state_unchecked"} <= {r.code for r in a.reasons}
    check_mutant(original, data)
