"""The suite's own guarantee: a test that tries to leave the machine fails loudly."""

from __future__ import annotations

import socket

import pytest
from conftest import BLOCKED, NetworkBlocked
from synctools import make_config, pull

from pithsync.core.urls import MirrorSpec
from pithsync.testing import forge


def test_connect_to_a_non_loopback_address_is_blocked():
    with socket.socket() as s, pytest.raises(NetworkBlocked):
        s.connect(("10.255.255.1", 9))


def test_resolving_a_public_name_is_blocked():
    with pytest.raises(NetworkBlocked):
        socket.getaddrinfo("pith.science", 443)


async def test_a_sync_against_the_real_registry_never_leaves_the_machine(tmp_path):
    """The embedded default mirror is the real registry: in tests it must be unreachable."""
    record = forge.forge_record(1)
    BLOCKED.clear()
    cfg = make_config(tmp_path, [MirrorSpec("Pith Resolver", "https://pith.science")], retries=0)
    res = (await pull(cfg, record.pith_number))[record.pith_number]
    assert res.verdict.value == "unverifiable"
    assert res.mirrors[0].status.value == "unreachable"
    assert "pith.science" in BLOCKED
