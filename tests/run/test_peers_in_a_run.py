"""Peers in a real run (issue 17): a peer observer's log served from 127.0.0.1 by PeerLog,
checked at the start of the run, and its statements compared with what this observer saw."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import anyio
import pytest
from synctools import make_config

from pithsync.base.clock import utcnow
from pithsync.base.exits import ExitCode
from pithsync.config import PeerSpec
from pithsync.core.numbers import parse_full
from pithsync.core.observation import CHECKPOINT_PATH, record_path
from pithsync.run import sync_records
from pithsync.run.results import Target
from pithsync.store import Store
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer, closed_port_url
from pithsync.testing.peer import PeerLog, observer_signer

OTHER_EVENT = "sha256:" + "f" * 64


@pytest.fixture
def record():
    return forge.forge_record(1, n_events=3)


def peer_spec(peer: PeerLog, window_s: float = 86400.0) -> PeerSpec:
    return PeerSpec(peer.name, peer.base_url, peer.verifier_key, window_s)


def configured(tmp_path, mirror: MirrorServer, *peers: PeerSpec):
    return dataclasses.replace(make_config(tmp_path, [mirror.spec()]), peers=tuple(peers))


async def run(cfg, record):
    """One `pull` of the record through sync_records (the real run, its own event loop, in a
    thread while the test's servers serve); returns (outcome, result)."""
    results = []

    def call():
        store = Store.open(cfg.db_path)
        try:
            target = Target(record.suffix, record.pith_number, 0)
            return sync_records(cfg, store, [target], "pull", on_record=results.append)
        finally:
            store.close()

    outcome = await anyio.to_thread.run_sync(call)
    return outcome, results[0]


def rows(cfg, query: str, *args) -> list[dict]:
    with sqlite3.connect(cfg.db_path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(query, args)]


def event_ids(bundle) -> list[str]:
    return [e["event_id"] for e in bundle["events"]]


def observe_honestly(peer: PeerLog, mirror: MirrorServer, record, upto: int | None = None):
    bundle = record.bundle(upto=upto)
    pith = record.pith_number
    peer.observe(
        pith, mirror.base_url, event_ids(bundle), bundle["state"]["state_sha256"], utcnow()
    )


def status_of(result) -> str:
    (m,) = result.mirrors
    return m.status.value


# -- the peer's log, checked at the start of the run --------------------------------------------


async def test_a_consistent_growing_peer_log_gives_no_finding(tmp_path, record):
    async with MirrorServer("a") as mirror, PeerLog("b") as peer:
        mirror.put_record(record.bundle())
        for i in range(300):  # past one tile, so that growing needs a level-0 and a partial tile
            peer.observe(
                forge.forge_record(100 + i).pith_number, mirror.base_url, [], None, utcnow()
            )
        observe_honestly(peer, mirror, record)
        peer.publish()
        cfg = configured(tmp_path, mirror, peer_spec(peer))
        outcome, result = await run(cfg, record)
        assert (outcome.code, status_of(result)) == (ExitCode.OK, "ok")
        assert rows(cfg, "select size from peer_checkpoints") == [{"size": 301}]
        observe_honestly(peer, mirror, record)
        peer.publish()
        outcome, result = await run(cfg, record)
        tiles_asked = [r.path for r in peer.requests if "/tile/" in r.path]
    assert (outcome.code, status_of(result)) == (ExitCode.OK, "ok")
    assert rows(cfg, "select size from peer_checkpoints") == [{"size": 302}]
    assert tiles_asked, "the second run proved consistency from the peer's tiles"
    assert rows(cfg, "select * from peer_rewrites") == []
    assert rows(cfg, "select * from alerts") == []
    checked = rows(cfg, "select status, mirror from journal where kind = 'peer_checked'")
    assert checked == [{"status": "ok", "mirror": peer.base_url}] * 2


def rewrite_same_size(peer: PeerLog, mirror, record) -> None:
    peer.truncate(len(peer.entries) - 1)
    peer.observe(record.pith_number, mirror.base_url, [OTHER_EVENT], "e" * 64, utcnow())


def rewrite_smaller(peer: PeerLog, mirror, record) -> None:
    peer.truncate(len(peer.entries) - 1)


def rewrite_history_and_grow(peer: PeerLog, mirror, record) -> None:
    # Entry 0 rewritten, then more appended: a larger tree that does not extend the old one.
    peer.rewrite_leaf(0, peer_statement(peer, mirror, record, [OTHER_EVENT], "d" * 64))
    observe_honestly(peer, mirror, record)


def peer_statement(peer, mirror, record, events, state):
    from pithsync.core.observation import Fetch, statement

    pith = parse_full(record.pith_number)
    fetched = [Fetch(mirror.base_url + "/x", 200, "0" * 64)]
    return statement(
        peer.signer.name, pith, mirror.base_url, fetched, events, state, "ok", utcnow()
    )


@pytest.mark.parametrize(
    ("rewrite", "how"),
    [
        (rewrite_same_size, "other_root"),
        (rewrite_smaller, "shrank"),
        (rewrite_history_and_grow, "inconsistent"),
    ],
)
async def test_a_rewritten_peer_log_is_reported_with_both_checkpoints(
    tmp_path, record, rewrite, how
):
    async with MirrorServer("a") as mirror, PeerLog("b") as peer:
        mirror.put_record(record.bundle())
        peer.observe(forge.forge_record(9).pith_number, mirror.base_url, [], None, utcnow())
        observe_honestly(peer, mirror, record)
        old_note = peer.publish()
        cfg = configured(tmp_path, mirror, peer_spec(peer))
        await run(cfg, record)
        rewrite(peer, mirror, record)
        new_note = peer.publish()
        outcome, result = await run(cfg, record)
        again, _ = await run(cfg, record)  # still rewritten: journaled, not alerted twice
    # Decided: a peer's rewrite is the peer's, not the mirrors': the records' verdicts decide
    # the exit code; the rewrite is an alert, a journal entry and kept evidence.
    assert (outcome.code, again.code, status_of(result)) == (ExitCode.OK, ExitCode.OK, "ok")
    found = rows(cfg, "select how, old_checkpoint, new_checkpoint, url from peer_rewrites")
    assert found[0] == {
        "how": how,
        "old_checkpoint": old_note,
        "new_checkpoint": new_note,
        "url": peer.base_url,
    }
    alerts = rows(cfg, "select kind, scope, state, payload from alerts")
    assert [(a["kind"], a["state"]) for a in alerts] == [("peer_rewritten", "open")]
    payload = json.loads(alerts[0]["payload"])
    assert payload["checkpoints"] == {"old": old_note.decode(), "new": new_note.decode()}
    journal = rows(cfg, "select status, detail from journal where kind = 'peer_rewritten'")
    assert [j["status"] for j in journal] == [how, how]
    assert json.loads(journal[0]["detail"])["new_checkpoint"] == new_note.decode()
    # The stored checkpoint stays the last consistent one: the rewrite is never accepted.
    assert rows(cfg, "select checkpoint from peer_checkpoints") == [{"checkpoint": old_note}]


# -- statements refused -------------------------------------------------------------------------


def fork_seen_by(peer: PeerLog, mirror, record) -> None:
    bundle = record.bundle()
    events = [*event_ids(bundle)[:2], OTHER_EVENT]
    peer.observe(record.pith_number, mirror.base_url, events, "b" * 64, utcnow())


def bad_proof(peer: PeerLog, record) -> None:
    path = "/" + record_path(parse_full(record.pith_number))
    obj = json.loads(peer.resources[path].body)
    obj["statements"][0]["proof"][0] = "A" * 43 + "="
    peer.put_json(path, obj)


def other_key_checkpoint(peer: PeerLog, record) -> None:
    path = "/" + record_path(parse_full(record.pith_number))
    obj = json.loads(peer.resources[path].body)
    impostor = observer_signer("impostor")
    forged = peer.signed_checkpoint(signer=dataclasses.replace(impostor, name=peer.signer.name))
    obj["checkpoint"] = forged.decode()
    peer.put_json(path, obj)


def edited_statement(peer: PeerLog, record) -> None:
    path = "/" + record_path(parse_full(record.pith_number))
    obj = json.loads(peer.resources[path].body)
    obj["statements"][0]["statement"] = obj["statements"][0]["statement"].replace(
        '"mirror_status":"ok"', '"mirror_status":"stale"'
    )
    peer.put_json(path, obj)


@pytest.mark.parametrize("spoil", [bad_proof, other_key_checkpoint, edited_statement])
async def test_a_statement_that_does_not_verify_is_never_compared(tmp_path, record, spoil):
    async with MirrorServer("a") as mirror, PeerLog("b") as peer:
        mirror.put_record(record.bundle())
        peer.observe(forge.forge_record(9).pith_number, mirror.base_url, [], None, utcnow())
        fork_seen_by(peer, mirror, record)
        peer.publish()
        spoil(peer, record)
        cfg = configured(tmp_path, mirror, peer_spec(peer))
        outcome, result = await run(cfg, record)
    assert (outcome.code, status_of(result)) == (ExitCode.OK, "ok")
    assert rows(cfg, "select * from alerts") == []


async def test_a_checkpoint_signed_by_another_key_is_refused_and_the_run_goes_on(tmp_path, record):
    async with MirrorServer("a") as mirror, PeerLog("b") as peer:
        mirror.put_record(record.bundle())
        fork_seen_by(peer, mirror, record)
        impostor = dataclasses.replace(observer_signer("impostor"), name=peer.signer.name)
        peer.publish(checkpoint=peer.signed_checkpoint(signer=impostor))
        cfg = configured(tmp_path, mirror, peer_spec(peer))
        outcome, result = await run(cfg, record)
        asked = [r.path for r in peer.requests]
    assert (outcome.code, status_of(result)) == (ExitCode.OK, "ok")
    assert asked == ["/" + CHECKPOINT_PATH], "a peer refused at the start is not asked again"
    journal = rows(cfg, "select status, detail from journal where kind = 'peer_checked'")
    assert journal[0]["status"] == "unusable"
    assert "checkpoint refused" in json.loads(journal[0]["detail"])["error"]
    assert rows(cfg, "select * from peer_checkpoints") == []


async def test_an_unreachable_or_garbage_peer_never_blocks_the_run(tmp_path, record):
    async with MirrorServer("a") as mirror, PeerLog("garbage") as garbage:
        mirror.put_record(record.bundle())
        garbage.put("/" + CHECKPOINT_PATH, b"<html>not a checkpoint</html>", "text/html")
        down = PeerSpec("down", closed_port_url(), observer_signer("down").verifier_key)
        cfg = configured(tmp_path, mirror, down, peer_spec(garbage))
        outcome, result = await run(cfg, record)
    assert (outcome.code, status_of(result)) == (ExitCode.OK, "ok")
    journal = rows(cfg, "select mirror, status from journal where kind = 'peer_checked'")
    assert sorted((j["mirror"], j["status"]) for j in journal) == sorted(
        [(down.url, "unusable"), (garbage.base_url, "unusable")]
    )


# -- split views --------------------------------------------------------------------------------


async def test_a_forked_history_seen_by_a_peer_is_a_split_view(tmp_path, record):
    async with MirrorServer("a") as mirror, PeerLog("b") as peer:
        mirror.put_record(record.bundle())
        fork_seen_by(peer, mirror, record)
        peer.publish()
        cfg = configured(tmp_path, mirror, peer_spec(peer))
        outcome, result = await run(cfg, record)
        again, _ = await run(cfg, record)
    assert (outcome.code, again.code) == (ExitCode.FAILED, ExitCode.FAILED)
    assert (result.verdict.value, status_of(result)) == ("diverged", "split_view")
    (reason,) = [r for r in result.mirrors[0].reasons if r["code"] == "split_view"]
    assert "peer b" in reason["message"] and "b" * 64 in reason["message"]
    assert result.state_sha256 in reason["message"]
    alerts = rows(cfg, "select kind, mirror, state from alerts")
    assert alerts == [{"kind": "split_view", "mirror": mirror.base_url, "state": "open"}]
    journal = rows(cfg, "select status from journal where kind = 'record_outcome'")
    assert [j["status"] for j in journal] == ["diverged", "diverged"]


async def test_the_same_events_with_another_state_is_a_split_view(tmp_path, record):
    async with MirrorServer("a") as mirror, PeerLog("b") as peer:
        mirror.put_record(record.bundle())
        peer.observe(
            record.pith_number, mirror.base_url, event_ids(record.bundle()), "c" * 64, utcnow()
        )
        peer.publish()
        cfg = configured(tmp_path, mirror, peer_spec(peer))
        outcome, result = await run(cfg, record)
    assert (outcome.code, status_of(result)) == (ExitCode.FAILED, "split_view")


async def test_a_subset_history_is_lag_not_a_split_view(tmp_path, record):
    async with MirrorServer("a") as mirror, PeerLog("b") as peer:
        mirror.put_record(record.bundle())
        observe_honestly(peer, mirror, record, upto=2)
        peer.publish()
        cfg = configured(tmp_path, mirror, peer_spec(peer))
        outcome, result = await run(cfg, record)
    assert (outcome.code, status_of(result)) == (ExitCode.OK, "ok")
    assert rows(cfg, "select * from alerts") == []


async def test_a_split_view_outside_the_peers_window_is_not_compared(tmp_path, record):
    async with MirrorServer("a") as mirror, PeerLog("b") as peer:
        mirror.put_record(record.bundle())
        events = [*event_ids(record.bundle())[:2], OTHER_EVENT]
        peer.observe(record.pith_number, mirror.base_url, events, "b" * 64, "2020-01-01T00:00:00Z")
        peer.publish()
        cfg = configured(tmp_path, mirror, peer_spec(peer))
        outcome, result = await run(cfg, record)
    assert (outcome.code, status_of(result)) == (ExitCode.OK, "ok")


async def test_a_split_view_alert_resolves_once_the_views_agree_again(tmp_path, record):
    async with MirrorServer("a") as mirror, PeerLog("b") as peer:
        mirror.put_record(record.bundle())
        fork_seen_by(peer, mirror, record)
        peer.publish()
        cfg = configured(tmp_path, mirror, peer_spec(peer))
        await run(cfg, record)
        observe_honestly(peer, mirror, record)  # the peer's latest statement for the mirror
        peer.publish()
        outcome, result = await run(cfg, record)
    assert (outcome.code, status_of(result)) == (ExitCode.OK, "ok")
    alerts = rows(cfg, "select kind, state from alerts")
    assert alerts == [{"kind": "split_view", "state": "resolved"}]


async def test_a_record_file_under_a_newer_checkpoint_is_proven_consistent_first(tmp_path, record):
    # The peer grew after this run read its checkpoint: the record file's larger checkpoint is
    # accepted once its tiles prove it extends the one checked, and refused when they do not.
    async with MirrorServer("a") as mirror, PeerLog("b") as peer:
        mirror.put_record(record.bundle())
        peer.observe(forge.forge_record(9).pith_number, mirror.base_url, [], None, utcnow())
        checked = peer.publish()
        fork_seen_by(peer, mirror, record)
        peer.publish()
        peer.put("/" + CHECKPOINT_PATH, checked, "text/plain; charset=utf-8")
        cfg = configured(tmp_path, mirror, peer_spec(peer))
        outcome, result = await run(cfg, record)
        assert (outcome.code, status_of(result)) == (ExitCode.FAILED, "split_view")

        peer.rewrite_leaf(0, peer_statement(peer, mirror, record, [OTHER_EVENT], "d" * 64))
        peer.publish()
        peer.put("/" + CHECKPOINT_PATH, checked, "text/plain; charset=utf-8")
        outcome, result = await run(cfg, record)
    assert status_of(result) == "ok", "a record file of a forked log is never compared"
