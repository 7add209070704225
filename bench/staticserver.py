"""The fallback mirror when nginx is not installed: one aiohttp process serving a directory of
static files on 127.0.0.1, with nginx's validators (ETag "<mtime hex>-<size hex>", Last-Modified),
304 answers to conditional requests, and an access log of `port status body_bytes bytes_sent
method path` lines like the nginx configuration in servers.py.  Much slower than nginx: numbers
measured against it are not comparable with the targets.

    python -m bench.staticserver --root DIR --log FILE [--port 0]    (prints "ready PORT")
"""

from __future__ import annotations

import argparse
import email.utils
import os
import signal
import sys
from pathlib import Path

from aiohttp import web


def _etag(st: os.stat_result) -> str:
    return f'"{int(st.st_mtime):x}-{st.st_size:x}"'


def make_app(root: Path, log, port_ref: list[int]) -> web.Application:
    root = root.resolve()

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        status, body, headers = 404, b"", {}
        target = (root / path.lstrip("/")).resolve()
        if request.method in ("GET", "HEAD") and target.is_relative_to(root) and target.is_file():
            st = target.stat()
            etag, lm = _etag(st), email.utils.formatdate(int(st.st_mtime), usegmt=True)
            headers = {"ETag": etag, "Last-Modified": lm, "Content-Type": "application/json"}
            inm, ims = (
                request.headers.get("If-None-Match"),
                request.headers.get("If-Modified-Since"),
            )
            if inm is not None:
                fresh = inm.strip() == "*" or etag in [
                    t.strip().removeprefix("W/") for t in inm.split(",")
                ]
            elif ims is not None:
                fresh = ims == lm  # nginx's default `if_modified_since exact`
            else:
                fresh = False
            if fresh:
                status = 304
            else:
                status, body = 200, target.read_bytes()
        resp = web.Response(
            status=status, body=body if request.method == "GET" else None, headers=headers
        )
        log.write(f"{port_ref[0]} {status} {len(body)} {len(body) + 200} {request.method} {path}\n")
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    log = open(args.log, "a", buffering=1)  # line-buffered: the harness reads it between phases
    port_ref = [args.port]

    import asyncio

    async def serve() -> None:
        app = make_app(Path(args.root), log, port_ref)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024)
        await site.start()
        port_ref[0] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"ready {port_ref[0]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(serve())
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
