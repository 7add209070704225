"""`serve`: the verified store as a conforming Pith mirror, an aiohttp application.

Kept apart from the rest of the package so that only `serve` pays for the import of aiohttp's
server side.  What is published, and why, is `catalog.Catalog`'s business."""

from __future__ import annotations

import email.utils
from datetime import datetime

from aiohttp import web

from pithsync.config import Config
from pithsync.core.verify import Verifier
from pithsync.publishing.catalog import SUFFIX_RE, Catalog, Published
from pithsync.publishing.httpcache import etag_of, not_modified
from pithsync.publishing.manifest import MANIFEST_PATH, manifest, manifest_bytes
from pithsync.publishing.obslog import log_file
from pithsync.publishing.resolver import (
    HTML_TYPE,
    JSON_TYPE,
    resolver_html,
    resolver_json_ld,
    wants_json_ld,
)
from pithsync.publishing.statuspage import STATUS_PAGE_CSP, STATUS_PAGE_TYPE, status_page
from pithsync.store import Store

CATALOG = web.AppKey("pithsync_catalog", Catalog)


def build_app(
    cfg: Config,
    *,
    base_url: str | None = None,
    name: str = "pithsync mirror",
    refresh_s: float = 2.0,
) -> web.Application:
    """The aiohttp application that serves `cfg.db_path` as a Pith mirror.  The store is opened
    (read-only) when the app starts, in the serving thread, and closed on cleanup.

    Args:
        cfg: the configuration: the store's path and the pinned keys bundles are re-verified
            with.
        base_url: what the manifest and resolver pages announce; by default the origin the
            request came to.
        name: the mirror's name in its manifest.
        refresh_s: how often, at most, the catalog looks for a sync's new commits.

    Returns:
        The application, not yet started.
    """
    mirror = _Mirror(cfg, base_url, name, refresh_s)
    app = web.Application()
    app.on_startup.append(mirror.open_store)
    app.on_cleanup.append(mirror.close_store)
    app.router.add_get("/", mirror.index)
    app.router.add_get("/index.html", mirror.index)
    app.router.add_get(MANIFEST_PATH, mirror.manifest)
    app.router.add_get("/pith/{suffix}", mirror.resolver)
    app.router.add_get("/pith/{suffix}/", mirror.resolver)  # where a static export's redirect goes
    app.router.add_get("/pith/{suffix}/bundle.json", mirror.bundle)
    app.router.add_get("/pith/{suffix}/state.json", mirror.state)
    app.router.add_get("/.well-known/pith/{suffix}/bundle.json", mirror.bundle)
    app.router.add_get("/log/{path:.*}", mirror.log)  # the observer's log (publishing/obslog)
    return app


def _not_found() -> web.Response:
    return web.Response(status=404, body=b'{"error":"not_found"}', content_type=JSON_TYPE)


def _validators(etag: str, last_modified: datetime) -> dict[str, str]:
    return {
        "ETag": etag,
        "Last-Modified": email.utils.format_datetime(last_modified, usegmt=True),
        "Cache-Control": "no-cache",
    }


class _Mirror:
    """The handlers of one served store."""

    def __init__(self, cfg: Config, base_url: str | None, name: str, refresh_s: float) -> None:
        self.cfg = cfg
        self.base_url = base_url
        self.name = name
        self.refresh_s = refresh_s

    async def open_store(self, app: web.Application) -> None:
        store = Store.open_reader(self.cfg.db_path)
        app[CATALOG] = Catalog(store, Verifier(self.cfg.trust), refresh_s=self.refresh_s)

    async def close_store(self, app: web.Application) -> None:
        if CATALOG in app:
            app[CATALOG].store.close()

    def _base(self, request: web.Request) -> str:
        return self.base_url or f"{request.scheme}://{request.host}"

    @staticmethod
    def _published(request: web.Request) -> Published | None:
        suffix = request.match_info["suffix"]
        return request.app[CATALOG].get(suffix) if SUFFIX_RE.match(suffix) else None

    def _document(self, request: web.Request, kind: str) -> web.Response:
        pub = self._published(request)
        if pub is None:
            return _not_found()
        if kind == "bundle":
            body, etag = pub.bundle, pub.bundle_etag
        else:
            body, etag = pub.state, pub.state_etag
        headers = _validators(etag, pub.last_modified)
        if not_modified(request.headers, (etag,), pub.last_modified):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers={**headers, "Content-Type": JSON_TYPE})

    async def bundle(self, request: web.Request) -> web.Response:
        return self._document(request, "bundle")

    async def state(self, request: web.Request) -> web.Response:
        return self._document(request, "state")

    async def resolver(self, request: web.Request) -> web.Response:
        """/pith/{suffix}: JSON-LD for a client that asks for JSON, else a page for browsers.
        Built from the served (verified) bundle, with this mirror's own links."""
        pub = self._published(request)
        if pub is None:
            return _not_found()
        base = self._base(request)
        json_type = wants_json_ld(request.headers.get("Accept"))
        if json_type:
            body, content_type = resolver_json_ld(pub, base), json_type
        else:
            body, content_type = resolver_html(pub, base), HTML_TYPE
        etag = etag_of(body)
        headers = {
            **_validators(etag, pub.last_modified),
            "Vary": "Accept",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'",
        }
        if not_modified(request.headers, (etag,), pub.last_modified):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers=headers, content_type=content_type, charset="utf-8")

    async def log(self, request: web.Request) -> web.Response:
        """The observer's log: checkpoint, tiles, entry bundles, record files (404: none)."""
        found = log_file(request.app[CATALOG].store, request.path.lstrip("/"))
        if found is None:
            return _not_found()
        headers = {"Cache-Control": found.cache_control, "X-Content-Type-Options": "nosniff"}
        return web.Response(
            body=found.body, headers={**headers, "Content-Type": found.content_type}
        )

    async def manifest(self, request: web.Request) -> web.Response:
        records = len(request.app[CATALOG].suffixes())
        doc = manifest(self._base(request), self.cfg.trust, name=self.name, records=records)
        return web.Response(
            body=manifest_bytes(doc),
            headers={"Content-Type": JSON_TYPE, "Cache-Control": "no-cache"},
        )

    async def index(self, request: web.Request) -> web.Response:
        """/ and /index.html: the status page, read from the store in one snapshot."""
        store = request.app[CATALOG].store
        with store.snapshot():
            overview, checkpoint = store.status_overview(), store.observer_checkpoint()
        headers = {
            "Content-Type": STATUS_PAGE_TYPE,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": STATUS_PAGE_CSP,
        }
        return web.Response(body=status_page(overview, checkpoint), headers=headers)
