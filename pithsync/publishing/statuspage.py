"""The status page at `/` (serve) and `index.html` (export): what the store's last checks saw, for
people.  Plain HTML and one inline style sheet: no script, nothing fetched from elsewhere.

Every value on the page comes from the store, and much of it from mirrors (names, URLs, the
messages of reasons), so each is escaped, and a URL becomes a link only when it is http(s)."""

from __future__ import annotations

import html
from urllib.parse import urlsplit

from pithsync import __version__
from pithsync.core.status import SEVERITY, Status
from pithsync.store.publishing import (
    DivergingRecord,
    MirrorOverview,
    OpenAlertSummary,
    StatusOverview,
)

STATUS_PAGE_TYPE = "text/html; charset=utf-8"
# The page's own policy: its inline style sheet, nothing else (no script runs, even injected).
STATUS_PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'"
MAX_REASON_CHARS = 300
_ORDER = [s.value for s in SEVERITY]
_BAD = {"equivocation", "bad_signature", "tampered", "state_mismatch", "malformed"}
_WARN = {Status.STALE.value, Status.MISSING.value}

STYLE = """
:root { color-scheme: light; --fg: #1d2430; --muted: #5b6676; --line: #dde3ea; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
main { max-width: 72rem; margin: 0 auto; padding: 1.25rem 1rem 3rem; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
h2 { font-size: 1.1rem; margin: 2rem 0 .5rem; }
p.meta, p.note, .muted { color: var(--muted); }
p.meta { margin: 0 0 1rem; }
.summary { display: flex; flex-wrap: wrap; gap: .75rem; margin: 1rem 0; padding: 0; }
.summary li { list-style: none; background: #fff; border: 1px solid var(--line);
  border-radius: 8px; padding: .6rem .9rem; min-width: 9rem; }
.summary b { display: block; font-size: 1.4rem; }
.scroll { overflow-x: auto; background: #fff; border: 1px solid var(--line); border-radius: 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: .5rem .75rem;
  border-bottom: 1px solid var(--line); }
tr:last-child td { border-bottom: 0; }
th { font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; color: var(--muted);
  background: #fbfcfd; }
code, pre, .num { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: .85rem; }
.when { white-space: nowrap; }
.url { color: var(--muted); font-size: .85rem; word-break: break-all; }
a { color: #0b5cad; }
.st { display: inline-block; border-radius: 999px; padding: 0 .55rem; margin: 0 .25rem .2rem 0;
  font-size: .8rem; white-space: nowrap; background: #e8ecf1; color: #3b4656; }
.st.ok { background: #dcf3e3; color: #12622e; }
.st.warn { background: #fff0cc; color: #7a5200; }
.st.bad { background: #fde0e0; color: #9b1c1c; }
ul.reasons { margin: 0; padding-left: 1.1rem; }
ul.reasons li { word-break: break-word; }
pre { margin: 0; padding: .75rem; background: #fff; border: 1px solid var(--line);
  border-radius: 8px; white-space: pre-wrap; word-break: break-all; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _link(url: str) -> str:
    """`url` as a link when it is http(s) with a host, else as text; escaped either way."""
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is not None and parts.scheme in ("http", "https") and parts.netloc:
        return f'<a class="url" href="{_e(url)}" rel="nofollow noreferrer">{_e(url)}</a>'
    return f'<span class="url">{_e(url)}</span>'


def _badge(status: str, text: str | None = None) -> str:
    tone = "ok" if status == Status.OK.value else "bad" if status in _BAD else ""
    tone = "warn" if status in _WARN else tone
    return f'<span class="st {tone}">{_e(text if text is not None else status)}</span>'


def duration(seconds: float) -> str:
    """A duration for people: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _when(timestamp: str | None) -> str:
    """A stored UTC timestamp to the second, or a dash."""
    if not timestamp:
        return '<span class="muted">never</span>'
    return f'<span class="num when">{_e(timestamp[:19].replace("T", " "))}&nbsp;UTC</span>'


def _status_badges(counts: dict[str, int]) -> str:
    if not counts:
        return '<span class="muted">not checked</span>'
    order = sorted(counts, key=lambda s: (_ORDER.index(s) if s in _ORDER else -1, s))
    return "".join(_badge(s, f"{s} {counts[s]}") for s in order)


def _lag(m: MirrorOverview) -> str:
    if not m.behind:
        return '<span class="muted">up to date</span>'
    text = f"{m.behind} record{'s' if m.behind != 1 else ''}"
    if m.lag_s is not None:
        text += f", up to {duration(m.lag_s)}" if m.lag_s >= 60 else ", under a minute"
    return _e(text)


def _mirrors_section(mirrors: tuple[MirrorOverview, ...]) -> str:
    if not mirrors:
        return '<p class="note">No mirror checked yet.</p>'
    hinted = ' <span class="muted">(hinted)</span>'
    rows = "".join(
        f'<tr class="mirror"><td><b>{_e(m.name)}</b>{"" if m.configured else hinted}'
        f"<br>{_link(m.base_url)}</td>"
        f"<td>{_status_badges(m.statuses)}</td><td>{_lag(m)}</td>"
        f"<td>{_when(m.last_checked)}</td></tr>\n"
        for m in mirrors
    )
    return (
        '<div class="scroll"><table id="mirrors"><thead><tr><th>Mirror</th>'
        "<th>Records by status</th><th>Behind</th><th>Last check</th></tr></thead>\n"
        f"<tbody>\n{rows}</tbody></table></div>"
    )


def _reasons(texts: tuple[str, ...]) -> str:
    if not texts:
        return ""
    items = "".join(
        f"<li>{_e(t if len(t) <= MAX_REASON_CHARS else t[: MAX_REASON_CHARS - 1] + '…')}</li>"
        for t in texts
    )
    return f'<ul class="reasons">{items}</ul>'


def _diverging_section(total: int, records: tuple[DivergingRecord, ...]) -> str:
    if not total:
        return '<p class="note">No record diverges.</p>'
    rows = []
    for r in records:
        mirrors = "".join(
            f"<div>{_badge(p.status)} <b>{_e(p.name)}</b>{_reasons(p.reasons)}</div>"
            for p in r.mirrors
        )
        rows.append(
            f'<tr class="diverging"><td class="num">{_e(r.pith_number)}</td>'
            f"<td>{mirrors}</td><td>{_when(r.checked_at)}</td></tr>\n"
        )
    return (
        _shown(len(records), total, "diverging records")
        + '<div class="scroll"><table id="diverging"><thead><tr><th>Pith number</th>'
        "<th>Mirrors and reasons</th><th>Checked</th></tr></thead>\n"
        f"<tbody>\n{''.join(rows)}</tbody></table></div>"
    )


def _alerts_section(total: int, alerts: tuple[OpenAlertSummary, ...]) -> str:
    if not total:
        return '<p class="note">No open alert.</p>'
    rows = "".join(
        f'<tr class="alert"><td class="num">#{_e(a.id)}</td><td>{_e(a.kind)}</td>'
        f"<td>{_e(a.summary or a.mirror or a.pith_number or '')}</td>"
        f"<td>{_when(a.opened_at)}</td></tr>\n"
        for a in alerts
    )
    return (
        _shown(len(alerts), total, "open alerts")
        + '<div class="scroll"><table id="alerts"><thead><tr><th>Alert</th><th>Kind</th>'
        "<th>Summary</th><th>Opened</th></tr></thead>\n"
        f"<tbody>\n{rows}</tbody></table></div>"
    )


def _shown(shown: int, total: int, what: str) -> str:
    if shown >= total:
        return ""
    return f'<p class="note">The first {shown} of {total} {what}.</p>'


def _checkpoint_section(checkpoint: bytes | None) -> str:
    if checkpoint is None:
        return '<p class="note" id="checkpoint">No checkpoint yet.</p>'
    return f'<pre id="checkpoint">{_e(checkpoint.decode("utf-8", "replace"))}</pre>'


def status_page(overview: StatusOverview, checkpoint: bytes | None) -> bytes:
    """The status page's HTML.

    Args:
        overview: what the store's last checks saw (Store.status_overview).
        checkpoint: the observer's latest signed checkpoint note as stored, or None before
            the first.

    Returns:
        The page, UTF-8; the same bytes for the same arguments.
    """
    o = overview
    summary = (
        f'<ul class="summary"><li><b>{o.records}</b>records</li>'
        f"<li><b>{len(o.mirrors)}</b>mirrors</li>"
        f'<li><b id="diverging-total">{o.diverging_total}</b>diverging</li>'
        f'<li><b id="alerts-total">{o.alerts_total}</b>open alerts</li></ul>'
    )
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>pithsync status</title>\n<style>{STYLE}</style>\n</head><body><main>\n"
        "<h1>pithsync status</h1>\n"
        f'<p class="meta">What this observer\'s last checks found. Last run finished: '
        f"{_when(o.last_run_finished)}. pithsync {_e(__version__)}.</p>\n{summary}\n"
        f"<h2>Mirrors</h2>\n{_mirrors_section(o.mirrors)}\n"
        '<p class="note">Behind: records where the mirror\'s last check found it stale or '
        "missing, and how long, at worst, it had gone without a verified event the store "
        "held.</p>\n"
        f"<h2>Diverging records</h2>\n{_diverging_section(o.diverging_total, o.diverging)}\n"
        f"<h2>Open alerts</h2>\n{_alerts_section(o.alerts_total, o.alerts)}\n"
        f"<h2>Observer checkpoint</h2>\n{_checkpoint_section(checkpoint)}\n"
        "</main></body></html>\n"
    )
    return page.encode("utf-8")
