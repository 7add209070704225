"""What a pithsync mirror publishes for a record (`Catalog`): the exact bytes of the stored,
verified bundle whose events match the record's stored state best, re-verified against the
pinned keys of the running configuration, and beside it a state.json that is exactly that
bundle's merge (its embedded `state`: a verified bundle's embedded state is the merge of its
events).  The stored state may merge events from several bundles; it is not served, because no
single signed bundle proves it, and a second pithsync pulling from us must see `in_sync`.
Records without a verified bundle (a record known only from a standalone state) are not
published.  The store is only ever read here: no run lock, read-only SQLite connection.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from pithsync.base.logfmt import log_event
from pithsync.core.canonical import canon, compact
from pithsync.core.numbers import parse_full
from pithsync.core.verify import Verifier
from pithsync.publishing.httpcache import etag_of
from pithsync.store import Store

log = logging.getLogger("pithsync.ops")

SUFFIX_RE = re.compile(r"^[A-Z2-7]{26}$")


def _parse_time(text: str | None) -> datetime:
    if text:
        try:
            return (
                datetime.fromisoformat(text.replace("Z", "+00:00"))
                .astimezone(UTC)
                .replace(microsecond=0)
            )
        except ValueError:
            pass
    return datetime.now(UTC).replace(microsecond=0)


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
        """The served bundle's strong ETag."""
        return etag_of(self.bundle)

    @property
    def state_etag(self) -> str:
        """The served state's strong ETag."""
        return etag_of(self.state)


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
        self._records: dict[
            str, str
        ] = {}  # suffix -> pith number (records with a state and a bundle)
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
        key = (
            summary["state_sha256"] if summary else None,
            tuple(self._bundles.get(pith, ())),
            tuple(self._states.get(pith, ())),
        )
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
                    self.rejected[pith] = (
                        f"bundle {sha[:16]} does not verify with the pinned keys: "
                        + "; ".join(str(r) for r in report.reasons[:2])
                    )
                    log_event(
                        log,
                        logging.WARNING,
                        "bundle_not_published",
                        bundle_sha256=sha,
                        record=pith,
                        why=self.rejected[pith],
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
                short_pith_number=parse_full(pith).short,
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
