"""A static Pith mirror on 127.0.0.1 (aiohttp, random port), serving documents from memory.

`pithsync demo` runs three of them; the test suite's fault-injecting mirror
(`pithsync.testing.mirror.MirrorServer`) is this server with faults and a request log added.
It serves the mirror URL layout of PROTOCOL.md ("URLs and mirrors") and answers conditional
requests (strong ETag, Last-Modified, 304) by the same rule as `pithsync serve`; with `gzip`
it compresses for clients that accept it.

    mirror = LocalMirror("honest")
    mirror.put_bundle(suffix, bundle_bytes)
    await mirror.start()
    ...crawl mirror.spec()...
    await mirror.stop()
"""

from __future__ import annotations

import email.utils
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property

from aiohttp import web

from pithsync.core.canonical import compact
from pithsync.core.urls import MirrorSpec
from pithsync.publishing.httpcache import etag_of, not_modified

LOCALHOST = "127.0.0.1"
JSON_TYPE = "application/json"
NOT_FOUND_BODY = b'{"error":"not_found"}'


# -- URL layout -------------------------------------------------------------------------------


def bundle_path(suffix: str) -> str:
    """The URL path of a record's bundle."""
    return f"/pith/{suffix}/bundle.json"


def state_path(suffix: str) -> str:
    """The URL path of a record's state."""
    return f"/pith/{suffix}/state.json"


def well_known_path(suffix: str) -> str:
    """The URL path of a record's well-known bundle copy."""
    return f"/.well-known/pith/{suffix}/bundle.json"


# -- what is served ---------------------------------------------------------------------------


def to_bytes(data: bytes | bytearray | str | dict | list) -> bytes:
    """A body as bytes: JSON values serialised compactly, as the registry serves them."""
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (dict, list)):
        return compact(data)
    raise TypeError(f"cannot serve {type(data).__name__}")


def _to_datetime(value: datetime | str | float | int | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, str):
        dt = email.utils.parsedate_to_datetime(value)
    else:
        dt = datetime.fromtimestamp(float(value), UTC)
    return dt.astimezone(UTC).replace(microsecond=0)


def _now() -> datetime:
    # HTTP dates have whole seconds: a finer Last-Modified could never compare equal.
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Resource:
    """One served document: its bytes, type and Last-Modified."""

    body: bytes
    content_type: str = JSON_TYPE
    last_modified: datetime = field(default_factory=_now)

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
        """The body gzip-compressed."""
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        return c.compress(self.body) + c.flush()

    @property
    def last_modified_http(self) -> str:
        """Last-Modified as an HTTP date."""
        return email.utils.format_datetime(self.last_modified, usegmt=True)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (a q of 0 refuses it)."""
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


# -- the server -------------------------------------------------------------------------------


class LocalMirror:
    """A static Pith mirror on 127.0.0.1 with a random port: `async with LocalMirror("a") as m:`.

    Args:
        name: the mirror's name in the configuration it is given to (`spec()`).
        gzip: compress bodies for clients that accept gzip.
        host: the address to listen on.
    """

    def __init__(self, name: str = "mirror", *, gzip: bool = False, host: str = LOCALHOST) -> None:
        self.name = name
        self.gzip = gzip
        self.host = host
        self.resources: dict[str, Resource] = {}
        self.request_count = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._port: int | None = None

    # lifecycle

    async def start(self) -> LocalMirror:
        """Listen on a free port of `host`; a running server is left as it is."""
        if self._runner is not None:
            return self
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self._runner, self._site, self._port = runner, site, site.port
        return self

    async def stop(self) -> None:
        """Stop serving and close the port."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await runner.cleanup()
        self._site = None

    async def __aenter__(self) -> LocalMirror:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._runner is not None and self._site is not None

    @property
    def port(self) -> int:
        """The port it listens on (raises RuntimeError before `start()`)."""
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def base_url(self) -> str:
        """The mirror's base URL, `http://127.0.0.1:PORT`."""
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        """The full URL of `path` on this mirror."""
        return self.base_url + path

    def spec(self, *, configured: bool = True) -> MirrorSpec:
        """This mirror as a configured (or discovered, `configured=False`) mirror."""
        return MirrorSpec(name=self.name, base_url=self.base_url, configured=configured)

    # content

    def put(
        self,
        path: str,
        data: bytes | str | dict | list,
        content_type: str = JSON_TYPE,
        *,
        last_modified: datetime | str | float | None = None,
    ) -> Resource:
        """Serve `data` at `path`.  Without an explicit `last_modified`, replacing a resource with
        different bytes moves Last-Modified forward by at least a second (so that a client's
        If-Modified-Since sees the change).

        Args:
            path: the URL path, e.g. `bundle_path(suffix)`.
            data: the body (JSON values are serialised compactly).
            content_type: its Content-Type.
            last_modified: its Last-Modified (a datetime, an HTTP date or a Unix time).

        Returns:
            The resource now served at `path`.
        """
        body = to_bytes(data)
        lm = _to_datetime(last_modified)
        if lm is None:
            lm = _now()
            old = self.resources.get(path)
            if old is not None and old.body != body and lm <= old.last_modified:
                lm = old.last_modified + timedelta(seconds=1)
            elif old is not None and old.body == body:
                lm = old.last_modified
        res = Resource(body, content_type, lm)
        self.resources[path] = res
        return res

    def put_bundle(self, suffix: str, data: bytes | str | dict, **kw) -> Resource:
        """Serve a record's bundle (keywords as for `put`)."""
        return self.put(bundle_path(suffix), data, **kw)

    def put_state(self, suffix: str, data: bytes | str | dict, **kw) -> Resource:
        """Serve a record's state (keywords as for `put`)."""
        return self.put(state_path(suffix), data, **kw)

    def put_well_known(self, suffix: str, data: bytes | str | dict, **kw) -> Resource:
        """Serve a record's well-known bundle copy (keywords as for `put`)."""
        return self.put(well_known_path(suffix), data, **kw)

    def remove(self, path: str) -> None:
        """Stop serving `path` (it answers 404)."""
        self.resources.pop(path, None)

    def remove_record(self, suffix: str) -> None:
        """Stop serving every document of a record."""
        for path in (bundle_path(suffix), state_path(suffix), well_known_path(suffix)):
            self.remove(path)

    # handling

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.request_count += 1
        if request.method not in ("GET", "HEAD"):
            return self._method_not_allowed()
        return self._serve(request)

    @staticmethod
    def _method_not_allowed() -> web.Response:
        return web.Response(status=405, headers={"Allow": "GET, HEAD"})

    def _serve(self, request: web.Request) -> web.Response:
        """The stored resource at the request's path: 200, 304 or 404."""
        res = self.resources.get(request.path)
        if res is None:
            return web.Response(
                status=404, body=NOT_FOUND_BODY, headers={"Content-Type": JSON_TYPE}
            )
        use_gzip = self.gzip and accepts_gzip(request.headers.get("Accept-Encoding", ""))
        headers = {
            "ETag": res.gzip_etag if use_gzip else res.etag,
            "Last-Modified": res.last_modified_http,
            "Cache-Control": "no-cache",
        }
        if self.gzip:
            headers["Vary"] = "Accept-Encoding"
        if not_modified(request.headers, (res.etag, res.gzip_etag), res.last_modified):
            return web.Response(status=304, headers=headers)
        if use_gzip:
            headers["Content-Encoding"] = "gzip"
        headers["Content-Type"] = res.content_type
        body = res.gzipped if use_gzip else res.body
        return web.Response(status=200, body=body, headers=headers)


__all__ = [
    "LOCALHOST",
    "LocalMirror",
    "Resource",
    "accepts_gzip",
    "bundle_path",
    "state_path",
    "to_bytes",
    "well_known_path",
]
