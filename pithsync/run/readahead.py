"""The read-ahead of trusted inputs: what the store holds about the next records of a run,
read for several records in one round of queries."""

from __future__ import annotations

from dataclasses import dataclass

from pithsync.core.plan import StoredRecord
from pithsync.core.results import Target
from pithsync.core.urls import MirrorSpec
from pithsync.store import Store

# Records whose trusted inputs are read in one round of queries: one round for many records
# costs much less than the same queries record by record.
READ_AHEAD = 32


@dataclass
class Known:
    """What the store holds about one record before it is synced: trusted input only."""

    record: StoredRecord
    urls: list[tuple[str, str, str]]  # each configured mirror's (bundle, state, well-known) URL
    validators: dict[str, dict]  # url -> the validators row, for the configured mirrors' URLs
    bodies: dict[str, bytes]  # sha256 -> stored bytes those validators name


def mirror_urls(mirror: MirrorSpec, suffix: str) -> tuple[str, str, str]:
    """A mirror's (bundle, state, well-known bundle) URLs for one record."""
    return mirror.bundle_url(suffix), mirror.state_url(suffix), mirror.well_known_url(suffix)


class ReadAhead:
    """The trusted inputs of a run's records, read READ_AHEAD records at a time in the order
    the run takes them.  Nothing else writes a record's rows before it is synced (each is
    synced once per run, under the run lock), so what was read ahead is still what is stored.
    One per run: nothing read for an earlier run is trusted in this one."""

    def __init__(self, store: Store, mirrors: list[MirrorSpec], trust_id: str):
        self.store = store
        self.mirrors = mirrors
        self.trust_id = trust_id
        self._known: dict[str, Known] = {}  # read ahead, by suffix; each taken once
        self._order: list[Target] = []  # the run's targets, in the order they are taken
        self._position: dict[str, int] = {}
        self._read_upto = 0

    def add(self, target: Target) -> None:
        """`target` will be taken after those added before it."""
        if target.suffix not in self._position:
            self._position[target.suffix] = len(self._order)
            self._order.append(target)

    def known_for(self, target: Target) -> Known:
        """The store's trusted inputs for `target`, read with those of the next READ_AHEAD
        targets of the run."""
        known = self._known.pop(target.suffix, None)
        if known is not None:
            return known
        batch = [target]
        i = self._position.get(target.suffix)
        if i is not None and i >= self._read_upto:
            batch = self._order[i : i + READ_AHEAD]
            self._read_upto = i + len(batch)
        self._known.update(self._read(batch))
        return self._known.pop(target.suffix)

    def _read(self, targets: list[Target]) -> dict[str, Known]:
        store = self.store
        missing = [t.suffix for t in targets if not t.pith_number]
        found = store.numbers_for_suffixes(missing) if missing else {}
        piths = {t.suffix: t.pith_number or found.get(t.suffix) for t in targets}
        stored = [p for p in piths.values() if p]
        pairs = store.verified_pairs(stored, self.trust_id)
        verdicts = store.mirror_verdicts(stored)
        summaries = store.record_summaries(stored)
        # The quick check's observations name the stored events (only a stored state has them)
        with_state = [p for p, summary in summaries.items() if summary["has_state"]]
        event_ids = store.event_ids(with_state) if with_state else {}
        urls = {t.suffix: [mirror_urls(m, t.suffix) for m in self.mirrors] for t in targets}
        every_url = [u for triples in urls.values() for triple in triples for u in triple]
        validators, bodies = store.validators_with_bodies(every_url)
        out = {}
        for t in targets:
            pith = piths[t.suffix]
            mine = {
                u: validators[u] for triple in urls[t.suffix] for u in triple if u in validators
            }
            shas = (v.get("document_sha256") for v in mine.values())
            record = StoredRecord(
                pith,
                pairs.get(pith, set()),
                verdicts.get(pith, {}),
                summaries.get(pith),
                event_ids.get(pith, ()),
            )
            out[t.suffix] = Known(
                record, urls[t.suffix], mine, {sha: bodies[sha] for sha in shas if sha in bodies}
            )
        return out
