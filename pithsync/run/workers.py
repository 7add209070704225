"""A sync run over several processes: workers fetch, verify and compare; the parent stores.

One process cannot go faster than its one core, and a full sync is CPU-bound (HTTP parsing,
Ed25519, canonical encoding).  So a large run has worker processes take its records a chunk at a
time from a common Supply, and each worker runs the ordinary SyncEngine on what it takes with its
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
import gc
import logging
import multiprocessing
import os
import signal
import sys
from multiprocessing.connection import Connection, wait

from pithsync.base.logfmt import log_event
from pithsync.config import Config
from pithsync.fetch import Fetcher
from pithsync.base.exits import StoreError
from pithsync.run.engine import RecordSink, SyncEngine, rare_gc_passes, run_event_loop
from pithsync.run.results import RecordResult, Target, failed_result
from pithsync.store import Store

log = logging.getLogger("pithsync.sync")

# Below this many records a run stays in one process: forking and pickling would cost more than
# a second core gives back.
MIN_RECORDS_PER_WORKER = 250
# A worker sends its records in messages of up to SEND_RECORDS records or SEND_BYTES bytes of
# documents and state, whichever comes first: fewer, larger writes to the pipe.  A new record
# carries about 20 kB, so a full sync sends 16 per message (64, 1.4 MB, no longer fitted the
# pipe: 7% slower); an unchanged one carries under 1 kB, so a re-sync sends 64.
SEND_RECORDS = 64
SEND_BYTES = 320 * 1024


# Workers take the run's records a chunk at a time from a common supply instead of each getting
# a fixed half: the parent and nginx share the cores unevenly, and with fixed halves one worker
# finished 0.15-0.76 s before the other in a 5 s full sync, leaving its core to idle.
CHUNK_RECORDS = 16
# Chunk numbers are 4 bytes each, written before any worker reads: 1024 of them fill one page,
# the least a Linux pipe holds (even a user out of pipe quota gets that).  Larger runs take
# larger chunks: 49 records at 50,000.
MAX_CHUNKS = 1024


class Supply:
    """The chunks of a run's targets, handed out once each to whichever worker asks first.

    Their numbers sit in a pipe that every worker reads 4 bytes at a time (Linux reads a pipe
    under its lock, so two readers never split a number), written whole before the workers
    start.  Not a counter behind a multiprocessing lock: a worker killed while holding that lock
    would stop the others for good.  Each worker marks the chunks it took in shared memory, so
    the parent knows whose records a dead worker took with it."""

    def __init__(self, ctx, targets: list[Target]):
        size = max(CHUNK_RECORDS, -(-len(targets) // MAX_CHUNKS))
        self.chunks = [targets[i : i + size] for i in range(0, len(targets), size)]
        self.taken_by = ctx.RawArray("i", max(1, len(self.chunks)))  # chunk -> worker number + 1, 0: not taken
        self._read, write = os.pipe()
        try:
            os.set_blocking(write, False)  # fits (see MAX_CHUNKS); were it not to, fail, never hang
            data = b"".join(k.to_bytes(4, "little") for k in range(len(self.chunks)))
            if data and os.write(write, data) != len(data):
                raise OSError("the pipe of chunk numbers took only part of them")
        finally:
            os.close(write)  # closed before any fork: the workers see the end of the supply

    def take(self, worker: int) -> list[Target]:
        """The next chunk for `worker` (numbered from 0), or [] when none is left."""
        data = os.read(self._read, 4)
        if len(data) < 4:
            return []
        k = int.from_bytes(data, "little")
        self.taken_by[k] = worker + 1
        return self.chunks[k]

    def taken(self, worker: int) -> list[Target]:
        return [t for k, chunk in enumerate(self.chunks) if self.taken_by[k] == worker + 1 for t in chunk]

    def close(self) -> None:
        if self._read >= 0:
            os.close(self._read)
            self._read = -1


def worker_count(cfg: Config, targets: list[Target], db_path: str) -> int:
    """How many worker processes a run over `targets` uses; 0 means none (run in process)."""
    if db_path == ":memory:" or not sys.platform.startswith("linux"):
        return 0  # fork() is only safe enough on Linux (macOS frameworks break after it)
    if any(t.depth > 0 for t in targets):
        return 0  # following citations needs one queue of records, deduplicated as it grows
    wanted = cfg.crawl.processes or _usable_cpus()
    n = min(wanted, len(targets) // MIN_RECORDS_PER_WORKER if not cfg.crawl.processes else len(targets))
    return n if n >= 2 else 0


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _share(cfg: Config, workers: int) -> Config:
    """The config a worker runs with: its slice of the connection limits, so that all workers
    together stay within [crawl] concurrency and per_host."""
    crawl = dataclasses.replace(cfg.crawl, concurrency=max(1, cfg.crawl.concurrency // workers), per_host=max(1, cfg.crawl.per_host // workers))
    return dataclasses.replace(cfg, crawl=crawl)


class WorkerPool:
    """The workers of one run.  `start` forks them (before any thread, such as a progress bar,
    is running); `collect` commits what they send until all have finished."""

    def __init__(self, run_id: str, procs: dict, supply: Supply):
        self.run_id = run_id
        self._procs = procs  # receiving end -> (process, worker number, suffixes reported so far)
        self._supply = supply

    @classmethod
    def start(cls, cfg: Config, store: Store, run_id: str, targets: list[Target], workers: int) -> "WorkerPool":
        ctx = multiprocessing.get_context("fork")
        worker_cfg = _share(cfg, workers)
        for stream in (sys.stdout, sys.stderr):  # a child must not flush the parent's buffered output again
            with contextlib.suppress(OSError, ValueError):  # a reader gone: cli.Output's business
                stream.flush()
        supply = Supply(ctx, targets)
        procs: dict = {}
        try:
            with store.disconnected():
                for i in range(workers):
                    receive, send = ctx.Pipe(duplex=False)
                    _widen(send)
                    # The earlier workers' receiving ends are passed so this one closes its
                    # copies: else a worker outliving the parent could keep another's pipe open.
                    siblings = list(procs)
                    proc = ctx.Process(target=_worker_main, args=(worker_cfg, store.path, run_id, supply, i, send, os.getpid(), siblings), name=f"pithsync-worker-{i}", daemon=True)
                    proc.start()
                    send.close()
                    procs[receive] = (proc, i, set())
        except BaseException:
            cls(run_id, procs, supply).kill()
            raise
        return cls(run_id, procs, supply)

    def kill(self) -> None:
        for proc, _, _ in self._procs.values():
            proc.kill()
            proc.join()
        self._procs.clear()
        self._supply.close()

    def collect(self, sink: RecordSink) -> None:
        procs, run_id = self._procs, self.run_id
        reported: set[str] = set()
        try:
            while procs:
                for conn in wait(list(procs)):
                    proc, worker, done = procs[conn]
                    try:
                        kind, payload = conn.recv()
                    except (EOFError, OSError):
                        kind, payload = "gone", None
                    if kind == "records":
                        done.update(result.pith_number.rsplit(":", 1)[-1] for result, _ in payload)
                        sink.commit_many(run_id, payload)
                        continue
                    if kind == "store_error":
                        raise StoreError(payload)  # as in one process: the run stops (exit 4)
                    conn.close()
                    del procs[conn]
                    proc.join()
                    reported |= done
                    # What this worker took and did not report is lost with it; the others go on
                    # taking what is left.
                    took = self._supply.taken(worker)
                    lost = [t for t in took if t.suffix not in done]
                    if lost or kind != "done":
                        why = payload if kind == "error" else f"sync worker process exited with code {proc.exitcode}"
                        log_event(
                            log, logging.ERROR, "sync_worker_failed", pid=proc.pid, error=why,
                            records_lost=len(lost), records_taken=len(took),
                        )
                        for t in lost:
                            reported.add(t.suffix)
                            sink.commit(run_id, failed_result(t, f"internal error: {why}"), None)
            # Left over only when every worker failed (or one died between taking a chunk and
            # marking it): reported too, never silently dropped.
            unreported = [t for chunk in self._supply.chunks for t in chunk if t.suffix not in reported]
            if unreported:
                log_event(
                    log, logging.ERROR, "records_not_synced", records=len(unreported),
                    why="no sync worker process reported them",
                )
                for t in unreported:
                    sink.commit(run_id, failed_result(t, "internal error: no sync worker process reported this record"), None)
        except BaseException:
            self.kill()
            sink.abort()
            raise
        self._supply.close()
        sink.finish()


PIPE_BYTES = 1 << 20


def _widen(conn: Connection) -> None:
    """A 1 MiB pipe instead of Linux's 64 KiB: a batch of records (about 350 kB) then goes in one
    write instead of six, without the worker blocking until the parent has read the rest.  Full
    sync -12%, parent sys time -30% (interleaved A/B).  Where the kernel refuses (another OS, or
    the user's pipe quota spent), the default pipe still works."""
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


def _worker_main(cfg: Config, db_path: str, run_id: str, supply: Supply, worker: int, conn: Connection, parent_pid: int, siblings: list[Connection]) -> None:
    _die_with_parent(parent_pid)
    for other in siblings:
        other.close()
    # What came from the parent stays: GC passes skip it, and do not write to its pages (which
    # the fork shares until written).
    gc.freeze()
    outbox: list[tuple] = []
    outbox_bytes = 0

    def send(_run_id: str, result: RecordResult, write) -> None:
        nonlocal outbox_bytes
        outbox.append((result, write))
        outbox_bytes += 1024 + (write.payload_bytes() if write is not None else 0)
        if len(outbox) >= SEND_RECORDS or outbox_bytes >= SEND_BYTES:
            conn.send(("records", outbox))
            outbox.clear()
            outbox_bytes = 0

    async def main() -> None:

        async with Fetcher(cfg.crawl, SyncEngine.policy_for(cfg)) as fetcher:
            engine = SyncEngine(cfg, store, fetcher, sink=RecordSink(cfg, store, keep_results=False), commit=send)
            await engine.run(run_id, [], more=lambda: supply.take(worker))

    try:
        store = Store.open_reader(db_path)
        try:
            with rare_gc_passes():
                run_event_loop(main)
        finally:
            store.close()
        if outbox:
            conn.send(("records", outbox))
        conn.send(("done", None))
    except StoreError as exc:
        conn.send(("store_error", str(exc)))
    except BaseException as exc:  # reported by the parent with the records it cost
        if outbox:  # records finished before the failure are still good results
            with contextlib.suppress(OSError, ValueError):
                conn.send(("records", outbox))
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:  # say what failed, not "a task group"
            exc = exc.exceptions[0]
        conn.send(("error", f"{type(exc).__name__}: {str(exc)[:200]}"))
    finally:
        conn.close()
