"""The wire faults of the test mirror (`pithsync.testing.mirror.MirrorServer`): what each fault
kind writes to the client, over aiohttp or straight onto the TCP transport.

`WireFaults` is a mixin: MirrorServer inherits the `_fault_<kind>` handlers, which answer with
the server's own content (`resources`, `_serve_logged`) and end at once when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pithsync.publishing.localmirror import Resource, to_bytes

MIB = 1 << 20


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
    "html": (
        b"<!doctype html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    ),
    "invalid_utf8": b'{"pith_number":"pith:2026:\xff\xfe\xc3\x28","x":"\xed\xa0\x80"}',
    "deep_nesting": b"[" * 100_000 + b"]" * 100_000,
    "huge_number": b'{"pith_number":' + b"9" * 10_000 + b"}",
    "duplicate_keys": (
        b'{"bundle_type":"pith_open_graph_bundle","bundle_type":"evil",'
        b'"pith_number":"a","pith_number":"b"}'
    ),
    "nan": b'{"bundle_version":NaN,"x":Infinity,"y":-Infinity}',
    "empty": b"",
    "not_json": b"this is not json\n",
    "json_array": b"[]",
    "json_null": b"null",
}


@dataclass
class RequestRecord:
    """One request the mirror received and how it was answered."""

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
    """A misbehaviour armed on a path (or every path), for a number of requests or forever."""

    kind: str
    path: str | None  # None: every path
    params: dict[str, Any]
    times: int | None = None  # remaining uses; None: until cleared
    hits: int = 0

    def matches(self, path: str) -> bool:
        """Whether the fault answers a request for `path`."""
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
    """A gzip stream that expands to `expanded_bytes` of `fill` (about a thousandth on the wire)."""
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


def _raw_head(status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class WireFaults:
    """The fault handlers, one per kind in FAULT_KINDS, for a server that provides the
    attributes and methods declared here."""

    resources: dict[str, Resource]
    _stopping: asyncio.Event  # set when the server stops: every fault in progress ends

    if TYPE_CHECKING:

        def url(self, path: str) -> str: ...

        def _serve_logged(self, request: web.Request, rec: RequestRecord) -> web.Response: ...

    def _answer(self, rec: RequestRecord, resp: web.Response, body: bytes) -> web.Response:
        """Log how `rec` was answered and return `resp`."""
        rec.status = resp.status
        rec.bytes_sent = len(body)
        return resp

    async def _sleep(self, seconds: float) -> bool:
        """Sleep; True (at once) when the server is stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
            return True
        except TimeoutError:
            return self._stopping.is_set()

    def _fault_data(self, request: web.Request, fault: Fault) -> bytes:
        if "data" in fault.params:
            return to_bytes(fault.params["data"])
        res = self.resources.get(request.path)
        if res is not None:
            return res.body
        return b'{"pith_number":"pith:2026:' + b"A" * 26 + b'","padding":"' + b"x" * 2000 + b'"}'

    @staticmethod
    def _transport(request: web.Request) -> asyncio.Transport | None:
        t = request.transport
        return None if t is None or t.is_closing() else t  # type: ignore[return-value]

    # raw faults: the answer is written straight to the socket

    async def _fault_drop(
        self, request: web.Request, rec: RequestRecord, fault: Fault
    ) -> web.StreamResponse:
        t = self._transport(request)
        if t is not None:
            t.close()
        return _Hijacked()

    async def _fault_hang(
        self, request: web.Request, rec: RequestRecord, fault: Fault
    ) -> web.StreamResponse:
        await self._stopping.wait()
        t = self._transport(request)
        if t is not None:
            t.abort()
        return _Hijacked()

    async def _fault_reset(
        self, request: web.Request, rec: RequestRecord, fault: Fault
    ) -> web.StreamResponse:
        data = self._fault_data(request, fault)
        after = int(fault.params.get("after", len(data) // 2))
        t = self._transport(request)
        if t is not None:
            head = _raw_head(
                200,
                "OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
            )
            t.write(head + data[:after])
            rec.status, rec.bytes_sent = 200, after
            while t.get_write_buffer_size() and not t.is_closing():
                await asyncio.sleep(0.005)
            await self._sleep(
                float(fault.params.get("pause", 0.05))
            )  # let the client read it first
            sock = t.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            t.abort()
        return _Hijacked()

    async def _send_declared(
        self, request: web.Request, rec: RequestRecord, data: bytes, declared: int
    ) -> web.StreamResponse:
        t = self._transport(request)
        if t is not None:
            headers = [("Content-Type", "application/json"), ("Content-Length", str(declared))]
            if declared >= len(
                data
            ):  # when it declares less, the excess looks like the next response
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

    async def _fault_truncated(
        self, request: web.Request, rec: RequestRecord, fault: Fault
    ) -> web.StreamResponse:
        data = self._fault_data(request, fault)
        return await self._send_declared(request, rec, data[: len(data) // 2], len(data))

    async def _fault_content_length_mismatch(
        self, request: web.Request, rec: RequestRecord, fault: Fault
    ) -> web.StreamResponse:
        data = self._fault_data(request, fault)
        declared = (
            int(fault.params["declared"])
            if "declared" in fault.params
            else max(len(data) + int(fault.params.get("delta", 100)), 0)
        )
        return await self._send_declared(request, rec, data, declared)

    async def _fault_trickle(
        self, request: web.Request, rec: RequestRecord, fault: Fault
    ) -> web.StreamResponse:
        data = self._fault_data(request, fault)
        interval = float(fault.params.get("interval", 0.05))
        step = max(int(fault.params.get("chunk", 1)), 1)
        t = self._transport(request)
        if t is None:
            return _Hijacked()
        t.write(
            _raw_head(
                200,
                "OK",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(data))),
                    ("Connection", "close"),
                ],
            )
        )
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

    async def _fault_endless_chunked(
        self, request: web.Request, rec: RequestRecord, fault: Fault
    ) -> web.StreamResponse:
        chunk = to_bytes(fault.params.get("chunk", b" " * 4096))
        interval = float(fault.params.get("interval", 0.002))
        t = self._transport(request)
        if t is None:
            return _Hijacked()
        head = [
            ("Content-Type", "application/json"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "close"),
        ]
        if "content_length" in fault.params:  # both framings at once, as a smuggling server would
            head.insert(1, ("Content-Length", str(int(fault.params["content_length"]))))
        first = to_bytes(fault.params.get("prefix", b'{"pith_number":"'))
        t.write(
            _raw_head(200, "OK", head)
            + (f"{len(first):x}\r\n".encode() + first + b"\r\n" if first else b"")
        )
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

    async def _fault_delay(
        self, request: web.Request, rec: RequestRecord, fault: Fault
    ) -> web.StreamResponse:
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
        return self._serve_logged(request, rec)

    async def _fault_status(
        self, request: web.Request, rec: RequestRecord, fault: Fault
    ) -> web.StreamResponse:
        status = int(fault.params.get("status", 503))
        body = to_bytes(fault.params.get("data", b'{"error":"fault"}'))
        headers = {"Content-Type": "application/json"}
        if fault.params.get("retry_after") is not None:
            headers["Retry-After"] = str(fault.params["retry_after"])
        return self._answer(rec, web.Response(status=status, body=body, headers=headers), body)

    async def _fault_redirect(
        self, request: web.Request, rec: RequestRecord, fault: Fault
    ) -> web.StreamResponse:
        status = int(fault.params.get("status", 302))
        return self._answer(
            rec,
            web.Response(status=status, headers={"Location": str(fault.params["location"])}),
            b"",
        )

    async def _fault_redirect_loop(
        self, request: web.Request, rec: RequestRecord, fault: Fault
    ) -> web.StreamResponse:
        partner = fault.params.get("partner")
        if partner is None or fault.path is None:
            target = request.path
        else:
            target = partner if request.path == fault.path else fault.path
        status = int(fault.params.get("status", 302))
        return self._answer(
            rec, web.Response(status=status, headers={"Location": self.url(target)}), b""
        )

    async def _fault_body(
        self, request: web.Request, rec: RequestRecord, fault: Fault
    ) -> web.StreamResponse:
        body = to_bytes(fault.params.get("data", b""))
        headers = {"Content-Type": str(fault.params.get("content_type", "application/json"))}
        headers.update(fault.params.get("headers") or {})
        status = int(fault.params.get("status", 200))
        return self._answer(rec, web.Response(status=status, body=body, headers=headers), body)

    async def _fault_gzip_bomb(
        self, request: web.Request, rec: RequestRecord, fault: Fault
    ) -> web.StreamResponse:
        expanded = int(fault.params.get("expanded_bytes", 64 * MIB))
        fill = to_bytes(fault.params.get("fill", b" "))
        body = await asyncio.to_thread(gzip_bomb, expanded, fill)
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        return self._answer(rec, web.Response(status=200, body=body, headers=headers), body)
