"""`export`: the tree `serve` publishes, as static files for any web server."""

from __future__ import annotations

from pathlib import Path

from pithsync.base.files import write_atomically
from pithsync.config import Config
from pithsync.core.verify import Verifier
from pithsync.publishing.catalog import Catalog, Published
from pithsync.publishing.manifest import MANIFEST_PATH, manifest, manifest_bytes
from pithsync.publishing.obslog import log_files
from pithsync.publishing.resolver import resolver_json_ld
from pithsync.publishing.statuspage import status_page
from pithsync.store import Store

STATUS_PAGE = "index.html"  # at the root: the status page, what `serve` answers at /
# A static server cannot negotiate, and /pith/{SUFFIX} is a directory there (it holds
# bundle.json): the server redirects to /pith/{SUFFIX}/ and answers with this file.
EXPORTED_RESOLVER = "index.html"


def exported_files(pub: Published, base_url: str) -> dict[str, bytes]:
    """URL path -> body, for the mirror layout of PROTOCOL.md, and the resolver document where
    a static server finds it (`base_url`: where the files will be served)."""
    return {
        f"/pith/{pub.suffix}/bundle.json": pub.bundle,
        f"/pith/{pub.suffix}/state.json": pub.state,
        f"/.well-known/pith/{pub.suffix}/bundle.json": pub.bundle,
        f"/pith/{pub.suffix}/{EXPORTED_RESOLVER}": resolver_json_ld(pub, base_url),
    }


def write_if_changed(path: Path, data: bytes, mtime: float | None = None) -> bool:
    """Write `data` to `path` atomically, creating its directories, with modification time
    `mtime` (a static server's Last-Modified); False (file untouched) when it already holds
    exactly `data`.

    Raises:
        OSError: the write failed (the old file is untouched).
    """
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data, mtime=mtime)
    return True


def export_tree(
    store: Store, cfg: Config, directory: str, base_url: str, *, name: str = "pithsync mirror"
) -> dict:
    """Write every published record, the status page (`index.html`) and `pith-mirrors.json`
    under `directory`; files that already hold the right bytes are left alone.

    Args:
        store: the store to publish (read in one snapshot).
        cfg: the configuration whose pinned keys every bundle is re-verified with.
        directory: the root of the tree.
        base_url: where the tree will be served (the manifest and resolver documents name it).
        name: the mirror's name in its manifest.

    Returns:
        What was written: records, files written and unchanged (the status page counted, the
        manifest not), and what was not published.

    Raises:
        OSError: a file could not be written.
    """
    root = Path(directory)
    catalog = Catalog(store, Verifier(cfg.trust), refresh_s=0.0)
    written = unchanged = 0
    records = []
    with store.snapshot():
        for suffix in catalog.suffixes():
            pub = catalog.get(suffix)
            if pub is None:
                continue
            records.append(pub.pith_number)
            for url_path, body in exported_files(pub, base_url).items():
                if write_if_changed(
                    root / url_path.lstrip("/"), body, pub.last_modified.timestamp()
                ):
                    written += 1
                else:
                    unchanged += 1
        for path, body in log_files(store).items():  # the observer's log
            if write_if_changed(root / path, body):
                written += 1
            else:
                unchanged += 1
        overview, checkpoint = store.status_overview(), store.observer_checkpoint()
    page = status_page(overview, checkpoint)
    if write_if_changed(root / STATUS_PAGE, page):
        written += 1
    else:
        unchanged += 1
    write_if_changed(
        root / MANIFEST_PATH.lstrip("/"),
        manifest_bytes(manifest(base_url, cfg.trust, name=name, records=len(records))),
    )
    return {
        "directory": str(root),
        "records": records,
        "files_written": written,
        "files_unchanged": unchanged,
        "not_published": dict(catalog.rejected),
    }
