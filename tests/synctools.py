"""Helpers for crawler tests: a Config pointing at local mirrors, and a way to run a sync
in-process with an injected sleep (no test waits for a real backoff)."""

from __future__ import annotations

from dataclasses import replace

from pithsync.config import Config, CrawlConfig
from pithsync.core.keys import TrustStore
from pithsync.fetch import Fetcher
from pithsync.store import Store
from pithsync.sync import SyncEngine, Target
from pithsync.testing import forge


def make_config(tmp_path, mirrors, trust: TrustStore | None = None, **crawl) -> Config:
    crawl.setdefault("retries", 1)
    crawl.setdefault("timeout_s", 2.0)
    crawl.setdefault("deadline_s", 5.0)
    crawl.setdefault("follow_hints", False)
    return Config(
        trust=trust or forge.test_trust(),
        mirrors=tuple(mirrors),
        crawl=replace(CrawlConfig(), **crawl),
        db_path=str(tmp_path / "pithsync.db"),
        lock_timeout_s=2.0,
    )


class NoSleep:
    """Records the waits tenacity asked for instead of sleeping."""

    def __init__(self):
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def pull(cfg: Config, *pith_numbers: str, depth: int = 0, sleep=None, store: Store | None = None):
    """One run through the real engine and fetcher; returns (results by pith number, store)."""
    own = store is None
    store = store or Store.open(cfg.db_path)
    run_id = store.begin_run("test")
    async with Fetcher(cfg.crawl, SyncEngine.policy_for(cfg), sleep=sleep or NoSleep()) as fetcher:
        engine = SyncEngine(cfg, store, fetcher)
        targets = [Target(p.split(":")[-1], p if p.count(":") == 2 else None, depth) for p in pith_numbers]
        results = await engine.run(run_id, targets)
    store.finish_run(run_id, 0, {})
    by_number = {r.pith_number: r for r in results}
    if own:
        store.close()
    return by_number


def statuses(result) -> dict[str, str]:
    return {m.name: m.status.value for m in result.mirrors}
