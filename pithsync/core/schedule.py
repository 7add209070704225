"""When to re-check each record, in what order, and how fast to ask each host.

Pure: no clock, no I/O, no randomness. Times are floats of seconds (any epoch) passed in by the
caller; the same inputs always give the same schedule.

Revisits adapt to change: a record found changed, diverged, degraded, unverifiable or
unreachable returns after `min_interval`; each unchanged check multiplies its interval by
`growth` up to `max_interval`. `max_interval` is the coverage promise: no jitter ever pushes a
revisit past it. A record's jitter is a fixed fraction derived from a hash of its suffix, so
records checked together drift apart instead of all falling due together again.

A run takes due records in priority order (see `PriorityClass`), most overdue first within a
class, and spends a per-host request budget through one `TokenBucket` per host.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import Enum, IntEnum

HOUR = 3600.0
DAY = 24 * HOUR


class Outcome(str, Enum):
    """What a record's last check found, as the scheduler needs it."""

    NEVER_CHECKED = "never_checked"
    IN_SYNC = "in_sync"
    CHANGED = "changed"  # in sync, and the verified content differs from the previous check
    DIVERGED = "diverged"
    DEGRADED = "degraded"
    UNVERIFIABLE = "unverifiable"
    UNREACHABLE = "unreachable"

    def __str__(self) -> str:
        return self.value


# Outcomes after which a record is revisited at min_interval and ranks for attention.
ATTENTION_OUTCOMES = frozenset(
    {Outcome.CHANGED, Outcome.DIVERGED, Outcome.DEGRADED, Outcome.UNVERIFIABLE, Outcome.UNREACHABLE}
)


class PriorityClass(IntEnum):
    """A due record's rank in a run; lower runs first."""

    NEVER_VERIFIED = 0
    # Changed ranks with the problem outcomes: both promise a re-check within min_interval, and
    # at full budget the rotation's backlog would otherwise delay it past that.
    ATTENTION = 1
    DISCOVERED = 2  # a hint, citation or pull arrived after the last check
    ROTATION = 3


@dataclass(frozen=True)
class SchedulePolicy:
    """The revisit rules. Intervals are seconds.

    `growth` is the factor an unchanged check multiplies the interval by. The default 3 brings a
    changed record back to `max_interval` in five checks (1 h, 3 h, 9 h, 27 h, 81 h) where 2
    needs seven; at 1 % of a registry changing per day those extra checks are what decides
    whether the rest still rotates within budget (bench/schedule_sim.py measures it).
    `jitter_spread` is the largest fraction jitter takes off an interval.
    `first_interval` is the interval after a first verification that found the record in sync:
    it has no history yet, so it joins the rotation (default `max_interval`) rather than
    starting every record of a new deployment at `min_interval`.
    """

    min_interval: float = HOUR
    max_interval: float = 7 * DAY
    growth: float = 3.0
    jitter_spread: float = 0.1
    first_interval: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.min_interval <= self.max_interval:
            raise ValueError(
                f"need 0 < min_interval <= max_interval, got {self.min_interval}"
                f" and {self.max_interval}"
            )
        if self.growth < 1:
            raise ValueError(f"growth must be at least 1, got {self.growth}")
        if not 0 <= self.jitter_spread < 1:
            raise ValueError(f"jitter_spread must be in [0, 1), got {self.jitter_spread}")
        if self.first_interval is not None and self.first_interval <= 0:
            raise ValueError(f"first_interval must be positive, got {self.first_interval}")

    def clamp(self, interval: float) -> float:
        """The interval held within [min_interval, max_interval]."""
        return min(self.max_interval, max(self.min_interval, interval))


@dataclass(frozen=True)
class ScheduleState:
    """One record's schedule.

    `interval` is the base revisit interval before jitter; `next_due` is when the record is due
    again (jitter applied). `last_checked` is None until the first check.
    """

    suffix: str
    discovered_at: float
    next_due: float
    interval: float
    last_checked: float | None = None
    last_outcome: Outcome = Outcome.NEVER_CHECKED
    consecutive_unchanged: int = 0

    @classmethod
    def new(cls, suffix: str, now: float, policy: SchedulePolicy) -> ScheduleState:
        """A record just tracked: due at once, never checked."""
        return cls(suffix=suffix, discovered_at=now, next_due=now, interval=policy.min_interval)


def discovered(state: ScheduleState, now: float) -> ScheduleState:
    """The state after a hint (discovery, citation, pull) at `now`: due at once, ranked higher."""
    return replace(
        state, discovered_at=max(state.discovered_at, now), next_due=min(state.next_due, now)
    )


def jitter_fraction(suffix: str) -> float:
    """A fraction in [0, 1) fixed by the suffix: the same on every machine and every run."""
    digest = hashlib.blake2b(suffix.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def next_base_interval(
    previous: float, outcome: Outcome, changed: bool, first_check: bool, policy: SchedulePolicy
) -> float:
    """The base interval after a check.

    Args:
        previous: the base interval before this check.
        outcome: what the check found (not NEVER_CHECKED).
        changed: whether the verified content differs from the previous check's.
        first_check: whether this was the record's first check.
        policy: the revisit rules.

    Returns:
        min_interval after a change or any attention outcome; otherwise the interval grown by
        `policy.growth` (or `first_interval` after a first check), within [min, max].
    """
    if changed or outcome in ATTENTION_OUTCOMES:
        return policy.min_interval
    if first_check:
        first = policy.first_interval
        return policy.clamp(policy.max_interval if first is None else first)
    return policy.clamp(previous * policy.growth)


def jittered_interval(base: float, fraction: float, policy: SchedulePolicy) -> float:
    """`base` shortened by up to `jitter_spread` of itself, never below min_interval.

    Jitter only shortens, so a record is never scheduled past max_interval.
    """
    return max(policy.min_interval, base * (1.0 - policy.jitter_spread * fraction))


def after_check(
    state: ScheduleState, outcome: Outcome, changed: bool, now: float, policy: SchedulePolicy
) -> ScheduleState:
    """The state after checking the record at `now`.

    Args:
        state: the record's state before the check.
        outcome: what the check found; IN_SYNC with `changed` is recorded as CHANGED.
        changed: whether the verified content differs from the previous check's.
        now: when the check finished, in seconds.
        policy: the revisit rules.

    Raises:
        ValueError: if `outcome` is NEVER_CHECKED.

    Returns:
        A new state with `last_checked=now` and `next_due` set by the adaptive interval.
    """
    if outcome is Outcome.NEVER_CHECKED:
        raise ValueError("a check cannot find never_checked")
    first_check = state.last_checked is None
    base = next_base_interval(state.interval, outcome, changed, first_check, policy)
    recorded = Outcome.CHANGED if changed and outcome is Outcome.IN_SYNC else outcome
    unchanged = not changed and recorded is Outcome.IN_SYNC
    return replace(
        state,
        last_checked=now,
        last_outcome=recorded,
        interval=base,
        next_due=now + jittered_interval(base, jitter_fraction(state.suffix), policy),
        consecutive_unchanged=state.consecutive_unchanged + 1 if unchanged else 0,
    )


def class_for(last_outcome: Outcome, checked: bool, hinted: bool) -> PriorityClass:
    """The rank of a record whose last check found `last_outcome`.

    Args:
        last_outcome: what the last check found.
        checked: whether the record was ever checked.
        hinted: whether a hint (discovery, citation, pull) arrived after the last check.

    Returns:
        The record's `PriorityClass`.
    """
    if not checked:
        return PriorityClass.NEVER_VERIFIED
    if last_outcome in ATTENTION_OUTCOMES:
        return PriorityClass.ATTENTION
    if hinted:
        return PriorityClass.DISCOVERED
    return PriorityClass.ROTATION


def priority_class(state: ScheduleState) -> PriorityClass:
    """The record's rank when due (see `PriorityClass`)."""
    checked = state.last_checked is not None
    hinted = checked and state.discovered_at > state.last_checked
    return class_for(state.last_outcome, checked, hinted)


def due_key(state: ScheduleState) -> tuple[int, float, str]:
    """Sort key for due records: priority class, then most overdue (earliest due) first."""
    return (int(priority_class(state)), state.next_due, state.suffix)


def is_due(state: ScheduleState, now: float) -> bool:
    """Whether the record is due at `now`."""
    return state.next_due <= now


def due_order(states: Iterable[ScheduleState], now: float) -> list[ScheduleState]:
    """Every record due at `now`, in the order a run should check them."""
    return sorted((s for s in states if s.next_due <= now), key=due_key)


def take_due(states: Iterable[ScheduleState], now: float, limit: int) -> list[ScheduleState]:
    """The first `limit` records of `due_order(states, now)`, without sorting all of them.

    A run calls this repeatedly as it goes (not once at its start), so a record that falls due
    during the run, such as one found changed an hour earlier, is taken when it falls due.
    """
    if limit <= 0:
        return []
    return heapq.nsmallest(limit, (s for s in states if s.next_due <= now), key=due_key)


class TokenBucket:
    """One host's request budget: `rate` requests per second, bursts of up to `burst`.

    Pure: the caller passes the time. `take` reserves capacity at once and returns how long to
    wait before sending, so concurrent callers queue in order without polling. A `Retry-After`
    answer pauses the bucket: nothing is sent before the pause ends, and it resumes at the rate
    from an empty bucket rather than with a burst. Waits handed out before a pause are not
    recalled; a caller that took before the pause and got a 429 takes again for its retry.
    """

    def __init__(self, rate: float, burst: float = 1.0, now: float = 0.0) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if burst <= 0:
            raise ValueError(f"burst must be positive, got {burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now  # the time `_tokens` refers to; ahead of the caller's clock when paused

    def take(self, now: float, cost: float = 1.0) -> float:
        """Reserve `cost` requests at `now`; returns the seconds to wait before sending them."""
        at = self._at
        if now > at:
            tokens = self._tokens + (now - at) * self.rate
            self._tokens = (tokens if tokens < self.burst else self.burst) - cost
            self._at = at = now
        else:
            self._tokens -= cost
        wait = at - now
        if self._tokens < 0:
            wait -= self._tokens / self.rate
        return wait

    def pause_until(self, until: float) -> None:
        """Honour a `Retry-After`: send nothing before `until`, then resume from empty."""
        if until > self._at:
            self._tokens = min(self._tokens, 0.0)
            self._at = until

    def available(self, now: float) -> float:
        """Tokens that could be taken at `now` without waiting (negative while in debt)."""
        if now < self._at:
            return min(self._tokens, 0.0)
        return min(self.burst, self._tokens + (now - self._at) * self.rate)


@dataclass(frozen=True)
class Coverage:
    """How well the schedule keeps up, at one moment.

    `overdue` counts records whose last check (or, never checked, their discovery) is older
    than max_interval: the budget is not keeping the coverage promise for them.
    `oldest_check_age` is the age of the oldest last check (None when nothing was checked).
    """

    tracked: int
    due: int
    overdue: int
    never_checked: int
    oldest_check_age: float | None

    @property
    def behind(self) -> bool:
        """Whether coverage has fallen behind max_interval (a run warns when it has)."""
        return self.overdue > 0


def coverage(states: Iterable[ScheduleState], now: float, policy: SchedulePolicy) -> Coverage:
    """The coverage figures of `states` at `now` under `policy`."""
    tracked = due = overdue = never = 0
    oldest: float | None = None
    for s in states:
        tracked += 1
        if s.next_due <= now:
            due += 1
        if s.last_checked is None:
            never += 1
            seen = s.discovered_at
        else:
            seen = s.last_checked
            oldest = seen if oldest is None else min(oldest, seen)
        if now - seen > policy.max_interval:
            overdue += 1
    age = None if oldest is None else now - oldest
    return Coverage(
        tracked=tracked, due=due, overdue=overdue, never_checked=never, oldest_check_age=age
    )


def full_pass_seconds(
    records: int, requests_per_record: float, max_requests_per_s: float, duty: float = 1.0
) -> float:
    """How long checking every record once takes at one host's budget.

    Args:
        records: records tracked.
        requests_per_record: requests one check sends to each host (bundle and state: 2).
        max_requests_per_s: the host's budget.
        duty: the share of wall time runs are going (3300 s runs each hour: 11/12).

    Returns:
        Seconds of wall time; a `max_interval` below this cannot be kept.
    """
    if max_requests_per_s <= 0 or not 0 < duty <= 1:
        raise ValueError("need max_requests_per_s > 0 and 0 < duty <= 1")
    return records * requests_per_record / (max_requests_per_s * duty)


def run_capacity(
    run_budget_s: float | None,
    max_requests_per_s: float | None,
    *,
    buckets: int,
    in_flight: int,
    requests_per_record: int = 2,
) -> int | None:
    """The most records one budgeted run can start, so that it takes no more due records than
    that from the store (the rest stay due for the next run).

    Every record asks each host for at least `requests_per_record` documents, and within the
    budget a host's `buckets` token buckets (one per worker, each with a burst of one) allow at
    most rate x budget + buckets requests: no more records than that can be finished before
    the deadline, and at most `in_flight` more can have been started and still be waiting.

    Args:
        run_budget_s: the run's budget in seconds, or None.
        max_requests_per_s: each host's request budget, or None.
        buckets: the token buckets that share one host's budget (the run's processes).
        in_flight: the records a run may have started and not finished ([crawl] concurrency).
        requests_per_record: requests one check sends to each host at least.

    Returns:
        The bound, or None when the run has no budget or no rate limit (it may reach every
        due record).
    """
    if run_budget_s is None or max_requests_per_s is None:
        return None
    finished = math.ceil((max_requests_per_s * run_budget_s + buckets) / requests_per_record)
    return finished + in_flight
