"""`serve`: the verified store as a conforming Pith mirror, an aiohttp application.

Kept apart from ops.py so that only `serve` imports the server side of aiohttp (about 20 ms of
every other command's start).  What is published, and why, is `ops.Catalog`'s business."""

from __future__ import annotations

import email.utils
from datetime import datetime

from aiohttp import web

from pithsync import __version__
from pithsync.config import Config
from pithsync.core.verify import Verifier
from pithsync.publishing import (
    HTML_TYPE,
    JSON_TYPE,
    MANIFEST_PATH,
    SUFFIX_RE,
    Catalog,
    manifest,
    manifest_bytes,
    wants_json_ld,
)
from pithsync.publishing.httpcache import etag_of, not_modified
from pithsync.store import Store

CATALOG = web.AppKey("pithsync_catalog", Catalog)


def build_app(cfg: Config, *, base_url: str | None = None, name: str = "pithsync mirror", refresh_s: float = 2.0) -> web.Application:
    """The aiohttp application that serves `cfg.db_path` as a Pith mirror.  The store is opened
    (read-only) when the app starts, in the serving thread, and closed on cleanup.
    `base_url` is what the manifest announces; by default the origin the request came to."""
    app = web.Application()

    async def open_store(app: web.Application) -> None:
        app[CATALOG] = Catalog(Store.open_reader(cfg.db_path), Verifier(cfg.trust), refresh_s=refresh_s)

    async def close_store(app: web.Application) -> None:
        if CATALOG in app:
            app[CATALOG].store.close()

    def conditional(request: web.Request, etag: str, last_modified: datetime) -> bool:
        return not_modified(request.headers, (etag,), last_modified)

    def not_found() -> web.Response:
        return web.Response(status=404, body=b'{"error":"not_found"}', content_type=JSON_TYPE)

    def document(request: web.Request, kind: str) -> web.Response:
        suffix = request.match_info["suffix"]
        if not SUFFIX_RE.match(suffix):
            return not_found()
        pub = request.app[CATALOG].get(suffix)
        if pub is None:
            return not_found()
        body, etag = (pub.bundle, pub.bundle_etag) if kind == "bundle" else (pub.state, pub.state_etag)
        headers = {"ETag": etag, "Last-Modified": email.utils.format_datetime(pub.last_modified, usegmt=True), "Cache-Control": "no-cache"}
        if conditional(request, etag, pub.last_modified):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers={**headers, "Content-Type": JSON_TYPE})

    async def bundle(request: web.Request) -> web.Response:
        return document(request, "bundle")

    async def state(request: web.Request) -> web.Response:
        return document(request, "state")

    async def resolver(request: web.Request) -> web.Response:
        """/pith/{suffix}: JSON-LD for a client that asks for JSON, else a page for browsers.
        Built from the served (verified) bundle, with this mirror's own links."""
        suffix = request.match_info["suffix"]
        pub = request.app[CATALOG].get(suffix) if SUFFIX_RE.match(suffix) else None
        if pub is None:
            return not_found()
        base = base_url or f"{request.scheme}://{request.host}"
        json_type = wants_json_ld(request.headers.get("Accept"))
        if json_type:
            body, content_type = pub.resolver_json_ld(base), json_type
        else:
            body, content_type = pub.resolver_html(base), HTML_TYPE
        etag = etag_of(body)
        headers = {
            "ETag": etag,
            "Last-Modified": email.utils.format_datetime(pub.last_modified, usegmt=True),
            "Cache-Control": "no-cache",
            "Vary": "Accept",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'",
        }
        if conditional(request, etag, pub.last_modified):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers=headers, content_type=content_type, charset="utf-8")

    async def mirrors(request: web.Request) -> web.Response:
        base = base_url or f"{request.scheme}://{request.host}"
        catalog = request.app[CATALOG]
        body = manifest_bytes(manifest(base, cfg.trust, name=name, records=len(catalog.suffixes())))
        return web.Response(body=body, headers={"Content-Type": JSON_TYPE, "Cache-Control": "no-cache"})

    async def index(request: web.Request) -> web.Response:
        doc = {"pithsync": __version__, "records": len(request.app[CATALOG].suffixes()), "manifest": MANIFEST_PATH}
        return web.json_response(doc)

    app.on_startup.append(open_store)
    app.on_cleanup.append(close_store)
    app.router.add_get("/", index)
    app.router.add_get(MANIFEST_PATH, mirrors)
    app.router.add_get("/pith/{suffix}", resolver)
    app.router.add_get("/pith/{suffix}/", resolver)  # where a static export's redirect goes
    app.router.add_get("/pith/{suffix}/bundle.json", bundle)
    app.router.add_get("/pith/{suffix}/state.json", state)
    app.router.add_get("/.well-known/pith/{suffix}/bundle.json", bundle)
    return app
