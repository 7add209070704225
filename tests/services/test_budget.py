"""Per-host request budgets (issue 16, "Budgets"): `[crawl] max_requests_per_s` and Retry-After.

Every assertion about time is about when the mirror (a real server on 127.0.0.1) saw each
request arrive, which the limiter bounds from below: the k-th request cannot arrive before it
may be sent, (k - burst) / rate after the run began.  A busy machine only delays arrivals, so it
can never fail such a check (counting arrivals in a window could: a stalled server takes a
queue of well-spaced requests in one burst).  Where a test checks how long the fetcher chose to
wait, it reads the waits it handed to its sleep, never a clock around its own code.
"""

from __future__ import annotations

import sys
import time

import anyio
import pytest
from synctools import make_config, pull, run_cli, write_config

from pithsync.fetch import Fetcher
from pithsync.fetch.budget import BURST, HostBudgets, host_of
from pithsync.run.engine import SyncEngine
from pithsync.run.workers import _share
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer, bundle_path, state_path

RECORDS = [forge.forge_record(300 + i, n_events=2) for i in range(22)]  # 44 requests a mirror
# Three chunks of records (run/workers.py CHUNK_RECORDS), so that both workers get some.
WORKER_RECORDS = [forge.forge_record(400 + i, n_events=2) for i in range(48)]


def arrivals(mirror: MirrorServer) -> list[float]:
    return [r.started for r in mirror.requests]


def too_early(times: list[float], began: float, rate: float, burst: int) -> list[int]:
    """The requests (by arrival order) that came before the budget lets them be sent: with
    `burst` requests at once allowed, the k-th (from 0) not before began + (k + 1 - burst) /
    rate.  `began` and the times are time.monotonic() values, as the mirror records them."""
    slack = 0.005  # the clock's own granularity, not the machine's load
    return [
        k for k, t in enumerate(sorted(times)) if t < began + max(0, k + 1 - burst) / rate - slack
    ]


class RealSleep:
    """Sleeps for real, and records each wait the fetcher asked for."""

    def __init__(self):
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await anyio.sleep(seconds)


def test_a_host_is_its_scheme_host_and_port():
    assert host_of("https://Mirror.example/a") == host_of("https://mirror.example:443/b")
    assert host_of("http://mirror.example/a") != host_of("https://mirror.example/a")
    assert host_of("https://mirror.example:8443/a") != host_of("https://mirror.example/a")


class FakeTime:
    """A clock that moves only when the budget sleeps; `during_sleep` runs inside a sleep."""

    def __init__(self):
        self.now = 0.0
        self.waits: list[float] = []
        self.during_sleep = None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.during_sleep is not None:
            self.during_sleep()
            self.during_sleep = None
        self.now += seconds


async def test_a_retry_after_during_a_wait_for_a_token_makes_it_wait_out_the_pause():
    time = FakeTime()
    budgets = HostBudgets(1.0, time.sleep, time.clock)
    url = "https://mirror.example/x"
    assert await budgets.turn(url) == 0.0  # the burst
    time.during_sleep = lambda: budgets.pause(url, 5.0)  # another request's 429, at t=0
    waited = await budgets.turn(url)
    # 1 s for the token; then, from t=1, past the pause (t=5) and two token intervals: the
    # token reserved before the pause stays spent, and it takes a new one.
    assert time.waits == [1.0, 6.0] and waited == 7.0


async def test_a_pull_sends_no_more_than_the_rate_in_any_second(tmp_path):
    rate = 8.0  # 125 ms apart: far more than a loaded machine delays one request behind another
    async with MirrorServer("a") as a:
        for r in RECORDS:
            a.put_record(r.bundle())
        cfg = make_config(tmp_path, [a.spec()], max_requests_per_s=rate)
        began = time.monotonic()
        results = await pull(cfg, *(r.pith_number for r in RECORDS), sleep=anyio.sleep)
    assert {res.verdict.value for res in results.values()} == {"in_sync"}
    assert len(a.requests) == 2 * len(RECORDS)
    assert too_early(arrivals(a), began, rate, BURST) == []


def test_too_early_finds_requests_sent_faster_than_the_rate():
    # What an unlimited client does: three requests 10 ms apart, at 8 a second with a burst of 1.
    assert too_early([10.0, 10.01, 10.02], began=10.0, rate=8, burst=1) == [1, 2]
    assert too_early([10.0, 10.01, 10.02], began=10.0, rate=8, burst=3) == []
    # Late is never too early: a stalled server that takes spaced requests in one burst.
    assert too_early([12.0, 12.0, 12.0], began=10.0, rate=8, burst=1) == []


async def test_without_a_rate_nothing_waits(tmp_path):
    # The default (no [crawl] max_requests_per_s) keeps today's behaviour: no budget at all.
    async with MirrorServer("a") as a:
        for r in RECORDS[:4]:
            a.put_record(r.bundle())
        cfg = make_config(tmp_path, [a.spec()])
        sleep = RealSleep()
        async with Fetcher(cfg.crawl, SyncEngine.policy_for(cfg), sleep=sleep) as fetcher:
            assert fetcher.budgets is None
            for r in RECORDS[:4]:
                assert (await fetcher.get(a.url(bundle_path(r.suffix)))).status == 200
    assert sleep.waits == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers fork only on Linux")
async def test_worker_processes_share_the_rate(tmp_path):
    rate, processes = 16, 2
    async with MirrorServer("a") as a:
        for r in WORKER_RECORDS:
            a.put_record(r.bundle())
        # Few records in flight per worker, so that the first does not take every chunk.
        extra = f"processes = {processes}\nconcurrency = 4\nmax_requests_per_s = {rate}\n"
        conf = write_config(tmp_path, [a.spec()], timeout_s=10, extra=extra)
        numbers = [r.pith_number for r in WORKER_RECORDS]
        began = time.monotonic()  # before the workers are forked
        code, out = await run_cli("--config", conf, "--db", tmp_path / "s.db", "pull", *numbers)
    assert code == 0, out
    assert len(a.requests) == 2 * len(WORKER_RECORDS)
    # Each worker keeps rate / processes with a burst of one: together the rate, plus at most
    # one request per worker at once.
    assert too_early(arrivals(a), began, rate, processes * BURST) == []


async def test_retry_after_pauses_the_host_for_every_request(tmp_path):
    record = RECORDS[0]
    async with MirrorServer("a") as a, MirrorServer("b") as b:
        a.put_record(record.bundle())
        b.put_record(record.bundle())
        a.fault("status", path=bundle_path(record.suffix), status=429, retry_after="2", times=1)
        cfg = make_config(tmp_path, [a.spec(), b.spec()], retries=0, max_requests_per_s=50.0)
        sleep = RealSleep()
        async with Fetcher(cfg.crawl, SyncEngine.policy_for(cfg), sleep=sleep) as fetcher:
            refused = await fetcher.get(a.url(bundle_path(record.suffix)))
            answered_429 = a.requests[0].finished
            other_host = await fetcher.get(b.url(state_path(record.suffix)))
            assert sleep.waits == []  # another host is not paused
            same_host = await fetcher.get(a.url(state_path(record.suffix)))
    assert (refused.fetched.code, other_host.status, same_host.status) == ("rate_limited", 200, 200)
    assert [r.status for r in a.requests] == [429, 200]
    assert a.requests[1].started >= answered_429 + 2.0  # a request other than the retry waited


async def test_the_retry_after_a_retry_after_waits_for_it(tmp_path):
    record = RECORDS[0]
    async with MirrorServer("a") as a:
        a.put_record(record.bundle())
        a.fault("status", path=bundle_path(record.suffix), status=503, retry_after="2", times=1)
        cfg = make_config(tmp_path, [a.spec()], retries=1, max_requests_per_s=50.0)
        async with Fetcher(cfg.crawl, SyncEngine.policy_for(cfg), sleep=RealSleep()) as fetcher:
            response = await fetcher.get(a.url(bundle_path(record.suffix)))
    assert (response.status, response.attempts) == (200, 2)
    assert [r.status for r in a.requests] == [503, 200]
    assert a.requests[1].started >= a.requests[0].finished + 2.0


@pytest.mark.parametrize(
    "header, paused",
    [
        ("999999999999999999999999", True),  # huge: capped
        ("Fri, 31 Dec 9999 23:59:59 GMT", True),  # far future: capped
        ("1 Jan 10000000000000000000000 00:00:00 GMT", False),  # overflows the date parser
        ("²", False),  # a digit to str.isdigit, not to float
        ("-5", False),
        ("soon", False),
        ("", False),
    ],
)
async def test_a_hostile_retry_after_is_capped_or_ignored(tmp_path, header, paused):
    record = RECORDS[1]
    rate, cap = 50.0, 1.0
    async with MirrorServer("a") as a:
        a.put_record(record.bundle())
        a.fault("status", path=bundle_path(record.suffix), status=503, retry_after=header)
        cfg = make_config(
            tmp_path, [a.spec()], retries=0, max_requests_per_s=rate, backoff_max_s=cap
        )
        sleep = RealSleep()
        async with Fetcher(cfg.crawl, SyncEngine.policy_for(cfg), sleep=sleep) as fetcher:
            refused = await fetcher.get(a.url(bundle_path(record.suffix)))
            answered = a.requests[0].finished
            sleep.waits.clear()
            after = await fetcher.get(a.url(state_path(record.suffix)))
    assert (refused.fetched.code, after.status) == ("server_error", 200)
    (wait,) = sleep.waits or [0.0]
    assert wait <= cap + 1 / rate + 1e-9  # never longer than the cap, whatever the mirror said
    if paused:
        assert a.requests[1].started >= answered + cap
    else:
        assert wait <= 1 / rate + 1e-9


async def test_waiting_for_the_budget_does_not_count_toward_the_deadline(tmp_path):
    # Ten requests at 2 a second: the last waits about 4.5 s for its token, longer than the
    # deadline, and still gets its answer.
    async with MirrorServer("a") as a:
        for r in RECORDS[:10]:
            a.put_record(r.bundle())
        cfg = make_config(tmp_path, [a.spec()], retries=0, deadline_s=3.0, max_requests_per_s=2.0)
        async with Fetcher(cfg.crawl, SyncEngine.policy_for(cfg)) as fetcher:
            async with anyio.create_task_group() as tg:
                responses = []

                async def get(url: str) -> None:
                    responses.append(await fetcher.get(url))

                for r in RECORDS[:10]:
                    tg.start_soon(get, a.url(bundle_path(r.suffix)))
    assert [r.status for r in responses] == [200] * 10, [r.fetched.detail for r in responses]


def test_each_worker_gets_its_share_of_the_rate(tmp_path):
    cfg = make_config(tmp_path, [], max_requests_per_s=9.0)
    assert _share(cfg, 3).crawl.max_requests_per_s == 3.0
    assert _share(make_config(tmp_path, []), 3).crawl.max_requests_per_s is None


async def test_every_redirect_hop_takes_a_token(tmp_path):
    record = RECORDS[2]
    async with MirrorServer("a") as a:
        a.put_record(record.bundle())
        a.fault("redirect", path="/moved", location=bundle_path(record.suffix))
        cfg = make_config(tmp_path, [a.spec()], max_requests_per_s=0.5)
        sleep = RealSleep()
        async with Fetcher(cfg.crawl, SyncEngine.policy_for(cfg), sleep=sleep) as fetcher:
            response = await fetcher.get(a.url("/moved"))
    assert response.status == 200 and [r.status for r in a.requests] == [302, 200]
    # The first hop spends the burst; the second waits for the next token (2 s later).
    assert len(sleep.waits) == 1 and 0 < sleep.waits[0] <= 2.0
