"""What a pithsync mirror publishes: the verified store served as a conforming Pith mirror.

catalog.py     which bundle and state of each record are published (Published, Catalog)
manifest.py    the mirror manifest, pith-mirrors.json
resolver.py    the resolver page /pith/{suffix}: JSON-LD or HTML (wants_json_ld)
export.py      the same tree as static files for any web server (export_tree)
obslog.py      the observer's log below log/: checkpoint, tiles, entry bundles, record files
server.py      the aiohttp application behind `serve` (imported by `serve` alone)
localmirror.py a static mirror serving documents from memory (`pithsync demo`)
httpcache.py   conditional requests: ETag, If-None-Match, If-Modified-Since
"""

from __future__ import annotations

from pithsync.publishing.catalog import SUFFIX_RE, Catalog, Published
from pithsync.publishing.export import EXPORTED_RESOLVER, export_tree, exported_files
from pithsync.publishing.manifest import MANIFEST_PATH, manifest, manifest_bytes
from pithsync.publishing.resolver import (
    HTML_TYPE,
    JSON_LD_CONTEXT,
    JSON_LD_TYPE,
    JSON_TYPE,
    VERIFY_RECIPE,
    resolver_document,
    resolver_html,
    resolver_json_ld,
    wants_json_ld,
)

__all__ = [
    "EXPORTED_RESOLVER",
    "HTML_TYPE",
    "JSON_LD_CONTEXT",
    "JSON_LD_TYPE",
    "JSON_TYPE",
    "MANIFEST_PATH",
    "SUFFIX_RE",
    "VERIFY_RECIPE",
    "Catalog",
    "Published",
    "export_tree",
    "exported_files",
    "manifest",
    "manifest_bytes",
    "resolver_document",
    "resolver_html",
    "resolver_json_ld",
    "wants_json_ld",
]
