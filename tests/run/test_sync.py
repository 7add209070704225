"""Crawl, compare and store against real local mirrors: every status and verdict of issue 3."""

from __future__ import annotations

import json
import sqlite3

import pytest
from synctools import (
    NoSleep,
    json_lines,
    make_config,
    pull,
    run_cli,
    serve_bad_copy,
    statuses,
    write_config,
)

from pithsync.core import strictjson
from pithsync.core.canonical import sha256hex
from pithsync.store import Store, bodies
from pithsync.store import reads as store_reads
from pithsync.testing import forge
from pithsync.testing.mirror import (
    MirrorServer,
    bundle_path,
    refused_spec,
    state_path,
    well_known_path,
)


@pytest.fixture
def record():
    return forge.forge_record(1, n_events=3)


def verified_shas(db_path) -> set[str]:
    with sqlite3.connect(db_path) as conn:
        return {r[0] for r in conn.execute("select sha256 from documents")}


def stored_state(db_path, pith):
    store = Store.open(db_path)
    try:
        rec = store.record(pith)
        return json.loads(rec["state"]) if rec and rec["state"] else None
    finally:
        store.close()


async def test_in_sync_and_state_stored(tmp_path, record):
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        bundle = record.bundle()
        a.put_record(bundle)
        b.put_record(bundle)
        cfg = make_config(tmp_path, [a.spec(), b.spec()])
        res = (await pull(cfg, record.pith_number))[record.pith_number]
    assert res.verdict.value == "in_sync"
    assert statuses(res) == {"a": "ok", "b": "ok"}
    state = stored_state(cfg.db_path, record.pith_number)
    assert state == bundle["state"]
    assert res.state_sha256 == bundle["state"]["state_sha256"]
    assert sha256hex(forge.dumps(bundle)) in verified_shas(cfg.db_path)


async def test_stale_mirror(tmp_path, record):
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        b.put_record(record.bundle(upto=2))
        cfg = make_config(tmp_path, [a.spec(), b.spec()])
        res = (await pull(cfg, record.pith_number))[record.pith_number]
    assert statuses(res) == {"a": "ok", "b": "stale"}
    assert res.verdict.value == "diverged"
    assert stored_state(cfg.db_path, record.pith_number)["event_count"] == 3


@pytest.mark.parametrize(
    "variant,expected",
    [
        ("tampered", "tampered"),
        ("rewritten", "bad_signature"),
        ("lying_state_json", "state_mismatch"),
        ("lying_embedded_state", "state_mismatch"),
        ("html", "malformed"),
        ("wrong_record", "tampered"),
    ],
)
async def test_bad_copies(tmp_path, record, variant, expected):
    good = record.bundle()
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(good)
        suffix = record.suffix
        serve_bad_copy(b, record, variant)
        cfg = make_config(tmp_path, [a.spec(), b.spec()])
        res = (await pull(cfg, record.pith_number))[record.pith_number]
        served_b = b.resources[bundle_path(suffix)].body
        served_state_b = b.resources[state_path(suffix)].body
    assert statuses(res) == {"a": "ok", "b": expected}, res.mirrors[1].reasons
    assert res.verdict.value == "diverged"
    shas = verified_shas(cfg.db_path)
    # Nothing from the bad copy is in the verified store, but it is kept as evidence.
    bad = [sha256hex(served_b)] if variant != "lying_state_json" else [sha256hex(served_state_b)]
    assert not set(bad) & shas
    store = Store.open(cfg.db_path)
    evidence = store.evidence_for(record.pith_number)
    store.close()
    assert any(e["body_sha256"] in bad and e["status"] == expected for e in evidence)
    assert stored_state(cfg.db_path, record.pith_number) == good["state"]


async def test_equivocation(tmp_path, record):
    left, right = forge.equivocating_pair(record)
    async with MirrorServer("a") as a, MirrorServer("b") as b, MirrorServer("c") as c:
        a.put_record(left)
        b.put_record(right)
        c.put_record(record.bundle())
        cfg = make_config(tmp_path, [a.spec(), b.spec(), c.spec()])
        res = (await pull(cfg, record.pith_number))[record.pith_number]
    assert statuses(res) == {"a": "equivocation", "b": "equivocation", "c": "ok"}
    assert res.verdict.value == "diverged"
    state = stored_state(cfg.db_path, record.pith_number)
    assert state["equivocation_count"] == 1
    fork_ids = {left["events"][-1]["event_id"], right["events"][-1]["event_id"]}
    assert set(state["equivocations"][0]["event_ids"]) == fork_ids
    assert not fork_ids & set(state["applied_event_ids"])
    store = Store.open(cfg.db_path)
    evidence = store.evidence_for(record.pith_number)
    store.close()
    assert {e["mirror"] for e in evidence if e["status"] == "equivocation"} == {
        a.base_url,
        b.base_url,
    }


async def test_missing_unreachable_degraded_unverifiable(tmp_path, record):
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        down = refused_spec("down")
        cfg = make_config(tmp_path, [a.spec(), b.spec(), down])
        res = (await pull(cfg, record.pith_number))[record.pith_number]
        assert statuses(res) == {"a": "ok", "b": "missing", "down": "unreachable"}
        assert res.verdict.value == "diverged"

        cfg2 = make_config(tmp_path / "2", [a.spec(), down])
        res = (await pull(cfg2, record.pith_number))[record.pith_number]
        assert statuses(res) == {"a": "ok", "down": "unreachable"}
        assert res.verdict.value == "degraded"

        other = forge.forge_record(7)
        cfg3 = make_config(tmp_path / "3", [b.spec(), down])
        res = (await pull(cfg3, other.pith_number))[other.pith_number]
        assert res.verdict.value == "unverifiable"
        assert statuses(res) == {"b": "missing", "down": "unreachable"}


async def test_well_known_fallback(tmp_path, record):
    async with MirrorServer("a") as a:
        bundle = record.bundle()
        a.put_well_known(record.suffix, forge.dumps(bundle))
        a.put_state(record.suffix, forge.dumps(bundle["state"]))
        cfg = make_config(tmp_path, [a.spec()])
        res = (await pull(cfg, record.pith_number))[record.pith_number]
        assert a.count(bundle_path(record.suffix), status=404) == 1
        assert a.count(well_known_path(record.suffix), status=200) == 1
    assert res.verdict.value == "in_sync"


async def test_rollback_is_stale_and_store_keeps_newer_state(tmp_path, record):
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        b.put_record(record.bundle())
        cfg = make_config(tmp_path, [a.spec(), b.spec()])
        await pull(cfg, record.pith_number)
        newer = stored_state(cfg.db_path, record.pith_number)
        assert newer["event_count"] == 3
        # Both mirrors roll back to an older copy.
        a.put_record(record.bundle(upto=2))
        b.put_record(record.bundle(upto=2))
        res = (await pull(cfg, record.pith_number))[record.pith_number]
    assert statuses(res) == {"a": "stale", "b": "stale"}
    assert res.verdict.value == "diverged"
    assert "store" in res.mirrors[0].reasons[0]["message"]
    assert stored_state(cfg.db_path, record.pith_number) == newer


async def test_resync_of_unchanged_mirrors_gets_304s(tmp_path):
    records = [forge.forge_record(i) for i in range(5)]
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        for r in records:
            a.put_record(r.bundle())
            b.put_record(r.bundle())
        cfg = make_config(tmp_path, [a.spec(), b.spec()])
        first = await pull(cfg, *[r.pith_number for r in records])
        assert {r.verdict.value for r in first.values()} == {"in_sync"}
        a.clear_log()
        b.clear_log()
        second = await pull(cfg, *[r.pith_number for r in records])
        assert {r.verdict.value for r in second.values()} == {"in_sync"}
        total = a.count() + b.count()
        not_modified = a.count(status=304) + b.count(status=304)
        assert total == 20 and not_modified == 20
        assert all(r.headers.get("If-None-Match") for r in a.requests)


async def test_resync_reads_numbers_orjson_refuses_exactly(tmp_path):
    # Bytes verified before are read back by the plain parser (the Assessor's known-good path,
    # stored events): integers beyond 64 bits, which orjson would read as floats, and a float
    # below 1e-4 must survive every re-read, and so must the merge built from them.
    base = forge.forge_record(40, 1)
    odd = forge.make_event(
        base.record,
        "graph_snapshot",
        {"graph_snapshot": {"big": 2**70 + 1, "tiny": 1.5e-07, "neg": -(2**65) - 3}},
        created_at="2026-06-10T00:00:00Z",
    )
    record = forge.ForgedRecord(base.record, [*base.events, odd])
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        b.put_record(record.bundle())
        cfg = make_config(tmp_path, [a.spec(), b.spec()])
        first = (await pull(cfg, record.pith_number))[record.pith_number]
        a.clear_log()
        second = (await pull(cfg, record.pith_number))[record.pith_number]
        assert a.count(status=304) == 2  # the second run went through the stored, known-good bytes
        # A new event on b only: the merge now takes the odd event from a's re-read copy or
        # from the store, and must still give the true state.
        later = forge.make_event(
            base.record,
            "graph_snapshot",
            forge.graph_payload(40),
            created_at="2026-06-11T00:00:00Z",
            prev_event=odd["event_id"],
        )
        grown = forge.ForgedRecord(base.record, [*record.events, later])
        b.put_record(grown.bundle())
        third = (await pull(cfg, record.pith_number))[record.pith_number]
    assert first.verdict.value == second.verdict.value == "in_sync"
    assert (
        first.event_count == second.event_count == 2
        and first.state_sha256 == second.state_sha256 == record.bundle()["state"]["state_sha256"]
    )
    assert third.event_count == 3 and third.state_sha256 == grown.bundle()["state"]["state_sha256"]
    store = Store.open(cfg.db_path)
    try:
        payload = store.stored_events(record.pith_number)[odd["event_id"]]["payload"][
            "graph_snapshot"
        ]
    finally:
        store.close()
    assert payload == {"big": 2**70 + 1, "tiny": 1.5e-07, "neg": -(2**65) - 3}
    assert type(payload["big"]) is int and type(payload["neg"]) is int


async def test_retry_honours_retry_after_without_sleeping(tmp_path, record):
    async with MirrorServer("a") as a:
        a.put_record(record.bundle())
        a.fault("status", path=bundle_path(record.suffix), status=503, retry_after="7", times=2)
        cfg = make_config(tmp_path, [a.spec()], retries=3)
        sleep = NoSleep()
        res = (await pull(cfg, record.pith_number, sleep=sleep))[record.pith_number]
        assert a.count(bundle_path(record.suffix), status=503) == 2
    assert res.verdict.value == "in_sync"
    assert sleep.waits == [7.0, 7.0]


async def test_no_retry_on_4xx_and_unreachable_after_retries(tmp_path, record):
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        b.put_record(record.bundle())
        b.fault("status", path=bundle_path(record.suffix), status=403)
        b.fault("status", path=state_path(record.suffix), status=500)
        cfg = make_config(tmp_path, [a.spec(), b.spec()], retries=2)
        res = (await pull(cfg, record.pith_number))[record.pith_number]
        assert b.count(bundle_path(record.suffix)) == 1
        assert b.count(state_path(record.suffix)) == 3
    assert statuses(res)["b"] == "unreachable"
    assert any("after 3 attempts" in r["message"] for r in res.mirrors[1].reasons)


async def test_hints_followed_when_policy_allows(tmp_path, record):
    async with MirrorServer("a") as a, MirrorServer("hinted") as h:
        hint = {
            "mirror_type": "https",
            "name": "hinted",
            "base_url": h.base_url,
            "status": "mirror",
        }
        bundle = record.bundle(mirror_hints=[hint], base_url=a.base_url)
        a.put_record(bundle)
        h.put_record(bundle)
        cfg = make_config(
            tmp_path, [a.spec()], follow_hints=True, allow_http=True, allow_private=True
        )
        res = (await pull(cfg, record.pith_number))[record.pith_number]
        assert h.count(bundle_path(record.suffix)) == 1
    assert {m.base_url for m in res.mirrors} == {a.base_url, h.base_url}
    assert res.verdict.value == "in_sync"
    assert [m.configured for m in res.mirrors if m.base_url == h.base_url] == [False]


async def test_hints_refused_by_default_policy(tmp_path, record):
    async with MirrorServer("a") as a, MirrorServer("hinted") as h:
        hints = [
            {"name": "plain-http", "base_url": h.base_url},
            {"name": "ftp", "base_url": "ftp://example.org"},
        ]
        hints += [{"name": f"h{i}", "base_url": f"https://10.0.0.{i}"} for i in range(3)]
        bundle = record.bundle(mirror_hints=hints, base_url=a.base_url)
        a.put_record(bundle)
        h.put_record(bundle)
        cfg = make_config(tmp_path, [a.spec()], follow_hints=True)
        res = (await pull(cfg, record.pith_number))[record.pith_number]
        assert h.count() == 0
    refused = {r["base_url"]: r["reason"] for r in res.refused_hints}
    assert "http://" in refused[h.base_url] or "not public" in refused[h.base_url]
    assert "scheme" in refused["ftp://example.org"]
    assert "not public" in refused["https://10.0.0.1"]
    assert res.verdict.value == "in_sync"


async def test_discovered_mirror_cap(tmp_path, record):
    async with MirrorServer("a") as a:
        hints = [{"name": f"h{i}", "base_url": f"http://127.0.0.{i + 2}:9"} for i in range(10_000)]
        bundle = record.bundle(mirror_hints=hints, base_url=a.base_url)
        a.put_record(bundle)
        cfg = make_config(
            tmp_path,
            [a.spec()],
            follow_hints=True,
            allow_http=True,
            allow_private=True,
            max_discovered_mirrors=3,
            retries=0,
            timeout_s=5,
        )
        res = (await pull(cfg, record.pith_number))[record.pith_number]
    assert len(res.mirrors) == 1 + 3
    assert len(res.refused_hints) <= 51
    assert "cap" in res.refused_hints[0]["reason"]


async def test_depth_follows_cited_records(tmp_path):
    cited = forge.forge_record(20)
    citing = forge.forge_record(21, cites=[cited.pith_number])
    async with MirrorServer("a") as a:
        a.put_record(citing.bundle())
        a.put_record(cited.bundle())
        cfg = make_config(tmp_path, [a.spec()])
        shallow = await pull(cfg, citing.pith_number)
        assert set(shallow) == {citing.pith_number}
        deep = await pull(cfg, citing.pith_number, depth=1)
    assert set(deep) == {citing.pith_number, cited.pith_number}
    assert deep[cited.pith_number].verdict.value == "in_sync"


# -- through the CLI ---------------------------------------------------------------------------


async def test_cli_pull_json_exit_codes_and_status(tmp_path, record):
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        b.put_record(record.bundle(upto=2))
        conf = write_config(tmp_path, [a.spec(), b.spec()])
        db = str(tmp_path / "s.db")
        code, out = await run_cli(
            "--config", conf, "--db", db, "pull", "--json", record.pith_number
        )
        assert code == 1
        [rec] = json_lines(out)
        assert rec["pith_number"] == record.pith_number and rec["verdict"] == "diverged"
        assert {m["name"]: m["status"] for m in rec["mirrors"]} == {"a": "ok", "b": "stale"}
        assert all({"name", "status", "reasons"} <= set(m) for m in rec["mirrors"])

        b.put_record(record.bundle())
        code, out = await run_cli("--config", conf, "--db", db, "sync", "--json")
        assert code == 0, out
        assert json_lines(out)[0]["verdict"] == "in_sync"

        code, out = await run_cli(
            "--config", conf, "--db", db, "status", "--json", record.pith_number
        )
        st = json.loads(out)
        assert (
            code == 0
            and st["event_count"] == 3
            and st["state_sha256"] == record.bundle()["state"]["state_sha256"]
        )
        assert {m["name"]: m["status"] for m in st["mirrors"]} == {"a": "ok", "b": "ok"}

        # Short forms and aliases resolve through the store; unknown ones are a usage error.
        code, out = await run_cli(
            "--config", conf, "--db", db, "pull", "--json", f"pith:{record.suffix[:8]}"
        )
        assert code == 0 and json_lines(out)[0]["pith_number"] == record.pith_number
        code, out = await run_cli(
            "--config", conf, "--db", db, "pull", "--json", record.record["source"]["id"]
        )
        assert code == 0 and json_lines(out)[0]["pith_number"] == record.pith_number
        code, _ = await run_cli("--config", conf, "--db", db, "pull", "pith:ZZZZZZZZ")
        assert code == 2
        code, _ = await run_cli("--config", conf, "--db", db, "pull", "not-a-number")
        assert code == 2

        down = refused_spec("down")
        conf2 = write_config(tmp_path, [down])
        code, out = await run_cli(
            "--config", conf2, "--db", str(tmp_path / "u.db"), "pull", "--json", record.pith_number
        )
        assert code == 3 and json_lines(out)[0]["verdict"] == "unverifiable"


async def test_seed_imported_then_served_pulls_in_sync(tmp_path, seeds):
    name = "000_919069ef98e1b946.txt"
    path = tmp_path / name
    path.write_bytes(seeds[name])
    bundle = strictjson.loads_object(seeds[name])
    async with MirrorServer("local") as m:
        m.put_bundle(bundle["pith_number"].split(":")[2], seeds[name])
        m.put_state(bundle["pith_number"].split(":")[2], forge.dumps(bundle["state"]))
        conf = write_config(tmp_path, [m.spec()])
        db = str(tmp_path / "s.db")
        code, out = await run_cli("--config", conf, "--db", db, "import", str(path))
        assert code == 0, out
        code, out = await run_cli("--config", conf, "--db", db, "sync", "--json")
    assert code == 0, out
    rec = json_lines(out)[0]
    assert (
        rec["pith_number"] == "pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ22" and rec["verdict"] == "in_sync"
    )
    assert rec["state_sha256"] == bundle["state"]["state_sha256"]


async def test_journal_verify_detects_edit_and_removal(tmp_path, record):
    async with MirrorServer("a") as a:
        a.put_record(record.bundle())
        conf = write_config(tmp_path, [a.spec()])
        db = str(tmp_path / "s.db")
        for _ in range(2):
            code, _ = await run_cli("--config", conf, "--db", db, "pull", record.pith_number)
            assert code == 0
    code, out = await run_cli("--db", db, "journal", "verify")
    assert code == 0 and "intact" in out
    code, out = await run_cli("--db", db, "journal", "--json")
    entries = json_lines(out)
    assert [e["kind"] for e in entries][:3] == ["run_started", "record_outcome", "run_finished"]

    def tamper(sql):
        import shutil

        copy = tmp_path / f"t{abs(hash(sql))}.db"
        shutil.copy(db, copy)
        with sqlite3.connect(copy) as conn:
            conn.execute(sql)
        return str(copy)

    for sql in (
        "update journal set status = 'ok' where seq = 3",
        "update journal set detail = '{}' where seq = 2",
        "delete from journal where seq = 4",
        "delete from journal where seq = (select max(seq) from journal)",
    ):
        code, out = await run_cli("--db", tamper(sql), "journal", "verify")
        assert code == 1, sql
        assert out.strip(), sql


async def test_a_record_check_is_one_journal_entry_holding_each_mirrors_outcome(tmp_path, record):
    """Each check of a record, re-checks included, appends one `record_outcome` whose detail
    holds every mirror's outcome; `journal --json` gives each entry the prev_sha256 its hash
    covers, derived from the entry before it."""
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        serve_bad_copy(b, record, "tampered")
        conf = write_config(tmp_path, [a.spec(), b.spec()])
        db = str(tmp_path / "s.db")
        for _ in range(2):
            code, _ = await run_cli("--config", conf, "--db", db, "pull", record.pith_number)
            assert code == 1  # b diverged
        code, out = await run_cli("--db", db, "journal", "--json")
    assert code == 0
    entries = json_lines(out)
    run = ["run_started", "record_outcome", "run_finished"]
    assert [e["kind"] for e in entries] == run * 2
    for check in (entries[1], entries[4]):
        assert check["status"] == "diverged"
        mirrors = sorted(check["detail"]["mirrors"], key=lambda m: m["mirror"] != a.base_url)
        assert mirrors[0] == {"mirror": a.base_url, "status": "ok"}  # no reasons: none given
        assert mirrors[1]["mirror"] == b.base_url and mirrors[1]["status"] == "tampered"
        assert mirrors[1]["reasons"] and all(isinstance(r, str) for r in mirrors[1]["reasons"])
    assert entries[4]["detail"]["new_events"] == 0
    code, out = await run_cli("--db", db, "journal")  # the text lines say each mirror's status
    line = out.splitlines()[4]
    assert line.startswith(f"5 {entries[4]['at']} record_outcome {record.pith_number} diverged ")
    assert {f"{a.base_url}=ok", f"{b.base_url}=tampered"} <= set(line.split())
    previous = ["0" * 64] + [e["entry_sha256"] for e in entries[:-1]]
    assert [e["prev_sha256"] for e in entries] == previous
    with sqlite3.connect(db) as conn:  # derived, not stored
        assert "prev_sha256" not in {r[1] for r in conn.execute("pragma table_info(journal)")}
    code, out = await run_cli("--db", db, "journal", "--json", "--since", entries[3]["at"])
    assert code == 0 and json_lines(out) == entries[3:]
    with sqlite3.connect(db) as conn:  # an entry timed before the one stored before it
        conn.execute("update journal set at = '2000-01-01T00:00:00Z' where seq = 5")
    code, out = await run_cli("--db", db, "journal", "--json", "--since", entries[3]["at"])
    assert [(e["seq"], e["prev_sha256"]) for e in json_lines(out)] == [
        (4, entries[2]["entry_sha256"]),
        (6, entries[4]["entry_sha256"]),  # the entry stored before it, though not listed
    ]


async def test_cli_pull_of_many_records_in_a_subprocess(tmp_path):
    """`python -m pithsync pull --from` of a run of some size, as the timer runs it: it finishes,
    makes one run's worth of requests, and reports every record."""
    import asyncio
    import sys

    records = [forge.forge_record(300 + i) for i in range(70)]
    async with MirrorServer("a") as a:
        for r in records:
            a.put_record(r.bundle())
        conf = write_config(tmp_path, [a.spec()])
        listing = tmp_path / "list.txt"
        listing.write_text("\n".join(r.pith_number for r in records))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pithsync",
            "--config",
            conf,
            "--db",
            str(tmp_path / "s.db"),
            "--json",
            "pull",
            "--from",
            str(listing),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        except TimeoutError:
            proc.kill()
            raise AssertionError("pull did not finish within 60 s") from None
        requests = a.count()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert {r["verdict"] for r in json_lines(out.decode())} == {"in_sync"}
    assert len(json_lines(out.decode())) == 70
    assert requests == 140  # one run's worth of requests


async def test_sync_with_nothing_tracked_prints_valid_json(tmp_path):
    code, out = await run_cli("--db", tmp_path / "empty.db", "sync", "--json")
    assert code == 0
    assert out == ""  # JSON Lines: no record, no line


def test_resolving_a_suffix_or_prefix_uses_the_index(tmp_path):
    # resolve() runs once per record whose full number is not known; a scan per call made a
    # large run quadratic.
    store = Store.open(str(tmp_path / "s.db"))
    try:
        with store.transaction():
            for i in range(3):
                pith = forge.forge_record(900 + i).pith_number
                store.db["records"].insert(
                    {"pith_number": pith, "suffix": pith.split(":")[2], "tracked": 1}
                )
        pith = forge.forge_record(901).pith_number
        suffix = pith.split(":")[2]
        assert store.resolve(suffix) == [pith]
        assert store.resolve(pith) == [pith]
        assert store.resolve(f"pith:{suffix[:8]}") == [pith]
        assert store.resolve("pith:" + "A" * 26) == []
        for query, args in (
            ("select suffix, pith_number from records where suffix in ({})", [suffix]),
            (
                "select pith_number from records where suffix >= ? and suffix < ?",
                [suffix[:8], suffix[:8] + "~"],
            ),
        ):
            assert query in open(store_reads.__file__).read()  # the queries resolve() runs
            query = query.format("?")
            plan = " ".join(
                str(r[-1]) for r in store.db.execute("explain query plan " + query, args).fetchall()
            )
            assert "USING" in plan and "INDEX" in plan, plan
    finally:
        store.close()


def test_resolving_an_alias_in_any_case_uses_the_index_on_its_lower_case(tmp_path):
    # resolve() matches an alias exactly or by lower case; on millions of aliases a scan per
    # call is what an index must spare.
    store = Store.open(str(tmp_path / "s.db"))
    doi, arxiv = forge.forge_record(910).pith_number, forge.forge_record(911).pith_number
    try:
        with store.transaction():
            store.db["aliases"].insert_all(
                [
                    {"alias_kind": "doi", "alias_value": "10.1000/ABC.Def", "pith_number": doi},
                    {"alias_kind": "arxiv", "alias_value": "2601.00911", "pith_number": arxiv},
                ]
            )
        for text in ("10.1000/ABC.Def", "10.1000/abc.def", " 10.1000/ABC.DEF "):
            assert store.resolve(text) == [doi], text
        assert store.resolve("2601.00911") == [arxiv]
        assert store.resolve("10.1000/abc") == [] and store.resolve("2601.0091") == []
        query = "explain query plan " + store_reads.ALIAS_QUERY  # the query resolve() runs
        plan = " ".join(str(r[-1]) for r in store.db.execute(query, ["x"] * 3))
        assert "USING INDEX aliases_lower_value" in plan, plan
    finally:
        store.close()


def test_a_new_store_uses_16k_pages_and_an_old_one_keeps_its_own(tmp_path):
    new = Store.open(str(tmp_path / "new.db"))
    try:
        assert new.db.execute("PRAGMA page_size").fetchone()[0] == 16384
        assert new.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 4096
    finally:
        new.close()
    old_path = tmp_path / "old.db"
    with sqlite3.connect(old_path) as conn:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("create table t (x)")
    old = Store.open(str(old_path))
    try:
        assert old.db.execute("PRAGMA page_size").fetchone()[0] == 4096
        assert old.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 16384  # the same 64 MB
        assert old.schema_version() > 0  # migrated as usual
    finally:
        old.close()


# -- the quick check: a record nothing changed in skips the comparison ------------------------
# core.plan.quick_plan must give exactly what the full path gives, or decline.  Each case syncs
# once (or more) to build a store, then examines the record on two copies of that store, with
# the quick check and without, and compares the result and the write field by field.


def _copy_store(src: str, dst: str) -> None:
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


async def _examine_both_ways(tmp_path, cfg, pith: str) -> tuple[bool, tuple, tuple]:
    from dataclasses import replace as dc_replace

    from pithsync.core.numbers import parse_full
    from pithsync.core.plan import quick_plan
    from pithsync.fetch import Fetcher
    from pithsync.run import engine as engine_module
    from pithsync.run.engine import SyncEngine, Target

    outcomes, taken = [], []
    for quick in (True, False):
        path = str(tmp_path / f"copy-{quick}.db")
        _copy_store(cfg.db_path, path)
        store = Store.open(path)
        try:
            async with Fetcher(cfg.crawl, SyncEngine.policy_for(cfg), sleep=NoSleep()) as fetcher:
                engine = SyncEngine(dc_replace(cfg, db_path=path), store, fetcher)
                engine.quick_check = quick
                if quick:

                    def spy(*a, **kw):
                        out = quick_plan(*a, **kw)
                        taken.append(out is not None)
                        return out

                    engine_module.quick_plan = spy
                number = parse_full(pith)
                result, write, _ = await engine.examine(Target(number.suffix, pith))
        finally:
            engine_module.quick_plan = quick_plan
            store.close()
        outcomes.append((result.to_json(), write))
    return taken == [True], outcomes[0], outcomes[1]


def _hinted(record, base_url: str, upto: int | None = None) -> dict:
    return forge.make_bundle(
        record.record, record.events[: upto or len(record.events)], base_url=base_url
    )


QUICK_CASES = (
    "unchanged",
    "hints_to_configured",
    "hint_elsewhere",
    "store_ahead",
    "equivocation_inside",
    "one_stale",
    "trust_changed",
    "lying_state",
    "one_changed",
    "same_bytes_refetched",
    "cap_below_state",
)


@pytest.mark.parametrize("case", QUICK_CASES)
async def test_quick_check_gives_what_the_full_comparison_gives(tmp_path, case):
    record = forge.forge_record(940, n_events=3)
    pith = record.pith_number
    async with MirrorServer("a") as a, MirrorServer("b") as b, MirrorServer("c") as c:
        follow = case in ("hints_to_configured", "hint_elsewhere")
        cfg = make_config(tmp_path, [a.spec(), b.spec()], follow_hints=follow)
        if case == "hints_to_configured":
            for m in (a, b):
                m.put_record(_hinted(record, a.base_url))
        elif case == "hint_elsewhere":
            hinted = forge.make_bundle(
                record.record,
                record.events,
                base_url=a.base_url,
                mirror_hints=[{"name": "x", "base_url": "http://10.255.255.1"}],
            )
            for m in (a, b):
                m.put_record(hinted)
        elif case == "equivocation_inside":
            left, right = forge.equivocating_pair(record)
            both = forge.make_bundle(
                record.record, [*record.events, left["events"][-1], right["events"][-1]]
            )
            for m in (a, b):
                m.put_record(both)
        else:
            a.put_record(record.bundle())
            if case == "one_stale":
                serve_bad_copy(b, record, "stale")
            elif case == "lying_state":
                serve_bad_copy(b, record, "lying_state_json")
            elif case == "store_ahead":
                b.put_record(record.bundle())
                for m in (a, b):
                    m.put_record(record.bundle(upto=2))
                c.put_record(record.bundle())
            else:
                b.put_record(record.bundle())
        await pull(cfg, pith)
        if (
            case == "store_ahead"
        ):  # the store learns a third event elsewhere; a and b still serve two
            await pull(make_config(tmp_path, [c.spec()]), pith)
        if case == "trust_changed":
            from helpers import OTHER_KEY

            # Another set of pinned keys: what verified under the old set is not known good.
            cfg = make_config(tmp_path, [a.spec(), b.spec()], trust=forge.test_trust(OTHER_KEY))
        if case == "one_changed":
            b.put_record(record.bundle(upto=2))
        if (
            case == "same_bytes_refetched"
        ):  # no validators kept for b: the same bytes come back as a 200
            with sqlite3.connect(cfg.db_path) as conn:
                conn.execute("delete from validators where url like ?", [b.base_url + "%"])
        if case == "cap_below_state":  # the size cap applies to stored bytes as to served ones
            with sqlite3.connect(cfg.db_path) as conn:
                (size,) = conn.execute("select size from documents where kind = 'state'").fetchone()
            cfg = make_config(tmp_path, [a.spec(), b.spec()], max_bytes=size - 1)
        took, quick, full = await _examine_both_ways(tmp_path, cfg, pith)
    assert quick == full
    assert took == (case in ("unchanged", "hints_to_configured")), case


def test_a_run_raises_the_gc_threshold_and_puts_it_back_even_on_failure():
    import gc

    from pithsync.run.engine import GC_THRESHOLD, rare_gc_passes

    before = gc.get_threshold()
    with pytest.raises(RuntimeError):
        with rare_gc_passes():
            assert gc.get_threshold() == (GC_THRESHOLD, *before[1:])
            raise RuntimeError("a run that fails")
    assert gc.get_threshold() == before


def test_a_syncs_event_loop_is_uvloop_where_uvloop_exists():
    # pyproject makes uvloop a dependency on every platform but Windows, so on those it must be
    # installed, and run_event_loop (through which commands.py and each worker in shards.py run
    # the engine) must run on it.
    import asyncio
    import sys

    from pithsync.run.engine import run_event_loop

    async def loop_type() -> str:
        return type(asyncio.get_running_loop()).__module__

    if sys.platform == "win32":
        assert run_event_loop(loop_type).startswith("asyncio")
    else:
        assert run_event_loop(loop_type) == "uvloop"


def test_a_record_or_group_rolled_back_inside_a_batch_is_written_not_at_all(tmp_path):
    """A write is atomic: a record whose alerts fail is taken back, and with it every record of
    its group (Store.group).  The journal's head is kept in memory while a batch is open, and
    the next write must not be chained to entries that are gone."""
    from pithsync.store import MirrorRow, RecordWrite

    store = Store.open(str(tmp_path / "j.db"))
    run_id = store.begin_run("test")

    def write(n: int) -> RecordWrite:
        w = RecordWrite(pith_number=f"pith:2026:{'A' * 25}{n}", verdict="in_sync", tracked=True)
        w.mirrors.append(MirrorRow("http://m.example", "m", True, "ok", []))
        return w

    def write_group(numbers: list[int], broken: bool = False) -> None:
        with store.group(batch_records=10):
            store.write_rows(run_id, [write(n) for n in numbers])
            if broken:  # as a record's alerts would, after the group's rows
                raise RuntimeError("alert bug")

    store.write_record(run_id, write(1), batch_records=10)
    with pytest.raises(RuntimeError):
        write_group([2], broken=True)
    store.write_record(run_id, write(3), batch_records=10)
    with pytest.raises(RuntimeError):
        write_group([4, 5, 6], broken=True)
    store.write_records(run_id, [write(7)], batch_records=10)
    store.commit_batch()
    store.finish_run(run_id, 0, {})
    assert store.verify_journal() == []
    kept = [write(n).pith_number for n in (1, 3, 7)]
    assert [e["pith_number"] for e in store.journal() if e["kind"] == "record_outcome"] == kept
    assert [r["pith_number"] for r in store.records()] == kept
    assert store.db.execute("select count(*) from mirror_status").fetchone()[0] == 3


_VOLATILE = {
    "first_seen",
    "last_seen",
    "updated_at",
    "checked_at",
    "observed_at",
    "at",
    "run_id",
    "opened_at",
    "opened_run_id",
    "created_at",
    "prev_sha256",
    "entry_sha256",
    "payload",
    # the schedule's times (unix seconds)
    "next_due",
    "last_checked",
    "discovered_at",
    "hash",  # log_nodes: hashes of statements, which carry their time
}


def _expanded(value):
    """A stored body (a zstd frame) as its bytes; any other value as it is."""
    if isinstance(value, bytes) and value.startswith(b"\x28\xb5\x2f\xfd"):
        return bodies.expand(value)
    return value


def _timeless(row: tuple) -> tuple:
    """A row with any observation statement in it (stored compressed) read without its time."""
    return tuple(
        {k: v for k, v in json.loads(x).items() if k != "observed_at"}.items()
        if isinstance(x, bytes) and x.startswith(b'{"events"')
        else x
        for x in map(_expanded, row)
    )


def _contents(path: str) -> dict[str, list[tuple]]:
    """Every row of every table but the run's own, without the columns that hold times or
    run ids."""
    conn = sqlite3.connect(path)
    try:
        out = {}
        for (table,) in conn.execute(
            "select name from sqlite_master where type = 'table' and name not in ('runs', 'meta')"
        ):
            columns = [
                c[1] for c in conn.execute(f"pragma table_info({table})") if c[1] not in _VOLATILE
            ]
            rows = conn.execute(f"select {', '.join(columns)} from {table}").fetchall()
            if table == "log_checks":  # each record check's statements, framed in one blob
                rows = [(*r[:-1], *bodies.expand_statements(r[-1], len(r[-2]) // 2)) for r in rows]
            out[table] = sorted((_timeless(r) for r in rows), key=repr)
        return out
    finally:
        conn.close()


class _Capture:
    """A RecordOutlet that keeps what the engine hands it."""

    def __init__(self, into: list):
        self.into = into

    def commit(self, run_id, result, write) -> None:
        self.into.append((result, write))

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def test_records_written_as_one_group_store_what_one_at_a_time_stores(tmp_path):
    """A worker's message of records is written as one group (RecordSink.commit_many), the
    in-process engine's records one at a time: every table must end up the same, evidence,
    alerts and a record named twice included."""
    from pithsync.fetch import Fetcher
    from pithsync.run.engine import SyncEngine, Target
    from pithsync.run.sink import RecordSink

    records = [forge.forge_record(i, n_events=3) for i in range(40, 46)]
    captured = []
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        for i, r in enumerate(records):
            a.put_record(r.bundle())
            if i % 3 == 2:
                b.put_record(r.bundle())
            else:
                serve_bad_copy(b, r, ("tampered", "stale")[i % 3])
        cfg = make_config(tmp_path, [a.spec(), b.spec()])
        scratch = Store.open(str(tmp_path / "scratch.db"))
        async with Fetcher(cfg.crawl, SyncEngine.policy_for(cfg), sleep=NoSleep()) as fetcher:
            engine = SyncEngine(cfg, scratch, fetcher, sink=_Capture(captured))
            await engine.run("capture", [Target(r.suffix, r.pith_number) for r in records])
    assert len(captured) == len(records) and {r.verdict.value for r, _ in captured} == {
        "in_sync",
        "diverged",
    }
    captured.append(captured[0])  # the same record again, in the same group

    def written(name: str, commit) -> dict:
        store = Store.open(str(tmp_path / name))
        run_id = store.begin_run("test")
        sink = RecordSink(cfg, store, observer="observer.test")
        commit(sink, run_id)
        sink.finish()
        store.finish_run(run_id, 0, {})
        assert store.verify_journal() == []
        store.close()
        return _contents(str(tmp_path / name))

    one_by_one = written(
        "one.db", lambda sink, run_id: [sink.commit(run_id, r, w) for r, w in captured]
    )
    grouped = written("group.db", lambda sink, run_id: sink.commit_many(run_id, captured))
    assert one_by_one == grouped
    assert len(grouped["records"]) == len(records) and grouped["evidence"] and grouped["alerts"]
    leaves = sum(len(row) - 3 for row in grouped["log_checks"])  # a statement per leaf
    assert leaves == 2 * len(captured)  # one per record and mirror
