"""Alerts (issue 4): decided per record in the record's transaction, queued in the outbox, then
delivered to a real local webhook receiver, a real command and the log, against real local
mirrors."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sys
import time
from dataclasses import replace

import anyio
import pytest
from aiohttp import web
from synctools import json_lines, make_config, pull, run_cli, write_config

from pithsync import cli, delivery
from pithsync.base.logfmt import log_event
from pithsync.config import AlertsConfig
from pithsync.core.alerting import MirrorView, OpenAlert, clip_words, decide
from pithsync.store import Store
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer, closed_port_url

# -- helpers --------------------------------------------------------------------------------------


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every POST (body parsed as JSON)."""

    def __init__(self, status: int = 200):
        self.status = status
        self.posts: list[dict] = []
        self.headers: list[dict] = []
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, port: int = 0) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        payload = json.loads(await request.read())
        self.posts.append(payload)
        self.headers.append(dict(request.headers))
        return web.Response(
            status=self.status(payload) if callable(self.status) else self.status, text="thanks"
        )

    def events(self) -> list[tuple[str, str, str]]:
        return [(p["event"], p["kind"], p["pith_number"]) for p in self.posts]


@pytest.fixture
def alert_log():
    """Records of the pithsync.alerts logger (cli.main may have switched propagation off)."""
    records: list[logging.LogRecord] = []

    class H(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("pithsync.alerts")
    handler, level = H(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def with_alerts(cfg, **kw):
    kw.setdefault("log", False)
    return replace(cfg, alerts=replace(AlertsConfig(), **kw))


async def run_once(cfg, store, *piths, **deliver):
    results = await pull(cfg, *piths, store=store)
    report = await delivery.deliver_pending(cfg, store, **deliver)
    return results, report


def outbox(store) -> list[dict]:
    return list(store.db.query("select * from outbox order by id"))


def free_port() -> int:
    return int(closed_port_url().rsplit(":", 1)[1])


# -- the decision, pure ---------------------------------------------------------------------------


def _m(name, status, runs=0):
    return MirrorView(
        f"http://{name}",
        name,
        status,
        ({"status": status, "code": status, "message": f"{name} is {status}"},),
        runs,
    )


def test_decide_rules():
    kw = dict(unreachable_threshold=3, now="T1", run_id="r")
    # In sync: nothing.
    assert not decide("p", "in_sync", [_m("a", "ok"), _m("b", "ok")], [], **kw)
    # First divergence: one opening, saying per mirror what is wrong.
    d = decide("p", "diverged", [_m("a", "ok"), _m("b", "stale")], [], **kw)
    assert [o.kind for o in d.open] == ["divergence"] and not d.resolve
    payload = d.open[0].payload
    assert payload["divergent"] == [{"mirror": "http://b", "name": "b", "status": "stale"}]
    assert {m["name"]: (m["status"], m["divergent"]) for m in payload["mirrors"]} == {
        "a": ("ok", False),
        "b": ("stale", True),
    }
    assert "b is stale" in payload["summary"] and payload["first_seen"] == "T1"
    old = OpenAlert(
        7,
        "divergence",
        "record:p",
        "T0",
        divergent=frozenset({("http://b", "stale")}),
        diverged_since="T0",
    )
    # Unchanged: nothing, even if the reasons' wording changes.
    assert not decide("p", "diverged", [_m("a", "ok"), _m("b", "stale")], [old], **kw)
    # The divergent mirror is unreachable now: it cannot be seen to have changed.
    assert not decide("p", "degraded", [_m("a", "ok"), _m("b", "unreachable", 1)], [old], **kw)
    # Changed: the old one resolved ("changed"), a new one opened, continuity kept.
    d = decide("p", "diverged", [_m("a", "tampered"), _m("b", "stale")], [old], **kw)
    assert [(r.alert.id, r.payload["resolution"]) for r in d.resolve] == [(7, "changed")]
    assert [o.payload["diverged_since"] for o in d.open] == ["T0"]
    # Cleared.
    d = decide("p", "in_sync", [_m("a", "ok"), _m("b", "ok")], [old], **kw)
    assert [
        (r.payload["event"], r.payload["resolution"], r.payload["first_seen"]) for r in d.resolve
    ] == [("resolved", "cleared", "T0")] and not d.open
    # Unreachable: opens at the threshold, once; resolves when reachable; 0 disables it.
    assert not decide("p", "degraded", [_m("a", "ok"), _m("b", "unreachable", 2)], [], **kw)
    d = decide("p", "degraded", [_m("a", "ok"), _m("b", "unreachable", 3)], [], **kw)
    assert [(o.kind, o.mirror, o.payload["unreachable_runs"]) for o in d.open] == [
        ("unreachable", "http://b", 3)
    ]
    u = OpenAlert(9, "unreachable", "mirror:http://b", "T0", mirror="http://b")
    assert not decide("p", "degraded", [_m("a", "ok"), _m("b", "unreachable", 4)], [u], **kw)
    d = decide("p", "in_sync", [_m("a", "ok"), _m("b", "ok")], [u], **kw)
    assert [(r.alert.id, r.payload["resolution"]) for r in d.resolve] == [(9, "reachable")]
    assert not decide(
        "p", "degraded", [_m("b", "unreachable", 50)], [], **{**kw, "unreachable_threshold": 0}
    )
    # Nobody has the record (all missing): not a divergence.
    assert not decide("p", "unverifiable", [_m("a", "missing"), _m("b", "missing")], [], **kw)


# -- end to end against real mirrors and a real receiver ------------------------------------------


async def test_divergence_lifecycle_webhook_and_log(tmp_path, alert_log):
    good, bad = forge.forge_record(1, n_events=3), forge.forge_record(2, n_events=3)
    async with (
        MirrorServer("a") as a,
        MirrorServer("b") as b,
        MirrorServer("c") as c,
        Receiver() as hook,
    ):
        for m in (a, b, c):
            m.put_record(good.bundle())
            m.put_record(bad.bundle())
        b.put_record(bad.bundle(upto=2))  # b lags on one record
        cfg = with_alerts(
            make_config(tmp_path, [a.spec(), b.spec(), c.spec()]), webhook_url=hook.url, log=True
        )
        store = Store.open(cfg.db_path)
        try:
            await run_once(cfg, store, good.pith_number, bad.pith_number)
            assert hook.events() == [
                ("opened", "divergence", bad.pith_number)
            ]  # none for the in-sync record
            sent = hook.posts[0]
            assert (
                sent["verdict"] == "diverged"
                and sent["first_seen"]
                and sent["summary"].startswith(bad.pith_number)
            )
            by_name = {m["name"]: m for m in sent["mirrors"]}
            assert {n: m["status"] for n, m in by_name.items()} == {
                "a": "ok",
                "b": "stale",
                "c": "ok",
            }
            assert by_name["b"]["divergent"] and [r["code"] for r in by_name["b"]["reasons"]] == [
                "stale"
            ]
            assert hook.headers[0]["Content-Type"] == "application/json"
            lines = [
                r.getMessage()
                for r in alert_log
                if r.getMessage().startswith("event=alert alert=opened")
            ]
            assert (
                len(lines) == 1
                and f"pith={bad.pith_number}" in lines[0]
                and "kind=divergence" in lines[0]
                and "mirrors=b:stale" in lines[0]
            )
            assert sorted(r["channel"] for r in outbox(store)) == ["log", "webhook"]
            assert all(r["delivered_at"] and r["attempts"] == 1 for r in outbox(store))

            # Unchanged re-run: nothing re-sent.
            await run_once(cfg, store, good.pith_number, bad.pith_number)
            assert len(hook.posts) == 1 and len(outbox(store)) == 2

            # The divergence changes (c now serves a tampered copy): old resolved, new opened.
            c.put_record(forge.tampered(bad.bundle()), state=bad.bundle()["state"])
            await run_once(cfg, store, good.pith_number, bad.pith_number)
            assert hook.events()[1:] == [
                ("resolved", "divergence", bad.pith_number),
                ("opened", "divergence", bad.pith_number),
            ]
            assert (
                hook.posts[1]["resolution"] == "changed"
                and hook.posts[1]["alert_id"] == sent["alert_id"]
            )
            assert {(d["name"], d["status"]) for d in hook.posts[2]["divergent"]} == {
                ("b", "stale"),
                ("c", "tampered"),
            }
            assert hook.posts[2]["diverged_since"] == sent["first_seen"]

            # It clears: one `resolved`, then silence.
            b.put_record(bad.bundle())
            c.put_record(bad.bundle())
            await run_once(cfg, store, good.pith_number, bad.pith_number)
            assert hook.events()[3:] == [("resolved", "divergence", bad.pith_number)]
            assert (
                hook.posts[3]["resolution"] == "cleared" and hook.posts[3]["verdict"] == "in_sync"
            )
            await run_once(cfg, store, good.pith_number, bad.pith_number)
            assert len(hook.posts) == 4
            assert [(x["kind"], x["state"]) for x in store.alerts()] == [
                ("divergence", "resolved"),
                ("divergence", "resolved"),
            ]
            assert len({p["notification_id"] for p in hook.posts}) == 4
        finally:
            store.close()


async def test_receiver_down_then_up_loses_nothing(tmp_path):
    record = forge.forge_record(3, n_events=3)
    port = free_port()
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        b.put_record(record.bundle(upto=2))
        cfg = with_alerts(
            make_config(tmp_path, [a.spec(), b.spec()]), webhook_url=f"http://127.0.0.1:{port}/hook"
        )
        store = Store.open(cfg.db_path)
        try:
            _, report = await run_once(cfg, store, record.pith_number)
            assert report.failed == {"webhook": 1} and not report.delivered
            [row] = outbox(store)
            assert (
                row["delivered_at"] is None
                and row["attempts"] == 1
                and "Connect" in row["last_error"]
            )

            # Up, but failing (500): the receiver saw it, yet it stays queued.
            hook = await Receiver(status=500).start(port)
            try:
                _, report = await run_once(cfg, store, record.pith_number)
                assert report.failed == {"webhook": 1} and len(hook.posts) == 1
                [row] = outbox(store)
                assert (
                    row["delivered_at"] is None
                    and row["attempts"] == 2
                    and row["last_error"] == "HTTP 500"
                )

                # Healthy: the same notification (same id) is delivered, once.
                hook.status = 200
                b.put_record(record.bundle())  # and meanwhile the divergence clears
                _, report = await run_once(cfg, store, record.pith_number)
                assert report.delivered == {"webhook": 2}
                assert [(p["event"], p["notification_id"]) for p in hook.posts[1:]] == [
                    ("opened", hook.posts[0]["notification_id"]),
                    ("resolved", f"{hook.posts[0]['alert_id']}:resolved"),
                ]
                assert [(r["attempts"], bool(r["delivered_at"])) for r in outbox(store)] == [
                    (3, True),
                    (1, True),
                ]
                await run_once(cfg, store, record.pith_number)
                assert len(hook.posts) == 3
            finally:
                await hook.stop()
        finally:
            store.close()


async def test_rejected_notification_is_retried_and_keeps_its_order(tmp_path):
    record = forge.forge_record(10, n_events=3)
    port = free_port()
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        b.put_record(record.bundle(upto=2))
        cfg = with_alerts(
            make_config(tmp_path, [a.spec(), b.spec()]), webhook_url=f"http://127.0.0.1:{port}/hook"
        )
        store = Store.open(cfg.db_path)
        hook = None
        try:
            await run_once(cfg, store, record.pith_number)  # receiver down: `opened` queued
            b.put_record(record.bundle())
            hook = await Receiver(status=lambda p: 400 if p["event"] == "opened" else 200).start(
                port
            )
            _, report = await run_once(cfg, store, record.pith_number)  # `resolved` queued too
            assert (
                report.failed == {"webhook": 1}
                and report.deferred == {"webhook": 1}
                and not report.delivered
            )
            assert [p["event"] for p in hook.posts] == [
                "opened"
            ]  # never `resolved` before `opened`
            assert [r["last_error"] for r in outbox(store)] == ["HTTP 400", None]
            hook.status = 200
            _, report = await run_once(cfg, store, record.pith_number)
            assert report.delivered == {"webhook": 2}
            assert [p["event"] for p in hook.posts] == ["opened", "opened", "resolved"]
        finally:
            if hook is not None:
                await hook.stop()
            store.close()


COMMAND_SCRIPT = (
    """
import json, os, sys
data = sys.stdin.buffer.read()
with open(sys.argv[1], "a") as fh:
"""
    '    fh.write(json.dumps({"stdin": json.loads(data), "argv": sys.argv[2:], '
    '"kind": os.environ.get("PITHSYNC_ALERT_KIND")}) + "\\n")\n'
    """sys.exit(int(os.environ.get("EXIT_WITH", "0")))
"""
)


async def test_command_channel_gets_json_on_stdin_without_shell(tmp_path, monkeypatch):
    record = forge.forge_record(4, n_events=3)
    script = tmp_path / "notify.py"
    script.write_text(COMMAND_SCRIPT)
    received = tmp_path / "received.jsonl"
    trap = tmp_path / "pwned"
    argv = (sys.executable, str(script), str(received), f"$(touch {trap}); echo hi")
    async with MirrorServer("a") as a, MirrorServer("b") as b, Receiver() as hook:
        a.put_record(record.bundle())
        b.put_record(forge.rewritten_with(record.bundle()))
        cfg = with_alerts(
            make_config(tmp_path, [a.spec(), b.spec()]),
            command=argv,
            webhook_url=hook.url,
            log=True,
        )
        store = Store.open(cfg.db_path)
        try:
            monkeypatch.setenv("EXIT_WITH", "3")  # the command fails: kept, retried next run
            _, report = await run_once(cfg, store, record.pith_number)
            assert report.failed == {"command": 1} and report.delivered == {"webhook": 1, "log": 1}
            row = next(r for r in outbox(store) if r["channel"] == "command")
            assert row["delivered_at"] is None and row["last_error"].startswith("exit status 3")

            monkeypatch.setenv("EXIT_WITH", "0")
            _, report = await run_once(cfg, store, record.pith_number)
            assert report.delivered == {"command": 1}
        finally:
            store.close()
    calls = [json.loads(line) for line in received.read_text().splitlines()]
    assert len(calls) == 2 and calls[0]["stdin"] == calls[1]["stdin"]
    got = calls[1]["stdin"]
    assert got == hook.posts[0]  # the same JSON on every channel
    assert (
        got["kind"] == "divergence"
        and got["pith_number"] == record.pith_number
        and calls[1]["kind"] == "divergence"
    )
    assert {m["name"]: m["status"] for m in got["mirrors"]} == {"a": "ok", "b": "bad_signature"}
    assert calls[1]["argv"] == [f"$(touch {trap}); echo hi"] and not trap.exists()  # no shell


async def test_command_timeout_and_missing_command_are_kept(tmp_path):
    record = forge.forge_record(5, n_events=3)
    slow = tmp_path / "slow.py"
    slow.write_text("import time, sys\nsys.stdin.read()\ntime.sleep(30)\n")
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        b.put_record(record.bundle(upto=2))
        cfg = with_alerts(
            make_config(tmp_path, [a.spec(), b.spec()]), command=(sys.executable, str(slow))
        )
        store = Store.open(cfg.db_path)
        try:
            with anyio.fail_after(10):
                _, report = await run_once(cfg, store, record.pith_number, command_timeout_s=0.3)
            assert report.failed == {"command": 1}
            assert "timed out" in outbox(store)[0]["last_error"]
            cfg = with_alerts(cfg, command=(str(tmp_path / "no-such-notifier"),))
            report = await delivery.deliver_pending(cfg, store)
            assert (
                report.failed == {"command": 1} and "cannot run" in outbox(store)[0]["last_error"]
            )
            assert outbox(store)[0]["attempts"] == 2 and outbox(store)[0]["delivered_at"] is None
        finally:
            store.close()


def _process_gone(pid: int) -> bool:
    """No such process, or only its zombie left (ended, not yet reaped by init)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_command_that_leaves_a_background_child_is_delivered_when_it_exits(tmp_path):
    # The command exits at once, but its background child holds its stdout and stderr: delivery
    # must not wait for those to close (30 s, the command timeout), nor count it as a timeout.
    record = forge.forge_record(8, n_events=3)
    child_pid = tmp_path / "child.pid"
    command = ("sh", "-c", f'sleep 45 & echo $! > "{child_pid}"; exit 0')
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        b.put_record(record.bundle(upto=2))
        cfg = with_alerts(make_config(tmp_path, [a.spec(), b.spec()]), command=command)
        store = Store.open(cfg.db_path)
        try:
            started = time.monotonic()
            _, report = await run_once(cfg, store, record.pith_number)  # opens the alert
            # Far below the 30 s a wait for the pipes takes, however loaded the machine.
            assert time.monotonic() - started < 20 and delivery.COMMAND_TIMEOUT_S == 30.0
            assert report.delivered == {"command": 1} and not report.failed, report
            (row,) = outbox(store)
            assert row["delivered_at"] is not None and row["attempts"] == 1
            pid = int(child_pid.read_text())
            for _ in range(1000):  # killed with the command's process group; reaped by init
                if _process_gone(pid):
                    break
                await anyio.sleep(0.01)
            assert _process_gone(pid), f"the background child {pid} outlived delivery"
            # Delivered once: the next run sends nothing again.
            _, report = await run_once(cfg, store, record.pith_number)
            assert report.delivered == {} and not report.failed, report
            assert outbox(store)[0]["attempts"] == 1
        finally:
            store.close()
            if child_pid.exists() and not _process_gone(int(child_pid.read_text())):
                os.kill(int(child_pid.read_text()), signal.SIGKILL)  # our test's own child


async def test_unreachable_alert_after_n_runs_once_per_mirror(tmp_path):
    r1, r2 = forge.forge_record(6), forge.forge_record(7)
    async with MirrorServer("a") as a, MirrorServer("b") as b, Receiver() as hook:
        for m in (a, b):
            m.put_record(r1.bundle())
            m.put_record(r2.bundle())
        cfg = with_alerts(
            make_config(tmp_path, [a.spec(), b.spec()]), webhook_url=hook.url, unreachable_runs=3
        )
        store = Store.open(cfg.db_path)
        try:
            await b.suspend()
            for run in (1, 2):
                res, _ = await run_once(cfg, store, r1.pith_number, r2.pith_number)
                assert {r.verdict.value for r in res.values()} == {"degraded"}
                assert hook.posts == [], f"run {run}"
            await run_once(cfg, store, r1.pith_number, r2.pith_number)
            assert [
                (p["event"], p["kind"], p["mirror"]["base_url"], p["unreachable_runs"])
                for p in hook.posts
            ] == [("opened", "unreachable", b.base_url, 3)]
            assert hook.posts[0]["mirrors"][0]["status"] == "unreachable"
            await run_once(cfg, store, r1.pith_number, r2.pith_number)
            assert len(hook.posts) == 1  # once, not per run and not per record
            await b.resume()
            await run_once(cfg, store, r1.pith_number, r2.pith_number)
            assert [(p["event"], p["resolution"]) for p in hook.posts[1:]] == [
                ("resolved", "reachable")
            ]
            assert store.open_alert_counts() == {}
        finally:
            store.close()


async def test_alert_rows_commit_with_the_evidence(tmp_path, monkeypatch):
    """The outbox row is written in the record's transaction: if it fails, nothing of the record
    is written either (no evidence without its alert, no alert without its evidence)."""
    record = forge.forge_record(8, n_events=3)
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        b.put_record(forge.tampered(record.bundle()))
        cfg = with_alerts(make_config(tmp_path, [a.spec(), b.spec()]), log=True)
        store = Store.open(cfg.db_path)
        seen = []

        def broken(*args, **kw):
            seen.append(store.db.conn.in_transaction)
            raise RuntimeError("disk on fire")

        from pithsync.store import alerts as store_alerts

        monkeypatch.setattr(store_alerts, "enqueue_notification", broken)
        try:
            try:
                await pull(cfg, record.pith_number, store=store)
            except BaseException as exc:  # the engine may report the failure or re-raise it
                assert "disk on fire" in repr(exc) + repr(getattr(exc, "exceptions", ""))
            assert seen == [True]  # called inside the record's transaction
            assert (
                store.evidence_for(record.pith_number) == []
                and store.mirror_statuses(record.pith_number) == []
            )
            assert store.alerts() == [] and outbox(store) == []
            monkeypatch.undo()
            await pull(cfg, record.pith_number, store=store)
            assert (
                len(store.evidence_for(record.pith_number)) >= 1
                and len(store.alerts()) == 1
                and len(outbox(store)) == 1
            )
        finally:
            store.close()


async def test_cli_delivery_failure_never_changes_exit_code_and_alerts_command(tmp_path):
    record = forge.forge_record(9, n_events=3)
    port = free_port()
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        b.put_record(record.bundle(upto=2))
        conf = write_config(
            tmp_path,
            [a.spec(), b.spec()],
            extra=f'[alerts]\nwebhook_url = "http://127.0.0.1:{port}/hook"\nlog = false\n',
        )
        db = str(tmp_path / "s.db")
        code, out = await run_cli(
            "--config", conf, "--db", db, "pull", "--json", record.pith_number
        )
        assert code == 1 and json_lines(out)[0]["verdict"] == "diverged"  # as without alerts
        code, out = await run_cli("--config", conf, "--db", db, "alerts", "--json")
        [alert] = json_lines(out)
        assert (
            code == 0
            and alert["kind"] == "divergence"
            and alert["state"] == "open"
            and alert["undelivered"] == 1
        )
        assert alert["pith_number"] == record.pith_number and "b is stale" in alert["summary"]

        b.put_record(record.bundle())
        code, out = await run_cli(
            "--config", conf, "--db", db, "pull", "--json", record.pith_number
        )
        assert code == 0  # in sync; the webhook still down does not make it fail
        code, out = await run_cli("--config", conf, "--db", db, "alerts", "--open", "--json")
        assert json_lines(out) == []
        code, out = await run_cli("--config", conf, "--db", db, "alerts")
        assert code == 0 and "resolved" in out and "2 undelivered" in out

        hook = await Receiver().start(
            port
        )  # the receiver comes up: the next run delivers both, in order
        try:
            code, _ = await run_cli("--config", conf, "--db", db, "sync")
            assert code == 0
            assert [(p["event"], p["kind"]) for p in hook.posts] == [
                ("opened", "divergence"),
                ("resolved", "divergence"),
            ]
        finally:
            await hook.stop()
        code, out = await run_cli("--config", conf, "--db", db, "alerts", "--json")
        assert [a["undelivered"] for a in json_lines(out)] == [0]


def test_log_lines_are_key_value_one_line(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    cli.configure_logging(0, False)
    logger = logging.getLogger("pithsync.test")
    log_event(
        logger,
        logging.INFO,
        "record_checked",
        record="pith:2026:AAA",
        verdict="in_sync",
        events=3,
        state=None,
    )
    logger.warning('free text with\na newline and "quotes"')
    # Text that looks like pairs is still one message: only log_event's fields become pairs.
    logger.info("record=x mirrors=Pith Resolver:unreachable")
    log_event(logger, logging.DEBUG, "hidden")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("ts=") and lines[0].endswith(
        "level=info logger=pithsync.test event=record_checked record=pith:2026:AAA "
        "verdict=in_sync events=3"
    )
    assert (
        lines[1].endswith('msg="free text with\\na newline and \\"quotes\\""')
        and "level=warning" in lines[1]
    )
    assert lines[2].endswith('msg="record=x mirrors=Pith Resolver:unreachable"')
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")  # journald stamps its own time
    cli.configure_logging(1, False)
    log_event(logger, logging.DEBUG, "shown", mirror="Pith Resolver")
    assert (
        stream.getvalue().splitlines()[-1]
        == 'level=debug logger=pithsync.test event=shown mirror="Pith Resolver"'
    )
    line = delivery.log_line(
        {
            "event": "opened",
            "kind": "divergence",
            "alert_id": 3,
            "pith_number": "pith:2026:X",
            "verdict": "diverged",
            "divergent": [{"name": "my mirror", "status": "stale"}],
            "summary": "a b",
        }
    )
    assert line == (
        "alert=opened kind=divergence alert_id=3 pith=pith:2026:X verdict=diverged "
        'mirrors="my mirror:stale" summary="a b"'
    )


def test_store_knows_whether_any_alert_is_open_without_asking_per_record(tmp_path):
    # The in-sync fast path of run.alerting.record_alerts trusts this: it must never say "none
    # open" while one is.
    store = Store.open(str(tmp_path / "a.db"))
    try:
        assert store.any_open_alert() is False
        run = store.begin_run("test")
        with store.group(batch_records=10):  # a batch is open, as during a run
            alert_id = store.insert_alert("divergence", "record:x", "pith:x", None, "f", "now", run)
        assert store.any_open_alert() is True
        store.rollback_batch()  # the alert never happened
        assert store.any_open_alert() is False
        alert_id = store.insert_alert("divergence", "record:x", "pith:x", None, "f", "now", run)
        other = store.insert_alert("unreachable", "mirror:m", "pith:x", "m", "", "now", run)
        store.resolve_alert(alert_id, "later", run, {})
        assert store.any_open_alert() is True  # `other` is still open
        store.resolve_alert(other, "later", run, {})
        assert store.any_open_alert() is False
    finally:
        store.close()


def test_summaries_never_cut_a_hash():
    """A reason's message is shortened at a space, so a hash in it is whole or left out."""
    import re

    digest = "ab" * 32
    message = "event sha256:" + digest + ": content_sha256 does not match (computed " + digest + ")"
    views = [
        MirrorView(
            f"http://m{i}",
            f"m{i}",
            "tampered",
            ({"status": "tampered", "code": "x", "message": "x" * (10 + 7 * i) + " " + message},),
            0,
        )
        for i in range(12)
    ]
    d = decide(
        "pith:2026:" + "A" * 26,
        "diverged",
        views,
        [],
        unreachable_threshold=3,
        now="2026-12-06T00:00:00Z",
        run_id="r",
    )
    summary = d.open[0].payload["summary"]
    assert len(summary) <= 500 and summary.endswith("…")  # long enough to be shortened
    runs = re.findall(r"[0-9a-f]{10,}", summary)
    assert runs and all(len(r) == 64 for r in runs), runs
    assert clip_words("short", 10) == "short"
    assert clip_words("one two three", 9) == "one two …"
