"""The schedule in a run: which records a sync takes (the due ones, in priority order), the
run's clock and budget, and each checked record's next schedule (core.schedule.after_check),
which the sink writes in the record's own group."""

from __future__ import annotations

import time
from dataclasses import dataclass

from pithsync.core.plan import RecordWrite, is_full_number
from pithsync.core.results import RecordResult
from pithsync.core.schedule import Outcome, SchedulePolicy, ScheduleState, after_check
from pithsync.core.status import Status, Verdict
from pithsync.run.results import Target, suffix_of
from pithsync.store import Store

# Due records are read from the store this many at a time.
DUE_PAGE = 1000


@dataclass(frozen=True)
class RunClock:
    """A run's time in unix seconds: `start` (a value a test may choose) plus the monotonic
    time elapsed since the run began."""

    start: float
    started_monotonic: float

    @classmethod
    def starting(cls, now: float | None = None) -> RunClock:
        """A clock that reads `now` (default: the wall clock) at this moment."""
        return cls(time.time() if now is None else now, time.monotonic())

    def now(self) -> float:
        """The run's current time."""
        return self.start + (time.monotonic() - self.started_monotonic)


@dataclass(frozen=True)
class Deadline:
    """When a run stops taking records: a time on the monotonic clock, which forked workers
    share with their parent."""

    at_monotonic: float

    @classmethod
    def after(cls, seconds: float | None) -> Deadline | None:
        """The deadline `seconds` from now; None for no limit."""
        return None if seconds is None else cls(time.monotonic() + seconds)

    def passed(self) -> bool:
        """Whether the budget is spent."""
        return time.monotonic() >= self.at_monotonic


def outcome_of(result: RecordResult) -> Outcome:
    """What a record's check found, as the scheduler reads it: its verdict, with a record that
    no mirror answered for at all counted `unreachable`."""
    if result.verdict is Verdict.UNVERIFIABLE and result.mirrors:
        if all(m.status is Status.UNREACHABLE for m in result.mirrors):
            return Outcome.UNREACHABLE
    return Outcome(result.verdict.value)


class RunSchedule:
    """Each checked record's next schedule, under `policy`, at the run's clock."""

    def __init__(self, policy: SchedulePolicy, clock: RunClock):
        self.policy = policy
        self.clock = clock

    def plan(self, store: Store, pairs: list[tuple[RecordResult, RecordWrite]]) -> None:
        """Set `schedule` on each write of a group about to be stored: after_check from its
        stored schedule (a record new to it starts now), with `changed` when the verified
        state's digest differs from the one stored by the previous check."""
        names = [w.pith_number for _, w in pairs]
        states = store.schedule_states(names)
        summaries = store.record_summaries(names)
        now = self.clock.now()
        for result, w in pairs:
            if result.verdict is Verdict.WRONG_NUMBER:
                continue
            before = states.get(w.pith_number) or ScheduleState.new(
                suffix_of(w.pith_number), now, self.policy
            )
            previous = (summaries.get(w.pith_number) or {}).get("state_sha256")
            changed = previous is not None and result.state_sha256 not in (None, previous)
            w.schedule = after_check(before, outcome_of(result), changed, now, self.policy)


def due_targets(store: Store, now: float, limit: int | None = None) -> list[Target]:
    """The tracked records due at `now`, in the order a sync checks them (priority class, then
    most overdue first), read a page at a time: all of them, or the first `limit`."""
    targets: list[Target] = []
    after = None
    while limit is None or len(targets) < limit:
        page_size = DUE_PAGE if limit is None else min(DUE_PAGE, limit - len(targets))
        page = store.take_due(now, page_size, after)
        if not page:
            break
        for pith, _, key in page:
            targets.append(Target(suffix_of(pith), pith if is_full_number(pith) else None, 0))
            after = key
    return targets
