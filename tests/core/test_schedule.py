"""The pure scheduler (pithsync/core/schedule.py): due order, adaptive revisits, jitter, the
per-host token bucket, coverage figures, and the simulation meeting issue 16's targets."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pithsync.core.schedule import (
    DAY,
    HOUR,
    Outcome,
    PriorityClass,
    SchedulePolicy,
    ScheduleState,
    TokenBucket,
    after_check,
    coverage,
    discovered,
    due_order,
    full_pass_seconds,
    jitter_fraction,
    jittered_interval,
    priority_class,
    run_capacity,
    take_due,
)

POLICY = SchedulePolicy(min_interval=HOUR, max_interval=7 * DAY, growth=3.0, jitter_spread=0.1)
NOW = 100 * DAY
CHECK_OUTCOMES = [o for o in Outcome if o is not Outcome.NEVER_CHECKED]


def checked(
    suffix: str,
    at: float,
    outcome: Outcome = Outcome.IN_SYNC,
    due: float | None = None,
    discovered_at: float = 0.0,
) -> ScheduleState:
    """A state last checked at `at` with `outcome`, due at `due` (default: at `at` + 1 h)."""
    return ScheduleState(
        suffix=suffix,
        discovered_at=discovered_at,
        next_due=at + HOUR if due is None else due,
        interval=HOUR,
        last_checked=at,
        last_outcome=outcome,
    )


def test_due_order_runs_each_class_before_the_next_and_most_overdue_first():
    never = ScheduleState.new("NEVER", NOW - 10, POLICY)
    diverged = checked("DIV", NOW - 2 * HOUR, Outcome.DIVERGED)
    degraded = checked("DEG", NOW - 3 * HOUR, Outcome.DEGRADED)
    unreachable = checked("UNR", NOW - 4 * HOUR, Outcome.UNREACHABLE)
    changed = checked("CHG", NOW - 5 * HOUR, Outcome.CHANGED)
    hinted = discovered(checked("HINT", NOW - DAY, due=NOW + DAY), NOW - 60)
    old = checked("OLD", NOW - 6 * DAY, due=NOW - 3 * DAY)
    older = checked("OLDER", NOW - 5 * DAY, due=NOW - 4 * DAY)  # checked later, due earlier
    fresh = checked("FRESH", NOW - 7 * DAY, due=NOW - 1)
    not_due = checked("LATER", NOW - 9 * DAY, due=NOW + 1)
    states = [fresh, old, not_due, hinted, older, changed, unreachable, degraded, diverged, never]

    order = [s.suffix for s in due_order(states, NOW)]

    assert order == ["NEVER", "CHG", "UNR", "DEG", "DIV", "HINT", "OLDER", "OLD", "FRESH"]
    assert [priority_class(s) for s in (never, diverged, hinted, old)] == list(PriorityClass)
    assert [s.suffix for s in take_due(states, NOW, 3)] == order[:3]
    assert take_due(states, NOW, 0) == []


state_strategy = st.builds(
    lambda suffix, checked_ago, due_in, outcome, hint_ago, never: ScheduleState(
        suffix=suffix,
        discovered_at=NOW - hint_ago,
        next_due=NOW + due_in,
        interval=HOUR,
        last_checked=None if never else NOW - checked_ago,
        last_outcome=Outcome.NEVER_CHECKED if never else outcome,
    ),
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", min_size=1, max_size=6),
    st.floats(0, 10 * DAY),
    st.floats(-10 * DAY, DAY),
    st.sampled_from(CHECK_OUTCOMES),
    st.floats(0, 10 * DAY),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(state_strategy, max_size=40), st.integers(0, 50))
def test_due_order_is_by_class_then_due_time_and_take_due_is_its_head(states, limit):
    order = due_order(states, NOW)
    assert all(s.next_due <= NOW for s in order)
    assert len(order) == sum(s.next_due <= NOW for s in states)
    keys = [(priority_class(s), s.next_due) for s in order]
    assert keys == sorted(keys)
    assert [s.suffix for s in take_due(states, NOW, limit)] == [s.suffix for s in order[:limit]]


def test_unchanged_checks_grow_the_interval_until_max_and_a_change_resets_it():
    state = checked("GROW", NOW - HOUR)
    bases, now = [], NOW
    for _ in range(8):
        state = after_check(state, Outcome.IN_SYNC, False, now, POLICY)
        bases.append(state.interval)
        assert POLICY.min_interval <= state.next_due - now <= state.interval <= POLICY.max_interval
        now = state.next_due
    assert bases[:4] == [3 * HOUR, 9 * HOUR, 27 * HOUR, 81 * HOUR]
    assert bases[4:] == [POLICY.max_interval] * 4  # clamped
    assert state.consecutive_unchanged == 8 and state.last_outcome is Outcome.IN_SYNC

    found = after_check(state, Outcome.IN_SYNC, True, now, POLICY)
    assert found.last_outcome is Outcome.CHANGED
    assert found.interval == POLICY.min_interval and found.next_due == now + POLICY.min_interval
    assert found.consecutive_unchanged == 0 and found.last_checked == now


@pytest.mark.parametrize(
    "outcome", [Outcome.DIVERGED, Outcome.DEGRADED, Outcome.UNREACHABLE, Outcome.UNVERIFIABLE]
)
def test_a_problem_outcome_brings_the_record_back_at_min_interval(outcome):
    settled = replace(checked("SETTLED", NOW - DAY), interval=POLICY.max_interval)
    after = after_check(settled, outcome, False, NOW, POLICY)
    assert after.interval == POLICY.min_interval and after.next_due == NOW + POLICY.min_interval
    assert after.last_outcome is outcome
    assert priority_class(after) is PriorityClass.ATTENTION


def test_a_first_verification_joins_the_rotation_and_never_checked_is_not_an_outcome():
    new = ScheduleState.new("FIRST", NOW, POLICY)
    assert priority_class(new) is PriorityClass.NEVER_VERIFIED and new.next_due == NOW
    after = after_check(new, Outcome.IN_SYNC, False, NOW, POLICY)
    assert after.interval == POLICY.max_interval
    assert priority_class(after) is PriorityClass.ROTATION
    short = replace(POLICY, first_interval=2 * HOUR)
    assert after_check(new, Outcome.IN_SYNC, False, NOW, short).interval == 2 * HOUR
    with pytest.raises(ValueError, match="never_checked"):
        after_check(new, Outcome.NEVER_CHECKED, False, NOW, POLICY)


@settings(max_examples=200, deadline=None)
@given(st.floats(1, 30 * DAY), st.sampled_from(CHECK_OUTCOMES), st.booleans(), st.booleans())
def test_intervals_stay_within_min_and_max(previous, outcome, changed, first):
    state = ScheduleState(
        suffix="CLAMP",
        discovered_at=0.0,
        next_due=NOW,
        interval=previous,
        last_checked=None if first else NOW - previous,
        last_outcome=Outcome.NEVER_CHECKED if first else Outcome.IN_SYNC,
    )
    after = after_check(state, outcome, changed, NOW, POLICY)
    assert POLICY.min_interval <= after.interval <= POLICY.max_interval
    assert POLICY.min_interval <= after.next_due - NOW <= POLICY.max_interval


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_interval": 0},
        {"min_interval": 2 * DAY, "max_interval": DAY},
        {"growth": 0.5},
        {"jitter_spread": 1.0},
        {"first_interval": -1.0},
    ],
)
def test_a_bad_policy_is_refused(kwargs):
    with pytest.raises(ValueError):
        SchedulePolicy(**kwargs)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40), st.floats(HOUR, 30 * DAY))
def test_jitter_is_deterministic_and_bounded(suffix, base):
    fraction = jitter_fraction(suffix)
    assert fraction == jitter_fraction(suffix) and 0 <= fraction < 1
    jittered = jittered_interval(base, fraction, POLICY)
    assert max(POLICY.min_interval, base * (1 - POLICY.jitter_spread)) <= jittered <= base


def test_jitter_is_the_same_in_another_process_and_spreads_records():
    # Python's hash() of a str changes per process; the jitter must not.
    code = "from pithsync.core.schedule import jitter_fraction; print(repr(jitter_fraction('AB')))"
    env_run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONHASHSEED": "123"},
        check=True,
    )
    assert float(env_run.stdout) == jitter_fraction("AB")
    fractions = sorted(jitter_fraction(f"REC{i:05d}") for i in range(2000))
    assert fractions[0] < 0.01 and fractions[-1] > 0.99
    assert 0.4 < fractions[1000] < 0.6  # roughly uniform, so records spread over the spread


def test_token_bucket_holds_its_rate_over_a_simulated_minute():
    bucket = TokenBucket(rate=16, burst=5, now=0.0)  # 1/16 s is exact in binary
    sent, now = [], 0.0
    while True:
        now += bucket.take(now)
        if now >= 60:
            break
        sent.append(now)
    assert sent[:5] == [0.0] * 5  # the burst goes at once
    assert len(sent) == 5 + 16 * 60 - 1  # then one every 1/16 s, the last one before t=60
    assert {b - a for a, b in zip(sent[5:], sent[6:], strict=False)} == {1 / 16}


def test_token_bucket_refills_up_to_its_burst_and_reserves_for_concurrent_callers():
    bucket = TokenBucket(rate=2, burst=4, now=0.0)
    assert [bucket.take(0.0, cost=2) for _ in range(3)] == [0.0, 0.0, 1.0]
    assert bucket.take(0.0) == pytest.approx(1.5)  # queued behind the reservation before it
    assert bucket.available(100.0) == 4  # idle time refills no further than the burst
    assert [bucket.take(100.0) for _ in range(5)] == [0.0] * 4 + [0.5]


def test_token_bucket_honours_retry_after_and_resumes_without_a_burst():
    bucket = TokenBucket(rate=10, burst=10, now=0.0)
    assert bucket.take(0.0) == 0.0
    bucket.pause_until(30.0)
    # Nothing before the pause ends; then at the rate, from empty: no burst of saved tokens.
    assert bucket.take(5.0) == pytest.approx(25.1)
    assert bucket.take(30.0) == pytest.approx(0.2)
    bucket.pause_until(10.0)  # an earlier Retry-After does not shorten the pause in force
    assert bucket.take(30.0) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        TokenBucket(rate=0)


def test_coverage_counts_tracked_due_overdue_and_the_oldest_check():
    policy = replace(POLICY, max_interval=4 * DAY)
    states = [
        checked("A", NOW - HOUR, due=NOW + DAY),  # fresh, not due
        checked("B", NOW - 2 * DAY, due=NOW - 1),  # due
        checked("C", NOW - 5 * DAY, due=NOW - DAY),  # due and overdue
        ScheduleState.new("D", NOW - 10, policy),  # never checked, due, not overdue
        ScheduleState.new("E", NOW - 6 * DAY, policy),  # never checked for 6 days: overdue
    ]
    figures = coverage(states, NOW, policy)
    assert (figures.tracked, figures.due, figures.overdue, figures.never_checked) == (5, 4, 2, 2)
    assert figures.oldest_check_age == 5 * DAY and figures.behind
    assert not coverage(states[:2], NOW, policy).behind
    assert coverage([], NOW, policy).oldest_check_age is None


def test_a_full_pass_of_the_registry_takes_the_issues_figure():
    # 2.5 million records, two documents each, 20 requests per second per mirror: 2.9 days.
    assert full_pass_seconds(2_500_000, 2, 20) / DAY == pytest.approx(2.894, abs=0.001)
    assert full_pass_seconds(2_500_000, 2, 20, duty=3300 / 3600) / DAY == pytest.approx(
        3.157, abs=0.001
    )


def simulate_small(*extra: str):
    """The registry simulation at 20,000 records with the per-mirror rate scaled to match."""
    from bench import schedule_sim

    # 2.5 million records at 20 requests/s per mirror is 125,000 records per request/s.
    args = schedule_sim.parse(["--records", "20000", "--rate", "0.16", *extra])
    sim, end = schedule_sim.simulate(args)
    return args, sim, schedule_sim.measure(sim, end), schedule_sim.report


def test_the_small_simulation_meets_both_targets_within_the_request_budget():
    args, sim, result, report = simulate_small()
    text = "\n".join(report(sim, result, 0.0))
    assert result.longest_unchecked_s <= 96 * HOUR, text
    assert result.longest_recheck_s <= HOUR, text
    assert result.max_requests_per_hour <= 0.16 * HOUR, text
    # It measured something: changes and divergences were found and re-checked.
    assert sim.fig.changes_found > 100 and sim.fig.divergences_found > 0, text
    assert len(sim.fig.recheck) > 100 and result.overdue < result.tracked // 100, text
    assert "MISSED" not in text and "why missed" not in text


def test_the_simulation_says_which_target_it_misses_and_why():
    # Half the budget cannot rotate 20,000 records within 4 days, and a min_interval of 2 hours
    # cannot re-check a change within 1 hour.
    args, sim, result, report = simulate_small("--rate", "0.08", "--min-interval-s", "7200")
    text = "\n".join(report(sim, result, 0.0))
    assert result.longest_unchecked_s > 96 * HOUR and result.longest_recheck_s > HOUR, text
    assert "longest unchecked" in text and text.count("MISSED") == 2, text
    assert "why missed: the checks wanted" in text and "lower min_interval" in text, text
    assert result.max_requests_per_hour <= 0.08 * HOUR, text


def test_a_budgeted_run_can_start_only_what_its_request_budget_reaches():
    # 1 h at 20 requests a second per host, two workers' buckets, 64 in flight: 72,002 requests
    # reach 36,001 records, and 64 more may be started before the deadline.
    assert run_capacity(3600, 20, buckets=2, in_flight=64) == 36_001 + 64
    assert run_capacity(1, 4, buckets=1, in_flight=1) == 3 + 1
    assert run_capacity(None, 20, buckets=2, in_flight=64) is None  # no budget
    assert run_capacity(3600, None, buckets=2, in_flight=64) is None  # no rate limit
