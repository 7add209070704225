"""One sync run: fetch -> verify -> compare -> store, for many records at once.

Data flows one way.  The only thing read back from the store is trusted input the comparison
needs (events verified on earlier runs, validators for conditional requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import logging
import math
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

import anyio

from pithsync.base.exits import StoreError
from pithsync.base.logfmt import log_event
from pithsync.config import Config
from pithsync.core import numbers, strictjson
from pithsync.core.compare import (
    Assessment,
    Assessor,
    Fetched,
    MirrorCopy,
    RecordComparison,
    Retrieval,
    compare_record,
)
from pithsync.core.errors import MalformedDocument
from pithsync.core.merge import merge_state
from pithsync.core.plan import EncodedState, MirrorRow, RecordWrite
from pithsync.core.status import Status, Verdict
from pithsync.core.urls import MirrorSpec, hinted_mirrors
from pithsync.core.verify import Verifier
from pithsync.fetch import Fetcher, PolicyError, UrlPolicy, Validators
from pithsync.run import alerting
from pithsync.run.results import (
    MirrorResult,
    RecordResult,
    Target,
    failed_result,
    internal_error,
    wrong_number_result,
)
from pithsync.store import Store

log = logging.getLogger("pithsync.sync")


# uvloop runs the event loop, its transports and its timers in C: a GET through aiohttp costs
# about a seventh less CPU (82 against 96 us, six interleaved runs of the fetch path alone) and a
# full sync's workers about 5% less.  A dependency wherever uvloop exists (not on Windows);
# elsewhere the standard loop runs the same code.
_LOOP_OPTIONS = {"use_uvloop": importlib.util.find_spec("uvloop") is not None}

T = TypeVar("T")


def run_event_loop(main: Callable[[], Awaitable[T]]) -> T:
    """anyio.run for a sync's engine: on uvloop where it is installed."""
    return anyio.run(main, backend_options=_LOOP_OPTIONS)


# CPython's cyclic GC starts a pass every 700 net container allocations.  A sync allocates
# heavily (parsed documents, aiohttp's per-request objects) but almost nothing it drops is
# cyclic, so refcounting frees it and the passes find nothing: ~600 of them per 2,500 records
# took 0.45 s of a worker's 3.5 s.  At 20,000 a full sync of 5,000 records makes one or two,
# and cyclic garbage stays bounded by the same 20,000 objects.
GC_THRESHOLD = 20_000


@contextlib.contextmanager
def rare_gc_passes():
    """Raise the GC's first threshold for the duration of a run, then put it back."""
    before = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


@dataclass
class _Fetched:
    copy: MirrorCopy
    validators: dict  # url -> (Validators, sha256 of body or None)


@dataclass
class _Known:
    """What the store holds about one record before it is synced: trusted input only."""

    pith_number: str | None
    urls: list[tuple[str, str, str]]  # each configured mirror's (bundle, state, well-known) URL
    known_good: set  # (bundle sha256, state sha256) pairs verified together under the pinned keys
    validators: dict[str, dict]  # url -> the validators row, for the configured mirrors' URLs
    bodies: dict[str, bytes]  # sha256 -> stored bytes those validators name
    verdicts: dict[str, tuple]  # mirror base_url -> (status, bundle sha256, state sha256), last check
    summary: dict | None  # Store.record_summary


# Records whose trusted inputs are read in one round of queries: per record, the five small
# queries cost about twice as much as their share of a round.
READ_AHEAD = 32


def _cited(events, pith_number: str) -> list[str]:
    """Pith numbers that verified events mention, other than their own record's."""
    found: set[str] = set()
    for ev in events:
        found |= numbers.find_in(ev.get("payload"))
    found.discard(pith_number)
    return sorted(found)


NOT_MODIFIED = "not_modified"  # Fetched.code of a copy answered 304: the stored bytes, unchanged


def _base_key(url: str) -> str:
    return url.rstrip("/").lower()


class RecordSink:
    """Where examined records go, in this order: the store (with their alerts, in one
    transaction), the log, the caller.  The one place a record is committed, whichever process
    examined it (see shards.py)."""

    def __init__(self, cfg: Config, store: Store, *, on_record: Callable[[RecordResult], None] | None = None, batch_records: int = 1000, keep_results: bool = True):
        self.cfg = cfg
        self.store = store
        self.on_record = on_record
        self.batch_records = batch_records
        self.keep_results = keep_results  # False: results go only to on_record (large runs)
        self.results: dict[str, RecordResult] = {}
        self._store_failed: str | None = None

    def commit(self, run_id: str, result: RecordResult, write: RecordWrite | None) -> None:
        self.commit_many(run_id, [(result, write)])

    def commit_many(self, run_id: str, records: list[tuple[RecordResult, RecordWrite | None]]) -> None:
        """Records examined together (a worker's message): written as one group, then each
        logged and handed on, in order."""
        if self._store_failed is not None:
            # The run is stopping (exit 4); records still finishing in the same turn of the
            # event loop must not write into the batch that is about to be rolled back.
            raise StoreError(self._store_failed)

        pending = [(result, write) for result, write in records if write is not None]
        if pending:
            try:
                # Each group in one savepoint: the records' rows, then each record's alerts in
                # order (they read the rows just written, and the alerts opened before them).
                for group in self.store.groups(pending):
                    with self.store.group(batch_records=self.batch_records):
                        self.store.write_rows(run_id, [write for _, write in group])
                        for result, _ in group:
                            alerting.record_alerts(self.cfg, self.store, run_id, result)
            except StoreError as exc:
                self._store_failed = str(exc)
                raise
            except Exception as exc:  # a bug must not stop the other records
                if len(records) > 1:  # the group was taken back whole: find the record it is in
                    for one in records:
                        self.commit_many(run_id, [one])
                    return
                result = records[0][0]
                log_event(
                    log, logging.ERROR, "record_failed", exc_info=True, record=result.pith_number,
                    error=repr(exc),
                )
                records = [(failed_result(Target(result.pith_number.rsplit(":", 1)[-1], result.pith_number), internal_error(exc)), None)]
        for result, write in records:
            # Journald hears about records that need attention; -v shows every record.
            level = logging.DEBUG if result.verdict is Verdict.IN_SYNC else logging.INFO
            if write is not None and log.isEnabledFor(level):  # the mirrors' list is not built for a line nobody logs
                mirrors = ",".join(f"{m.name}:{m.status.value}" for m in result.mirrors)
                log_event(
                    log, level, "record_checked", record=result.pith_number,
                    verdict=result.verdict.value, events=result.event_count, mirrors=mirrors,
                )
            if self.keep_results:
                self.results[result.pith_number] = result
            if self.on_record is not None:
                self.on_record(result)

    def finish(self) -> None:
        self.store.commit_batch()

    def abort(self) -> None:
        self.store.rollback_batch()


Commit = Callable[[str, RecordResult, "RecordWrite | None"], None]


class SyncEngine:
    """Fetches, verifies and compares records, and hands each one to `commit` (by default a
    RecordSink on `store`).  It reads the store only for trusted input: events verified on
    earlier runs, validators and bodies for conditional requests."""

    def __init__(self, cfg: Config, store: Store, fetcher: Fetcher, *, sink: RecordSink | None = None, commit: Commit | None = None, on_record: Callable[[RecordResult], None] | None = None):
        self.cfg = cfg
        self.store = store
        self.fetcher = fetcher
        self.assessor = Assessor(Verifier(cfg.trust), cfg.crawl.max_bytes)
        self.trust_id = cfg.trust.trust_id
        self._configured = {_base_key(m.base_url): m for m in cfg.mirrors}  # base key -> spec, for every record
        self.sink = sink or RecordSink(cfg, store, on_record=on_record)
        self.commit = commit or self.sink.commit  # a worker process sends instead (shards.py)
        self.quick_check = True  # unchanged records skip the comparison (_unchanged); tests turn it off
        self._known: dict[str, _Known] = {}  # read ahead, by suffix; each taken once
        self._order: list[Target] = []  # the run's targets, in the order they are taken
        self._position: dict[str, int] = {}
        self._read_upto = 0

    @property
    def results(self) -> dict[str, RecordResult]:
        return self.sink.results

    @staticmethod
    def policy_for(cfg: Config) -> UrlPolicy:
        return UrlPolicy.for_mirrors([m.base_url for m in cfg.mirrors], cfg.crawl)

    async def run(self, run_id: str, targets: list[Target], *, track: bool = True, more: Callable[[], list[Target]] | None = None) -> list[RecordResult]:
        """Sync every target (and, within their depth, the records they cite).  `more`, when
        given, hands out further targets while the run goes on, until it returns none: a worker
        process takes its records from the run's common supply that way (shards.py)."""
        queued: set[str] = set()
        # Read-ahead state is per run: nothing read for an earlier run is trusted in this one.
        self._known, self._order, self._position, self._read_upto = {}, [], {}, 0
        send, receive = anyio.create_memory_object_stream[Target](max_buffer_size=math.inf)
        pending = 0

        def add(new: list[Target]) -> None:
            nonlocal pending
            for t in new:
                if t.suffix not in self._position:
                    self._position[t.suffix] = len(self._order)
                    self._order.append(t)
                queued.add(t.suffix)
                send.send_nowait(t)
            pending += len(new)

        supply_left = more is not None

        def take_more() -> None:
            """Keep enough targets waiting for the records in flight and a read-ahead behind them."""
            nonlocal supply_left
            while supply_left and receive.statistics().current_buffer_used < low_water:
                new = more()
                supply_left = bool(new)
                add(new)

        # Records in flight: enough to keep every allowed connection busy, with some to spare
        # for the CPU work between fetches.  More only queue inside aiohttp's connector, where
        # each waiting request costs a future and a wake-up: at concurrency/2 records, full
        # sync and re-sync took 7-9% more CPU.  A mirror that is down no longer holds records
        # in retry backoff for long (fetch.MirrorBreaker), which is what had needed the excess.
        per_record = 2 * max(1, len(self.cfg.mirrors))
        in_flight = max(2, min(64, -(-3 * self.cfg.crawl.concurrency // (2 * per_record))))
        low_water = in_flight + READ_AHEAD // 2
        add(targets)
        take_more()
        if pending == 0:
            send.close()

        async def take_records() -> None:
            nonlocal pending
            async for target in receive:
                try:
                    try:
                        result = await self.sync_record(run_id, target, track=track)
                    except StoreError:
                        raise  # the store is unusable: stop the run, say why (exit 4)
                    except Exception as exc:  # a bug must not stop the other records
                        log_event(
                            log, logging.ERROR, "record_failed", exc_info=True,
                            record=target.pith_number or target.suffix, error=repr(exc),
                        )
                        result = failed_result(target, internal_error(exc))
                        self.commit(run_id, result, None)
                    if target.depth > 0:
                        for number in result.found_numbers:
                            suffix = number.split(":")[2]
                            if suffix not in queued:
                                add([Target(suffix, number, target.depth - 1)])
                finally:
                    pending -= 1
                    take_more()
                    if pending == 0:
                        send.close()

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(in_flight):
                    tg.start_soon(take_records)
        except BaseException:
            self.sink.abort()
            raise
        self.sink.finish()
        return list(self.results.values())

    # -- one record ---------------------------------------------------------------------------
    async def sync_record(self, run_id: str, target: Target, *, track: bool = True) -> RecordResult:
        result, write, valid_events = await self.examine(target, track=track)
        self.commit(run_id, result, write)
        if target.depth > 0:  # only --depth needs the numbers cited in the payloads
            result.found_numbers = _cited(valid_events, result.pith_number)
        return result

    async def examine(self, target: Target, *, track: bool = True) -> tuple[RecordResult, RecordWrite, list[dict]]:
        """Fetch, verify and compare one record: its result, what to store, its verified events."""
        suffix = target.suffix
        configured = list(self.cfg.mirrors)
        known = self._known_for(target)
        known_pith, known_good = known.pith_number, known.known_good
        # A stored row with a state holds a verified record (Store checks its number on write);
        # a row without one holds only the number someone typed.
        has_state = known.summary is not None and known.summary["has_state"]
        verified_pith = known_pith if has_state else None
        if verified_pith is not None and target.requested not in (None, verified_pith):
            return wrong_number_result(target, verified_pith), None, []
        if verified_pith is None:
            known_pith = None  # not trusted: the verified bundles below say which number it is
        fetched = await self._fetch_all(configured, suffix, known)
        if self.quick_check and known_pith and target.depth == 0:
            unchanged = self._unchanged(known, fetched, track)
            if unchanged is not None:
                return unchanged
        assessments = [self.assessor.assess(f.copy, suffix, known_good) for f in fetched]
        specs = dict(self._configured)  # hinted mirrors join it for this record

        refused: list[dict] = []
        if self.cfg.crawl.follow_hints:
            discovered = self._discover(assessments, suffix, specs, refused)
            if discovered:
                more = await self._fetch_all(discovered, suffix)
                fetched += more
                assessments += [self.assessor.assess(f.copy, suffix, known_good) for f in more]
                specs.update({_base_key(m.base_url): m for m in discovered})

        # Only a verified number is stored with verified data; a typed one stands in while no
        # mirror has a verified copy (a tracked record waiting to appear).
        verified_bundles = (a.bundle["pith_number"] for a in assessments if a.bundle_ok)
        verified_pith = known_pith or next(verified_bundles, None)
        if verified_pith is not None and target.requested not in (None, verified_pith):
            return wrong_number_result(target, verified_pith), None, []
        pith_number = verified_pith or target.requested or known.pith_number or f"pith:{suffix}"
        stored_events = self.store.stored_events(pith_number)
        comparison = compare_record(assessments, stored_events)
        stored = pith_number == known.pith_number
        summary = known.summary if stored else self.store.record_summary(pith_number)
        result, write = self._plan_write(pith_number, comparison, stored_events, fetched, specs, track, refused, known_good, summary)
        return result, write, list(comparison.valid_events.values())

    def _known_for(self, target: Target) -> _Known:
        """The store's trusted inputs for `target`, read with those of the next READ_AHEAD
        targets of the run.  Nothing else writes a record's rows before it is synced (each is
        synced once per run, under the run lock), so what was read ahead is still what is stored."""
        known = self._known.pop(target.suffix, None)
        if known is not None:
            return known
        batch = [target]
        i = self._position.get(target.suffix)
        if i is not None and i >= self._read_upto:
            batch = self._order[i : i + READ_AHEAD]
            self._read_upto = i + len(batch)
        self._known.update(self._read_known(batch))
        return self._known.pop(target.suffix)

    def _read_known(self, targets: list[Target]) -> dict[str, _Known]:
        store = self.store
        missing = [t.suffix for t in targets if not t.pith_number]
        numbers = store.numbers_for_suffixes(missing) if missing else {}
        piths = {t.suffix: t.pith_number or numbers.get(t.suffix) for t in targets}
        stored = [p for p in piths.values() if p]
        pairs = store.verified_pairs(stored, self.trust_id)
        verdicts = store.mirror_verdicts(stored)
        summaries = store.record_summaries(stored)
        urls = {t.suffix: [self._urls(m, t.suffix) for m in self.cfg.mirrors] for t in targets}
        validators, bodies = store.validators_with_bodies([u for triples in urls.values() for triple in triples for u in triple])
        out = {}
        for t in targets:
            pith = piths[t.suffix]
            mine = {u: validators[u] for triple in urls[t.suffix] for u in triple if u in validators}
            out[t.suffix] = _Known(
                pith,
                urls[t.suffix],
                pairs.get(pith, set()),
                mine,
                {v["document_sha256"]: bodies[v["document_sha256"]] for v in mine.values() if v.get("document_sha256") in bodies},
                verdicts.get(pith, {}),
                summaries.get(pith),
            )
        return out

    @staticmethod
    def _urls(m: MirrorSpec, suffix: str) -> tuple[str, str, str]:
        return m.bundle_url(suffix), m.state_url(suffix), m.well_known_url(suffix)

    def _unchanged(self, known: _Known, fetched: list[_Fetched], track: bool) -> tuple[RecordResult, RecordWrite, list[dict]] | None:
        """The result of a record nothing has changed in since its last check, found without
        comparing again, or None.  It holds when every configured mirror answered 304 for both
        documents with a pair that verified together under the pinned keys (known_good), the
        last check found each of these mirrors `ok` with these very bytes (so their events hold
        no equivocation), and each served state's state_sha256 is the stored merge's (so each
        mirror has exactly the stored events: none is stale, and nothing new is to be stored).
        Then the full path gives every mirror `ok`, an in_sync verdict and nothing to write
        but the check itself; tests/test_sync.py holds the two paths equal case by case.
        With follow_hints the bundle is read for hints: one naming another mirror takes the full path."""
        if any(f.copy.bundle.code != NOT_MODIFIED or f.copy.state.code != NOT_MODIFIED for f in fetched):
            return None
        pith_number = known.pith_number
        pairs = [(f.copy.bundle.sha256, f.copy.state.sha256) for f in fetched]
        if not all(p in known.known_good for p in pairs):
            return None
        if any(known.verdicts.get(f.copy.mirror) != (Status.OK.value, *p) for f, p in zip(fetched, pairs)):
            return None
        stored = known.summary
        if stored is None or not stored["has_state"]:
            return None
        served: dict[str, dict] = {}
        for f in fetched:
            if f.copy.state.sha256 not in served:
                try:
                    served[f.copy.state.sha256] = strictjson.loads_object(f.copy.state.body, max_bytes=self.cfg.crawl.max_bytes)
                except MalformedDocument:
                    return None
        if any(state.get("state_sha256") != stored["state_sha256"] for state in served.values()):
            return None
        specs = self._configured
        if self.cfg.crawl.follow_hints:
            # Hints naming configured mirrors are ignored by _discover too; any other goes the full way.
            suffix = pith_number.split(":")[2]
            for body in {f.copy.bundle.sha256: f.copy.bundle.body for f in fetched}.values():
                try:
                    hints = hinted_mirrors(strictjson.loads_object(body, max_bytes=self.cfg.crawl.max_bytes), suffix)
                except MalformedDocument:
                    return None
                if any(_base_key(h.base_url) not in specs for h in hints):
                    return None
        write = self._new_write(pith_number, Verdict.IN_SYNC, track)
        mirrors: list[MirrorResult] = []
        for f, (bundle_sha, state_sha) in zip(fetched, pairs):
            self._report_mirror(mirrors, write, specs[_base_key(f.copy.mirror)], f.copy.mirror, Status.OK, [], bundle_sha, state_sha)
        write.journal_detail = {"new_events": 0, "refused_hints": 0}
        result = RecordResult(pith_number, Verdict.IN_SYNC, mirrors, event_count=stored["event_count"], state_sha256=stored["state_sha256"])
        return result, write, []

    def _discover(self, assessments: list[Assessment], suffix: str, known: dict, refused: list[dict]) -> list[MirrorSpec]:
        """Mirrors named by verified bundles, under the safety policy and the per-record cap."""
        found: list[MirrorSpec] = []
        seen = set(known)
        for a in assessments:
            if not a.bundle_ok:
                continue  # hints from unverified documents are never followed
            for spec in hinted_mirrors(a.bundle, suffix):
                key = _base_key(spec.base_url)
                if key in seen:
                    continue
                seen.add(key)
                if len(found) >= self.cfg.crawl.max_discovered_mirrors:
                    refused.append({"base_url": spec.base_url[:200], "reason": f"over the cap of {self.cfg.crawl.max_discovered_mirrors} discovered mirrors per record"})
                    continue
                try:
                    self.fetcher.policy.check(spec.bundle_url(suffix))
                except PolicyError as exc:
                    refused.append({"base_url": spec.base_url[:200], "reason": str(exc)})
                    continue
                found.append(spec)
        if len(refused) > 50:  # a hostile hint list must not flood the report either
            extra = len(refused) - 50
            del refused[50:]
            refused.append({"base_url": "...", "reason": f"{extra} more refused"})
        return found

    async def _fetch_all(self, mirrors: list[MirrorSpec], suffix: str, stored: _Known | None = None) -> list[_Fetched]:
        """Bundle and state from every mirror at once: one task group per record.  `stored`:
        what was read ahead for the configured mirrors; hinted ones are looked up here."""
        if stored is not None:
            urls, known, bodies = stored.urls, stored.validators, stored.bodies
        else:
            urls = [self._urls(m, suffix) for m in mirrors]
            known, bodies = self.store.validators_with_bodies([u for triple in urls for u in triple])
        out: list[dict] = [{} for _ in mirrors]
        validators: list[dict] = [{} for _ in mirrors]

        async def get(i: int, kind: str, url: str, fallback: str | None) -> None:
            fetched, v, sha = await self._get(url, known.get(url), bodies)
            if fallback is not None and fetched.retrieval is Retrieval.NOT_FOUND and fallback != url:
                url = fallback
                fetched, v, sha = await self._get(url, known.get(url), bodies)
            out[i][kind] = fetched
            if v is not None:
                validators[i][url] = (v, sha)

        # asyncio's TaskGroup, not anyio's: aiohttp needs asyncio anyway, and anyio's per-task
        # bookkeeping was 8% of a full sync at six tasks per record.
        async with asyncio.TaskGroup() as tg:
            for i, (bundle_url, state_url, well_known_url) in enumerate(urls):
                tg.create_task(get(i, "bundle", bundle_url, well_known_url))
                tg.create_task(get(i, "state", state_url, None))
        return [_Fetched(MirrorCopy(m.base_url, out[i]["bundle"], out[i]["state"]), validators[i]) for i, m in enumerate(mirrors)]

    async def _get(self, url: str, known: dict | None, bodies: dict[str, bytes]) -> tuple[Fetched, Validators | None, str | None]:
        cached_body = bodies.get(known["document_sha256"]) if known and known.get("document_sha256") else None
        validators = Validators(known.get("etag"), known.get("last_modified")) if cached_body is not None else None
        resp = await self.fetcher.get(url, validators)
        if resp.not_modified:
            if cached_body is None:  # a 304 we did not ask for: ask again without validators
                resp = await self.fetcher.get(url, None)
            else:
                return Fetched(Retrieval.FOUND, url, cached_body, "not modified", code=NOT_MODIFIED, stored_sha256=known["document_sha256"]), None, None
        f = resp.fetched
        if f.retrieval is Retrieval.FOUND and f.body is not None and (resp.validators.etag or resp.validators.last_modified):
            return f, resp.validators, f.sha256
        return f, None, None

    # -- what to write --------------------------------------------------------------------
    def _new_write(self, pith_number: str, verdict: Verdict, track: bool) -> RecordWrite:
        return RecordWrite(pith_number=pith_number, verdict=verdict.value, tracked=track and pith_number.count(":") == 2, trust_id=self.trust_id)

    @staticmethod
    def _report_mirror(mirrors: list[MirrorResult], write: RecordWrite, spec: MirrorSpec | None, base_url: str, status: Status, reasons: list[dict], bundle_sha: str | None, state_sha: str | None) -> None:
        """One mirror's outcome, in the record's result and in its write (the full comparison
        and the quick check both report through here)."""
        name, configured = (spec.name, spec.configured) if spec else (base_url, False)
        mirrors.append(MirrorResult(name, base_url, status, reasons, configured))
        write.mirrors.append(MirrorRow(base_url, name, configured, status.value, reasons, bundle_sha, state_sha, unreachable=status is Status.UNREACHABLE))

    @staticmethod
    def _merged(pith_number: str, best: Assessment, comparison: RecordComparison) -> dict:
        """The merge of every verified event (comparison.valid_events), from `best`'s bundle's
        record and aliases.  When that bundle holds exactly these events and no invalid one, its
        verification already merged them (or, for a known-good copy, checked its embedded state
        against that merge): the same inputs, and the merge ignores event order and signatures.
        Otherwise merged here.  tests/conftest.py checks the reuse against a fresh merge in
        every sync the suite runs."""
        merged = best.report.merged_state if best.report is not None else None
        if merged is not None and merged.get("invalid_event_count") == 0 and best.event_ids == comparison.valid_events.keys():
            return merged
        return merge_state(pith_number, best.bundle["canonical_record"], best.bundle["source_aliases"], comparison.valid_events.values(), {})

    def _plan_write(self, pith_number: str, comparison: RecordComparison, stored_events: dict, fetched: list[_Fetched], specs: dict, track: bool, refused: list[dict], known_good: set, stored: dict | None) -> tuple[RecordResult, RecordWrite]:
        by_mirror = {f.copy.mirror: f for f in fetched}
        write = self._new_write(pith_number, comparison.verdict, track)
        mirrors: list[MirrorResult] = []
        best: Assessment | None = None
        documents: dict[str, tuple[str, bytes]] = {}  # each distinct verified document once
        for outcome in comparison.outcomes:
            a = outcome.assessment
            spec = specs.get(_base_key(outcome.mirror))
            reasons = [r.to_json() for r in outcome.reasons]
            copy = a.copy
            self._report_mirror(mirrors, write, spec, outcome.mirror, outcome.status, reasons, copy.bundle.sha256 if copy else None, copy.state.sha256 if copy else None)
            f = by_mirror.get(outcome.mirror)
            stored_pair = copy is not None and (copy.bundle.sha256, copy.state.sha256) in known_good
            if a.bundle_ok and copy is not None:
                if not stored_pair and copy.bundle.sha256 not in documents:
                    documents[copy.bundle.sha256] = ("bundle", copy.bundle.body)
                if best is None or len(a.valid_events) > len(best.valid_events):
                    best = a
            if a.state_ok and copy is not None and not stored_pair:
                documents.setdefault(copy.state.sha256, ("state", copy.state.body))
                if (copy.bundle.sha256, copy.state.sha256) not in write.verified_copies:
                    write.verified_copies.append((copy.bundle.sha256, copy.state.sha256))
            if copy is None or copy.bundle.code != NOT_MODIFIED:
                # A copy answered 304 serves the events it served when its row was written;
                # mirror_status.checked_at says it was confirmed again.
                write.add_events(a.valid_events, outcome.mirror, stored=stored_events)
            if outcome.status is not Status.OK and copy is not None:
                for kind, doc in (("bundle", copy.bundle), ("state", copy.state)):
                    bad_doc = doc.body is not None and not (kind == "bundle" and a.bundle_ok) and not (kind == "state" and a.state_ok)
                    if bad_doc or (kind == "bundle" and outcome.status in (Status.EQUIVOCATION, Status.STALE) and doc.body is not None):
                        write.evidence.append({"mirror": outcome.mirror, "url": doc.url, "status": outcome.status.value, "reasons": reasons, "body": doc.body})
            if f is not None:
                for url, (v, sha) in f.validators.items():
                    write.validators.append((url, v.etag, v.last_modified, sha))

        write.documents = [(sha, kind, body) for sha, (kind, body) in documents.items()]
        # The stored state: the merge of every verified event, seen now or before.
        state = None
        new_ids = set(comparison.valid_events) - set(stored_events)
        if best is not None and (new_ids or stored is None or not stored["has_state"]):
            record_json, aliases = best.bundle["canonical_record"], best.bundle["source_aliases"]
            state = self._merged(pith_number, best, comparison)
            write.state = EncodedState.of(record_json, aliases, state)
        write.journal_detail = {"new_events": len(new_ids), "refused_hints": len(refused)}
        result = RecordResult(pith_number, comparison.verdict, mirrors, refused_hints=refused, new_events=len(new_ids))
        if state is not None:
            result.event_count, result.state_sha256 = state["event_count"], state["state_sha256"]
        elif stored is not None:
            result.event_count, result.state_sha256 = stored.get("event_count"), stored.get("state_sha256")
        return result, write
