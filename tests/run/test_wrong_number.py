"""A reference with the wrong year (issue 14): nothing is stored under a number the verified
record does not have, the user is told the true number, and old stores are healed."""

from __future__ import annotations

import contextlib
import json
import sqlite3

import pytest
from helpers import SEED_DIR, store_bodies_as_schema3
from synctools import json_lines, run_cli, write_config

from pithsync import cli
from pithsync.core import numbers, strictjson
from pithsync.core.canonical import canon
from pithsync.core.merge import merge_state
from pithsync.store import EncodedState, RecordWrite, Store, WrongNumberError
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer

SEED = "000_919069ef98e1b946.txt"
TRUE = "pith:2026:JTEVEPWHOAFN5TRRVEXHEIPZ22"
SUFFIX = TRUE.split(":")[2]


def serve_seed(m: MirrorServer) -> None:
    body = (SEED_DIR / SEED).read_bytes()
    bundle = strictjson.loads_object(body)
    m.put_bundle(SUFFIX, body)
    m.put_state(SUFFIX, forge.dumps(bundle["state"]))


async def run(conf: str, db: str, *argv) -> tuple[int, str]:
    """pithsync with this config and store, in process."""
    return await run_cli("--config", conf, "--db", db, *argv)


TABLES = (
    "records",
    "aliases",
    "documents",
    "events",
    "mirror_status",
    "verified_copies",
    "evidence",
)


def numbers_in(db: str) -> dict[str, list[str]]:
    """Every pith number each table holds."""
    with sqlite3.connect(db) as conn:
        return {
            t: sorted({r[0] for r in conn.execute(f"select pith_number from {t}")}) for t in TABLES
        }


@pytest.mark.parametrize("year", ["1999", "2025", "2027", "9999"])
async def test_wrong_year_is_a_usage_error_naming_the_true_number(tmp_path, year):
    wrong = f"pith:{year}:{SUFFIX}"
    db = str(tmp_path / "s.db")
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        serve_seed(a)
        serve_seed(b)
        conf = write_config(tmp_path, [a.spec(), b.spec()])
        code, out = await run(conf, db, "pull", wrong)
        assert code == cli.ExitCode.USAGE, out
        assert f"{wrong}  wrong_number" in out and f"are {TRUE}" in out
        assert "a=" not in out and "b=" not in out  # no mirror is blamed for a typo
        stored = numbers_in(db)
        assert all(wrong not in found for found in stored.values()), stored

        code, out = await run(conf, db, "pull", "--json", wrong)
        assert code == cli.ExitCode.USAGE
        (rec,) = json_lines(out)
        assert rec["verdict"] == "wrong_number" and rec["true_number"] == TRUE
        assert rec["mirrors"] == []

        code, out = await run(conf, db, "pull", "--json", TRUE)
        assert code == 0, out
        assert json_lines(out)[0]["verdict"] == "in_sync"
        # Now the store knows the record: the wrong year is answered from it, without a fetch.
        fetched = a.count()
        code, out = await run(conf, db, "pull", wrong)
        assert code == cli.ExitCode.USAGE and f"are {TRUE}" in out
        assert a.count() == fetched
        code, out = await run(conf, db, "pull", "pith:JTEVEPWH")
        assert code == 0, out
    assert {n for found in numbers_in(db).values() for n in found} == {TRUE}
    code, out = await run_cli("--db", db, "journal", "verify")
    assert code == 0, out


async def test_a_forged_record_with_a_wrong_year_beside_good_and_diverged_records(tmp_path):
    """Exit 2 wins over a divergence in the same pull; the other records are still synced."""
    good, bad = forge.forge_record(41, 2), forge.forge_record(42, 3)
    wrong = f"pith:1999:{good.suffix}"
    db = str(tmp_path / "s.db")
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        for m in (a, b):
            m.put_record(good.bundle())
        a.put_record(bad.bundle())
        b.put_record(bad.bundle(upto=2))
        conf = write_config(tmp_path, [a.spec(), b.spec()])
        code, out = await run(conf, db, "pull", "--json", wrong, bad.pith_number)
    assert code == cli.ExitCode.USAGE, out
    recs = {r["pith_number"]: r for r in json_lines(out)}
    assert recs[wrong]["verdict"] == "wrong_number"
    assert recs[wrong]["true_number"] == good.pith_number
    assert recs[bad.pith_number]["verdict"] == "diverged"
    assert numbers_in(db)["records"] == [bad.pith_number]


async def test_year_0000_is_refused_not_rewritten(tmp_path, capsys):
    db = str(tmp_path / "s.db")
    async with MirrorServer("a") as a:
        serve_seed(a)
        conf = write_config(tmp_path, [a.spec()])
        code, out = await run(conf, db, "pull", f"pith:0000:{SUFFIX}")
        assert code == cli.ExitCode.USAGE
        assert "year 0000" in capsys.readouterr().err
        assert a.count() == 0
    with pytest.raises(numbers.InvalidPithNumber, match="0000"):
        numbers.parse_ref(f"pith:0000:{SUFFIX}")


async def test_a_typed_number_waiting_for_its_record_takes_the_verified_one(tmp_path):
    """A tracked row without a record (pulled while no mirror had it) holds a typed number; when
    the record appears, sync moves the row to the verified number, and journals it."""
    record = forge.forge_record(43, 2)
    wrong = f"pith:2025:{record.suffix}"
    db = str(tmp_path / "s.db")
    async with MirrorServer("a") as a:
        conf = write_config(tmp_path, [a.spec()])
        code, _ = await run(conf, db, "pull", wrong)
        assert code == cli.ExitCode.UNVERIFIABLE
        assert numbers_in(db)["records"] == [wrong]
        a.put_record(record.bundle())
        code, out = await run(conf, db, "sync", "--json")
        assert code == 0, out
        assert json_lines(out)[0]["pith_number"] == record.pith_number
        code, out = await run(conf, db, "pull", "--json", record.pith_number)
        assert code == 0 and json_lines(out)[0]["verdict"] == "in_sync"
    assert {n for found in numbers_in(db).values() for n in found} == {record.pith_number}
    with contextlib.closing(Store.open(db)) as store:
        moved = [e for e in store.journal() if e["kind"] == "record_renumbered"]
        moves = [(e["pith_number"], json.loads(e["detail"])["from"]) for e in moved]
        assert moves == [(record.pith_number, wrong)]
        assert store.verify_journal() == []


def renumber_the_old_way(db: str, true: str, wrong: str) -> None:
    """Make a store hold `true`'s record under `wrong`, as versions before schema 3 wrote it: every
    row under the typed number, the state merged under it, schema version 2."""
    with sqlite3.connect(db) as conn:
        store_bodies_as_schema3(conn)
        for table in TABLES:
            conn.execute(f"update {table} set pith_number = ? where pith_number = ?", [wrong, true])
        record, aliases = conn.execute(
            "select canonical_record, source_aliases from records"
        ).fetchone()
        events = [json.loads(b) for (b,) in conn.execute("select body from events")]
        state = merge_state(wrong, json.loads(record), json.loads(aliases), events, {})
        conn.execute(
            "update records set state = ?, state_sha256 = ?",
            [canon(state).decode(), state["state_sha256"]],
        )
        conn.execute("drop table record_checks")  # schema 3's
        for table in (
            "log_checks",
            "log_mirrors",
            "log_nodes",
            "log_checkpoints",
            "peer_checkpoints",
            "peer_rewrites",
        ):  # schemas 6, 7 and 9
            conn.execute(f"drop table {table}")
        conn.execute("update meta set value = '2' where key = 'schema_version'")


async def test_a_store_holding_a_wrong_year_row_is_healed_and_journaled(tmp_path):
    record = forge.forge_record(44, 3)
    wrong = f"pith:1999:{record.suffix}"
    db = str(tmp_path / "s.db")
    async with MirrorServer("a") as a:
        a.put_record(record.bundle())
        conf = write_config(tmp_path, [a.spec()])
        code, out = await run(conf, db, "pull", record.pith_number)
        assert code == 0, out
        renumber_the_old_way(db, record.pith_number, wrong)
        assert numbers_in(db)["records"] == [wrong]

        # Any command opens (and so heals) the store.
        code, out = await run_cli("--db", db, "status", "--json")
        assert code == 0
        assert [r["pith_number"] for r in json.loads(out)["records"]] == [record.pith_number]
        assert {n for found in numbers_in(db).values() for n in found} == {record.pith_number}
        with contextlib.closing(Store.open(db)) as store:
            moved = [e for e in store.journal() if e["kind"] == "record_renumbered"]
            moves = [(e["pith_number"], json.loads(e["detail"])) for e in moved]
            assert moves == [(record.pith_number, {"from": wrong, "reason": "wrong_year"})]
            # The state is the merge under the true number again: the mirror's state.json.
            served = record.bundle()["state"]["state_sha256"]
            assert store.record(record.pith_number)["state_sha256"] == served
            assert store.resolve(record.suffix[:8]) == [record.pith_number]
            # The last check, filled from the journal, follows the record to its number.
            assert store.last_check(record.pith_number)[0] == "in_sync"
        code, out = await run(conf, db, "pull", "--json", record.pith_number)
        assert code == 0, out
        assert json_lines(out)[0]["verdict"] == "in_sync"
    code, out = await run_cli("--db", db, "journal", "verify")
    assert code == 0 and "intact" in out


def test_the_store_refuses_a_state_under_another_number(tmp_path):
    record = forge.forge_record(45, 2)
    bundle = record.bundle()
    state = EncodedState.of(bundle["canonical_record"], bundle["source_aliases"], bundle["state"])
    with contextlib.closing(Store.open(str(tmp_path / "s.db"))) as store:
        run_id = store.begin_run("test")
        for year in (1999, 2025, 9999):
            w = RecordWrite(f"pith:{year}:{record.suffix}", "in_sync", tracked=True, state=state)
            with pytest.raises(WrongNumberError, match=record.pith_number):
                store.write_record(run_id, w)
        assert store.records() == []
        store.write_record(run_id, RecordWrite(record.pith_number, "in_sync", True, state=state))
        # A typed number for a suffix whose verified record is stored is refused too.
        with pytest.raises(WrongNumberError, match=record.pith_number):
            typed = RecordWrite(f"pith:2025:{record.suffix}", "unverifiable", tracked=True)
            store.write_record(run_id, typed)
        assert [r["pith_number"] for r in store.records()] == [record.pith_number]


# -- untrack, and status's last check (issue 14, items 2 and 3) --------------------------------


async def test_untrack_keeps_history_sync_skips_it_pull_tracks_it_again(tmp_path, capsys):
    kept, dropped = forge.forge_record(46, 2), forge.forge_record(47, 3)
    db = str(tmp_path / "s.db")
    async with MirrorServer("a") as a:
        for r in (kept, dropped):
            a.put_record(r.bundle())
        conf = write_config(tmp_path, [a.spec()])
        code, out = await run(conf, db, "pull", kept.pith_number, dropped.pith_number)
        assert code == 0, out
        before = numbers_in(db)
        code, out = await run(conf, db, "untrack", dropped.suffix[:8])
        assert code == 0 and f"untracked  {dropped.pith_number}" in out
        assert numbers_in(db) == before  # records, events, documents: all kept
        code, out = await run(conf, db, "status", "--json", dropped.pith_number)
        assert json.loads(out)["tracked"] is False and json.loads(out)["event_count"] == 3

        code, out = await run(conf, db, "sync", "--json")
        assert code == 0
        assert [r["pith_number"] for r in json_lines(out)] == [kept.pith_number]
        code, out = await run(conf, db, "untrack", "pith:ZZZZZZZZ")
        assert code == cli.ExitCode.USAGE
        assert "cannot untrack 'pith:ZZZZZZZZ'" in capsys.readouterr().err

        code, out = await run(conf, db, "pull", dropped.pith_number)
        assert code == 0, out
        code, out = await run(conf, db, "sync", "--json")
        synced = sorted(r["pith_number"] for r in json_lines(out))
        assert synced == sorted([kept.pith_number, dropped.pith_number])
    with contextlib.closing(Store.open(db)) as store:
        untracked = [e for e in store.journal() if e["kind"] == "record_untracked"]
        assert [e["pith_number"] for e in untracked] == [dropped.pith_number]
        assert store.verify_journal() == []


async def test_status_shows_each_records_last_verdict_and_check(tmp_path):
    good, bad = forge.forge_record(48, 2), forge.forge_record(49, 3)
    db = str(tmp_path / "s.db")
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        for m in (a, b):
            m.put_record(good.bundle())
        a.put_record(bad.bundle())
        b.put_record(bad.bundle(upto=2))
        conf = write_config(tmp_path, [a.spec(), b.spec()])
        code, _ = await run(conf, db, "pull", bad.pith_number, good.pith_number)
        assert code == cli.ExitCode.FAILED
    code, out = await run_cli("--db", db, "status", "--json")
    recs = json.loads(out)["records"]
    assert [r["pith_number"] for r in recs] == sorted([good.pith_number, bad.pith_number])
    by = {r["pith_number"]: r for r in recs}
    assert by[good.pith_number]["last_verdict"] == "in_sync"
    assert by[bad.pith_number]["last_verdict"] == "diverged"
    assert all(r["tracked"] is True and r["last_checked"] for r in recs)
    code, out = await run_cli("--db", db, "status", "--json", bad.pith_number)
    one = json.loads(out)
    assert one["tracked"] is True and one["last_verdict"] == "diverged"
    assert one["last_checked"] == by[bad.pith_number]["last_checked"]
    code, out = await run_cli("--db", db, "status")
    lines = out.splitlines()
    header = [
        "pith_number",
        "tracked",
        "events",
        "state_sha256",
        "updated",
        "last_verdict",
        "last_checked",
    ]
    assert lines[0].split() == header
    assert any(line.startswith(bad.pith_number) and " diverged " in line for line in lines)
    code, out = await run_cli("--db", db, "status", bad.pith_number)
    assert "last_verdict=diverged" in out and "tracked=True" in out
