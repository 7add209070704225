"""The circuit breaker that stops a run from waiting on a mirror that is down."""

from __future__ import annotations

import time
from collections.abc import Callable

from pithsync.fetch.errors import DOWN_CODES


def origin_key(url: str) -> str:
    """scheme://host[:port] as written: what the breaker counts failures by."""
    end = url.find("/", url.find("//") + 2)
    return (url if end < 0 else url[:end]).lower()


class MirrorBreaker:
    """Stops a run from waiting on a mirror that is down.  After `after` requests in a row to one
    origin failed to connect or timed out (every attempt counts), its requests fail at once; one
    request every `retry_s` seconds probes it, and any answer closes the breaker.  Without the
    breaker, a down mirror costs every record its full retry backoff."""

    def __init__(self, after: int, retry_s: float, clock: Callable[[], float] = time.monotonic):
        self.after = after
        self.retry_s = retry_s
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._open_until: dict[str, float] = {}

    def is_open(self, origin: str) -> bool:
        """Whether requests to `origin` fail at once now."""
        until = self._open_until.get(origin)
        return until is not None and self._clock() < until

    def allows(self, origin: str) -> bool:
        """Whether a request to `origin` may go out now; when the breaker is open and a probe
        is due, this request is the probe (the others keep failing fast until it answers)."""
        if origin not in self._open_until:
            return True
        now = self._clock()
        if now < self._open_until[origin]:
            return False
        self._open_until[origin] = now + self.retry_s
        return True

    def record(self, origin: str, code: str | None) -> None:
        """The outcome of one attempt to `origin`: the failure code, or None for any answer."""
        if code in DOWN_CODES:
            failures = self._failures[origin] = self._failures.get(origin, 0) + 1
            if self.after and failures >= self.after:
                self._open_until[origin] = self._clock() + self.retry_s
        elif origin in self._failures:
            del self._failures[origin]
            self._open_until.pop(origin, None)

    def failures(self, origin: str) -> int:
        """How many requests in a row to `origin` failed to connect or answer."""
        return self._failures.get(origin, 0)
