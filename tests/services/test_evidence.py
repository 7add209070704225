"""Evidence files (issue 4): written from one store by `pithsync evidence`, checked offline by
`pithsync verify` on a fresh store; every claim re-proven from the embedded bytes and the pinned
keys, and an edited file that claims something false fails."""

from __future__ import annotations

import base64
import copy
import json

import pytest
import synctools
from synctools import make_config, run_cli, serve_bad_copy

from pithsync import evidence
from pithsync.core import attestation
from pithsync.core.canonical import canon, sha256hex
from pithsync.core.verify import Verifier
from pithsync.observer import load_or_create
from pithsync.store import Store
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer


async def pull(cfg, *pith_numbers: str):
    """A pull whose observation log is signed after it, as a real run's is."""
    return await synctools.pull(cfg, *pith_numbers, checkpoint=True)


def trust_config(tmp_path, keys=(forge.TEST_KEY,)) -> str:
    """Another machine's configuration: only pinned keys, no mirrors in common."""
    text = "".join(
        f'[[trust.keys]]\nkey_id = "{k.key_id}"\npublic_key_b64 = "{k.public_key_b64}"\n\n'
        for k in keys
    )
    path = tmp_path / "elsewhere.toml"
    path.write_text(text + '[[mirrors]]\nbase_url = "https://elsewhere.invalid"\n')
    return str(path)


async def export(tmp_path, cfg, pith) -> tuple[int, dict | None, str]:
    conf = trust_config(tmp_path)
    out = tmp_path / "evidence.json"
    code, text = await run_cli(
        "--config", conf, "--db", cfg.db_path, "evidence", pith, "--out", str(out)
    )
    return code, (json.loads(out.read_text()) if out.exists() else None), text


def exporter_key(tmp_path):
    """The observer key of the exporting store (make_config puts it in tmp_path)."""
    return load_or_create(str(tmp_path / "pithsync.db"))


def resigned(tmp_path, doc: dict) -> dict:
    """`doc` signed again by its exporter: an exporter that lies can sign what it likes, so a
    false claim must fail on its own check, not only on the file's signature."""
    out = copy.deepcopy(doc)
    out["signature"] = attestation.sign_file(out, exporter_key(tmp_path))
    return out


async def verify_offline(
    tmp_path, doc: dict, *, keys=(forge.TEST_KEY,), name="check.json", resign=True
) -> tuple[int, dict]:
    """`pithsync verify --json` on a fresh store pinning `keys` and the exporter's observer
    key; by default the file is signed again first (see resigned)."""
    path = tmp_path / name
    path.write_text(json.dumps(resigned(tmp_path, doc) if resign else doc))
    fresh = tmp_path / "fresh" / "never-created.db"
    vkey = exporter_key(tmp_path).verifier_key.encode()
    code, text = await run_cli(
        "--config", trust_config(tmp_path, keys), "--db", str(fresh), "verify", "--json",
        "--observer-key", vkey, str(path),
    )  # fmt: skip
    assert not fresh.exists()  # verifying needs no store
    return code, json.loads(text)["files"][0]


def claims(doc) -> list[tuple]:
    return sorted((c["claim"], c.get("status", "")) for c in doc["claims"])


def body(doc, i) -> bytes:
    return base64.b64decode(doc["documents"][i]["body_b64"])


def set_body(doc, i, data: bytes) -> None:
    doc["documents"][i]["body_b64"] = base64.b64encode(data).decode()
    doc["documents"][i]["sha256"] = sha256hex(data)


@pytest.fixture
def record():
    return forge.forge_record(31, n_events=3)


SCENARIOS = {
    "tampered": [("bad_document", "tampered"), ("state_not_merge", "")],
    "rewritten": [("bad_document", "bad_signature"), ("bad_document", "bad_signature")],
    "lying_state_json": [("state_not_merge", "")],
    "lying_embedded_state": [("bad_document", "state_mismatch"), ("state_not_merge", "")],
    "html": [("bad_document", "malformed")],
    "wrong_record": [("wrong_record", ""), ("wrong_record", "")],
    "stale": [("stale", "")],
}


@pytest.mark.parametrize("variant", list(SCENARIOS))
async def test_evidence_round_trip(tmp_path, record, variant):
    good = record.bundle()
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(good)
        serve_bad_copy(b, record, variant, other=32)
        cfg = make_config(tmp_path, [a.spec(), b.spec()])
        res = (await pull(cfg, record.pith_number))[record.pith_number]
        assert res.verdict.value == "diverged"
    code, doc, text = await export(tmp_path, cfg, record.pith_number)
    assert code == 0, text
    assert (
        doc["evidence_type"] == "pithsync_evidence"
        and doc["evidence_version"] == 2
        and doc["pith_number"] == record.pith_number
    )
    assert claims(doc) == sorted(SCENARIOS[variant])
    ref = [d for d in doc["documents"] if d["role"] == "reference"]
    assert len(ref) == 1 and body(doc, ref[0]["id"]) == forge.dumps(good)  # exact bytes
    assert all(c["mirror"] == b.base_url for c in doc["claims"])
    code, report = await verify_offline(tmp_path, doc)
    assert code == 0, report
    assert (
        report["kind"] == "evidence"
        and report["status"] == "ok"
        and report["pith_number"] == record.pith_number
    )
    assert sum("holds" in n for n in report["notes"]) == len(doc["claims"])


async def test_equivocation_and_rollback_evidence(tmp_path, record):
    left, right = forge.equivocating_pair(record)
    async with MirrorServer("a") as a, MirrorServer("b") as b, MirrorServer("c") as c:
        a.put_record(left)
        b.put_record(right)
        c.put_record(record.bundle(upto=2))  # and c lags
        cfg = make_config(tmp_path, [a.spec(), b.spec(), c.spec()])
        await pull(cfg, record.pith_number)
    code, doc, text = await export(tmp_path, cfg, record.pith_number)
    assert code == 0, text
    assert claims(doc) == [("equivocation", ""), ("stale", "")]
    eq = next(c for c in doc["claims"] if c["claim"] == "equivocation")
    forks = {left["events"][-1]["event_id"], right["events"][-1]["event_id"]}
    assert {json.loads(body(doc, i))["event_id"] for i in eq["events"]} == forks
    served = {
        (
            json.loads(body(doc, s["document"]))["events"][-1]["event_id"],
            json.loads(body(doc, s["event"]))["event_id"],
        )
        for s in eq["served_in"]
    }
    assert served == {(f, f) for f in forks}  # each fork, in the bundle a mirror served
    stale = next(c for c in doc["claims"] if c["claim"] == "stale")
    assert stale["mirror"] == c.base_url and len(stale["missing_events"]) == 1
    code, report = await verify_offline(tmp_path, doc)
    assert code == 0, report

    # The same file, edited to claim something false, fails: ---------------------------------
    async def fails(edit, expect_code: str):
        bad = copy.deepcopy(doc)
        edit(bad)
        code, report = await verify_offline(tmp_path, bad, name="edited.json")
        assert code == 1 and report["status"] != "ok", report
        assert expect_code in {r["code"] for r in report["reasons"]}, report["reasons"]
        return report

    # events that do not conflict: the record_created event instead of one fork
    first = canon(record.events[0])

    def swap_fork(d):
        d["documents"][eq["events"][0]]["body_b64"] = base64.b64encode(first).decode()
        d["documents"][eq["events"][0]]["sha256"] = sha256hex(first)

    await fails(swap_fork, "claim_false")

    # "stale" naming an event the bundle does hold
    def not_missing(d):
        d["documents"].append(
            {
                "id": len(d["documents"]),
                "role": "event",
                "kind": "event",
                "sha256": sha256hex(first),
                "body_b64": base64.b64encode(first).decode(),
            }
        )
        next(x for x in d["claims"] if x["claim"] == "stale")["missing_events"] = [
            len(d["documents"]) - 1
        ]

    await fails(not_missing, "claim_false")

    # a fork "served in" a bundle that does not carry it
    def wrong_carrier(d):
        e = next(x for x in d["claims"] if x["claim"] == "equivocation")
        e["served_in"][0]["event"], e["served_in"][1]["event"] = (
            e["served_in"][1]["event"],
            e["served_in"][0]["event"],
        )

    await fails(wrong_carrier, "claim_false")

    # the stale bundle replaced by the good one (hash updated): it is not stale
    ref = next(d["id"] for d in doc["documents"] if d["role"] == "reference")
    await fails(lambda d: set_body(d, stale["document"], body(d, ref)), "claim_false")

    # one byte of an embedded document changed, hash left as it was
    def flip(d):
        raw = bytearray(body(d, ref))
        raw[raw.index(b"A. Forger")] ^= 0x20
        d["documents"][ref]["body_b64"] = base64.b64encode(bytes(raw)).decode()

    await fails(flip, "document_hash_mismatch")

    # the reference edited consistently (hash updated): its signature no longer holds
    def edit_reference(d):
        b = json.loads(body(d, ref))
        b["built_at"] = "2030-01-01T00:00:00Z"
        set_body(d, ref, forge.dumps(b))

    await fails(edit_reference, "reference_invalid")
    await fails(lambda d: d.update(claims=[]), "no_claims")
    await fails(lambda d: d["claims"].append({"claim": "trust_me"}), "claim_false")
    await fails(lambda d: d.update(evidence_version=1), "evidence_version")

    # Another machine that does not pin the key these documents are signed with proves nothing.
    code, report = await verify_offline(
        tmp_path, doc, keys=(forge.ForgeKey.from_seed("someone-else", "x"),), name="other.json"
    )
    assert code == 1 and "reference_invalid" in {r["code"] for r in report["reasons"]}


async def test_false_status_claim_fails(tmp_path, record):
    good = record.bundle()
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(good)
        b.put_record(forge.tampered(good), state=good["state"])
        cfg = make_config(tmp_path, [a.spec(), b.spec()])
        await pull(cfg, record.pith_number)
    code, doc, _ = await export(tmp_path, cfg, record.pith_number)
    assert code == 0
    bad = copy.deepcopy(doc)
    claim = next(c for c in bad["claims"] if c["claim"] == "bad_document")
    claim["status"] = "bad_signature"  # it is tampered, not badly signed
    code, report = await verify_offline(tmp_path, bad)
    assert code == 1 and [r["code"] for r in report["reasons"]] == ["claim_false"]
    assert "tampered" in report["reasons"][0]["message"]
    # And a good bundle claimed to be tampered.
    bad = copy.deepcopy(doc)
    claim = next(c for c in bad["claims"] if c["claim"] == "bad_document")
    set_body(bad, claim["document"], forge.dumps(good))
    code, report = await verify_offline(tmp_path, bad)
    assert code == 1 and any("verifies cleanly" in r["message"] for r in report["reasons"])


async def test_in_sync_record_has_no_evidence(tmp_path, record):
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        b.put_record(record.bundle())
        cfg = make_config(tmp_path, [a.spec(), b.spec()])
        await pull(cfg, record.pith_number)
    code, doc, _ = await export(tmp_path, cfg, record.pith_number)
    assert code == 2 and doc is None
    code, _, _ = await export(tmp_path, cfg, "pith:ZZZZZZZZ")
    assert code == 2


def test_build_and_verify_in_process(tmp_path, forge_verifier):
    """build_evidence on a store filled by hand gives a file verify_evidence accepts, and a file
    that is not evidence at all is reported, never raises."""
    record = forge.forge_record(33, n_events=3)
    store = Store.open(str(tmp_path / "s.db"))
    try:
        signer = load_or_create(store.path)
        built = evidence.build_evidence(store, record.pith_number, forge_verifier, signer)
        assert built["claims"] == [] and built["statements"] == []
    finally:
        store.close()
    for junk in (
        {"evidence_type": "pithsync_evidence"},
        {"evidence_type": "pithsync_evidence", "evidence_version": 1, "pith_number": "nope"},
        {
            "evidence_type": "pithsync_evidence",
            "evidence_version": 1,
            "pith_number": record.pith_number,
            "documents": [{"id": 0}],
            "claims": [],
        },
    ):
        report = evidence.verify_evidence(junk, Verifier(forge.test_trust()))
        assert not report.ok and report.status.value == "malformed"


async def test_mirror_attribution_is_proven_by_observer_statements(tmp_path, record):
    """Which mirror served a document is proven by the exporter's signed statement: an edited
    claim mirror or url fails, signed again or not, as does an edited statement, proof or
    checkpoint; the verify line says the attribution is proven."""
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        serve_bad_copy(b, record, "stale")
        cfg = make_config(tmp_path, [a.spec(), b.spec()])
        await pull(cfg, record.pith_number)
    code, doc, _ = await export(tmp_path, cfg, record.pith_number)
    assert code == 0 and claims(doc) == [("stale", "")]
    claim = doc["claims"][0]
    cited = doc["statements"][claim["statements"][0]]
    assert json.loads(cited["statement"])["mirror"] == claim["mirror"] == b.base_url

    code, report = await verify_offline(tmp_path, doc, resign=False)
    assert code == 0 and report["status"] == "ok", report
    line = next(n for n in report["notes"] if n.startswith("claim 0 "))
    assert line.startswith("claim 0 (stale) holds") and line.endswith(
        f"mirror {b.base_url} (url {claim['url']}) proven by observer statements"
    )
    outcome = report["claims"][0]
    assert outcome["attribution"] == "observer" and outcome["signed"] is True

    edited = copy.deepcopy(doc)
    edited["claims"][0]["mirror"] = "http://innocent.example"
    edited["claims"][0]["url"] = "http://innocent.example/pith/x/bundle.json\x1b[2J"
    code, report = await verify_offline(tmp_path, edited, resign=False, name="unsigned.json")
    assert code == 1 and {"file_signature", "attribution_unproven"} <= codes(report)
    code, report = await verify_offline(tmp_path, edited, name="resigned.json")
    assert code == 1 and codes(report) == {"attribution_unproven"}
    message = report["reasons"][0]["message"]
    assert "mirror http://innocent.example" in message and "\x1b" not in message
    assert message.endswith("not proven by observer statements")
    assert report["claims"][0]["holds"] is True and report["claims"][0]["signed"] is False

    # The plain output says it on the claim's own line.
    path = tmp_path / "edited-plain.json"
    path.write_text(json.dumps(resigned(tmp_path, edited)))
    vkey = exporter_key(tmp_path).verifier_key.encode()
    code, text = await run_cli(
        "--config", trust_config(tmp_path), "--db", str(tmp_path / "none.db"), "verify",
        "--observer-key", vkey, str(path),
    )  # fmt: skip
    assert code == 1 and "not proven by observer statements" in text

    # The statement, its proof and its checkpoint are each checked, even when signed again.
    def statement_edit(d):
        d["statements"][0]["statement"] = d["statements"][0]["statement"].replace(
            b.base_url, a.base_url
        )

    def proof_edit(d):
        d["statements"][0]["proof"][0] = base64.b64encode(bytes(32)).decode()

    def checkpoint_edit(d):
        lines = d["checkpoints"][0].split("\n")
        lines[1] = str(int(lines[1]) + 1)
        d["checkpoints"][0] = "\n".join(lines)

    for edit, expected in (
        (statement_edit, "statement_unproven"),
        (proof_edit, "statement_unproven"),
        (checkpoint_edit, "checkpoint_unverified"),
    ):
        bad = copy.deepcopy(doc)
        edit(bad)
        code, report = await verify_offline(tmp_path, bad, name="bad.json")
        assert code == 1 and expected in codes(report), (edit.__name__, report)
        assert "attribution_unproven" in codes(report)


async def test_verify_pins_peer_and_own_observer_keys(tmp_path, record):
    """Without an observer key pinned, nothing in the file is proven; the [[peers]] keys of the
    configuration and the store's own observer key are pinned."""
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        serve_bad_copy(b, record, "stale")
        cfg = make_config(tmp_path, [a.spec(), b.spec()])
        await pull(cfg, record.pith_number)
    code, doc, _ = await export(tmp_path, cfg, record.pith_number)
    path = tmp_path / "evidence.json"
    conf = trust_config(tmp_path)
    code, text = await run_cli(
        "--config", conf, "--db", str(tmp_path / "none.db"), "verify", "--json", str(path)
    )
    report = json.loads(text)["files"][0]
    assert code == 1 and {"file_signature", "checkpoint_unverified"} <= codes(report)

    code, text = await run_cli("--config", conf, "--db", cfg.db_path, "verify", str(path))
    assert code == 0, text  # the exporting store's own key

    vkey = exporter_key(tmp_path).verifier_key.encode()
    with open(conf, "a") as fh:
        fh.write(f'[[peers]]\nname = "x"\nurl = "http://x.invalid"\nobserver_key = "{vkey}"\n')
    code, text = await run_cli(
        "--config", conf, "--db", str(tmp_path / "no.db"), "verify", str(path)
    )
    assert code == 0, text


def codes(report: dict) -> set[str]:
    return {r["code"] for r in report["reasons"]}
