"""A corpus of hostile and honest (bundle, state.json) byte pairs, and how verification judges
them: tests/core/test_judgements.py holds every judgement equal to the one the code at `010db01`
gave (tests/core/vectors/judgements.json), so a shortcut in verification must judge every case
exactly as the long way does.

The corpus: the real seeds, each seed and forged case of tests/core/test_verify.py beside its own
embedded state, states served beside a good bundle with one thing changed (values Python holds
equal but JSON does not: 3.0 for 3, false for 0), a bundle whose merge nests one level deeper
than the bundle, and seeded random byte and value mutations.

Regenerate (only when a judgement is meant to change, saying why in the commit):
    .venv/bin/python tests/core/judgement_cases.py --write
"""

from __future__ import annotations

import copy
import json
import random
import sys
from pathlib import Path

import orjson

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import test_verify  # noqa: E402
from helpers import BUNDLE_SEEDS, SEED_DIR, forged, rehash_state  # noqa: E402

from pithsync.core import strictjson  # noqa: E402
from pithsync.core.canonical import canon_sha256  # noqa: E402
from pithsync.core.compare import Assessor, Fetched, MirrorCopy, Retrieval  # noqa: E402
from pithsync.core.errors import PithError  # noqa: E402
from pithsync.core.verify import SIGNED_MESSAGE, Verifier  # noqa: E402
from pithsync.testing import forge  # noqa: E402

GOLDEN = HERE / "vectors" / "judgements.json"
BASE = "http://127.0.0.1:1"


def _dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _case(name: str, bundle: dict | bytes, state: dict | bytes | None, suffix: str) -> tuple:
    b = bundle if isinstance(bundle, bytes) else _dumps(bundle)
    s = state if state is None or isinstance(state, bytes) else _dumps(state)
    return name, suffix, b, s


def _deep(levels: int):
    value: object = []
    for _ in range(levels - 1):
        value = [value]
    return value


def _deeper_merge() -> tuple[dict, dict]:
    """A bundle nested exactly 64 deep whose embedded state lies (shallow), and its true merge,
    which nests 65 deep: served as state.json, strict parsing refuses it."""
    fr = forged()
    ev = fr.events[2]
    ev["payload"]["deep"] = _deep(60)  # payload at level 4 of the bundle: 4 + 60 = 64
    forge.sign_event(ev)
    good = fr.bundle()
    shallow = copy.deepcopy(good["state"])
    for entry in shallow["current"]["graph_snapshots"]:
        entry["payload"].pop("deep", None)
    rehash_state(shallow)
    bundle = forge.make_bundle(fr.record, fr.events, state=shallow)
    return bundle, good["state"]


def _receipt_record(edit, resign_receipt: bool = True) -> dict:
    """A bundle whose receipt's record is the bundle's record edited by `edit`: Python may hold
    the two equal (1.0 for 1) where JSON does not.  The receipt is made over the edited record,
    unless `resign_receipt` is false (then it no longer matches it)."""
    fr = forged()
    payload = fr.events[0]["payload"]
    edit(payload["canonical_record"])
    if resign_receipt:
        digest = canon_sha256(payload["canonical_record"])
        receipt = payload["receipt"]
        signed_at = receipt.get("signed_at", "")
        receipt.update(forge.TEST_KEY.signature_block(digest, SIGNED_MESSAGE["receipt"], signed_at))
        receipt["canonical_sha256"] = payload["canonical_sha256"] = digest
    forge.sign_event(fr.events[0])
    return fr.bundle()


def _receipt_variants(suffix: str) -> list[tuple]:
    def version(value):
        return lambda record: record["source"].update(version=value)

    def reorder(record):
        items = list(record.items())
        record.clear()
        record.update(reversed(items))

    out = []
    for name, edit in (("float", version(1.0)), ("true", version(True)), ("reordered", reorder)):
        for resign in (True, False):
            b = _receipt_record(edit, resign)
            out.append(_case(f"receipt/{name}{'' if resign else '_stale'}", b, b["state"], suffix))
    return out


def _state_variants(bundle: dict, suffix: str) -> list[tuple]:
    state = bundle["state"]
    out = []

    def changed(name: str, edit, rehash: bool = True) -> None:
        s = copy.deepcopy(state)
        edit(s)
        if rehash:
            rehash_state(s)
        out.append(_case(f"state/{name}", bundle, s, suffix))

    out.append(_case("state/honest", bundle, state, suffix))
    out.append(_case("state/absent", bundle, None, suffix))
    out.append(_case("state/indented", bundle, json.dumps(state, indent=1).encode(), suffix))
    out.append(_case("state/keys_reversed", bundle, dict(reversed(state.items())), suffix))
    out.append(_case("state/lying", bundle, forge.lying_state(state), suffix))
    out.append(_case("state/other_record", bundle, forged(8).bundle()["state"], suffix))
    changed("event_count_float", lambda s: s.update(event_count=float(s["event_count"])))
    changed("invalid_count_false", lambda s: s.update(invalid_event_count=False))
    changed("invalid_count_false_stale_hash", lambda s: s.update(invalid_event_count=False), False)
    changed("extra_field", lambda s: s.update(x_mirror="added"))
    changed("sha_wrong", lambda s: s.update(state_sha256="0" * 64), False)
    changed("pith_number_other", lambda s: s.update(pith_number=forged(8).pith_number))
    changed("pith_number_other_stale_hash", lambda s: s.update(pith_number="pith:x"), False)
    changed("payload_float", lambda s: s["current"]["graph_snapshots"][0]["payload"].update(n=1.0))
    changed("applied_reordered", lambda s: s["applied_event_ids"].reverse())
    honest = _dumps(state)
    out += [
        _case("state/duplicate_key", bundle, b'{"state_type":"x",' + honest[1:], suffix),
        _case("state/duplicate_same_value", bundle, honest[:-1] + b',"event_count":3}', suffix),
        _case("state/not_json", bundle, b"<html>502 Bad Gateway</html>", suffix),
        _case("state/array", bundle, b"[" + honest + b"]", suffix),
        _case("state/truncated", bundle, honest[:-1], suffix),
        _case(
            "state/nan", bundle, honest.replace(b'"event_count":3', b'"event_count":NaN'), suffix
        ),
        _case(
            "state/big_int",
            bundle,
            honest.replace(b'"event_count":3', b'"event_count":1' + b"0" * 30),
            suffix,
        ),
        _case(
            "state/escaped",
            bundle,
            honest.replace(b"pith_open_graph_state", b"pith_open_graph_stat\\u0065"),
            suffix,
        ),
        _case("state/lone_surrogate", bundle, honest.replace(b'"1.0"', b'"\\ud800"', 1), suffix),
        _case("state/bom", bundle, b"\xef\xbb\xbf" + honest, suffix),
        _case("state/bundle_as_state", bundle, bundle, suffix),
    ]
    return out


def _random_mutations(bundle: dict, suffix: str, rng: random.Random, n: int) -> list[tuple]:
    b, s = _dumps(bundle), _dumps(bundle["state"])
    out = []
    for i in range(n):
        which = rng.choice(("bundle", "state"))
        data = bytearray(b if which == "bundle" else s)
        pos = rng.randrange(len(data))
        op = rng.choice(("flip", "delete", "insert"))
        if op == "flip":
            data[pos] ^= 1 << rng.randrange(8)
        elif op == "delete":
            del data[pos]
        else:
            data.insert(pos, rng.choice(b' {}[]":,0e-\\'))
        pair = (bytes(data), s) if which == "bundle" else (b, bytes(data))
        out.append(_case(f"random/{i}-{which}-{op}-{pos}", *pair, suffix))
    return out


def _value_mutations(bundle: dict, suffix: str, rng: random.Random, n: int) -> list[tuple]:
    """A value of the state (or of the bundle's embedded state) replaced, hash made consistent."""
    out = []
    values = [0, 1, 1.0, -0.0, 1e-05, True, False, None, "", "x", [], {}, 2**63, 1e300]
    for i in range(n):
        b = copy.deepcopy(bundle)
        embedded = rng.random() < 0.5
        state = b["state"] if embedded else copy.deepcopy(b["state"])
        node, path = state, []
        while isinstance(node, (dict, list)) and node and (not path or rng.random() < 0.6):
            key = rng.choice(list(node) if isinstance(node, dict) else range(len(node)))
            path.append(key)
            parent, node = node, node[key]
        if not path:
            continue
        parent[path[-1]] = rng.choice(values)
        rehash_state(state)
        if embedded:
            forge.resign_bundle(b)
        where = "embedded" if embedded else "served"
        out.append(_case(f"value/{i}-{where}-{'.'.join(map(str, path))}", b, state, suffix))
    return out


def cases() -> list[tuple[str, str, bytes, bytes | None]]:
    """(name, requested suffix, bundle bytes, state bytes or None) for every case."""
    out = []
    for name in BUNDLE_SEEDS:
        data = (SEED_DIR / name).read_bytes()
        doc = strictjson.loads_object(data)
        suffix = doc["pith_number"].rpartition(":")[2]
        out.append(_case(f"seed/{name}", data, doc["state"], suffix))
        out.append(_case(f"seed/{name}/no_state", data, None, suffix))
    for name in BUNDLE_SEEDS[:2]:
        for case_id, mutate, *_ in test_verify.SEED_CASES:
            doc = strictjson.loads_object((SEED_DIR / name).read_bytes())
            suffix = doc["pith_number"].rpartition(":")[2]
            mutate(doc)
            out.append(_case(f"seed/{name}/{case_id}", doc, doc["state"], suffix))
    suffix = forged().suffix
    for case_id, build, *_ in test_verify.FORGED_CASES:
        doc = build()
        out.append(_case(f"forged/{case_id}", doc, doc["state"], suffix))
        out.append(_case(f"forged/{case_id}/honest_state", doc, forged().bundle()["state"], suffix))
    good = forged().bundle()
    out += _state_variants(good, suffix)
    out += _receipt_variants(suffix)
    deep_bundle, deep_merge = _deeper_merge()
    out.append(_case("deep/merge_served", deep_bundle, deep_merge, suffix))
    out.append(_case("deep/embedded_served", deep_bundle, deep_bundle["state"], suffix))
    out.append(_case("other/wrong_record", good, good["state"], forged(8).suffix))
    rng = random.Random(16)
    out += _random_mutations(good, suffix, rng, 60)
    out += _value_mutations(good, suffix, rng, 60)
    return out


def _report(report) -> dict | None:
    if report is None:
        return None
    merged = report.merged_state
    return {
        "reasons": [[r.status.value, r.code, r.message] for r in report.reasons],
        "canonical_sha256": report.canonical_sha256,
        "valid_events": [e["event_id"][7:23] for e in report.valid_events],
        "merged_state_sha256": merged["state_sha256"] if merged is not None else None,
    }


def judge(suffix: str, bundle: bytes, state: bytes | None) -> dict:
    """How one mirror's copy is judged: Assessor.assess, and Verifier.verify_pair of the parsed
    documents where both parse."""
    trust = forge.test_trust()
    state_fetch = (
        Fetched(Retrieval.NOT_FOUND, f"{BASE}/s", detail="HTTP 404")
        if state is None
        else Fetched(Retrieval.FOUND, f"{BASE}/s", state)
    )
    copy_ = MirrorCopy(BASE, Fetched(Retrieval.FOUND, f"{BASE}/b", bundle), state_fetch)
    a = Assessor(Verifier(trust)).assess(copy_, suffix)
    out = {
        "reasons": [[r.status.value, r.code, r.message] for r in a.reasons],
        "bundle_ok": a.bundle_ok,
        "state_ok": a.state_ok,
        "bundle_kept": a.bundle is not None,
        "valid_events": [e["event_id"][7:23] for e in a.valid_events],
        "report": _report(a.report),
    }
    try:
        docs = [strictjson.loads(bundle), strictjson.loads(state) if state else None]
    except PithError:
        return out
    out["pair"] = _report(Verifier(trust).verify_pair(*docs))
    return out


def judgements() -> dict[str, dict]:
    return {name: judge(suffix, b, s) for name, suffix, b, s in cases()}


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit(__doc__)
    found = judgements()
    lines = [orjson.dumps(name) + b": " + orjson.dumps(j) for name, j in found.items()]
    GOLDEN.write_bytes(b"{\n" + b",\n".join(lines) + b"\n}\n")  # one line a case
    print(f"{len(found)} judgements -> {GOLDEN}")
