"""The fault-injecting Pith mirror of the test suite: `pithsync.publishing.localmirror`'s static
server (aiohttp on 127.0.0.1, random port) with a request log and faults added.

It misbehaves on the wire on demand: every fault is a real thing a client sees over TCP, not a
mock.  Used by the test suite and the benchmarks; nothing in the product imports it.

    async with MirrorServer("a") as m:
        suffix = m.put_record(forged.bundle())
        m.fault("status", path=bundle_path(suffix), status=503, retry_after="1", times=2)
        ...crawl m.spec()...
        assert m.count(bundle_path(suffix), status=503) == 2

A mirror that is down (connection refused) is `closed_port_url()` / `refused_spec()`, or a running
server taken off the air with `await m.suspend()` and brought back with `await m.resume()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from pithsync.core.urls import MirrorSpec
from pithsync.publishing.localmirror import (
    LOCALHOST,
    LocalMirror,
    Resource,
    bundle_path,
    state_path,
    to_bytes,
    well_known_path,
)
from pithsync.testing.faults import (
    FAULT_KINDS,
    HOSTILE_BODIES,
    MIB,
    Fault,
    RequestRecord,
    WireFaults,
    gzip_bomb,
)
from pithsync.testing.forge import dumps

LOGGED_HEADERS = (
    "If-None-Match",
    "If-Modified-Since",
    "Accept-Encoding",
    "Accept",
    "User-Agent",
    "Range",
)


def suffix_of(pith_number: str) -> str:
    """`pith:2026:ABC...` -> `ABC...`.  Tolerant on purpose: tests serve forged bundles whose
    numbers are wrong, and a mirror must still be able to serve them."""
    return pith_number.rsplit(":", 1)[-1]


def closed_port_url(host: str = LOCALHOST) -> str:
    """A base URL where nothing listens: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    return f"http://{host}:{port}"


def refused_spec(name: str = "down") -> MirrorSpec:
    """A configured mirror whose port is closed."""
    return MirrorSpec(name=name, base_url=closed_port_url())


# -- the server -------------------------------------------------------------------------------


class MirrorServer(LocalMirror, WireFaults):
    """A Pith mirror on 127.0.0.1 with a random port, a request log and faults on demand:
    `async with MirrorServer("a") as m:`."""

    def __init__(self, name: str = "mirror", *, gzip: bool = False, host: str = LOCALHOST) -> None:
        super().__init__(name, gzip=gzip, host=host)
        self.requests: list[RequestRecord] = []
        self.faults: list[Fault] = []
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    # lifecycle

    async def start(self) -> MirrorServer:
        """Listen on a free port; a running server is left as it is."""
        if self._runner is None:
            self._stopping = asyncio.Event()
        await super().start()
        return self

    async def stop(self) -> None:
        """Stop serving; hanging and streaming responses end (their connections close) at once."""
        if self._runner is None:
            return
        self._stopping.set()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=0.5)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=0.5)
        await super().stop()

    async def suspend(self) -> None:
        """Take the server off the air: the port refuses connections and open ones are closed.
        State, faults and the log are kept; `resume()` listens on the same port again."""
        if self._runner is None or self._site is None:
            raise RuntimeError("server not running")
        await self._site.stop()
        self._site = None
        server = self._runner.server
        for conn in server.connections if server is not None else []:
            conn.force_close()

    async def resume(self) -> None:
        """Listen again on the port `suspend()` closed."""
        if self._runner is None:
            raise RuntimeError("server not running")
        if self._site is None:
            self._site = web.TCPSite(self._runner, self.host, self._port, reuse_address=True)
            await self._site.start()

    async def __aenter__(self) -> MirrorServer:
        return await self.start()

    # content

    def put_record(
        self, bundle: dict, state: dict | None = None, *, well_known: bool = True, **kw: Any
    ) -> str:
        """Serve a bundle (and its well-known copy) and its state; returns the suffix."""
        suffix = suffix_of(bundle["pith_number"])
        body = dumps(bundle)
        self.put_bundle(suffix, body, **kw)
        if well_known:
            self.put_well_known(suffix, body, **kw)
        state = bundle.get("state") if state is None else state
        if state is not None:
            self.put_state(suffix, dumps(state), **kw)
        return suffix

    # faults

    def fault(
        self, kind: str, path: str | None = None, *, times: int | None = None, **params: Any
    ) -> Fault:
        """Misbehave on `path` (every path when None), for `times` requests (forever when None).
        The newest fault on a path wins; path faults win over server-wide ones.

        Raises:
            ValueError: an unknown kind, "refuse" (a closed port is not a fault), or a redirect
                without `location`.
        """
        if kind == "refuse":
            raise ValueError(
                "a refused connection is a closed port: use closed_port_url(), refused_spec()"
                " or await suspend()"
            )
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(FAULT_KINDS)}")
        if kind == "redirect" and "location" not in params:
            raise ValueError("the redirect fault needs location=")
        if kind == "gzip_bomb":
            # Compress now (cached), not in the handler: compressing a large bomb is slow and
            # must not count against the client's read timeout.
            expanded = int(params.get("expanded_bytes", 64 * MIB))
            gzip_bomb(expanded, to_bytes(params.get("fill", b" ")))
        f = Fault(kind, path, params, times)
        self.faults.append(f)
        return f

    def clear_faults(self, path: str | None = None) -> None:
        """Disarm the faults on `path` (every fault when None)."""
        self.faults = [] if path is None else [f for f in self.faults if f.path != path]

    def _take_fault(self, path: str) -> Fault | None:
        candidates = [f for f in reversed(self.faults) if f.path is not None and f.matches(path)]
        candidates += [f for f in reversed(self.faults) if f.path is None]
        if not candidates:
            return None
        f = candidates[0]
        f.hits += 1
        if f.times is not None:
            f.times -= 1
            if f.times <= 0:
                self.faults.remove(f)
        return f

    # the request log

    def count(
        self, path: str | None = None, status: int | None = None, *, method: str | None = None
    ) -> int:
        """How many logged requests match `path`, answer `status` and `method` (None: any)."""
        return sum(
            1
            for r in self.requests
            if (path is None or r.path == path)
            and (status is None or r.status == status)
            and (method is None or r.method == method)
        )

    def clear_log(self) -> None:
        """Forget the logged requests."""
        self.requests.clear()

    # handling

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.request_count += 1
        headers = {h: request.headers[h] for h in LOGGED_HEADERS if h in request.headers}
        rec = RequestRecord(request.method, request.path, request.query_string, headers)
        self.requests.append(rec)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if request.method not in ("GET", "HEAD"):
                return self._answer(rec, self._method_not_allowed(), b"")
            fault = self._take_fault(request.path)
            if fault is not None:
                rec.fault = fault.kind
                handler = getattr(self, "_fault_" + fault.kind)
                return await handler(request, rec, fault)
            return self._serve_logged(request, rec)
        finally:
            rec.finished = time.monotonic()
            if task is not None:
                self._tasks.discard(task)

    def _serve_logged(self, request: web.Request, rec: RequestRecord) -> web.Response:
        resp = self._serve(request)
        head_only = request.method == "HEAD" and resp.status == 200
        sent = b"" if head_only or resp.body is None else bytes(resp.body)
        return self._answer(rec, resp, sent)


@contextlib.asynccontextmanager
async def mirrors(*names: str, gzip: bool = False) -> AsyncIterator[list[MirrorServer]]:
    """Several running mirrors at once: `async with mirrors("a", "b") as (a, b):`."""
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(MirrorServer(name, gzip=gzip)) for name in names]
        yield servers


def specs(servers: list[MirrorServer] | tuple[MirrorServer, ...]) -> list[MirrorSpec]:
    return [s.spec() for s in servers]


__all__ = [
    "FAULT_KINDS",
    "HOSTILE_BODIES",
    "MIB",
    "Fault",
    "MirrorServer",
    "RequestRecord",
    "Resource",
    "bundle_path",
    "closed_port_url",
    "gzip_bomb",
    "mirrors",
    "refused_spec",
    "specs",
    "state_path",
    "suffix_of",
    "well_known_path",
]


class SplitViewMirror(MirrorServer):
    """A mirror that shows each client the history put for it, chosen by a part of its
    User-Agent: a targeted split view (issue 17).  A client no view names gets the common one.

        async with SplitViewMirror() as m:
            m.put_record_for("observer-a", left)
            m.put_record_for("observer-b", right)
    """

    def __init__(self, name: str = "split") -> None:
        super().__init__(name)
        self.views: dict[str, dict[str, Resource]] = {}  # User-Agent part -> its resources

    def put_record_for(self, user_agent_part: str, bundle: dict) -> str:
        """Serve `bundle` (and its state) to clients whose User-Agent holds `user_agent_part`."""
        common = self.resources
        self.resources = self.views.setdefault(user_agent_part, {})
        try:
            return self.put_record(bundle)
        finally:
            self.resources = common

    def _serve(self, request: web.Request) -> web.Response:
        agent = request.headers.get("User-Agent", "")
        view = next((r for part, r in self.views.items() if part in agent), None)
        if view is None:
            return super()._serve(request)
        common, self.resources = self.resources, view
        try:  # synchronous: no other request runs between the swap and its undoing
            return super()._serve(request)
        finally:
            self.resources = common
