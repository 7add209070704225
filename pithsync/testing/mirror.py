"""A real local HTTP mirror (aiohttp on 127.0.0.1, random port) standing in for Pith mirrors.

Used by the test suite, `pithsync demo` and the benchmarks.  It serves the mirror URL layout of
PROTOCOL.md ("URLs and mirrors") from an in-memory map, answers conditional requests (strong
ETag, Last-Modified, 304), optionally gzips, logs every request, and can misbehave on the wire
on demand: every fault is a real thing a client sees over TCP, not a mock.

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
import email.utils
import socket
import struct
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property, lru_cache
from typing import Any, AsyncIterator

from aiohttp import web

from pithsync.core.urls import MirrorSpec
from pithsync.publishing.httpcache import etag_of, not_modified
from pithsync.testing.forge import dumps

LOCALHOST = "127.0.0.1"
MIB = 1 << 20

# Request headers copied into the request log.
LOGGED_HEADERS = ("If-None-Match", "If-Modified-Since", "Accept-Encoding", "Accept", "User-Agent", "Range")

FAULT_KINDS = frozenset(
    {
        "reset",  # headers and part of the body, then a TCP reset (SO_LINGER 0 + abort)
        "drop",  # connection closed before anything is sent
        "status",  # an error status (default 503), optional Retry-After
        "hang",  # accept the request and never answer (until the server stops)
        "delay",  # wait `seconds`, then serve normally
        "trickle",  # the body one byte every `interval` seconds
        "truncated",  # full Content-Length declared, half the body sent, connection closed
        "content_length_mismatch",  # declared length = actual + `delta` (or `declared`)
        "gzip_bomb",  # Content-Encoding: gzip, small on the wire, `expanded_bytes` decoded
        "endless_chunked",  # chunked body that never ends (with `content_length`, that header too)
        "redirect_loop",  # 302 to itself, or ping-pong with `partner`
        "redirect",  # 302 to an arbitrary `location`
        "body",  # arbitrary `data` with arbitrary `content_type` and `status`
    }
)

# Bodies a hostile or broken mirror might serve (use with the "body" fault or `put`).
HOSTILE_BODIES: dict[str, bytes] = {
    "html": b"<!doctype html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
    "invalid_utf8": b'{"pith_number":"pith:2026:\xff\xfe\xc3\x28","x":"\xed\xa0\x80"}',
    "deep_nesting": b"[" * 100_000 + b"]" * 100_000,
    "huge_number": b'{"pith_number":' + b"9" * 10_000 + b"}",
    "duplicate_keys": b'{"bundle_type":"pith_open_graph_bundle","bundle_type":"evil","pith_number":"a","pith_number":"b"}',
    "nan": b'{"bundle_version":NaN,"x":Infinity,"y":-Infinity}',
    "empty": b"",
    "not_json": b"this is not json\n",
    "json_array": b"[]",
    "json_null": b"null",
}


# -- URL layout -------------------------------------------------------------------------------


def bundle_path(suffix: str) -> str:
    return f"/pith/{suffix}/bundle.json"


def state_path(suffix: str) -> str:
    return f"/pith/{suffix}/state.json"


def well_known_path(suffix: str) -> str:
    return f"/.well-known/pith/{suffix}/bundle.json"


def suffix_of(pith_number: str) -> str:
    """`pith:2026:ABC...` -> `ABC...` (the 26 characters)."""
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


# -- resources, the request log, faults -------------------------------------------------------


def _to_bytes(data: bytes | bytearray | str | dict | list) -> bytes:
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (dict, list)):
        return dumps(data)
    raise TypeError(f"cannot serve {type(data).__name__}")


def _to_datetime(value: datetime | str | float | int | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    elif isinstance(value, str):
        dt = email.utils.parsedate_to_datetime(value)
    else:
        dt = datetime.fromtimestamp(float(value), timezone.utc)
    return dt.astimezone(timezone.utc).replace(microsecond=0)


@dataclass(frozen=True)
class Resource:
    body: bytes
    content_type: str = "application/json"
    last_modified: datetime = field(default_factory=lambda: datetime.now(timezone.utc).replace(microsecond=0))

    @cached_property
    def etag(self) -> str:
        """Strong validator of the identity representation."""
        return etag_of(self.body)

    @cached_property
    def gzip_etag(self) -> str:
        """Strong validator of the gzip representation (differs, as it must)."""
        return self.etag[:-1] + '-gzip"'

    @cached_property
    def gzipped(self) -> bytes:
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        return c.compress(self.body) + c.flush()

    @property
    def last_modified_http(self) -> str:
        return email.utils.format_datetime(self.last_modified, usegmt=True)


@dataclass
class RequestRecord:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # the LOGGED_HEADERS present in the request
    status: int | None = None  # None: no status line was sent (hang, drop)
    bytes_sent: int = 0  # body bytes put on the wire (compressed size when gzipped)
    fault: str | None = None  # the fault kind that answered, if any
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None


@dataclass
class Fault:
    kind: str
    path: str | None  # None: every path
    params: dict[str, Any]
    times: int | None = None  # remaining uses; None: until cleared
    hits: int = 0

    def matches(self, path: str) -> bool:
        if self.path is None or path == self.path:
            return True
        return self.kind == "redirect_loop" and path == self.params.get("partner")


class _Hijacked(web.StreamResponse):
    """The handler wrote its answer straight to the transport: make aiohttp let go quietly
    (finish_response treats a ConnectionError from prepare() as a client that went away)."""

    async def prepare(self, request: web.BaseRequest):  # type: ignore[override]
        raise ConnectionResetError("answered on the raw transport")


@lru_cache(maxsize=8)
def gzip_bomb(expanded_bytes: int = 64 * MIB, fill: bytes = b" ") -> bytes:
    """A gzip stream that expands to `expanded_bytes` of `fill` (64 MiB -> ~64 KiB)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = (fill * (MIB // max(len(fill), 1) + 1))[:MIB]
    out = []
    left = expanded_bytes
    while left > 0:
        piece = block if left >= MIB else block[:left]
        out.append(c.compress(piece))
        left -= len(piece)
    out.append(c.flush())
    return b"".join(out)


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip()
            if q.startswith("q="):
                try:
                    return float(q[2:]) > 0
                except ValueError:
                    return False
            return True
    return False


def _raw_head(status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -- the server -------------------------------------------------------------------------------


class MirrorServer:
    """A Pith mirror on 127.0.0.1 with a random port.  `async with MirrorServer("a") as m:`."""

    def __init__(self, name: str = "mirror", *, gzip: bool = False, host: str = LOCALHOST) -> None:
        self.name = name
        self.gzip = gzip
        self.host = host
        self.resources: dict[str, Resource] = {}
        self.requests: list[RequestRecord] = []
        self.faults: list[Fault] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._port: int | None = None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    # lifecycle

    async def start(self) -> "MirrorServer":
        if self._runner is not None:
            return self
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self._runner, self._site, self._port = runner, site, site.port
        return self

    async def stop(self) -> None:
        """Stop serving; hanging and streaming responses end (their connections close) at once."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=0.5)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=0.5)
        await runner.cleanup()
        self._site = None

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
        if self._runner is None:
            raise RuntimeError("server not running")
        if self._site is None:
            self._site = web.TCPSite(self._runner, self.host, self._port, reuse_address=True)
            await self._site.start()

    async def __aenter__(self) -> "MirrorServer":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._runner is not None and self._site is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def spec(self, *, configured: bool = True) -> MirrorSpec:
        return MirrorSpec(name=self.name, base_url=self.base_url, configured=configured)

    # content

    def put(
        self,
        path: str,
        data: bytes | str | dict | list,
        content_type: str = "application/json",
        *,
        last_modified: datetime | str | float | None = None,
    ) -> Resource:
        """Serve `data` at `path`.  Without an explicit `last_modified`, replacing a resource with
        different bytes moves Last-Modified forward by at least a second."""
        body = _to_bytes(data)
        lm = _to_datetime(last_modified)
        if lm is None:
            lm = datetime.now(timezone.utc).replace(microsecond=0)
            old = self.resources.get(path)
            if old is not None and old.body != body and lm <= old.last_modified:
                lm = old.last_modified + timedelta(seconds=1)
            elif old is not None and old.body == body:
                lm = old.last_modified
        res = Resource(body, content_type, lm)
        self.resources[path] = res
        return res

    def put_bundle(self, suffix: str, data: bytes | str | dict, **kw: Any) -> Resource:
        return self.put(bundle_path(suffix), data, **kw)

    def put_state(self, suffix: str, data: bytes | str | dict, **kw: Any) -> Resource:
        return self.put(state_path(suffix), data, **kw)

    def put_well_known(self, suffix: str, data: bytes | str | dict, **kw: Any) -> Resource:
        return self.put(well_known_path(suffix), data, **kw)

    def put_record(self, bundle: dict, state: dict | None = None, *, well_known: bool = True, **kw: Any) -> str:
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

    def remove(self, path: str) -> None:
        self.resources.pop(path, None)

    def remove_record(self, suffix: str) -> None:
        for path in (bundle_path(suffix), state_path(suffix), well_known_path(suffix)):
            self.remove(path)

    # faults

    def fault(self, kind: str, path: str | None = None, *, times: int | None = None, **params: Any) -> Fault:
        """Misbehave on `path` (every path when None), for `times` requests (forever when None).
        The newest fault on a path wins; path faults win over server-wide ones."""
        if kind == "refuse":
            raise ValueError("a refused connection is a closed port: use closed_port_url(), refused_spec() or await suspend()")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(FAULT_KINDS)}")
        if kind == "redirect" and "location" not in params:
            raise ValueError("the redirect fault needs location=")
        if kind == "gzip_bomb":
            # Compress now (cached), not in the handler: 64 MiB takes the better part of a second
            # and must not count against the client's read timeout.
            expanded = int(params.get("expanded_bytes", 64 * MIB))
            gzip_bomb(expanded, _to_bytes(params.get("fill", b" ")))
        f = Fault(kind, path, params, times)
        self.faults.append(f)
        return f

    def clear_faults(self, path: str | None = None) -> None:
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

    def count(self, path: str | None = None, status: int | None = None, *, method: str | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if (path is None or r.path == path) and (status is None or r.status == status) and (method is None or r.method == method)
        )

    def clear_log(self) -> None:
        self.requests.clear()

    # handling

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers = {h: request.headers[h] for h in LOGGED_HEADERS if h in request.headers}
        rec = RequestRecord(request.method, request.path, request.query_string, headers)
        self.requests.append(rec)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if request.method not in ("GET", "HEAD"):
                return self._answer(rec, web.Response(status=405, headers={"Allow": "GET, HEAD"}), b"")
            fault = self._take_fault(request.path)
            if fault is not None:
                rec.fault = fault.kind
                handler = getattr(self, "_fault_" + fault.kind)
                return await handler(request, rec, fault)
            return self._serve(request, rec)
        finally:
            rec.finished = time.monotonic()
            if task is not None:
                self._tasks.discard(task)

    def _answer(self, rec: RequestRecord, resp: web.Response, body: bytes) -> web.Response:
        rec.status = resp.status
        rec.bytes_sent = len(body)
        return resp

    def _serve(self, request: web.Request, rec: RequestRecord) -> web.Response:
        res = self.resources.get(request.path)
        if res is None:
            body = b'{"error":"not_found"}'
            return self._answer(rec, web.Response(status=404, body=body, headers={"Content-Type": "application/json"}), body)
        use_gzip = self.gzip and _accepts_gzip(request.headers.get("Accept-Encoding", ""))
        headers = {
            "ETag": res.gzip_etag if use_gzip else res.etag,
            "Last-Modified": res.last_modified_http,
            "Cache-Control": "no-cache",
        }
        if self.gzip:
            headers["Vary"] = "Accept-Encoding"
        if self._not_modified(request, res):
            return self._answer(rec, web.Response(status=304, headers=headers), b"")
        body = res.gzipped if use_gzip else res.body
        if use_gzip:
            headers["Content-Encoding"] = "gzip"
        headers["Content-Type"] = res.content_type
        sent = b"" if request.method == "HEAD" else body
        return self._answer(rec, web.Response(status=200, body=body, headers=headers), sent)

    @staticmethod
    def _not_modified(request: web.Request, res: Resource) -> bool:
        return not_modified(request.headers, (res.etag, res.gzip_etag), res.last_modified)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep; True (at once) when the server is stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return self._stopping.is_set()

    def _fault_data(self, request: web.Request, fault: Fault) -> bytes:
        if "data" in fault.params:
            return _to_bytes(fault.params["data"])
        res = self.resources.get(request.path)
        if res is not None:
            return res.body
        return b'{"pith_number":"pith:2026:' + b"A" * 26 + b'","padding":"' + b"x" * 2000 + b'"}'

    @staticmethod
    def _transport(request: web.Request) -> asyncio.Transport | None:
        t = request.transport
        return None if t is None or t.is_closing() else t  # type: ignore[return-value]

    # raw faults: the answer is written straight to the socket

    async def _fault_drop(self, request: web.Request, rec: RequestRecord, fault: Fault) -> web.StreamResponse:
        t = self._transport(request)
        if t is not None:
            t.close()
        return _Hijacked()

    async def _fault_hang(self, request: web.Request, rec: RequestRecord, fault: Fault) -> web.StreamResponse:
        await self._stopping.wait()
        t = self._transport(request)
        if t is not None:
            t.abort()
        return _Hijacked()

    async def _fault_reset(self, request: web.Request, rec: RequestRecord, fault: Fault) -> web.StreamResponse:
        data = self._fault_data(request, fault)
        after = int(fault.params.get("after", len(data) // 2))
        t = self._transport(request)
        if t is not None:
            head = _raw_head(200, "OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
            t.write(head + data[:after])
            rec.status, rec.bytes_sent = 200, after
            while t.get_write_buffer_size() and not t.is_closing():
                await asyncio.sleep(0.005)
            await self._sleep(float(fault.params.get("pause", 0.05)))  # let the client read it first
            sock = t.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            t.abort()
        return _Hijacked()

    async def _send_declared(self, request: web.Request, rec: RequestRecord, data: bytes, declared: int) -> web.StreamResponse:
        t = self._transport(request)
        if t is not None:
            headers = [("Content-Type", "application/json"), ("Content-Length", str(declared))]
            if declared >= len(data):  # when it declares less, the excess looks like the next response
                headers.append(("Connection", "close"))
            head = _raw_head(200, "OK", headers)
            body = b"" if request.method == "HEAD" else data
            rec.status, rec.bytes_sent = 200, len(body)
            if declared < len(body):
                # The declared part first, so the client takes it as a complete (short) body;
                # then the excess, which lands on the connection as garbage.
                t.write(head + body[:declared])
                while t.get_write_buffer_size() and not t.is_closing():
                    await asyncio.sleep(0.005)
                await self._sleep(0.05)
                head, body = b"", body[declared:]
            if not t.is_closing():
                t.write(head + body)
                t.close()  # flushes, then FIN
        return _Hijacked()

    async def _fault_truncated(self, request: web.Request, rec: RequestRecord, fault: Fault) -> web.StreamResponse:
        data = self._fault_data(request, fault)
        return await self._send_declared(request, rec, data[: len(data) // 2], len(data))

    async def _fault_content_length_mismatch(self, request: web.Request, rec: RequestRecord, fault: Fault) -> web.StreamResponse:
        data = self._fault_data(request, fault)
        declared = int(fault.params["declared"]) if "declared" in fault.params else max(len(data) + int(fault.params.get("delta", 100)), 0)
        return await self._send_declared(request, rec, data, declared)

    async def _fault_trickle(self, request: web.Request, rec: RequestRecord, fault: Fault) -> web.StreamResponse:
        data = self._fault_data(request, fault)
        interval = float(fault.params.get("interval", 0.05))
        step = max(int(fault.params.get("chunk", 1)), 1)
        t = self._transport(request)
        if t is None:
            return _Hijacked()
        t.write(_raw_head(200, "OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data))), ("Connection", "close")]))
        rec.status = 200
        for i in range(0, len(data), step):
            if t.is_closing():
                break
            t.write(data[i : i + step])
            rec.bytes_sent += len(data[i : i + step])
            if await self._sleep(interval):
                t.abort()
                return _Hijacked()
        t.close()
        return _Hijacked()

    async def _fault_endless_chunked(self, request: web.Request, rec: RequestRecord, fault: Fault) -> web.StreamResponse:
        chunk = _to_bytes(fault.params.get("chunk", b" " * 4096))
        interval = float(fault.params.get("interval", 0.002))
        t = self._transport(request)
        if t is None:
            return _Hijacked()
        head = [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked"), ("Connection", "close")]
        if "content_length" in fault.params:  # both framings at once, as a smuggling server would
            head.insert(1, ("Content-Length", str(int(fault.params["content_length"]))))
        first = _to_bytes(fault.params.get("prefix", b'{"pith_number":"'))
        t.write(_raw_head(200, "OK", head) + (f"{len(first):x}\r\n".encode() + first + b"\r\n" if first else b""))
        rec.status, rec.bytes_sent = 200, len(first)
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        while not t.is_closing():
            if t.get_write_buffer_size() < 256 * 1024:
                t.write(frame)
                rec.bytes_sent += len(chunk)
            if await self._sleep(interval):
                break
        t.abort()
        return _Hijacked()

    # faults answered through aiohttp

    async def _fault_delay(self, request: web.Request, rec: RequestRecord, fault: Fault) -> web.StreamResponse:
        release = fault.params.get("until")  # an asyncio.Event: the test ends the delay itself
        if isinstance(release, asyncio.Event):
            waits = [asyncio.ensure_future(e.wait()) for e in (release, self._stopping)]
            seconds = float(fault.params.get("seconds", 1.0))
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            if self._stopping.is_set():
                return await self._fault_drop(request, rec, fault)
        elif await self._sleep(float(fault.params.get("seconds", 1.0))):
            return await self._fault_drop(request, rec, fault)
        return self._serve(request, rec)

    async def _fault_status(self, request: web.Request, rec: RequestRecord, fault: Fault) -> web.StreamResponse:
        status = int(fault.params.get("status", 503))
        body = _to_bytes(fault.params.get("data", b'{"error":"fault"}'))
        headers = {"Content-Type": "application/json"}
        if fault.params.get("retry_after") is not None:
            headers["Retry-After"] = str(fault.params["retry_after"])
        return self._answer(rec, web.Response(status=status, body=body, headers=headers), body)

    async def _fault_redirect(self, request: web.Request, rec: RequestRecord, fault: Fault) -> web.StreamResponse:
        status = int(fault.params.get("status", 302))
        return self._answer(rec, web.Response(status=status, headers={"Location": str(fault.params["location"])}), b"")

    async def _fault_redirect_loop(self, request: web.Request, rec: RequestRecord, fault: Fault) -> web.StreamResponse:
        partner = fault.params.get("partner")
        if partner is None or fault.path is None:
            target = request.path
        else:
            target = partner if request.path == fault.path else fault.path
        status = int(fault.params.get("status", 302))
        return self._answer(rec, web.Response(status=status, headers={"Location": self.url(target)}), b"")

    async def _fault_body(self, request: web.Request, rec: RequestRecord, fault: Fault) -> web.StreamResponse:
        body = _to_bytes(fault.params.get("data", b""))
        headers = {"Content-Type": str(fault.params.get("content_type", "application/json"))}
        headers.update(fault.params.get("headers") or {})
        status = int(fault.params.get("status", 200))
        return self._answer(rec, web.Response(status=status, body=body, headers=headers), body)

    async def _fault_gzip_bomb(self, request: web.Request, rec: RequestRecord, fault: Fault) -> web.StreamResponse:
        expanded = int(fault.params.get("expanded_bytes", 64 * MIB))
        fill = _to_bytes(fault.params.get("fill", b" "))
        body = await asyncio.to_thread(gzip_bomb, expanded, fill)
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        return self._answer(rec, web.Response(status=200, body=body, headers=headers), body)


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
