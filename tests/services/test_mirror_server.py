"""The local mirror server: real HTTP on 127.0.0.1, conditional requests, gzip, the request log
and every fault kind, each checked from the client side of a real TCP connection."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import anyio
import pytest
from multidict import CIMultiDict

from pithsync.core.urls import MirrorSpec
from pithsync.testing import forge
from pithsync.testing.mirror import (
    FAULT_KINDS,
    HOSTILE_BODIES,
    MIB,
    MirrorServer,
    bundle_path,
    closed_port_url,
    mirrors,
    refused_spec,
    state_path,
    suffix_of,
    well_known_path,
)

T = aiohttp.ClientTimeout(total=5)


@pytest.fixture
async def m():
    async with MirrorServer("a") as server:
        yield server


@pytest.fixture(scope="module")
def forged():
    return forge.forge_record(1)


def session(**kw) -> aiohttp.ClientSession:
    """A fresh session (and so fresh connections) per request: no pooled-connection retries."""
    kw.setdefault("timeout", T)
    return aiohttp.ClientSession(**kw)


async def fetch(url: str, *, headers=None, **kw) -> tuple[int, CIMultiDict, bytes]:
    method = kw.pop("method", "GET")
    async with session(**kw) as s, s.request(method, url, headers=headers) as r:
        return r.status, CIMultiDict(r.headers), await r.read()


# -- serving ----------------------------------------------------------------------------------


async def test_serves_the_mirror_layout(m, forged):
    bundle = forged.bundle()
    suffix = m.put_record(bundle)
    assert suffix == forged.suffix == suffix_of(bundle["pith_number"])
    spec = m.spec()
    assert spec == MirrorSpec("a", m.base_url)
    assert m.base_url.startswith("http://127.0.0.1:") and m.port > 0
    for url, expected in (
        (spec.bundle_url(suffix), forge.dumps(bundle)),
        (spec.well_known_url(suffix), forge.dumps(bundle)),
        (spec.state_url(suffix), forge.dumps(bundle["state"])),
    ):
        status, headers, body = await fetch(url)
        assert status == 200
        assert body == expected
        assert headers["Content-Type"] == "application/json"
        assert headers["Content-Length"] == str(len(expected))
    assert m.url(bundle_path(suffix)) == spec.bundle_url(suffix)


async def test_unknown_and_removed_paths_are_404(m, forged):
    suffix = m.put_record(forged.bundle(), state={"explicit": True})
    assert (await fetch(m.url(state_path(suffix))))[2] == b'{"explicit":true}'
    assert (await fetch(m.url("/pith/NOPE/bundle.json")))[0] == 404
    assert (await fetch(m.url("/")))[0] == 404
    m.remove(bundle_path(suffix))
    assert (await fetch(m.url(bundle_path(suffix))))[0] == 404
    assert (await fetch(m.url(well_known_path(suffix))))[0] == 200
    m.remove_record(suffix)
    assert (await fetch(m.url(well_known_path(suffix))))[0] == 404
    assert (await fetch(m.url(state_path(suffix))))[0] == 404


async def test_put_helpers_and_methods(m):
    m.put_bundle("S" * 26, b"b")
    m.put_state("S" * 26, "s")
    m.put_well_known("S" * 26, {"w": 1})
    m.put("/pith/" + "S" * 26, b"<x/>", content_type="application/ld+json")
    assert (await fetch(m.url(bundle_path("S" * 26))))[2] == b"b"
    assert (await fetch(m.url(state_path("S" * 26))))[2] == b"s"
    assert (await fetch(m.url(well_known_path("S" * 26))))[2] == b'{"w":1}'
    status, headers, _ = await fetch(m.url("/pith/" + "S" * 26))
    assert headers["Content-Type"] == "application/ld+json"
    status, headers, body = await fetch(m.url(state_path("S" * 26)), method="HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", "1")
    assert (await fetch(m.url(state_path("S" * 26)), method="POST"))[0] == 405


# -- conditional requests ---------------------------------------------------------------------


async def test_etag_and_if_none_match(m):
    res = m.put("/x", b'{"a":1}')
    status, headers, _ = await fetch(m.url("/x"))
    etag = headers["ETag"]
    assert (
        etag == res.etag
        and etag.startswith('"')
        and etag.endswith('"')
        and not etag.startswith("W/")
    )
    status, headers, body = await fetch(m.url("/x"), headers={"If-None-Match": etag})
    assert (status, body, headers["ETag"]) == (304, b"", etag)
    assert "Content-Length" not in headers or headers["Content-Length"] == "0"
    assert (await fetch(m.url("/x"), headers={"If-None-Match": '"other"'}))[0] == 200
    assert (await fetch(m.url("/x"), headers={"If-None-Match": f'"other", W/{etag}'}))[0] == 304
    assert (await fetch(m.url("/x"), headers={"If-None-Match": "*"}))[0] == 304
    # new bytes, new validator: the old one no longer matches
    m.put("/x", b'{"a":2}')
    status, headers, body = await fetch(m.url("/x"), headers={"If-None-Match": etag})
    assert (status, body) == (200, b'{"a":2}') and headers["ETag"] != etag


async def test_last_modified_and_if_modified_since(m):
    when = datetime(2026, 7, 3, 6, 28, 49, tzinfo=UTC)
    m.put("/x", b"1", last_modified=when)
    status, headers, _ = await fetch(m.url("/x"))
    assert headers["Last-Modified"] == "Fri, 03 Jul 2026 06:28:49 GMT"
    same = format_datetime(when, usegmt=True)
    earlier = format_datetime(when - timedelta(seconds=1), usegmt=True)
    assert (await fetch(m.url("/x"), headers={"If-Modified-Since": same}))[0] == 304
    assert (await fetch(m.url("/x"), headers={"If-Modified-Since": earlier}))[0] == 200
    assert (await fetch(m.url("/x"), headers={"If-Modified-Since": "garbage"}))[0] == 200
    # If-None-Match takes precedence over If-Modified-Since
    assert (
        await fetch(m.url("/x"), headers={"If-Modified-Since": same, "If-None-Match": '"nope"'})
    )[0] == 200
    # replacing the bytes without a date moves Last-Modified forward
    m.put("/x", b"2", last_modified=when)
    m.put("/x", b"3")
    status, headers, _ = await fetch(m.url("/x"), headers={"If-Modified-Since": same})
    assert status == 200 and headers["Last-Modified"] != same


# -- gzip -------------------------------------------------------------------------------------


async def test_gzip_when_asked_and_enabled():
    body = forge.dumps({"padding": "x" * 5000})
    async with MirrorServer("g", gzip=True) as g, MirrorServer("p") as plain:
        for server in (g, plain):
            server.put("/x", body)
        status, headers, raw = await fetch(
            g.url("/x"), headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        )
        assert headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
        assert len(raw) < len(body) // 10 and gzip.decompress(raw) == body
        gz_etag = headers["ETag"]
        status, headers, raw = await fetch(
            g.url("/x"), headers={"Accept-Encoding": "identity"}, auto_decompress=False
        )
        assert "Content-Encoding" not in headers and raw == body and headers["ETag"] != gz_etag
        assert (
            await fetch(g.url("/x"), headers={"Accept-Encoding": "gzip;q=0"}, auto_decompress=False)
        )[2] == body
        assert (
            await fetch(g.url("/x"), headers={"Accept-Encoding": "gzip", "If-None-Match": gz_etag})
        )[0] == 304
        status, headers, raw = await fetch(
            plain.url("/x"), headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        )
        assert "Content-Encoding" not in headers and raw == body
        assert (
            g.requests[0].bytes_sent == len(gzip.compress(body))
            or g.requests[0].bytes_sent < len(body) // 10
        )


# -- the request log --------------------------------------------------------------------------


async def test_request_log(m):
    m.put("/x", b"12345")
    await fetch(
        m.url("/x"),
        headers={"User-Agent": "pithsync-test/1", "If-None-Match": '"zz"', "X-Other": "1"},
    )
    await fetch(m.url("/x?q=1"))
    await fetch(m.url("/missing"))
    await fetch(m.url("/x"), headers={"If-None-Match": m.resources["/x"].etag})
    first = m.requests[0]
    assert (first.method, first.path, first.status, first.bytes_sent, first.fault) == (
        "GET",
        "/x",
        200,
        5,
        None,
    )
    assert (
        first.headers["User-Agent"] == "pithsync-test/1"
        and first.headers["If-None-Match"] == '"zz"'
    )
    assert (
        "X-Other" not in first.headers
        and first.finished is not None
        and first.finished >= first.started
    )
    assert m.requests[1].query == "q=1"
    assert m.count() == 4 and m.count("/x") == 3 and m.count(status=404) == 1
    assert m.count("/x", status=304) == 1 and m.requests[3].bytes_sent == 0
    assert m.count(method="GET") == 4
    m.clear_log()
    assert m.count() == 0


# -- faults: connection refused ---------------------------------------------------------------


async def test_refused_closed_port():
    url = closed_port_url()
    with pytest.raises(aiohttp.ClientConnectorError):
        await fetch(url + "/pith/X/bundle.json")
    spec = refused_spec("down")
    assert spec.name == "down" and spec.base_url.startswith("http://127.0.0.1:")
    with pytest.raises(aiohttp.ClientConnectorError):
        await fetch(spec.bundle_url("X"))


async def test_refused_suspend_and_resume(m):
    m.put("/x", b"1")
    async with session() as s:
        async with s.get(m.url("/x")) as r:  # leaves a pooled keep-alive connection
            assert r.status == 200
        await m.suspend()
        assert not m.running
        with pytest.raises(aiohttp.ClientConnectionError):
            async with s.get(m.url("/x")) as r:
                await r.read()
    with pytest.raises(aiohttp.ClientConnectorError):
        await fetch(m.url("/x"))
    port = m.port
    await m.resume()
    assert m.port == port and (await fetch(m.url("/x")))[0] == 200


async def test_fault_validation(m):
    with pytest.raises(ValueError, match="closed_port_url"):
        m.fault("refuse")
    with pytest.raises(ValueError):
        m.fault("nonsense")
    with pytest.raises(ValueError):
        m.fault("redirect", "/x")
    assert "refuse" not in FAULT_KINDS


# -- faults: broken transfers -----------------------------------------------------------------


async def test_reset_mid_body(m):
    m.put("/x", b"x" * 10_000)
    m.fault("reset", "/x")
    with pytest.raises(
        (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
    ):
        await fetch(m.url("/x"))
    assert m.requests[-1].fault == "reset" and m.requests[-1].bytes_sent == 5000


async def test_drop_without_answer(m):
    m.put("/x", b"1")
    m.fault("drop", "/x")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await fetch(m.url("/x"))
    assert m.requests[-1].status is None


async def test_truncated(m):
    m.put("/x", b"0123456789" * 100)
    m.fault("truncated", "/x")
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(m.url("/x"))
    # the headers promised the full length; streaming shows exactly half arrived
    got = bytearray()
    async with session() as s, s.get(m.url("/x")) as r:
        assert r.headers["Content-Length"] == "1000"
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in r.content.iter_any():
                got += chunk
    assert bytes(got) == (b"0123456789" * 100)[:500]


async def test_content_length_mismatch(m):
    m.put("/x", b"0123456789")
    m.fault("content_length_mismatch", "/x", times=1, delta=50)
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(m.url("/x"))
    # declaring less than it sends: the client silently gets a short body
    m.fault("content_length_mismatch", "/x", times=1, delta=-4)
    status, headers, body = await fetch(m.url("/x"))
    assert (status, headers["Content-Length"], body) == (200, "6", b"012345")
    assert m.requests[-1].bytes_sent == 10
    m.fault("content_length_mismatch", "/x", times=1, declared=3)
    assert (await fetch(m.url("/x")))[2] == b"012"
    assert (await fetch(m.url("/x")))[2] == b"0123456789"  # faults used up


async def test_status_faults_then_recovery(m):
    m.put("/x", b"ok")
    f = m.fault("status", "/x", status=503, retry_after="7", times=2)
    for _ in range(2):
        status, headers, _ = await fetch(m.url("/x"))
        assert (status, headers["Retry-After"]) == (503, "7")
    assert f.hits == 2 and f not in m.faults
    assert (await fetch(m.url("/x")))[:3:2] == (200, b"ok")
    assert m.count("/x", status=503) == 2 and m.count("/x", status=200) == 1
    for code in (500, 502, 429):
        m.fault("status", "/x", status=code, times=1)
        status, headers, _ = await fetch(m.url("/x"))
        assert status == code and "Retry-After" not in headers


async def test_path_faults_win_over_global_and_clear(m):
    m.put("/x", b"x")
    m.put("/y", b"y")
    m.fault("status", status=500)
    m.fault("status", "/x", status=502)
    assert (await fetch(m.url("/x")))[0] == 502
    assert (await fetch(m.url("/y")))[0] == 500
    m.clear_faults("/x")
    assert (await fetch(m.url("/x")))[0] == 500
    m.clear_faults()
    assert (await fetch(m.url("/x")))[0] == 200


# -- faults: time -----------------------------------------------------------------------------


async def test_hang_times_out_the_client(m):
    m.put("/x", b"1")
    m.fault("hang", "/x")
    t0 = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await fetch(m.url("/x"), timeout=aiohttp.ClientTimeout(total=0.3))
    assert 0.25 < time.monotonic() - t0 < 20  # the client's timeout ended it: a hang never ends
    assert m.requests[-1].status is None


async def test_stop_ends_a_hang_promptly():
    server = await MirrorServer("h").start()
    server.fault("hang")
    async with session() as s:

        async def get():
            async with s.get(server.url("/x")) as r:
                return await r.read()

        task = asyncio.create_task(get())
        await asyncio.sleep(0.2)
        assert not task.done() and server.count("/x") == 1
        t0 = time.monotonic()
        await server.stop()
        assert time.monotonic() - t0 < 20  # not the hang's forever, nor aiohttp's 60 s grace
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(task, 1)
    await server.stop()  # idempotent


async def test_delay(m):
    m.put("/x", b"late")
    m.fault("delay", "/x", seconds=30)
    with pytest.raises(asyncio.TimeoutError):
        await fetch(m.url("/x"), timeout=aiohttp.ClientTimeout(total=0.5))
    m.clear_faults()
    m.fault("delay", "/x", seconds=0.1)
    t0 = time.monotonic()
    assert (await fetch(m.url("/x")))[2] == b"late"
    assert time.monotonic() - t0 >= 0.09


async def test_trickle(m):
    data = b"0123456789"
    m.put("/x", data)
    m.fault("trickle", "/x", interval=0.04)
    arrivals = []
    t0 = time.monotonic()
    async with session() as s, s.get(m.url("/x")) as r:
        assert r.headers["Content-Length"] == "10"
        async for chunk in r.content.iter_any():
            arrivals.append((time.monotonic() - t0, len(chunk)))
    assert sum(n for _, n in arrivals) == len(data)
    assert len(arrivals) >= 5  # it came in pieces...
    received_by_0_15 = sum(n for t, n in arrivals if t < 0.15)
    assert received_by_0_15 < len(data)  # ...slowly
    assert arrivals[-1][0] >= 0.3


async def test_trickle_and_endless_end_when_the_server_stops():
    server = await MirrorServer("s").start()
    server.put("/x", b"x" * 1000)
    server.fault("trickle", "/x", interval=0.05)
    server.fault("endless_chunked", "/y")
    async with session() as s:

        async def get(path):
            async with s.get(server.url(path)) as r:
                async for _ in r.content.iter_any():
                    pass

        tasks = [asyncio.create_task(get("/x")), asyncio.create_task(get("/y"))]
        await asyncio.sleep(0.2)
        assert not any(t.done() for t in tasks)
        t0 = time.monotonic()
        await server.stop()
        assert time.monotonic() - t0 < 20  # neither body would ever end by itself
        done, pending = await asyncio.wait(tasks, timeout=20)
        assert not pending
        for t in done:
            assert isinstance(t.exception(), aiohttp.ClientError)


async def test_endless_chunked(m):
    m.fault("endless_chunked", "/x", chunk=b" " * 8192)
    got = 0
    async with session() as s, s.get(m.url("/x")) as r:
        assert r.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in r.headers
        async for chunk in r.content.iter_any():
            got += len(chunk)
            if got > 2 * MIB:
                break
    assert got > 2 * MIB
    # the client hung up: the server's streaming handler notices and ends
    for _ in range(1000):  # up to 10 s: an endless handler that missed the hang-up never ends
        if not m._tasks:
            break
        await asyncio.sleep(0.01)
    assert not m._tasks
    assert m.requests[-1].bytes_sent >= 2 * MIB


# -- faults: hostile content ------------------------------------------------------------------


async def test_gzip_bomb(m):
    m.fault("gzip_bomb", "/x")  # 64 MiB of spaces by default
    status, headers, raw = await fetch(m.url("/x"), auto_decompress=False)
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert len(raw) < 100 * 1024
    d = zlib.decompressobj(31)
    expanded, buf = 0, raw
    while buf:
        out = d.decompress(buf, MIB)
        expanded += len(out)
        buf = d.unconsumed_tail
    assert expanded == 64 * MIB and d.eof
    m.fault("gzip_bomb", "/y", expanded_bytes=MIB, fill=b"0")
    assert gzip.decompress((await fetch(m.url("/y"), auto_decompress=False))[2]) == b"0" * MIB


async def test_redirect_loop_to_itself(m):
    m.fault("redirect_loop", "/x")
    with pytest.raises(aiohttp.TooManyRedirects):
        await fetch(m.url("/x"))
    assert m.count("/x", status=302) == 10  # aiohttp's max_redirects
    async with session() as s, s.get(m.url("/x"), allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == m.url("/x")


async def test_redirect_ping_pong(m):
    m.fault("redirect_loop", "/a", partner="/b")
    with pytest.raises(aiohttp.TooManyRedirects):
        await fetch(m.url("/a"))
    assert m.count("/a", status=302) == 5 and m.count("/b", status=302) == 5
    async with session() as s, s.get(m.url("/b"), allow_redirects=False) as r:
        assert r.headers["Location"] == m.url("/a")


@pytest.mark.parametrize(
    "location",
    ["http://10.0.0.1/x", "file:///etc/passwd", "ftp://example/x", "http://169.254.169.254/latest"],
)
async def test_redirect_anywhere(m, location):
    m.fault("redirect", "/x", location=location)
    async with session() as s, s.get(m.url("/x"), allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == location
    m.clear_faults()
    m.fault("redirect", "/x", location=location, status=301)
    async with session() as s, s.get(m.url("/x"), allow_redirects=False) as r:
        assert r.status == 301


@pytest.mark.parametrize("kind", sorted(HOSTILE_BODIES))
async def test_hostile_bodies_byte_exact(m, kind):
    content_type = "text/html; charset=utf-8" if kind == "html" else "application/json"
    m.fault("body", "/x", data=HOSTILE_BODIES[kind], content_type=content_type)
    status, headers, body = await fetch(m.url("/x"))
    assert (
        status == 200 and body == HOSTILE_BODIES[kind] and headers["Content-Type"] == content_type
    )


async def test_hostile_body_shapes():
    assert HOSTILE_BODIES["deep_nesting"].count(b"[") == 100_000
    assert HOSTILE_BODIES["huge_number"].count(b"9") == 10_000
    with pytest.raises(UnicodeDecodeError):
        HOSTILE_BODIES["invalid_utf8"].decode("utf-8")


async def test_body_fault_status_and_headers(m):
    m.fault(
        "body", "/x", data="<html>", content_type="text/html", status=200, headers={"X-Evil": "1"}
    )
    status, headers, body = await fetch(m.url("/x"))
    assert (status, body, headers["X-Evil"]) == (200, b"<html>", "1")


# -- several mirrors, other event loops -------------------------------------------------------


async def test_mirrors_context_manager(forged):
    async with mirrors("a", "b", "c") as servers:
        assert [s.name for s in servers] == ["a", "b", "c"]
        assert len({s.port for s in servers}) == 3
        for s in servers:
            s.put_record(forged.bundle())
        for s in servers:
            assert (await fetch(s.spec().bundle_url(forged.suffix)))[0] == 200
        urls = [s.base_url for s in servers]
    for url in urls:
        with pytest.raises(aiohttp.ClientConnectorError):
            await fetch(url + "/")


def test_runs_under_anyio_asyncio_backend():
    async def main():
        async with MirrorServer("any") as server:
            server.put("/x", b"anyio")
            server.fault("hang", "/h")
            async with aiohttp.ClientSession(timeout=T) as s:
                async with s.get(server.url("/x")) as r:
                    assert await r.read() == b"anyio"
                with anyio.move_on_after(0.2) as scope:
                    async with s.get(server.url("/h")) as r:
                        await r.read()
                assert scope.cancelled_caught
        return server.count()

    t0 = time.monotonic()
    assert anyio.run(main, backend="asyncio") == 2
    assert time.monotonic() - t0 < 2
