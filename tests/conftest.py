"""Shared fixtures: the seeds as bytes and parsed, the pinned trust stores, a clean environment."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from helpers import SEED_DIR, SEED_NAMES

from pithsync.core import strictjson
from pithsync.core.keys import TrustStore
from pithsync.core.verify import Verifier
from pithsync.testing import forge


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    """No test may pick up an operator's configuration or database, or leave one behind: each
    runs in its own empty directory, so a default ./pithsync.db lands there."""
    for name in ("PITHSYNC_CONFIG", "PITHSYNC_DB", "STATE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def seeds() -> dict[str, bytes]:
    """Seed file name -> its exact bytes."""
    found = {p.name: p.read_bytes() for p in sorted(SEED_DIR.glob("*.txt"))}
    assert tuple(found) == SEED_NAMES, f"seed set changed: {sorted(found)}"
    return found


@pytest.fixture(scope="session")
def seed_paths() -> dict[str, str]:
    return {name: str(SEED_DIR / name) for name in SEED_NAMES}


@pytest.fixture
def seed_docs(seeds) -> dict[str, dict]:
    """Freshly parsed seeds (each test may mutate its own copy)."""
    return {name: strictjson.loads_object(data) for name, data in seeds.items()}


@pytest.fixture(scope="session")
def trust() -> TrustStore:
    """The shipped default: only the registry key is pinned."""
    return TrustStore.registry_default()


@pytest.fixture
def verifier(trust) -> Verifier:
    return Verifier(trust)


@pytest.fixture(scope="session")
def forge_trust() -> TrustStore:
    """The forge's test key plus the registry key."""
    return forge.test_trust()


@pytest.fixture
def forge_verifier(forge_trust) -> Verifier:
    return Verifier(forge_trust)


# -- no test reaches the network -----------------------------------------------------------------

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class NetworkBlocked(OSError):
    """A test tried to leave the machine."""


BLOCKED: list[str] = []  # what the guard refused, for the guard's own test


def _check_host(host) -> None:
    if host is None or (isinstance(host, str) and host.lower() in _LOCAL_NAMES):
        return
    try:
        ip = ipaddress.ip_address(
            host.decode() if isinstance(host, bytes) else str(host).split("%")[0]
        )
    except ValueError:
        BLOCKED.append(str(host))
        raise NetworkBlocked(f"test tried to resolve {host!r}: tests run offline") from None
    if not ip.is_loopback:
        BLOCKED.append(str(ip))
        raise NetworkBlocked(f"test tried to reach {ip}: tests may only use loopback")


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check_host(address[0])
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check_host(address[0])
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    _check_host(host)
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Every test runs with the network closed: only loopback can be reached or resolved."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)


@pytest.fixture(autouse=True)
def _merge_reuse_checked(monkeypatch):
    """core.plan.merged reuses the merge verification made when it can; in every sync any
    test runs, it must equal the merge computed afresh."""
    from pithsync.core import plan
    from pithsync.core.merge import merge_state

    reuse = plan.merged

    def checked(pith_number, best, comparison):
        got = reuse(pith_number, best, comparison)
        fresh = merge_state(
            pith_number,
            best.bundle["canonical_record"],
            best.bundle["source_aliases"],
            comparison.valid_events.values(),
            {},
        )
        assert got == fresh, "a reused merge differs from the merge computed afresh"
        return got

    monkeypatch.setattr(plan, "merged", checked)


# The reliability counts (issue 6) in the closing summary: faults, kills, fuzz examples.
from conftest_reliability import pytest_terminal_summary  # noqa: E402,F401
