"""A sync run over several processes: workers fetch, verify and compare; the parent stores.

One process cannot go faster than its one core, and a full sync is CPU-bound (HTTP parsing,
Ed25519, canonical encoding).  So a large run has worker processes take its records a chunk at a
time from the parent (Supply: a worker asks, the parent replies with the next chunk), and each
worker runs the ordinary SyncEngine on what it takes with its
slice of the connection limits.  Workers only read the store (trusted input: earlier events,
validators); every (result, write) they produce is sent to the parent, which commits it through
the same RecordSink a one-process run uses: one writer, one journal chain, alerts beside their
evidence.
Data still flows one way: fetch -> verify -> compare (workers) -> store -> alert (parent).

Workers are forked, so they start in milliseconds with everything imported; the parent closes
its SQLite connection around the fork (SQLite state must not cross one) and no thread or event
loop is running in it then.  A worker that dies costs only its unfinished records, which are
reported `unverifiable` with the reason; the other workers' records are stored as usual.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait

import anyio

from pithsync.base.exits import StoreError
from pithsync.base.logfmt import log_event
from pithsync.config import Config
from pithsync.core.plan import RecordWrite
from pithsync.core.schedule import run_capacity
from pithsync.fetch import Fetcher
from pithsync.peers import PeerHead
from pithsync.run.engine import SyncEngine, rare_gc_passes, run_event_loop
from pithsync.run.results import RecordResult, Target, failed_result, suffix_of
from pithsync.run.scheduling import Deadline
from pithsync.run.sink import RecordSink
from pithsync.store import Store

log = logging.getLogger("pithsync.sync")

# Below this many records a run stays in one process: forking and pickling would cost more than
# a second core gives back.
MIN_RECORDS_PER_WORKER = 250
# A worker sends its records in messages of up to SEND_RECORDS records or SEND_BYTES bytes of
# documents and state, whichever comes first: fewer, larger writes to the pipe.  The byte cap
# keeps a message of new, large records within the pipe; unchanged records are small, so a
# re-sync fills messages by count.
SEND_RECORDS = 64
SEND_BYTES = 320 * 1024


# Workers take the run's records a chunk at a time instead of each getting a fixed half: the
# parent and nginx share the cores unevenly, so with fixed halves one worker finishes early and
# its core idles.
CHUNK_RECORDS = 16
# Larger runs take larger chunks, so that a run costs at most this many requests for them.
MAX_CHUNKS = 1024


class Supply:
    """The chunks of a run's targets, each handed out once, to whichever worker asks first.

    The parent alone holds it and hands a chunk out in reply to a worker's request (see
    ChunkRequests), so it always knows who holds what: a worker that dies took exactly the
    chunks handed to it, and nothing shared is left for it to corrupt.  Past the run's deadline
    it hands out nothing more: the chunks left stay due for the next run."""

    def __init__(self, targets: list[Target], deadline: Deadline | None = None):
        size = max(CHUNK_RECORDS, -(-len(targets) // MAX_CHUNKS))
        self.chunks = [targets[i : i + size] for i in range(0, len(targets), size)]
        self.deadline = deadline
        self.cut = False  # the deadline stopped the hand-out before every chunk was taken
        self._next = 0
        self._held: dict[int, list[Target]] = {}  # worker number -> the targets handed to it

    def hand_out(self, worker: int) -> list[Target]:
        """The next chunk, now held by `worker` (numbered from 0), or [] when none is left."""
        if self._next >= len(self.chunks):
            return []
        if self.deadline is not None and self.deadline.passed():
            self.cut = True
            return []
        chunk = self.chunks[self._next]
        self._next += 1
        self._held.setdefault(worker, []).extend(chunk)
        return chunk

    def held_by(self, worker: int) -> list[Target]:
        """Every target handed to `worker` so far."""
        return list(self._held.get(worker, ()))

    def handed_out(self) -> list[Target]:
        """Every target handed out so far."""
        return [t for chunk in self.chunks[: self._next] for t in chunk]


class ChunkRequests:
    """A worker's side of the Supply: it asks the parent over its records pipe and reads the
    reply from a pipe of its own, waiting without blocking its event loop."""

    def __init__(self, requests: Connection, replies: Connection):
        self.requests = requests
        self.replies = replies

    async def take(self) -> list[Target]:
        """The next chunk of the run's targets, or [] when none is left."""
        self.requests.send(("more", None))
        await anyio.wait_readable(self.replies.fileno())
        return self.replies.recv()


class RecordSender:
    """A worker's RecordOutlet (engine.py): it sends the records it examined to the parent, in
    messages of up to SEND_RECORDS records or SEND_BYTES bytes; the parent commits them."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._outbox: list[tuple[RecordResult, RecordWrite | None]] = []
        self._outbox_bytes = 0
        self._skipped: list[Target] = []  # what the deadline left unexamined

    def commit(self, run_id: str, result: RecordResult, write: RecordWrite | None) -> None:
        """Queue one examined record for the parent; send the message once it is full."""
        self._outbox.append((result, write))
        self._outbox_bytes += 1024 + (write.payload_bytes() if write is not None else 0)
        if len(self._outbox) >= SEND_RECORDS or self._outbox_bytes >= SEND_BYTES:
            self.flush()

    def skip(self, target: Target) -> None:
        """A target the deadline left: the parent hears of it, so it is not reported lost."""
        self._skipped.append(target)

    def flush(self) -> None:
        """Send what the outbox holds, and the targets skipped."""
        if self._skipped:
            self.conn.send(("skipped", self._skipped))
            self._skipped = []
        if self._outbox:
            self.conn.send(("records", self._outbox))
            self._outbox = []
            self._outbox_bytes = 0

    def finish(self) -> None:
        """The worker's run is over: send the rest."""
        self.flush()

    def abort(self) -> None:
        """The worker's run failed: the records it finished are still good results."""
        with contextlib.suppress(OSError, ValueError):
            self.flush()


def worker_count(cfg: Config, targets: list[Target], db_path: str) -> int:
    """How many worker processes a run over `targets` uses; 0 means none (run in process)."""
    if db_path == ":memory:" or not sys.platform.startswith("linux"):
        return 0  # fork() is only safe enough on Linux (macOS frameworks break after it)
    if any(t.depth > 0 for t in targets):
        return 0  # following citations needs one queue of records, deduplicated as it grows
    wanted = max_worker_count(cfg)
    n = min(
        wanted, len(targets) // MIN_RECORDS_PER_WORKER if not cfg.crawl.processes else len(targets)
    )
    return n if n >= 2 else 0


def max_worker_count(cfg: Config) -> int:
    """The most worker processes any run uses under `cfg` ([crawl] processes, else the CPUs)."""
    return cfg.crawl.processes or _usable_cpus()


def record_capacity(cfg: Config, budget_s: float | None) -> int | None:
    """The most records a run with `budget_s` can start under cfg's request budget, its
    workers each holding a share of it (core.schedule.run_capacity); None when nothing bounds
    it."""
    return run_capacity(
        budget_s,
        cfg.crawl.max_requests_per_s,
        buckets=max_worker_count(cfg),
        in_flight=cfg.crawl.concurrency,
    )


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _share(cfg: Config, workers: int) -> Config:
    """The config a worker runs with: its slice of the connection limits and of each host's
    request budget, so that all workers together stay within [crawl] concurrency, per_host and
    max_requests_per_s.  Each worker's budget is rate / workers: together they send at the rate,
    with bursts of at most one request per worker (each bucket's burst of one)."""
    rate = cfg.crawl.max_requests_per_s
    crawl = dataclasses.replace(
        cfg.crawl,
        concurrency=max(1, cfg.crawl.concurrency // workers),
        per_host=max(1, cfg.crawl.per_host // workers),
        max_requests_per_s=rate / workers if rate is not None else None,
    )
    return dataclasses.replace(cfg, crawl=crawl)


@dataclasses.dataclass
class _Worker:
    """The parent's view of one worker process."""

    proc: multiprocessing.process.BaseProcess
    number: int
    replies: Connection  # the parent's end of the worker's pipe of chunks
    reported: set[str] = dataclasses.field(default_factory=set)  # suffixes it sent back


@dataclasses.dataclass(frozen=True)
class _Job:
    """What a worker process is started with."""

    cfg: Config
    db_path: str
    run_id: str
    worker: int
    parent_pid: int
    deadline: Deadline | None = None
    peers: tuple[PeerHead, ...] = ()  # checked by the parent at the start of the run


class WorkerPool:
    """The workers of one run.  `start` forks them (before any thread, such as a progress bar,
    is running); `collect` hands out chunks and commits what they send until all have finished."""

    def __init__(self, run_id: str, workers: dict[Connection, _Worker], supply: Supply):
        self.run_id = run_id
        self._workers = workers  # the parent's end of each worker's records pipe -> the worker
        self._supply = supply
        self._reported: set[str] = set()  # suffixes reported, by workers or for them

    @classmethod
    def start(
        cls,
        cfg: Config,
        store: Store,
        run_id: str,
        targets: list[Target],
        workers: int,
        deadline: Deadline | None = None,
        *,
        peers: Sequence[PeerHead] = (),
    ) -> WorkerPool:
        """Fork `workers` processes for a run over `targets` (the store's connection is closed
        around the fork); past `deadline` no worker is handed more, nor starts a record;
        `peers` are the peers checked at the start of the run."""
        ctx = multiprocessing.get_context("fork")
        worker_cfg = _share(cfg, workers)
        for stream in (sys.stdout, sys.stderr):  # a child must not flush the parent's output again
            with contextlib.suppress(OSError, ValueError):  # a reader gone: cli.Output's business
                stream.flush()
        pool = cls(run_id, {}, Supply(targets, deadline))
        try:
            with store.disconnected():
                for i in range(workers):
                    job = _Job(
                        worker_cfg, store.path, run_id, i, os.getpid(), deadline, tuple(peers)
                    )
                    pool._fork(ctx, job)
        except BaseException:
            pool.kill()
            raise
        return pool

    def _fork(self, ctx, job: _Job) -> None:
        receive, send = ctx.Pipe(duplex=False)
        _widen(send)
        replies_in, replies_out = ctx.Pipe(duplex=False)
        # The parent's ends, this worker's and the earlier ones', are passed so that the worker
        # closes its copies: else a worker outliving the parent could keep another's pipe open.
        parents = [c for conn, w in self._workers.items() for c in (conn, w.replies)]
        parents += [receive, replies_out]
        name = f"pithsync-worker-{job.worker}"
        args = (job, send, replies_in, parents)
        proc = ctx.Process(target=_worker_main, args=args, name=name, daemon=True)
        try:
            proc.start()
        finally:
            send.close()
            replies_in.close()
        self._workers[receive] = _Worker(proc, job.worker, replies_out)

    def kept_back(self) -> int:
        """How many targets the deadline kept from every worker."""
        return sum(map(len, self._supply.chunks)) - len(self._supply.handed_out())

    def kill(self) -> None:
        """Kill every worker still running."""
        for conn, w in self._workers.items():
            w.proc.kill()
            w.proc.join()
            conn.close()
            w.replies.close()
        self._workers.clear()

    def collect(self, sink: RecordSink) -> None:
        """Hand out chunks and commit what the workers send, until every worker has finished;
        a dead worker's unreported records are reported `unverifiable`.

        Raises:
            StoreError: a worker could not read the store, or the sink could not write.
        """
        try:
            while self._workers:
                for conn in wait(list(self._workers)):
                    self._receive(conn, sink)
            self._report_unreported(sink)
        except BaseException:
            self.kill()
            sink.abort()
            raise
        sink.finish()

    def _receive(self, conn: Connection, sink: RecordSink) -> None:
        w = self._workers[conn]
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):
            kind, payload = "gone", None
        if kind == "more":
            chunk = self._supply.hand_out(w.number)
            with contextlib.suppress(OSError):  # gone: the chunk is reported with its records
                w.replies.send(chunk)
        elif kind == "skipped":  # left due by the deadline, not lost
            w.reported.update(t.suffix for t in payload)
            for t in payload:
                sink.skip(t)
        elif kind == "records":
            w.reported.update(suffix_of(result.pith_number) for result, _ in payload)
            sink.commit_many(self.run_id, payload)
        elif kind == "store_error":
            raise StoreError(payload)  # as in one process: the run stops (exit 4)
        else:
            self._ended(conn, w, kind, payload, sink)

    def _ended(self, conn: Connection, w: _Worker, kind: str, payload, sink: RecordSink) -> None:
        """A worker finished (or died): what it held and did not report is lost with it; the
        others go on taking what is left."""
        conn.close()
        w.replies.close()
        del self._workers[conn]
        w.proc.join()
        self._reported |= w.reported
        held = self._supply.held_by(w.number)
        lost = [t for t in held if t.suffix not in w.reported]
        if not lost and kind == "done":
            return
        why = (
            payload
            if kind == "error"
            else f"sync worker process exited with code {w.proc.exitcode}"
        )
        log_event(
            log, logging.ERROR, "sync_worker_failed", pid=w.proc.pid, error=why,
            records_lost=len(lost), records_taken=len(held),
        )  # fmt: skip
        for t in lost:
            self._reported.add(t.suffix)
            sink.commit(self.run_id, failed_result(t, f"internal error: {why}"), None)

    def _report_unreported(self, sink: RecordSink) -> None:
        """Records left over only when every worker failed: reported too, never dropped."""
        supply = self._supply
        # Chunks the deadline kept back are left due, not lost; any other is reported.
        targets = supply.handed_out() if supply.cut else [t for c in supply.chunks for t in c]
        unreported = [t for t in targets if t.suffix not in self._reported]
        if not unreported:
            return
        log_event(
            log, logging.ERROR, "records_not_synced", records=len(unreported),
            why="no sync worker process reported them",
        )  # fmt: skip
        why = "internal error: no sync worker process reported this record"
        for t in unreported:
            sink.commit(self.run_id, failed_result(t, why), None)


PIPE_BYTES = 1 << 20


def _widen(conn: Connection) -> None:
    """A 1 MiB pipe instead of Linux's 64 KiB: a batch of records (about 350 kB) then goes in one
    write instead of several, without blocking the worker until the parent has read the rest.
    Where the kernel refuses (another OS, or the user's pipe quota spent), the default pipe
    still works."""
    try:
        import fcntl

        fcntl.fcntl(conn.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError):
        pass


def _die_with_parent(parent_pid: int) -> None:
    """The kernel kills this worker when the parent dies, even by SIGKILL, so no orphan keeps
    syncing (or keeps the run lock's inherited descriptor) after its run is gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # without prctl a worker still stops when its next send finds the pipe closed
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _worker_main(
    job: _Job, conn: Connection, replies: Connection, parents: list[Connection]
) -> None:
    """A worker process: sync what the parent hands out, send each record back."""
    _die_with_parent(job.parent_pid)
    for other in parents:
        other.close()
    sender = RecordSender(conn)
    supply = ChunkRequests(conn, replies)

    async def main() -> None:
        async with Fetcher(job.cfg.crawl, SyncEngine.policy_for(job.cfg)) as fetcher:
            engine = SyncEngine(job.cfg, store, fetcher, sink=sender, peers=job.peers)
            await engine.run(job.run_id, [], more=supply.take, deadline=job.deadline)

    try:
        store = Store.open_reader(job.db_path)
        try:
            with rare_gc_passes():
                run_event_loop(main)
        finally:
            store.close()
        conn.send(("done", None))
    except StoreError as exc:
        conn.send(("store_error", str(exc)))
    except BaseException as exc:  # reported by the parent with the records it cost
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:  # what failed, not a group
            exc = exc.exceptions[0]
        conn.send(("error", f"{type(exc).__name__}: {str(exc)[:200]}"))
    finally:
        conn.close()
        replies.close()
