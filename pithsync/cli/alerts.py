"""`alerts` (what was raised, and its delivery) and `evidence` (the signed documents behind a
record's divergence, as one self-contained file)."""

from __future__ import annotations

import json
import logging

from pithsync import evidence
from pithsync.base.exits import ExitCode, UsageError
from pithsync.base.files import write_atomically
from pithsync.base.logfmt import log_event
from pithsync.cli.common import open_store, resolve_one
from pithsync.cli.output import listed_summary
from pithsync.core.verify import Verifier
from pithsync.observer import load_or_create

log = logging.getLogger("pithsync.alerts")


def _alert_json(row: dict) -> dict:
    payload = row["resolved_payload"] or row["payload"]
    return {
        "id": row["id"],
        "kind": row["kind"],
        "state": row["state"],
        "pith_number": row["pith_number"],
        "mirror": row["mirror"],
        "opened_at": row["opened_at"],
        "resolved_at": row["resolved_at"],
        "summary": (row["payload"] or {}).get("summary"),
        "resolution": (row["resolved_payload"] or {}).get("resolution"),
        "notifications": row["notifications"],
        "undelivered": row["undelivered"],
        "payload": payload,
    }


def cmd_alerts(args, cfg, out) -> int:
    """Alerts, newest first.  --json: JSON Lines, one alert a line, `{"id": int, "kind", "state",
    "pith_number", "mirror" (base URL or null), "opened_at", "resolved_at", "summary",
    "resolution", "notifications": int, "undelivered": int, "payload": {...}}`."""
    with open_store(cfg, lock=False) as store:
        rows = store.alerts(open_only=args.open)
    if out.as_json:
        for r in rows:
            out.json_line(_alert_json(r))
        return ExitCode.OK
    if not rows:
        out.line("no open alerts" if args.open else "no alerts")
        return ExitCode.OK
    table = []
    for r in rows:
        delivery = (
            f"{r['undelivered']} undelivered"
            if r["undelivered"]
            else "delivered"
            if r["notifications"]
            else "-"
        )
        about = r["mirror"] or r["pith_number"] or "-"
        summary = listed_summary(str((r["payload"] or {}).get("summary", "")), r["pith_number"])
        table.append(
            [str(r["id"]), r["state"], r["kind"], about, r["opened_at"], r["resolved_at"] or "-"]
            + [delivery, summary],
        )
    out.table(
        "alerts",
        ["id", "state", "kind", "about", "opened", "resolved", "delivery", "summary"],
        table,
    )
    return ExitCode.OK


def cmd_evidence(args, cfg, out) -> int:
    """Write one record's evidence file (or to stdout with `--out -`), checked before it is
    written.  --json: `{"file", "pith_number", "documents": int, "claims": [str],
    "truncated"}`."""
    verifier = Verifier(cfg.trust)
    peers = [p.observer_key for p in cfg.peers]
    with open_store(cfg, lock=False) as store:
        pith = resolve_one(store, args.pith, "no stored record matches {ref}")
        signer = load_or_create(cfg.db_path, cfg.observer.name)  # its log's checkpoints' key
        doc = evidence.build_evidence(
            store, pith, verifier, signer, observers=peers, max_bytes=cfg.crawl.max_bytes
        )
    if not doc["claims"]:
        raise UsageError(
            f"the store holds no evidence for {pith} that signatures can prove (nothing written)"
        )
    observers = [signer.verifier_key, *peers]
    check = evidence.verify_evidence(doc, verifier, cfg.crawl.max_bytes, observers)
    if not check.ok:  # cannot happen: build keeps only confirmed claims
        for r in check.reasons:
            log_event(log, logging.ERROR, "evidence_self_check_failed", reason=str(r))
        return ExitCode.FAILED
    data = (json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")
    if args.out == "-":
        out.write(data.decode("utf-8"))
        return ExitCode.OK
    try:
        write_atomically(args.out, data)
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    if out.as_json:
        out.json(
            {
                "file": args.out,
                "pith_number": doc["pith_number"],
                "documents": len(doc["documents"]),
                "claims": [c["claim"] for c in doc["claims"]],
                "truncated": doc["truncated"],
            }
        )
    else:
        out.line(
            f"wrote {args.out}: {len(doc['claims'])} claim(s) over"
            f" {len(doc['documents'])} document(s) for {doc['pith_number']};"
            f" check it anywhere with `pithsync verify {args.out}`"
        )
    return ExitCode.OK
