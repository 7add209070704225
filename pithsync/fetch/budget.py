"""Per-host request budgets: `[crawl] max_requests_per_s`, spent through one core `TokenBucket`
per host (scheme, host and port), and paused by a mirror's Retry-After."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from pithsync.core.schedule import TokenBucket
from pithsync.fetch.policy import PolicyError, UrlPolicy

# One request, then one every 1/rate seconds: a host that asked for R requests a second never
# sees more than R + 1 in any second.  A larger burst would buy a crawl that runs for minutes at
# the rate nothing, and would let it open every run with a volley.
BURST = 1.0

Host = tuple[str, str, int]


def host_of(url: str) -> Host:
    """(scheme, host, port) of `url`: what a budget is kept per.  A URL whose port is unreadable
    (aiohttp refuses to send it anyway) is its own host."""
    try:
        return UrlPolicy.origin(url)
    except PolicyError:
        return ("", url[:200], 0)


class _HostBudget:
    def __init__(self, rate: float, now: float):
        self.bucket = TokenBucket(rate, BURST, now)
        self.turns = asyncio.Lock()
        self.pauses = 0  # Retry-After answers so far: a wait they interrupt starts over


class HostBudgets:
    """The request budget of every host one Fetcher contacts, `rate` requests a second each.

    Requests to a host take their turn one at a time: each takes its token when the one before
    it has waited out its own, so a request that woke late (a busy event loop) shifts the ones
    behind it instead of letting them all go at once.  A Retry-After that arrives while a
    request waits for its token makes it wait again, until after the pause.
    """

    def __init__(
        self,
        rate: float,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.rate = rate
        self._sleep = sleep
        self._clock = clock
        self._hosts: dict[Host, _HostBudget] = {}

    def _budget(self, url: str) -> _HostBudget:
        host = host_of(url)
        budget = self._hosts.get(host)
        if budget is None:
            budget = self._hosts[host] = _HostBudget(self.rate, self._clock())
        return budget

    async def turn(self, url: str) -> float:
        """Wait until a request to `url`'s host may be sent, and spend its token.

        Returns:
            The seconds waited (for the turn and for the token).
        """
        budget = self._budget(url)
        started = self._clock()
        async with budget.turns:
            while True:
                pauses = budget.pauses
                wait = budget.bucket.take(self._clock())
                if wait <= 0:
                    break
                await self._sleep(wait)
                if budget.pauses == pauses:
                    break
        return self._clock() - started

    def pause(self, url: str, seconds: float) -> None:
        """Send nothing to `url`'s host for `seconds` (a Retry-After, already capped)."""
        budget = self._budget(url)
        budget.bucket.pause_until(self._clock() + seconds)
        budget.pauses += 1
