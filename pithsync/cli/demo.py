"""`demo`: an offline walk-through.  Three local mirrors built from the seeds shipped with
pithsync (honest, lagging, tampered), pulled through the same code path as `pithsync pull`."""

from __future__ import annotations

import asyncio
import copy
import importlib.resources
import io
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from pithsync.base.exits import ExitCode
from pithsync.cli.common import open_store
from pithsync.cli.output import Output, listed_summary
from pithsync.cli.records import parse_targets, sync_and_report
from pithsync.config import AlertsConfig, Config, CrawlConfig, MetricsConfig
from pithsync.core import strictjson
from pithsync.core.canonical import compact
from pithsync.core.keys import TrustStore
from pithsync.core.numbers import parse_full
from pithsync.core.verify import BUNDLE_TYPE
from pithsync.publishing.localmirror import LocalMirror
from pithsync.store import Store


def seed_bundles() -> list[tuple[str, bytes, dict]]:
    """The real seed bundles shipped in pithsync/data/seeds: (file name, exact bytes, parsed)."""
    root = importlib.resources.files("pithsync").joinpath("data", "seeds")
    found = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".txt"):
            data = entry.read_bytes()
            doc = strictjson.loads_object(data)
            if doc.get("bundle_type") == BUNDLE_TYPE:
                found.append((entry.name, data, doc))
    return found


def tamper_payload(bundle: dict) -> dict:
    """A copy of `bundle` with one event payload edited after signing (hashes and signatures
    left as they were): what a hostile mirror would serve."""
    b = copy.deepcopy(bundle)
    for ev in reversed(b["events"]):
        paper = ev.get("payload", {}).get("graph_snapshot", {}).get("paper")
        if isinstance(paper, dict):
            paper["headline"] = "Retracted: results could not be reproduced"
            return b
    b["events"][-1]["payload"]["edited_by"] = "a hostile mirror"
    return b


@dataclass(frozen=True)
class DemoPlan:
    numbers: list[str]
    expected: dict[str, str]  # pith number -> verdict
    expected_mirror: dict[str, tuple[str, str]]  # pith number -> (mirror name, status)
    lagging_missing: str
    tampered: str


def demo_config(db_path: str, mirrors) -> Config:
    """Default trust (the registry key only), the local mirrors only, hints never followed
    (the seeds' hints name the real pith.science: the demo stays offline), no waiting."""
    crawl = replace(
        CrawlConfig(),
        retries=0,
        timeout_s=2.0,
        deadline_s=5.0,
        backoff_max_s=0.5,
        follow_hints=False,
    )
    return Config(
        trust=TrustStore.registry_default(),
        mirrors=tuple(mirrors),
        crawl=crawl,
        alerts=AlertsConfig(webhook_url=None, command=(), log=True),
        metrics=MetricsConfig(textfile=None),
        db_path=db_path,
        lock_timeout_s=5.0,
        source="<pithsync demo>",
    )


def _alert_rows(store: Store) -> list[dict]:
    """Alerts the run raised, oldest first."""
    return sorted(store.alerts(), key=lambda r: r["id"])


def _run_demo_pull(cfg: Config, numbers: list[str], out) -> dict:
    """Worker thread: `pithsync pull` of the seed numbers through the same run as `pull`, then what
    the store says happened."""
    with open_store(cfg, lock=True) as store:
        targets = parse_targets(numbers, store, 0)
        code = sync_and_report(cfg, out, store, targets, "demo")
        last_run = store.last_finished_run(success=False)["run_id"]
        verdicts = {
            e["pith_number"]: e["status"]
            for e in store.journal()
            if e["run_id"] == last_run and e["kind"] == "record_outcome"
        }
        statuses = {
            p: {
                m["name"]: {"status": m["status"], "reasons": m["reasons"]}
                for m in store.mirror_statuses(p)
            }
            for p in numbers
        }
        alerts = _alert_rows(store)
    return {"exit_code": int(code), "verdicts": verdicts, "mirrors": statuses, "alerts": alerts}


@dataclass(frozen=True)
class DemoOutcome:
    """What the demo's pull did, and how that compares with the plan."""

    plan: DemoPlan
    result: dict  # from _run_demo_pull
    requests: dict[str, int]  # mirror name -> requests it answered
    problems: list[str]  # where the outcome differs from the plan
    elapsed_s: float


def cmd_demo(args, cfg_ignored: Config, out) -> int:
    """`pithsync demo`: pull the seeds from three local mirrors and show what was caught."""
    seeds = seed_bundles()
    if len(seeds) < 3:
        out.line(f"pithsync demo: needs at least 3 seed bundles, found {len(seeds)}")
        return ExitCode.FAILED
    workdir = tempfile.mkdtemp(prefix="pithsync-demo-")
    db_path = str(Path(workdir) / "pithsync.db")
    started = time.monotonic()
    pull_out = Output(True, stream=io.StringIO()) if out.as_json else out
    sync_log = logging.getLogger("pithsync.sync")
    level = sync_log.level
    if not args.verbose:
        sync_log.setLevel(logging.WARNING)  # the table says it all; -v shows the per-record log
    try:
        plan, result, requests = asyncio.run(_serve_and_pull(args, out, pull_out, seeds, db_path))
    finally:
        sync_log.setLevel(level)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    problems = _differences(plan, result)
    outcome = DemoOutcome(plan, result, requests, problems, time.monotonic() - started)
    kept = db_path if args.keep else None
    if out.as_json:
        out.json(_json_report(outcome, pull_out, kept))
    else:
        _demo_outro(out, outcome, kept)
    return ExitCode.FAILED if problems else ExitCode.OK


async def _serve_and_pull(args, out, pull_out, seeds, db_path: str):
    """Start the demo's mirrors, pull from them (in a worker thread, as `pull` runs), stop them."""
    servers, plan = await _start_demo_mirrors(seeds)
    try:
        cfg = demo_config(db_path, [s.spec() for s in servers])
        if not out.as_json:
            _demo_intro(out, servers, plan, db_path, args.keep)
        result = await asyncio.to_thread(_run_demo_pull, cfg, plan.numbers, pull_out)
        requests = {s.name: s.request_count for s in servers}
    finally:
        for s in servers:
            await s.stop()
    return plan, result, requests


def _differences(plan: DemoPlan, result: dict) -> list[str]:
    """Where the pull's verdicts and mirror statuses differ from the plan's."""
    problems = []
    for pith, verdict in plan.expected.items():
        if result["verdicts"].get(pith) != verdict:
            problems.append(f"{pith}: expected {verdict}, got {result['verdicts'].get(pith)}")
    for pith, (mirror, status) in plan.expected_mirror.items():
        got = result["mirrors"].get(pith, {}).get(mirror, {}).get("status")
        if got != status:
            problems.append(f"{pith}: expected mirror {mirror} {status}, got {got}")
    return problems


def _json_report(outcome: DemoOutcome, pull_out: Output, kept: str | None) -> dict:
    """The `--json` document: the outcome, and the pull's own JSON lines as `records`."""
    result = outcome.result
    records = [json.loads(line) for line in pull_out.stream.getvalue().splitlines() if line]
    return {
        "as_expected": not outcome.problems,
        "problems": outcome.problems,
        "expected": outcome.plan.expected,
        "verdicts": result["verdicts"],
        "pull_exit_code": result["exit_code"],
        "records": records,
        "alerts": result["alerts"],
        "requests": outcome.requests,
        "store": kept,
        "seconds": round(outcome.elapsed_s, 3),
    }


def _demo_intro(out, servers, plan: DemoPlan, db_path: str, keep: bool) -> None:
    by = {s.name: s for s in servers}
    n = len(plan.numbers)
    out.line(
        f"pithsync demo: {n} real seed bundles (signed by the Pith registry key),"
        " served by three local mirrors on 127.0.0.1"
    )
    out.line(f"  honest    {by['honest'].base_url}  serves all {n} records as published")
    out.line(
        f"  lagging   {by['lagging'].base_url}  has not caught up:"
        f" no copy of {plan.lagging_missing}"
    )
    out.line(
        f"  tampered  {by['tampered'].base_url}  serves {plan.tampered}"
        " with an event payload edited after signing"
    )
    out.line(
        "  trust: only the pinned registry key pith-v1-2026-05; mirror hints are not followed,"
        " nothing leaves this machine"
    )
    out.line(f"  store: {db_path} ({'kept' if keep else 'temporary, removed afterwards'})")
    out.line("")
    out.line(f"$ pithsync pull {' '.join(plan.numbers)}")


def _demo_outro(out, outcome: DemoOutcome, kept: str | None) -> None:
    out.line("")
    _show_alerts(out, outcome.result)
    out.line("")
    counts: dict[str, int] = {}
    for v in outcome.result["verdicts"].values():
        counts[v] = counts.get(v, 0) + 1
    summary = ", ".join(f"{c} {v}" for v, c in sorted(counts.items()))
    if outcome.problems:
        out.line(f"demo: NOT as expected ({summary}):")
        for p in outcome.problems:
            out.line(f"  {p}")
        out.line("exit 1")
    else:
        out.line(
            f"demo: as expected in {outcome.elapsed_s:.1f}s: {summary}.  The honest copies agree;"
            " the lagging and the tampered"
        )
        out.line(
            "mirror were caught and nothing they served entered the verified store.  A real"
            " `pithsync pull` exits 1"
        )
        out.line(
            "on divergence; the demo exits 0 because divergence is exactly what it sets out"
            " to show."
        )
    if kept:
        out.line(f"store kept: pithsync --db {kept} status")


def _show_alerts(out, result: dict) -> None:
    """The alerts the pull raised, or (when the store holds none) what they would report."""
    alerts = result["alerts"]
    if alerts:
        out.line(f"alerts raised ({len(alerts)}):")
        for a in alerts:
            payload = a.get("payload") if isinstance(a.get("payload"), dict) else {}
            what = next(
                (
                    payload[k]
                    for k in ("summary", "message", "title")
                    if isinstance(payload.get(k), str)
                ),
                "",
            )
            mirror = f"mirror {a['mirror']}" if a.get("mirror") else ""
            fields = (a.get("state"), a.get("kind"), a.get("pith_number"))
            head = " ".join(str(f or "") for f in fields)
            what = listed_summary(what, a.get("pith_number"))
            out.line(f"  #{a.get('id')} {head} {mirror} {what}".rstrip())
        return
    out.line(
        "alerts: none recorded in this store (the sync writes no alert rows in this build);"
        " what an alert would report:"
    )
    for pith, verdict in sorted(result["verdicts"].items()):
        if verdict == "in_sync":
            continue
        for name, m in sorted(result["mirrors"].get(pith, {}).items()):
            if m["status"] != "ok":
                why = "; ".join(f"{r.get('code')}: {r.get('message')}" for r in m["reasons"][:2])
                out.line(f"  {pith} {verdict}: mirror {name} is {m['status']} ({why})")


async def _start_demo_mirrors(seeds):
    honest, lagging, hostile = (
        LocalMirror("honest"),
        LocalMirror("lagging"),
        LocalMirror("tampered"),
    )
    numbers = [doc["pith_number"] for _, _, doc in seeds]
    missing, tampered = numbers[-2], numbers[-1]
    for _, data, doc in seeds:
        suffix = parse_full(doc["pith_number"]).suffix
        state = compact(doc["state"])
        honest.put_bundle(suffix, data)
        honest.put_state(suffix, state)
        if doc["pith_number"] != missing:
            lagging.put_bundle(suffix, data)
            lagging.put_state(suffix, state)
        hostile.put_bundle(
            suffix, compact(tamper_payload(doc)) if doc["pith_number"] == tampered else data
        )
        hostile.put_state(suffix, state)
    servers = [honest, lagging, hostile]
    started = []
    try:
        for s in servers:
            started.append(await s.start())
    except BaseException:
        for s in started:
            await s.stop()
        raise
    expected = {n: "in_sync" for n in numbers}
    expected[missing] = expected[tampered] = "diverged"
    plan = DemoPlan(
        numbers,
        expected,
        {missing: ("lagging", "missing"), tampered: ("tampered", "tampered")},
        missing,
        tampered,
    )
    return servers, plan
