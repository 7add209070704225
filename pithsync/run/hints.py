"""Mirrors a record's verified bundles name (mirror hints): which of them to follow."""

from __future__ import annotations

from collections.abc import Container

from pithsync.core.compare import Assessment
from pithsync.core.plan import base_key
from pithsync.core.urls import MirrorSpec, hinted_mirrors
from pithsync.fetch import PolicyError, UrlPolicy

# A hostile hint list must not flood the report either.
MAX_REFUSED_REPORTED = 50


def discover(
    assessments: list[Assessment], suffix: str, known: Container[str], policy: UrlPolicy, cap: int
) -> tuple[list[MirrorSpec], list[dict]]:
    """Mirrors named by verified bundles, under the safety policy and the per-record cap.

    Args:
        assessments: each mirror's copy, checked; hints come only from verified bundles.
        suffix: the record's suffix.
        known: base keys (core.plan.base_key) of mirrors already asked.
        policy: the URL policy a hinted mirror must pass.
        cap: how many hinted mirrors one record may add.

    Returns:
        The mirrors to ask as well, and the hints refused with why.
    """
    found: list[MirrorSpec] = []
    refused: list[dict] = []
    seen: set[str] = set()
    for a in assessments:
        if not a.bundle_ok:
            continue  # hints from unverified documents are never followed
        for spec in hinted_mirrors(a.bundle, suffix):
            key = base_key(spec.base_url)
            if key in seen or key in known:
                continue
            seen.add(key)
            why = _refusal(spec, suffix, policy, cap if len(found) >= cap else None)
            if why is None:
                found.append(spec)
            else:
                refused.append({"base_url": spec.base_url[:200], "reason": why})
    if len(refused) > MAX_REFUSED_REPORTED:
        extra = len(refused) - MAX_REFUSED_REPORTED
        del refused[MAX_REFUSED_REPORTED:]
        refused.append({"base_url": "...", "reason": f"{extra} more refused"})
    return found, refused


def _refusal(spec: MirrorSpec, suffix: str, policy: UrlPolicy, over_cap: int | None) -> str | None:
    """Why a hinted mirror is not followed, or None to follow it."""
    if over_cap is not None:
        return f"over the cap of {over_cap} discovered mirrors per record"
    try:
        policy.check(spec.bundle_url(suffix))
    except PolicyError as exc:
        return str(exc)
    return None
