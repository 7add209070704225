"""A split view caught end to end (issue 17, "Done means" 1): two pithsync observers on one
machine, each the other's peer, and one mirror that shows each its own validly signed history.

The order of the runs: A pulls first (B's log is still empty: the peer is journaled as unusable
and skipped), so A's log holds A's statement of fork L.  B pulls: it proves A's statement from
A's log and sees fork R itself: split_view.  A pulls again: B's log now proves B saw R: A finds
the split view too.  Each raises one split_view alert and exits 1 on the run that finds it.
A's evidence file then verifies on a third, fresh store that pins only the two observer keys
(and the forge key as the registry key), and every single-field edit of it fails.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web
from synctools import ALWAYS_DUE_TOML, run_cli

from pithsync import evidence
from pithsync.base.exits import ExitCode
from pithsync.config import Config
from pithsync.core.note import VerifierKey
from pithsync.core.verify import Verifier
from pithsync.publishing.localmirror import LOCALHOST
from pithsync.publishing.server import build_app
from pithsync.store import Store
from pithsync.testing import forge
from pithsync.testing.mirror import SplitViewMirror

TRUST_TOML = (
    f'[[trust.keys]]\nkey_id = "{forge.TEST_KEY.key_id}"\n'
    f'public_key_b64 = "{forge.TEST_KEY.public_key_b64}"\n\n'
)


class Instance:
    """One pithsync observer: its store, its key, its `serve` app on 127.0.0.1."""

    def __init__(self, root: Path, label: str):
        self.label = label
        root.mkdir()
        self.db = str(root / "pithsync.db")
        self.conf = str(root / "pithsync.toml")
        Store.open(self.db).close()  # `serve` reads an existing store
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.vkey = ""

    async def serve(self) -> None:
        app = build_app(Config(trust=forge.test_trust(), db_path=self.db), refresh_s=0.0)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, LOCALHOST, 0)
        await site.start()
        self.url = f"http://{LOCALHOST}:{site._server.sockets[0].getsockname()[1]}"

    async def observer_key(self) -> None:
        code, text = await run_cli("--config", self.conf, "--db", self.db, "observer", "--json")
        assert code == 0, text
        self.vkey = json.loads(text)["vkey"]

    def configure(self, mirror: str, peer: Instance | None) -> None:
        text = TRUST_TOML + f'[[mirrors]]\nname = "m"\nbase_url = "{mirror}"\n\n'
        text += f'[crawl]\nuser_agent = "pithsync-test {self.label}"\nretries = 1\n'
        text += "timeout_s = 10.0\ndeadline_s = 30.0\nfollow_hints = false\n\n" + ALWAYS_DUE_TOML
        if peer is not None:
            text += f'\n[[peers]]\nname = "{peer.label}"\nurl = "{peer.url}"\n'
            text += f'observer_key = "{peer.vkey}"\n'
        Path(self.conf).write_text(text)

    async def pull(self, pith: str) -> tuple[int, dict]:
        code, text = await run_cli("--config", self.conf, "--db", self.db, "pull", "--json", pith)
        return code, json.loads(text)

    def alerts(self) -> list[tuple]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute("select kind, mirror, state from alerts").fetchall()


def status_of(record: dict, pith: str) -> str:
    """The one mirror's status in `pull --json`'s line for the record."""
    assert record["pith_number"] == pith
    (mirror,) = record["mirrors"]
    return mirror["status"]


def leaves(value, path=()) -> Iterator[tuple]:
    """The path of every leaf (string, number, boolean, null) and of every list item."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield (*path, ("drop", i))
            yield from leaves(item, (*path, i))
    else:
        yield path


def edited(doc: dict, path: tuple) -> dict:
    """`doc` with the one field at `path` changed (or, for ("drop", i), that list item gone),
    re-serialised."""
    out = copy.deepcopy(doc)
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if isinstance(last, tuple):
        del parent[last[1]]
    else:
        value = parent[last]
        if isinstance(value, bool):
            parent[last] = not value
        elif isinstance(value, int | float):
            parent[last] = value + 1
        elif isinstance(value, str):
            parent[last] = value[:-1] + ("x" if value[-1:] != "x" else "y") if value else "x"
        else:
            parent[last] = "x"
    return json.loads(json.dumps(out))


async def test_two_observers_catch_a_split_view_and_prove_it(tmp_path):
    record = forge.forge_record(41, n_events=1)
    left, right = forge.equivocating_pair(record)  # same record_created, other second events
    pith = record.pith_number
    a, b = Instance(tmp_path / "a", "observer-a"), Instance(tmp_path / "b", "observer-b")
    async with SplitViewMirror() as mirror:
        mirror.put_record_for("observer-a", left)
        mirror.put_record_for("observer-b", right)
        try:
            for inst in (a, b):
                await inst.serve()
            for inst in (a, b):
                inst.configure(mirror.base_url, None)
                await inst.observer_key()
            a.configure(mirror.base_url, b)
            b.configure(mirror.base_url, a)

            first, _ = await a.pull(pith)  # B's log is empty: nothing to compare yet
            assert first == ExitCode.OK
            code_b, report_b = await b.pull(pith)
            code_a, report_a = await a.pull(pith)
        finally:
            for inst in (a, b):
                if inst.runner is not None:
                    await inst.runner.cleanup()
    assert (code_a, code_b) == (ExitCode.FAILED, ExitCode.FAILED)
    assert status_of(report_a, pith) == status_of(report_b, pith) == "split_view"
    for inst in (a, b):
        assert inst.alerts() == [("split_view", mirror.base_url, "open")]

    out = tmp_path / "evidence.json"
    code, text = await run_cli(
        "--config", a.conf, "--db", a.db, "evidence", pith, "--out", str(out)
    )
    assert code == 0, text
    doc = json.loads(out.read_text())
    (claim,) = doc["claims"]
    assert claim["claim"] == "split_view" and claim["mirror"] == mirror.base_url
    observers = {json.loads(doc["statements"][i]["statement"])["observer"] for i in
                 claim["statements"]}  # fmt: skip
    assert observers == {VerifierKey.parse(a.vkey).name, VerifierKey.parse(b.vkey).name}

    # A third, fresh store pins only the two observer keys and the registry key.
    c = tmp_path / "c"
    c.mkdir()
    conf = c / "pithsync.toml"
    conf.write_text(TRUST_TOML + '[[mirrors]]\nbase_url = "https://elsewhere.invalid"\n')
    fresh = c / "never-created.db"
    pins = ["--observer-key", a.vkey, "--observer-key", b.vkey]
    code, text = await run_cli("--config", conf, "--db", fresh, "verify", "--json", *pins, str(out))
    (result,) = json.loads(text)["files"]
    assert code == 0 and result["status"] == "ok", result
    assert not fresh.exists()

    # Every single-field edit fails (checked in process: the same function `verify` calls).
    keys = [VerifierKey.parse(a.vkey), VerifierKey.parse(b.vkey)]
    verifier = Verifier(forge.test_trust())
    assert evidence.verify_evidence(doc, verifier, observers=keys).ok
    paths = list(leaves(doc))
    assert len(paths) > 30 and ("signature",) in paths
    passed = [
        p for p in paths if evidence.verify_evidence(edited(doc, p), verifier, observers=keys).ok
    ]
    assert passed == []

    # The edits the proofs catch on their own fail with their own reason, not only the
    # file's signature.
    def reasons(path) -> set[str]:
        report = evidence.verify_evidence(edited(doc, path), verifier, observers=keys)
        return {r.code for r in report.reasons}

    first_cited = claim["statements"][0]
    assert "claim_false" in reasons(("claims", 0, "mirror"))  # a split view is its mirror
    assert "claim_false" in reasons(("claims", 0, "url"))
    assert "statement_unproven" in reasons(("statements", first_cited, "statement"))
    assert "statement_unproven" in reasons(("statements", first_cited, "index"))
    checkpoint = doc["statements"][first_cited]["checkpoint"]
    assert "checkpoint_unverified" in reasons(("checkpoints", checkpoint))
