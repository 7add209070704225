"""`journal` (the sync journal, oldest first) and `journal verify` (its hash chain)."""

from __future__ import annotations

import json

from pithsync.base.exits import ExitCode
from pithsync.cli.common import open_store
from pithsync.config import Config


def cmd_journal(args, cfg: Config, out) -> int:
    """The journal, oldest first.  --json: JSON Lines, one entry a line, `{"seq": int, "at",
    "kind", "pith_number", "mirror" (base URL), "status", "detail": {...}, "prev_sha256",
    "entry_sha256", ...}` (a record_outcome's detail holds `"mirrors": [{"mirror", "status",
    "reasons"?}]`; prev_sha256 is the entry before's entry_sha256); `journal verify --json`
    prints one document `{"ok": bool, "entries": int, "problems": [str]}`."""
    with open_store(cfg, lock=False) as store:
        if args.action == "verify":
            problems = store.verify_journal()
            n = len(store.journal())
            if out.as_json:
                out.json({"ok": not problems, "entries": n, "problems": problems})
            elif problems:
                for p in problems:
                    out.line(f"journal: {p}")
            else:
                out.line(f"journal ok: {n} entries, hash chain intact")
            return ExitCode.FAILED if problems else ExitCode.OK
        entries = store.journal(args.since)
        if out.as_json:
            for e in entries:
                out.json_line({**e, "detail": json.loads(e["detail"] or "{}")})
        else:
            for e in entries:
                fields = (e["seq"], e["at"], e["kind"], e["pith_number"], e["mirror"], e["status"])
                out.line(" ".join([*(str(x) for x in fields if x), *_mirror_outcomes(e)]))
        return ExitCode.OK


def _mirror_outcomes(entry: dict) -> list[str]:
    """A record_outcome's mirrors, `base_url=status` each, as its line ends."""
    if entry["kind"] != "record_outcome":
        return []
    mirrors = json.loads(entry["detail"] or "{}").get("mirrors", [])
    return [f"{m['mirror']}={m['status']}" for m in mirrors]
