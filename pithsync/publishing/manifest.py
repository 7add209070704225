"""`pith-mirrors.json`: the mirror manifest (PROTOCOL.md, "URLs and mirrors") a pithsync mirror
publishes about itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pithsync import __version__
from pithsync.core.keys import TrustStore, public_key_entry
from pithsync.core.merge import MERGE_VERSION
from pithsync.core.urls import BUNDLE_PATTERN, STATE_PATTERN, WELL_KNOWN_PATTERN

MANIFEST_PATH = "/pith-mirrors.json"


def fill_base(pattern: str, base: str) -> str:
    """A URL pattern of PROTOCOL.md with `{base}` filled in (`{suffix}` left for the reader)."""
    return pattern.replace("{base}", base)


def manifest(
    base_url: str, trust: TrustStore, *, name: str = "pithsync mirror", records: int | None = None
) -> dict:
    """`pith-mirrors.json` for this mirror.  `public_key` is the first pinned key and
    `public_keys` lists them all: what this mirror checked the documents with (a consumer must
    still trust only its own pinned keys)."""
    base = base_url.rstrip("/")
    keys = [public_key_entry(k.key_id, k.raw) for k in trust]
    notes = (
        f"Served by pithsync {__version__} from its verified store: every bundle is the exact"
        " signed bytes pithsync verified against the pinned keys, and every state.json is the"
        " merge of the bundle beside it.  Verify with your own pinned keys; do not trust this"
        " manifest's keys."
    )
    if records is not None:
        notes += f"  Records published: {records}."
    return {
        "manifest_type": "pith_mirror_manifest",
        "manifest_version": "1.0",
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "merge_version": MERGE_VERSION,
        "mirrors": [
            {
                "name": name,
                "mirror_type": "https" if base.startswith("https://") else "http",
                "base_url": base,
                "bundle_pattern": fill_base(BUNDLE_PATTERN, base),
                "state_pattern": fill_base(STATE_PATTERN, base),
                "well_known_pattern": fill_base(WELL_KNOWN_PATTERN, base),
                "public_key": keys[0] if keys else None,
                "public_keys": keys,
                "status": "mirror",
            }
        ],
        "notes": notes,
    }


def manifest_bytes(doc: dict) -> bytes:
    """The manifest as served: indented JSON, UTF-8."""
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
