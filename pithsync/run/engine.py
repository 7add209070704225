"""One sync run: fetch -> verify -> compare -> plan, for many records at once, each record then
handed to the run's RecordOutlet (a RecordSink, sink.py, stores it).

Data flows one way.  The only thing read back from the store is trusted input the comparison
needs (events verified on earlier runs, validators for conditional requests: readahead.py).
Fetching is fetching.py, following hints hints.py, and what a record's comparison means for the
store is the pure pithsync.core.plan.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import anyio

from pithsync.base.clock import utcnow
from pithsync.base.exits import StoreError
from pithsync.base.logfmt import log_event
from pithsync.config import Config
from pithsync.core import numbers
from pithsync.core.compare import Assessment, Assessor, compare_record
from pithsync.core.peers import PeerStatement, PeerViews
from pithsync.core.plan import (
    FetchedCopy,
    Findings,
    PlanRules,
    RecordWrite,
    base_key,
    plan_write,
    quick_plan,
)
from pithsync.core.urls import MirrorSpec
from pithsync.core.verify import Verifier
from pithsync.fetch import Fetcher, UrlPolicy
from pithsync.peers import PeerHead, PeerRecords
from pithsync.run import readahead
from pithsync.run.fetching import RecordFetcher
from pithsync.run.hints import discover
from pithsync.run.readahead import ReadAhead
from pithsync.run.results import (
    RecordResult,
    Target,
    failed_result,
    internal_error,
    wrong_number_result,
)
from pithsync.run.scheduling import Deadline
from pithsync.run.sink import RecordSink
from pithsync.store import Store

__all__ = [
    "GC_THRESHOLD",
    "RecordOutlet",
    "RecordResult",
    "SyncEngine",
    "Target",
    "rare_gc_passes",
    "run_event_loop",
]

log = logging.getLogger("pithsync.sync")


# uvloop runs the loop, transports and timers in C, which lowers the fetch path's CPU per
# request.  A dependency wherever uvloop exists (not on Windows); elsewhere the standard loop
# runs the same code.
_LOOP_OPTIONS = {"use_uvloop": importlib.util.find_spec("uvloop") is not None}

T = TypeVar("T")


def run_event_loop(main: Callable[[], Awaitable[T]]) -> T:
    """anyio.run for a sync's engine: on uvloop where it is installed."""
    return anyio.run(main, backend_options=_LOOP_OPTIONS)


# CPython's cyclic GC starts a pass every 700 net container allocations.  A sync allocates
# heavily (parsed documents, aiohttp's per-request objects), but the passes find nothing,
# because almost nothing it drops is cyclic; a high threshold makes them rare and still bounds
# cyclic garbage.
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


def _cited(events, pith_number: str) -> list[str]:
    """Pith numbers that verified events mention, other than their own record's."""
    found: set[str] = set()
    for ev in events:
        found |= numbers.find_in(ev.get("payload"))
    found.discard(pith_number)
    return sorted(found)


class RecordOutlet(Protocol):
    """Where SyncEngine hands each record it examined, in the order examined.  Implemented by
    RecordSink (one process: the store, the log, the caller) and by workers.RecordSender (a
    worker process: to the parent, which commits them through its own RecordSink)."""

    def commit(self, run_id: str, result: RecordResult, write: RecordWrite | None) -> None:
        """Take one examined record: its result, and what to store for it (None: nothing)."""

    def skip(self, target: Target) -> None:
        """A target the run did not examine because its budget was spent."""

    def finish(self) -> None:
        """The run is over: every record has been handed over."""

    def abort(self) -> None:
        """The run failed: records handed over but not yet made durable may be let go."""


def records_in_flight(cfg: Config) -> int:
    """How many records a run examines at once: enough to keep every allowed connection busy,
    with some to spare for the CPU work between fetches.  Extra records only queue inside the
    connector, each costing a future and a wake-up."""
    per_record = 2 * max(1, len(cfg.mirrors))
    return max(2, min(64, -(-3 * cfg.crawl.concurrency // (2 * per_record))))


# Further targets while a run goes on, [] when there are no more (a worker's share of the run).
TargetSupply = Callable[[], Awaitable[list[Target]]]


class _Queue:
    """The targets of a run waiting for a task: those given, those cited (--depth), and those a
    supply hands out while the run goes on.  Closed when none is pending and none can come."""

    def __init__(self, read_ahead: ReadAhead, more: TargetSupply | None, low_water: int):
        self.send, self.receive = anyio.create_memory_object_stream[Target](math.inf)
        self.read_ahead = read_ahead
        self.more = more
        self.low_water = low_water
        self.queued: set[str] = set()  # suffixes taken into the run
        self.pending = 0  # targets added and not yet done
        self._asking = False  # a task waits on `more`

    def add(self, new: list[Target]) -> None:
        """Queue targets after those added before."""
        for t in new:
            self.read_ahead.add(t)
            self.queued.add(t.suffix)
            self.send.send_nowait(t)
        self.pending += len(new)

    async def refill(self) -> None:
        """Keep enough targets waiting for the records in flight and a read-ahead behind them."""
        if self._asking:
            return
        self._asking = True
        try:
            while (
                self.more is not None
                and self.receive.statistics().current_buffer_used < self.low_water
            ):
                new = await self.more()
                if not new:
                    self.more = None  # the supply is spent
                self.add(new)
        finally:
            self._asking = False
        self._close_if_done()

    async def done(self, target: Target) -> None:
        """`target` is finished: take more if the supply has them, else end when all are."""
        self.pending -= 1
        await self.refill()
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self.pending == 0 and not self._asking:
            self.send.close()


class SyncEngine:
    """Fetches, verifies and compares records, plans each one's write, and hands it to `sink`
    (by default a RecordSink on `store`).  It reads the store only for trusted input: events
    verified on earlier runs, validators and bodies for conditional requests."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        fetcher: Fetcher,
        *,
        sink: RecordOutlet | None = None,
        on_record: Callable[[RecordResult], None] | None = None,
        peers: Sequence[PeerHead] = (),
    ):
        self.cfg = cfg
        self.store = store
        self.fetcher = fetcher
        self.assessor = Assessor(Verifier(cfg.trust), cfg.crawl.max_bytes)
        self.mirrors: list[MirrorSpec] = list(cfg.mirrors)
        self.configured = {base_key(m.base_url): m for m in cfg.mirrors}
        self.sink: RecordOutlet = sink or RecordSink(cfg, store, on_record=on_record)
        self.copies = RecordFetcher(fetcher, store)
        self.read_ahead = ReadAhead(store, self.mirrors, cfg.trust.trust_id)
        # The peers checked at the start of the run (peers.check_peers), asked about each record.
        self.peers = PeerRecords(fetcher, peers) if peers else None
        # Unchanged records skip the comparison (quick_plan); tests turn it off.
        self.quick_check = True
        self._rules = {track: self._rules_for(track) for track in (True, False)}

    def _rules_for(self, track: bool) -> PlanRules:
        crawl = self.cfg.crawl
        trust_id = self.cfg.trust.trust_id
        return PlanRules(trust_id, track, crawl.max_bytes, crawl.follow_hints, self.configured)

    @staticmethod
    def policy_for(cfg: Config) -> UrlPolicy:
        """The URL policy a run's fetcher is to hold for `cfg`'s mirrors and peers."""
        configured = [m.base_url for m in cfg.mirrors] + [p.url for p in cfg.peers]
        return UrlPolicy.for_mirrors(configured, cfg.crawl)

    async def run(
        self,
        run_id: str,
        targets: list[Target],
        *,
        track: bool = True,
        more: TargetSupply | None = None,
        deadline: Deadline | None = None,
    ) -> None:
        """Sync every target (and, within their depth, the records they cite), handing each
        record to the sink, then finish the sink (or abort it, if the run fails).

        Args:
            run_id: the run the records are journaled under.
            targets: the records to sync.
            track: whether records synced are tracked from now on.
            more: hands out further targets while the run goes on, until it returns none: a
                worker process takes its share of the run that way (workers.py).
            deadline: once passed, targets not started yet are handed to the sink's `skip`
                instead of being examined (records in flight finish and are stored).
        """
        self.read_ahead = ReadAhead(self.store, self.mirrors, self.cfg.trust.trust_id)
        in_flight = records_in_flight(self.cfg)
        queue = _Queue(self.read_ahead, more, in_flight + readahead.READ_AHEAD // 2)
        queue.add(targets)
        try:
            await queue.refill()
            async with anyio.create_task_group() as tg:
                for _ in range(in_flight):
                    tg.start_soon(self._take_records, run_id, queue, track, deadline)
        except BaseException:
            self.sink.abort()
            raise
        self.sink.finish()

    async def _take_records(
        self, run_id: str, queue: _Queue, track: bool, deadline: Deadline | None
    ) -> None:
        async for target in queue.receive:
            if deadline is not None and deadline.passed():
                self.sink.skip(target)
                await queue.done(target)
                continue
            result = await self._sync_guarded(run_id, target, track)
            if target.depth > 0:
                for number in result.found_numbers:
                    suffix = numbers.parse_full(number).suffix
                    if suffix not in queue.queued:
                        queue.add([Target(suffix, number, target.depth - 1)])
            await queue.done(target)

    async def _sync_guarded(self, run_id: str, target: Target, track: bool) -> RecordResult:
        """sync_record, with a bug on one record reported as that record's failure."""
        try:
            return await self.sync_record(run_id, target, track=track)
        except StoreError:
            raise  # the store is unusable: stop the run, say why (exit 4)
        except Exception as exc:  # a bug must not stop the other records
            log_event(
                log, logging.ERROR, "record_failed", exc_info=True,
                record=target.pith_number or target.suffix, error=repr(exc),
            )  # fmt: skip
            result = failed_result(target, internal_error(exc))
            self.sink.commit(run_id, result, None)
            return result

    # -- one record ---------------------------------------------------------------------------
    async def sync_record(self, run_id: str, target: Target, *, track: bool = True) -> RecordResult:
        """Examine one record and hand it to the sink; returns its result."""
        result, write, valid_events = await self.examine(target, track=track)
        self.sink.commit(run_id, result, write)
        if target.depth > 0:  # only --depth needs the numbers cited in the payloads
            result.found_numbers = _cited(valid_events, result.pith_number)
        return result

    async def examine(
        self, target: Target, *, track: bool = True
    ) -> tuple[RecordResult, RecordWrite | None, list[dict]]:
        """Fetch, verify and compare one record: its result, what to store, its verified events."""
        suffix = target.suffix
        known = self.read_ahead.known_for(target)
        stored = known.record
        # A stored row with a state holds a verified record (Store checks its number on write);
        # a row without one holds only the number someone typed.
        verified_pith = stored.pith_number if stored.has_state else None
        if verified_pith is not None and target.requested not in (None, verified_pith):
            return wrong_number_result(target, verified_pith), None, []
        rules = self._rules[track]
        fetched, seen = await self._fetch(suffix, known)
        # A peer's statement is compared with each mirror's events, which the quick check does
        # not read: a record the peers have statements about is compared in full.
        if self.quick_check and verified_pith and target.depth == 0 and not seen:
            quick = quick_plan(stored, fetched, rules)
            if quick is not None:
                return quick[0], quick[1], []
        assessments = [self.assessor.assess(f.copy, suffix, stored.known_good) for f in fetched]
        specs, refused = await self._follow_hints(suffix, stored.known_good, fetched, assessments)
        # Only a verified number is stored with verified data; a typed one stands in while no
        # mirror has a verified copy (a tracked record waiting to appear).
        verified_bundles = (a.bundle["pith_number"] for a in assessments if a.bundle_ok)
        verified_pith = verified_pith or next(verified_bundles, None)
        if verified_pith is not None and target.requested not in (None, verified_pith):
            return wrong_number_result(target, verified_pith), None, []
        pith_number = verified_pith or target.requested or stored.pith_number or f"pith:{suffix}"
        stored_events = self.store.stored_events(pith_number)
        peer_views = PeerViews(utcnow(), seen) if seen else None
        comparison = compare_record(assessments, stored_events, peer_views)
        if pith_number == stored.pith_number:
            summary = stored.summary
        else:
            summary = self.store.record_summary(pith_number)
        found = Findings(
            pith_number, comparison, stored_events, fetched, specs, refused, stored.known_good,
            summary,
        )  # fmt: skip
        result, write = plan_write(found, rules)
        return result, write, list(comparison.valid_events.values())

    async def _fetch(
        self, suffix: str, known: readahead.Known
    ) -> tuple[list[FetchedCopy], tuple[PeerStatement, ...]]:
        """Every configured mirror's copy of the record and, at the same time, the peers'
        verified statements about it."""
        if self.peers is None:
            return await self.copies.fetch_all(self.mirrors, suffix, known), ()
        seen: tuple[PeerStatement, ...] = ()

        async def ask_peers() -> None:
            nonlocal seen
            seen = await self.peers.statements_for(suffix)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask_peers)
            fetched = await self.copies.fetch_all(self.mirrors, suffix, known)
        return fetched, seen

    async def _follow_hints(
        self,
        suffix: str,
        known_good: set,
        fetched: list[FetchedCopy],
        assessments: list[Assessment],
    ) -> tuple[dict[str, MirrorSpec], list[dict]]:
        """With follow_hints, fetch and assess the mirrors verified bundles name, adding them to
        `fetched` and `assessments`; returns every mirror's spec by base key, and the hints
        refused."""
        if not self.cfg.crawl.follow_hints:
            return self.configured, []
        cap = self.cfg.crawl.max_discovered_mirrors
        policy = self.fetcher.policy
        discovered, refused = discover(assessments, suffix, self.configured, policy, cap)
        specs = dict(self.configured)
        if discovered:
            more = await self.copies.fetch_all(discovered, suffix)
            fetched += more
            assessments += [self.assessor.assess(f.copy, suffix, known_good) for f in more]
            specs.update({base_key(m.base_url): m for m in discovered})
        return specs, refused
