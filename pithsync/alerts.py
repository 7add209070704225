"""Alerts on divergence: decided per record, written to the outbox with the evidence, then
delivered (webhook, command, log).  (Being built: see issue 4.)"""

from __future__ import annotations


def register(sub, common) -> None:
    """Adds `alerts` and `evidence` subcommands."""
