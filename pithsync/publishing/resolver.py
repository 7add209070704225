"""The resolver page `/pith/{suffix}` of a published record, built from its served bundle alone:
JSON-LD holding its canonical record (what the registry's recipe hashes), or a small HTML page
for a browser (`wants_json_ld` decides from the Accept header)."""

from __future__ import annotations

import html
import json

from pithsync import __version__
from pithsync.core.canonical import canon_sha256
from pithsync.core.urls import BUNDLE_PATTERN, STATE_PATTERN, WELL_KNOWN_PATTERN
from pithsync.publishing.catalog import Published
from pithsync.publishing.manifest import fill_base

JSON_TYPE = "application/json"
JSON_LD_TYPE = "application/ld+json"
HTML_TYPE = "text/html"
RESOLVER_PATTERN = "{base}/pith/{suffix}"
# The registry's own JSON-LD vocabulary is not in the seeds: pithsync's terms are schema.org
# where one fits, the rest under a vocabulary of pithsync's own (kept here, easy to change).
JSON_LD_CONTEXT = {
    "@vocab": "urn:pithsync:open-graph#",
    "schema": "https://schema.org/",
    "identifier": "schema:identifier",
    "name": "schema:name",
    "url": "schema:url",
    "canonical_record": {"@type": "@json"},
    "source": {"@type": "@json"},
    "source_aliases": {"@type": "@json"},
    "links": {"@type": "@json"},
}
VERIFY_RECIPE = (
    "canonical_sha256 = sha256(json.dumps(canonical_record, sort_keys=True, separators=(',', ':'),"
    " ensure_ascii=False).encode('utf-8')), lowercase hex; the pith number's 26 characters are"
    " the first 26 of the RFC 4648 base32 of those 32 digest bytes"
)


def links_of(pub: Published, base_url: str) -> dict[str, str]:
    """Where this mirror serves `pub`'s record (the served bundle's own `links` are signed and
    name wherever its signer put them)."""
    base = base_url.rstrip("/")
    return {
        "resolver": fill_base(RESOLVER_PATTERN, base).replace("{suffix}", pub.suffix),
        "bundle": fill_base(BUNDLE_PATTERN, base).replace("{suffix}", pub.suffix),
        "state": fill_base(STATE_PATTERN, base).replace("{suffix}", pub.suffix),
        "well_known_bundle": fill_base(WELL_KNOWN_PATTERN, base).replace("{suffix}", pub.suffix),
    }


def resolver_document(pub: Published, base_url: str) -> dict:
    """The JSON-LD resolver document: the verified bundle's canonical record, untouched,
    and what it hashes to, so that anyone can check the pith number by the recipe."""
    links = links_of(pub, base_url)
    doc = {
        "@context": JSON_LD_CONTEXT,
        "@id": links["resolver"],
        "@type": "schema:ScholarlyArticle",
        "identifier": pub.pith_number,
        "pith_number": pub.pith_number,
        "short_pith_number": pub.short_pith_number,
        "canonical_record": pub.canonical_record,
        "canonical_sha256": canon_sha256(pub.canonical_record),
        "source": pub.canonical_record.get("source"),
        "source_aliases": pub.source_aliases,
        "bundle_bytes_sha256": pub.bundle_sha256,  # of the bundle.json served beside it
        "state_sha256": pub.state_sha256,
        "event_count": pub.event_count,
        "links": links,
        "url": links["resolver"],
        "verification": VERIFY_RECIPE,
        "served_by": f"pithsync {__version__}",
    }
    if pub.title is not None:
        doc["name"] = pub.title
    return doc


def resolver_json_ld(pub: Published, base_url: str) -> bytes:
    """The resolver document's bytes.  `<`, `>` and `&` are written as JSON escapes: the
    same values, but no markup where a static server labels the file text/html."""
    text = json.dumps(resolver_document(pub, base_url), indent=2, ensure_ascii=False)
    for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        text = text.replace(char, escape)
    return (text + "\n").encode("utf-8")


def resolver_html(pub: Published, base_url: str) -> bytes:
    """A small HTML page for browsers: every value escaped, no script."""
    links = links_of(pub, base_url)
    record = pub.canonical_record
    source = record.get("source") if isinstance(record.get("source"), dict) else {}
    metadata = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    rows = [
        ("Pith number", pub.pith_number),
        ("Short form", pub.short_pith_number),
        ("Title", pub.title),
        ("Source", " ".join(str(source.get(k)) for k in ("kind", "id", "version"))),
        ("Submitted", metadata.get("submitted_at")),
        ("canonical_sha256", canon_sha256(record)),
        ("Events in the served bundle", pub.event_count),
    ]
    e = html.escape
    cells = "".join(
        f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>\n" for k, v in rows if v is not None
    )
    anchors = "".join(f'<li><a href="{e(url)}">{e(name)}</a></li>\n' for name, url in links.items())
    heading = e(pub.title) if pub.title else e(pub.pith_number)
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f"<title>{e(pub.pith_number)}</title>\n"
        f'<link rel="alternate" type="{JSON_LD_TYPE}" href="{e(links["resolver"])}">\n'
        f"</head><body>\n<h1>{heading}</h1>\n<table>\n{cells}</table>\n<ul>\n{anchors}</ul>\n"
        f"<p>Served by pithsync {e(__version__)} from its verified store. Ask for "
        f"{JSON_LD_TYPE} to get the canonical record; check it: {e(VERIFY_RECIPE)}.</p>\n"
        "</body></html>\n"
    )
    return page.encode("utf-8")


def wants_json_ld(accept: str | None) -> str | None:
    """The JSON type an Accept header asks for (JSON-LD or plain JSON) at least as much as for
    a page, else None (browsers, `*/*`, no header: the HTML page)."""
    wanted: dict[str, float] = {}
    for part in (accept or "").split(","):
        media, *params = part.split(";")
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                q = q if 0.0 <= q <= 1.0 else 0.0  # also NaN
        media = media.strip().lower()
        wanted[media] = max(wanted.get(media, 0.0), q)
    page = max(wanted.get(m, 0.0) for m in ("text/html", "application/xhtml+xml", "text/*", "*/*"))
    best = max((JSON_LD_TYPE, JSON_TYPE), key=lambda m: wanted.get(m, 0.0))
    return best if wanted.get(best, 0.0) > 0.0 and wanted[best] >= page else None
