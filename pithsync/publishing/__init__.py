"""Operations: `serve` (the verified store as a conforming mirror), `export` (the same tree as
static files for any web server) and `demo` (an offline walk-through on local mirrors built
from the seeds shipped with pithsync).  The aiohttp application behind `serve` is in serving.py.

What a pithsync mirror publishes for a record (`Catalog`): the exact bytes of the stored,
verified bundle whose events match the record's stored state best, re-verified against the
pinned keys of the running configuration, and beside it a state.json that is exactly that
bundle's merge (its embedded `state`: a verified bundle's embedded state is the merge of its
events).  The stored state may merge events from several bundles; it is not served, because no
single signed bundle proves it, and a second pithsync pulling from us must see `in_sync`.
Records without a verified bundle (a record known only from a standalone state) are not
published.  The resolver page `/pith/{suffix}` is built from that bundle alone: JSON-LD holding
its canonical record (what the registry's recipe hashes), or a small HTML page for a browser.  The store is only ever read here: no run lock, read-only SQLite connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import html
import importlib.resources
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from pithsync import __version__
from pithsync.base.logfmt import log_event
from pithsync.config import AlertsConfig, Config, CrawlConfig, MetricsConfig
from pithsync.core import strictjson
from pithsync.core.canonical import canon, canon_sha256, compact
from pithsync.core.keys import TrustStore, public_key_entry
from pithsync.core.merge import MERGE_VERSION
from pithsync.core.urls import BUNDLE_PATTERN, STATE_PATTERN, WELL_KNOWN_PATTERN
from pithsync.core.verify import BUNDLE_TYPE, Verifier
from pithsync.publishing.httpcache import etag_of
from pithsync.store import Store

log = logging.getLogger("pithsync.ops")

SUFFIX_RE = re.compile(r"^[A-Z2-7]{26}$")
MANIFEST_PATH = "/pith-mirrors.json"
JSON_TYPE = "application/json"
JSON_LD_TYPE = "application/ld+json"
HTML_TYPE = "text/html"
RESOLVER_PATTERN = "{base}/pith/{suffix}"
# A static server cannot negotiate, and /pith/{SUFFIX} is a directory there (it holds
# bundle.json): the server redirects to /pith/{SUFFIX}/ and answers with this file.
EXPORTED_RESOLVER = "index.html"
# The registry's own JSON-LD vocabulary is not in the seeds: pithsync's terms are schema.org
# where one fits, the rest under a vocabulary of pithsync's own (kept here, easy to change).
JSON_LD_CONTEXT = {
    "@vocab": "urn:pithsync:open-graph#",
    "schema": "https://schema.org/",
    "identifier": "schema:identifier",
    "name": "schema:name",
    "url": "schema:url",
    "canonical_record": {"@type": "@json"},
    "source": {"@type": "@json"},
    "source_aliases": {"@type": "@json"},
    "links": {"@type": "@json"},
}
VERIFY_RECIPE = (
    "canonical_sha256 = sha256(json.dumps(canonical_record, sort_keys=True, separators=(',', ':'),"
    " ensure_ascii=False).encode('utf-8')), lowercase hex; the pith number's 26 characters are"
    " the first 26 of the RFC 4648 base32 of those 32 digest bytes"
)




# -- what this store publishes -----------------------------------------------------------------


def _parse_time(text: str | None) -> datetime:
    if text:
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc).replace(microsecond=0)
        except ValueError:
            pass
    return datetime.now(timezone.utc).replace(microsecond=0)


def _latest_title(state: dict) -> str | None:
    """The paper title of the last applied graph snapshot of a verified state, if it has one
    (signed payloads, but of no fixed shape)."""
    entry: object = state.get("current", {}).get("graph_snapshots") or [None]
    for key in (-1, "payload", "graph_snapshot", "paper", "title"):
        if isinstance(key, int):
            entry = entry[key] if isinstance(entry, list) else None
        else:
            entry = entry.get(key) if isinstance(entry, dict) else None
    return entry if isinstance(entry, str) else None


@dataclass(frozen=True)
class Published:
    """One record as this mirror serves it."""

    pith_number: str
    suffix: str
    bundle: bytes  # exact bytes of a stored verified bundle
    state: bytes  # that bundle's merge
    bundle_sha256: str
    state_sha256: str
    event_count: int
    last_modified: datetime  # when the served bundle was first stored
    # From the served bundle, for the resolver document: nothing else goes into it.
    canonical_record: dict
    short_pith_number: str
    source_aliases: list
    title: str | None  # of the latest applied graph snapshot, when it has one

    @property
    def bundle_etag(self) -> str:
        return etag_of(self.bundle)

    @property
    def state_etag(self) -> str:
        return etag_of(self.state)

    def files(self, base_url: str | None = None) -> dict[str, bytes]:
        """URL path -> body, for the mirror layout of PROTOCOL.md; with `base_url` (where the
        files will be served) also the resolver document, as a static server finds it."""
        files = {
            f"/pith/{self.suffix}/bundle.json": self.bundle,
            f"/pith/{self.suffix}/state.json": self.state,
            f"/.well-known/pith/{self.suffix}/bundle.json": self.bundle,
        }
        if base_url is not None:
            files[f"/pith/{self.suffix}/{EXPORTED_RESOLVER}"] = self.resolver_json_ld(base_url)
        return files

    def links(self, base_url: str) -> dict[str, str]:
        """Where this mirror serves the record (the served bundle's own `links` are signed and
        name wherever its signer put them)."""
        base = base_url.rstrip("/")
        return {
            "resolver": _fill(RESOLVER_PATTERN, base).replace("{suffix}", self.suffix),
            "bundle": _fill(BUNDLE_PATTERN, base).replace("{suffix}", self.suffix),
            "state": _fill(STATE_PATTERN, base).replace("{suffix}", self.suffix),
            "well_known_bundle": _fill(WELL_KNOWN_PATTERN, base).replace("{suffix}", self.suffix),
        }

    def resolver_document(self, base_url: str) -> dict:
        """The JSON-LD resolver document: the verified bundle's canonical record, untouched,
        and what it hashes to, so that anyone can check the pith number by the recipe."""
        links = self.links(base_url)
        doc = {
            "@context": JSON_LD_CONTEXT,
            "@id": links["resolver"],
            "@type": "schema:ScholarlyArticle",
            "identifier": self.pith_number,
            "pith_number": self.pith_number,
            "short_pith_number": self.short_pith_number,
            "canonical_record": self.canonical_record,
            "canonical_sha256": canon_sha256(self.canonical_record),
            "source": self.canonical_record.get("source"),
            "source_aliases": self.source_aliases,
            "bundle_bytes_sha256": self.bundle_sha256,  # of the bundle.json served beside it
            "state_sha256": self.state_sha256,
            "event_count": self.event_count,
            "links": links,
            "url": links["resolver"],
            "verification": VERIFY_RECIPE,
            "served_by": f"pithsync {__version__}",
        }
        if self.title is not None:
            doc["name"] = self.title
        return doc

    def resolver_json_ld(self, base_url: str) -> bytes:
        """The resolver document's bytes.  `<`, `>` and `&` are written as JSON escapes: the
        same values, but no markup where a static server labels the file text/html."""
        text = json.dumps(self.resolver_document(base_url), indent=2, ensure_ascii=False)
        for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
            text = text.replace(char, escape)
        return (text + "\n").encode("utf-8")

    def resolver_html(self, base_url: str) -> bytes:
        """A small HTML page for browsers: every value escaped, no script."""
        links = self.links(base_url)
        record = self.canonical_record
        source = record.get("source") if isinstance(record.get("source"), dict) else {}
        metadata = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
        rows = [
            ("Pith number", self.pith_number),
            ("Short form", self.short_pith_number),
            ("Title", self.title),
            ("Source", " ".join(str(source.get(k)) for k in ("kind", "id", "version"))),
            ("Submitted", metadata.get("submitted_at")),
            ("canonical_sha256", canon_sha256(record)),
            ("Events in the served bundle", self.event_count),
        ]
        e = html.escape
        cells = "".join(
            f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>\n" for k, v in rows if v is not None
        )
        anchors = "".join(
            f'<li><a href="{e(url)}">{e(name)}</a></li>\n' for name, url in links.items()
        )
        heading = e(self.title) if self.title else e(self.pith_number)
        page = (
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f"<title>{e(self.pith_number)}</title>\n"
            f'<link rel="alternate" type="{JSON_LD_TYPE}" href="{e(links["resolver"])}">\n'
            f"</head><body>\n<h1>{heading}</h1>\n<table>\n{cells}</table>\n<ul>\n{anchors}</ul>\n"
            f"<p>Served by pithsync {e(__version__)} from its verified store. Ask for "
            f"{JSON_LD_TYPE} to get the canonical record; check it: {e(VERIFY_RECIPE)}.</p>\n"
            "</body></html>\n"
        )
        return page.encode("utf-8")


def wants_json_ld(accept: str | None) -> str | None:
    """The JSON type an Accept header asks for (JSON-LD or plain JSON) at least as much as for
    a page, else None (browsers, `*/*`, no header: the HTML page)."""
    wanted: dict[str, float] = {}
    for part in (accept or "").split(","):
        media, *params = part.split(";")
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                q = q if 0.0 <= q <= 1.0 else 0.0  # also NaN
        media = media.strip().lower()
        wanted[media] = max(wanted.get(media, 0.0), q)
    page = max(wanted.get(m, 0.0) for m in ("text/html", "application/xhtml+xml", "text/*", "*/*"))
    best = max((JSON_LD_TYPE, JSON_TYPE), key=lambda m: wanted.get(m, 0.0))
    return best if wanted.get(best, 0.0) > 0.0 and wanted[best] >= page else None


class Catalog:
    """The records this store publishes, computed lazily and cached per record.

    The store may be written by a sync while we serve: `PRAGMA data_version` (checked at most
    every `refresh_s` seconds) tells when another connection committed; a record is then rebuilt
    only if its stored state or its set of verified documents changed."""

    def __init__(self, store: Store, verifier: Verifier | None, *, refresh_s: float = 2.0):
        self.store = store
        self.verifier = verifier
        self.refresh_s = refresh_s
        self._checked = float("-inf")
        self._version: int | None = None
        self._records: dict[str, str] = {}  # suffix -> pith number (records with a state and a bundle)
        self._bundles: dict[str, list[str]] = {}
        self._states: dict[str, list[str]] = {}
        self._cache: dict[str, tuple[int | None, tuple, Published | None]] = {}
        self.rejected: dict[str, str] = {}  # pith number -> why nothing of it is published

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.refresh_s:
            return
        self._checked = now
        version = self.store.data_version()
        if version == self._version and not force:
            return
        self._version = version
        self._bundles = self.store.document_index("bundle")
        self._states = self.store.document_index("state")
        self._records = {
            suffix: pith
            for pith, suffix in self.store.records_with_state()
            if pith in self._bundles
        }

    def suffixes(self) -> list[str]:
        self.refresh()
        return sorted(self._records)

    def get(self, suffix: str) -> Published | None:
        self.refresh()
        pith = self._records.get(suffix)
        if pith is None:
            return None
        cached = self._cache.get(suffix)
        if cached is not None and cached[0] == self._version:
            return cached[2]
        summary = self.store.record_summary(pith)
        key = (summary["state_sha256"] if summary else None, tuple(self._bundles.get(pith, ())), tuple(self._states.get(pith, ())))
        if cached is not None and cached[1] == key:
            self._cache[suffix] = (self._version, key, cached[2])
            return cached[2]
        published = self._build(pith, suffix)
        self._cache[suffix] = (self._version, key, published)
        return published

    def _build(self, pith: str, suffix: str) -> Published | None:
        shas = list(self._bundles.get(pith, ()))
        while shas:
            best = self.store.best_bundle(pith, shas)
            if best is None:
                break
            sha, body, bundle = best
            shas.remove(sha)
            if self.verifier is not None:
                report = self.verifier.verify_bundle(bundle)
                if not report.ok or canon(bundle["state"]) != canon(report.merged_state):
                    # Stored under other pinned keys, say: never publish what we would not accept.
                    self.rejected[pith] = f"bundle {sha[:16]} does not verify with the pinned keys: " + "; ".join(str(r) for r in report.reasons[:2])
                    log_event(
                        log, logging.WARNING, "bundle_not_published", bundle_sha256=sha,
                        record=pith, why=self.rejected[pith],
                    )
                    continue
            self.rejected.pop(pith, None)
            state = bundle["state"]
            return Published(
                pith_number=pith,
                suffix=suffix,
                bundle=body,
                state=self._state_bytes(pith, state),
                bundle_sha256=sha,
                state_sha256=state["state_sha256"],
                event_count=state["event_count"],
                last_modified=_parse_time(self.store.document_first_seen(sha)),
                canonical_record=bundle["canonical_record"],
                short_pith_number=f"pith:{suffix[:8]}",
                source_aliases=bundle.get("source_aliases") or [],
                title=_latest_title(state),
            )
        return None

    def _state_bytes(self, pith: str, state: dict) -> bytes:
        """The exact bytes of a stored verified state.json equal to `state`, else `state`
        serialised compactly (as the registry does)."""
        want = canon(state)
        for sha in self._states.get(pith, ()):
            body = self.store.document_body(sha)
            if body is None:
                continue
            try:
                if canon(json.loads(body)) == want:
                    return body
            except ValueError:
                continue
        return compact(state)


# -- the mirror manifest -----------------------------------------------------------------------


def _fill(pattern: str, base: str) -> str:
    return pattern.replace("{base}", base)


def manifest(base_url: str, trust: TrustStore, *, name: str = "pithsync mirror", records: int | None = None) -> dict:
    """`pith-mirrors.json` for this mirror.  `public_key` is the first pinned key and
    `public_keys` lists them all: what this mirror checked the documents with (a consumer must
    still trust only its own pinned keys)."""
    base = base_url.rstrip("/")
    keys = [public_key_entry(k.key_id, k.raw) for k in trust]
    notes = (
        f"Served by pithsync {__version__} from its verified store: every bundle is the exact signed "
        "bytes pithsync verified against the pinned keys, and every state.json is the merge of the "
        "bundle beside it.  Verify with your own pinned keys; do not trust this manifest's keys."
    )
    if records is not None:
        notes += f"  Records published: {records}."
    return {
        "manifest_type": "pith_mirror_manifest",
        "manifest_version": "1.0",
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "merge_version": MERGE_VERSION,
        "mirrors": [
            {
                "name": name,
                "mirror_type": "https" if base.startswith("https://") else "http",
                "base_url": base,
                "bundle_pattern": _fill(BUNDLE_PATTERN, base),
                "state_pattern": _fill(STATE_PATTERN, base),
                "well_known_pattern": _fill(WELL_KNOWN_PATTERN, base),
                "public_key": keys[0] if keys else None,
                "public_keys": keys,
                "status": "mirror",
            }
        ],
        "notes": notes,
    }


def manifest_bytes(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# -- serve ------------------------------------------------------------------------------------


# -- export ------------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes, mtime: float | None = None) -> bool:
    """Write `data` to `path` through a temporary file and a rename; False (file untouched)
    when it already holds exactly `data`."""
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))  # a static server's Last-Modified
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True


def export_tree(store: Store, cfg: Config, directory: str, base_url: str, *, name: str = "pithsync mirror") -> dict:
    """Write every published record and `pith-mirrors.json` under `directory`."""
    root = Path(directory)
    catalog = Catalog(store, Verifier(cfg.trust), refresh_s=0.0)
    written = unchanged = 0
    records = []
    with store.snapshot():
        for suffix in catalog.suffixes():
            pub = catalog.get(suffix)
            if pub is None:
                continue
            records.append(pub.pith_number)
            for url_path, body in pub.files(base_url).items():
                if write_atomic(root / url_path.lstrip("/"), body, pub.last_modified.timestamp()):
                    written += 1
                else:
                    unchanged += 1
    write_atomic(root / MANIFEST_PATH.lstrip("/"), manifest_bytes(manifest(base_url, cfg.trust, name=name, records=len(records))))
    return {"directory": str(root), "records": records, "files_written": written, "files_unchanged": unchanged, "not_published": dict(catalog.rejected)}





