"""The clock: every timestamp pithsync writes (the store, the journal, alerts) comes from here,
in one format that sorts as text."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> str:
    """Now, in UTC, as `YYYY-MM-DDTHH:MM:SS.ffffffZ`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
