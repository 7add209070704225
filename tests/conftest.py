"""Shared fixtures: the seeds as bytes and parsed, the pinned trust stores, a clean environment."""

from __future__ import annotations

import pytest

from helpers import SEED_DIR, SEED_NAMES
from pithsync.core import strictjson
from pithsync.core.keys import TrustStore
from pithsync.core.verify import Verifier
from pithsync.testing import forge


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """No test may pick up an operator's configuration or database."""
    for name in ("PITHSYNC_CONFIG", "PITHSYNC_DB", "STATE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)


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
