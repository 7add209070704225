"""Conditional requests, server side (RFC 9110 section 13.1): one rule for `pithsync serve` and
the test mirror, so what the tests exercise is what production answers."""

from __future__ import annotations

import email.utils
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime


def etag_of(body: bytes) -> str:
    """The strong ETag of a body: the same rule for `pithsync serve` and the test mirror."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str, etags: tuple[str, ...]) -> bool:
    """If-None-Match uses the weak comparison."""
    if if_none_match.strip() == "*":
        return True
    opaque = {e.removeprefix("W/") for e in etags}
    return any(t.strip().removeprefix("W/") in opaque for t in if_none_match.split(","))


def not_modified(
    headers: Mapping[str, str], etags: tuple[str, ...], last_modified: datetime
) -> bool:
    """True when the client's copy is current (answer 304).  If-None-Match, when present, wins
    over If-Modified-Since."""
    inm = headers.get("If-None-Match")
    if inm is not None:
        return etag_matches(inm, etags)
    ims = headers.get("If-Modified-Since")
    if ims is None:
        return False
    try:
        since = email.utils.parsedate_to_datetime(ims)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return last_modified <= since
