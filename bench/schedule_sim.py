"""The scheduler simulated in its pure core with a fake clock (issue 16's scheduler target).

    python -m bench.schedule_sim --records 2500000 --mirrors 3 --rate 20

Hourly timer runs, each stopping at `run_budget_s`, check due records one at a time in the core's
priority order, through one core `TokenBucket` per mirror; every check sends `docs` requests to
each mirror at once. Revisit intervals come from the core's `next_base_interval` and
`jittered_interval`, ranks from `class_for`. The world is simulated: records change (a small
active share changes often, the rest rarely), some mirrors serve a diverging record for a while,
requests fail now and then, one mirror is down for an hour, mirrors answer `Retry-After` once a
day, new records and hints arrive. Per record the state is kept in arrays and the queues are
heaps of integers (due time in ms, shifted, with the record's index), one heap per rank.

It prints the two targets (every record checked within `--target-age-h`; a record found changed
or diverged re-checked within `--target-recheck-s`), the requests per hour per mirror against
the budget, and says which target is missed and why.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
import time
from array import array
from dataclasses import dataclass, field

from pithsync.core.schedule import (
    DAY,
    HOUR,
    Outcome,
    PriorityClass,
    SchedulePolicy,
    TokenBucket,
    class_for,
    full_pass_seconds,
    jitter_fraction,
    jittered_interval,
    next_base_interval,
)

EPOCH = 30 * DAY  # simulated time starts here, so that a warm start's past checks are positive
RANKS = len(PriorityClass)
# Enum members bound once: attribute access on an Enum class costs a lookup per check.
IN_SYNC, CHANGED, DIVERGED = Outcome.IN_SYNC, Outcome.CHANGED, Outcome.DIVERGED
DEGRADED, UNREACHABLE = Outcome.DEGRADED, Outcome.UNREACHABLE
ROTATION = int(PriorityClass.ROTATION)


@dataclass
class World:
    """The simulated registry and mirrors (ground truth the scheduler cannot see)."""

    change_per_day: float = 0.01  # share of all records changing per day, on average
    active_share: float = 0.05  # records changing often; they make half the changes
    diverge_per_day: float = 0.0005  # share of records a mirror starts serving wrongly per day
    diverge_mean_s: float = 6 * HOUR
    fail_per_check: float = 0.001  # one mirror's request fails: the check is degraded
    unreachable_per_check: float = 0.0001  # every mirror fails: unreachable
    new_per_day: float = 0.0003  # new records discovered per day, as a share of the registry
    hints_per_day: float = 0.002  # hints (citations, pulls) about tracked records per day
    outage_day: float = 2.4  # one mirror is down for an hour from this day
    outage_s: float = HOUR
    retry_after_s: float = 120.0  # each day one mirror answers Retry-After once

    def rates(self) -> tuple[float, float]:
        """Change rates per second of an active and of a quiet record."""
        half = self.change_per_day / 2 / DAY
        return half / self.active_share, half / (1 - self.active_share)


@dataclass
class Figures:
    """What the simulation measured."""

    checks: int = 0
    max_gap: float = 0.0  # longest time a record went unchecked (closed gaps)
    recheck: list[float] = field(default_factory=list)  # changed/diverged -> next check
    recheck_other: float = 0.0  # degraded/unreachable -> next check, the longest
    detect: list[float] = field(default_factory=list)  # true change -> detecting check
    changes_found: int = 0
    divergences_found: int = 0
    hour_requests: dict[int, list[int]] = field(default_factory=dict)


class Sim:
    """The schedule's compact state and one simulated deployment."""

    def __init__(self, args: argparse.Namespace, policy: SchedulePolicy, world: World) -> None:
        self.args, self.policy, self.world = args, policy, world
        self.rng = random.Random(args.seed)
        n = args.records
        self.capacity = n + int(n * world.new_per_day * (args.days + 1)) + 16
        self.bits = self.capacity.bit_length()
        self.mask = (1 << self.bits) - 1
        self.n = n
        self.new_count = 0
        self.last = array("d", [math.nan]) * self.capacity  # nan: never checked
        self.base = array("d", [policy.min_interval]) * self.capacity
        self.disc = array("d", [0.0]) * self.capacity
        self.rank = array("b", [0]) * self.capacity
        self.key = array("q", [-1]) * self.capacity
        self.attn = array("d", [math.nan]) * self.capacity  # when an attention outcome was seen
        self.attn_target = array("b", [0]) * self.capacity
        self.next_change = array("d", [math.inf]) * self.capacity
        self.jitter = array("d", (jitter_fraction(f"rec{i:08d}") for i in range(self.capacity)))
        self.heaps: list[list[int]] = [[] for _ in range(RANKS)]
        self.diverged_until: dict[int, float] = {}
        self.buckets = [
            TokenBucket(args.rate, max(args.docs, args.rate), EPOCH) for _ in range(args.mirrors)
        ]
        self.fig = Figures()
        self.active_rate, self.quiet_rate = world.rates()
        self.outage = (
            EPOCH + world.outage_day * DAY,
            EPOCH + world.outage_day * DAY + world.outage_s,
        )

    def change_rate(self, i: int) -> float:
        """The record's true change rate; every 20th record (and every new one) is active."""
        if i >= self.n or i % round(1 / self.world.active_share) == 0:
            return self.active_rate
        return self.quiet_rate

    def push(self, i: int, due: float, rank: int) -> None:
        """Schedule record `i` at `due` in heap `rank`, superseding its earlier entry."""
        k = (int(due * 1000) << self.bits) | i
        self.key[i], self.rank[i] = k, rank
        heapq.heappush(self.heaps[rank], k)

    def due_time(self, i: int) -> float:
        """When record `i` is due, to the millisecond its heap key holds."""
        return (self.key[i] >> self.bits) / 1000

    def seed(self, warm: bool) -> None:
        """Every record tracked at EPOCH: warm, checked over the past max_interval; or cold."""
        rng, p, n, bits = self.rng, self.policy, self.n, self.bits
        expo, active_every = rng.expovariate, round(1 / self.world.active_share)
        active, quiet = self.active_rate, self.quiet_rate
        self.next_change[:n] = array(
            "d", (EPOCH + expo(active if i % active_every == 0 else quiet) for i in range(n))
        )
        if not warm:
            self.disc[:n] = array("d", [EPOCH]) * n
            due = array("d", [EPOCH]) * n
            self.rank[:n] = array("b", [PriorityClass.NEVER_VERIFIED]) * n
            heap = self.heaps[PriorityClass.NEVER_VERIFIED]
        else:
            last = array("d", (EPOCH - rng.random() * p.max_interval for _ in range(n)))
            self.last[:n], self.disc[:n] = last, last
            self.base[:n] = array("d", [p.max_interval]) * n
            due = array(
                "d",
                (
                    x + jittered_interval(p.max_interval, j, p)
                    for x, j in zip(last, self.jitter, strict=False)
                ),
            )
            self.rank[:n] = array("b", [PriorityClass.ROTATION]) * n
            heap = self.heaps[PriorityClass.ROTATION]
        heap[:] = [(int(d * 1000) << bits) | i for i, d in enumerate(due)]
        self.key[:n] = array("q", heap)
        heapq.heapify(heap)

    def events(self, end: float) -> list[tuple[float, int, int]]:
        """Exogenous events (time, kind, record): 0 new record, 1 hint, 2 divergence starts,
        3 Retry-After from a mirror (record = mirror index)."""
        rng, w, n, out = self.rng, self.world, self.n, []
        span = end - EPOCH
        for _ in range(int(n * w.new_per_day * span / DAY)):
            out.append((EPOCH + rng.random() * span, 0, -1))
        for kind, per_day in ((1, w.hints_per_day), (2, w.diverge_per_day)):
            for _ in range(int(n * per_day * span / DAY)):
                out.append((EPOCH + rng.random() * span, kind, rng.randrange(n)))
        for day in range(int(span / DAY) + 1):
            out.append((EPOCH + (day + rng.random()) * DAY, 3, rng.randrange(self.args.mirrors)))
        out.sort()
        return out

    def apply(self, event: tuple[float, int, int]) -> None:
        """Apply one exogenous event at its time."""
        t, kind, i = event
        if kind == 0:
            i = self.n + self.new_count
            self.new_count += 1
            self.disc[i] = t
            self.next_change[i] = t + self.rng.expovariate(self.active_rate)
            self.push(i, t, PriorityClass.NEVER_VERIFIED)
        elif kind == 1:
            self.disc[i] = t
            if self.rank[i] == PriorityClass.ROTATION:
                self.push(i, min(self.due_time(i), t), PriorityClass.DISCOVERED)
        elif kind == 2:
            self.diverged_until[i] = t + self.rng.expovariate(1 / self.world.diverge_mean_s)
        else:
            self.buckets[i].pause_until(t + self.world.retry_after_s)

    def best_due(self, t: float) -> int:
        """The rank holding the first due record at `t`, or -1; drops superseded entries."""
        ms, bits, key, rank = int(t * 1000), self.bits, self.key, self.rank
        for r, h in enumerate(self.heaps):
            while h:
                k = h[0]
                i = k & self.mask
                if key[i] == k and rank[i] == r:
                    break
                heapq.heappop(h)
            if h and (h[0] >> bits) <= ms:
                return r
        return -1

    def next_due_time(self) -> float:
        """The earliest due time over all ranks (inf when nothing is scheduled)."""
        tops = [(h[0] >> self.bits) / 1000 for h in self.heaps if h]
        return min(tops, default=math.inf)

    def observe(self, i: int, t: float) -> tuple[Outcome, bool]:
        """What checking record `i` at `t` finds (ground truth)."""
        until = self.diverged_until.get(i)
        if until is not None:
            if t < until:
                return DIVERGED, False
            del self.diverged_until[i]
        w = self.world
        u = self.rng.random()
        if u < w.unreachable_per_check:
            return UNREACHABLE, False
        outcome = IN_SYNC
        if u < w.unreachable_per_check + w.fail_per_check or self.outage[0] <= t < self.outage[1]:
            outcome = DEGRADED
        changed_at = self.next_change[i]
        if changed_at > t:
            return outcome, False
        self.fig.detect.append(t - changed_at)
        self.next_change[i] = t + self.rng.expovariate(self.change_rate(i))
        return outcome, True

    def check(self, i: int, t: float) -> None:
        """Check record `i` at `t` and reschedule it through the core's rules."""
        fig, p = self.fig, self.policy
        last = self.last[i]
        first = last != last  # nan: never checked
        if not first and t - last > fig.max_gap:
            fig.max_gap = t - last
        seen = self.attn[i]
        if seen == seen:
            if self.attn_target[i]:
                fig.recheck.append(t - seen)
            elif t - seen > fig.recheck_other:
                fig.recheck_other = t - seen
        outcome, changed = self.observe(i, t)
        base = next_base_interval(self.base[i], outcome, changed, first, p)
        rank = ROTATION
        if changed or outcome is not IN_SYNC:
            recorded = CHANGED if outcome is IN_SYNC else outcome
            rank = class_for(recorded, True, False)  # a hint before `t` is answered by this check
            self.attn[i] = t
            self.attn_target[i] = changed or outcome is DIVERGED
            fig.changes_found += changed
            fig.divergences_found += outcome is DIVERGED
        elif seen == seen:
            self.attn[i] = math.nan
        self.last[i], self.base[i] = t, base
        due = t + jittered_interval(base, self.jitter[i], p)
        k = (int(due * 1000) << self.bits) | i
        self.key[i], self.rank[i] = k, rank
        heapq.heappush(self.heaps[rank], k)

    def run(self, start: float, end: float, events: list, cursor: int) -> int:
        """One timer run from `start` until its budget ends; returns the event cursor.

        Like a real run it takes due records a batch at a time as it goes (so a record falling
        due during the run is taken then), and reserves the batch's requests at every mirror.
        """
        t, docs, buckets, heaps, mask = start, self.args.docs, self.buckets, self.heaps, self.mask
        upcoming = events[cursor][0] if cursor < len(events) else math.inf
        checks, pop, best_due = 0, heapq.heappop, self.best_due
        while t < end:
            while upcoming <= t:
                self.apply(events[cursor])
                cursor += 1
                upcoming = events[cursor][0] if cursor < len(events) else math.inf
            batch = []
            for _ in range(self.args.batch):
                r = best_due(t)
                if r < 0:
                    break
                batch.append(pop(heaps[r]))
            if not batch:
                t = min(self.next_due_time(), upcoming, end)
                continue
            wait = max([bucket.take(t, docs * len(batch)) for bucket in buckets])
            if t + wait >= end:
                for k in batch:  # not checked: back in the queue, still valid
                    heapq.heappush(heaps[self.rank[k & mask]], k)
                break
            t += wait
            for k in batch:
                self.check(k & mask, t)
            checks += len(batch)
        self.fig.checks += checks
        # Every check sends `docs` requests to each mirror at once.
        self.fig.hour_requests[int((start - EPOCH) // HOUR)] = [checks * docs] * len(buckets)
        return cursor


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.schedule_sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--records", type=int, default=2_500_000)
    ap.add_argument("--mirrors", type=int, default=3)
    ap.add_argument("--rate", type=float, default=20.0, help="max_requests_per_s per mirror")
    ap.add_argument("--docs", type=int, default=2, help="requests per record per mirror")
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument(
        "--batch",
        type=int,
        default=None,
        help="records a run takes at a time (default: one second's budget)",
    )
    ap.add_argument("--run-every-s", type=float, default=HOUR)
    ap.add_argument("--run-budget-s", type=float, default=3300.0)
    ap.add_argument("--min-interval-s", type=float, default=3000.0)
    ap.add_argument("--max-interval-h", type=float, default=90.0)
    ap.add_argument("--growth", type=float, default=SchedulePolicy.growth)
    ap.add_argument("--jitter", type=float, default=SchedulePolicy.jitter_spread)
    ap.add_argument("--change-per-day", type=float, default=World.change_per_day)
    ap.add_argument("--cold", action="store_true", help="start with nothing checked")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--target-age-h", type=float, default=96.0)
    ap.add_argument("--target-recheck-s", type=float, default=HOUR)
    args = ap.parse_args(argv)
    if args.batch is None:
        args.batch = max(1, round(args.rate / args.docs))
    return args


def simulate(args: argparse.Namespace) -> tuple[Sim, float]:
    """Run the simulation; returns it and the simulated end time."""
    policy = SchedulePolicy(
        min_interval=args.min_interval_s,
        max_interval=args.max_interval_h * HOUR,
        growth=args.growth,
        jitter_spread=args.jitter,
    )
    sim = Sim(args, policy, World(change_per_day=args.change_per_day))
    sim.seed(warm=not args.cold)
    end = EPOCH + args.days * DAY
    events, cursor, start = sim.events(end), 0, EPOCH
    while start < end:
        cursor = sim.run(start, min(start + args.run_budget_s, end), events, cursor)
        start += args.run_every_s
    return sim, end


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of `values` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Result:
    """The figures a simulation is judged by."""

    tracked: int
    never_checked: int
    due: int
    overdue: int
    longest_unchecked_s: float  # closed gaps and the gaps still open at the end
    longest_recheck_s: float  # a record found changed or diverged -> its next check
    recheck_p99_s: float
    longest_other_recheck_s: float  # degraded or unreachable -> next check
    oldest_check_age_s: float
    max_requests_per_hour: int  # per mirror, over the clock hours simulated
    full_pass_s: float
    checks_per_day: float
    capacity_per_day: float

    def age_met(self, args: argparse.Namespace) -> bool:
        return self.longest_unchecked_s <= args.target_age_h * HOUR

    def recheck_met(self, args: argparse.Namespace) -> bool:
        return self.longest_recheck_s <= args.target_recheck_s

    def budget_met(self, args: argparse.Namespace) -> bool:
        return self.max_requests_per_hour <= args.rate * HOUR


def measure(sim: Sim, end: float) -> Result:
    """The figures of a finished simulation, counting what is still open at `end`."""
    a, p, fig = sim.args, sim.policy, sim.fig
    tracked = sim.n + sim.new_count
    checked = [x for x in sim.last[:tracked] if x == x]
    oldest = end - min(checked) if checked else 0.0
    never_since = [
        end - d for d, x in zip(sim.disc[:tracked], sim.last[:tracked], strict=True) if x != x
    ]
    open_recheck = [
        end - x
        for x, tgt in zip(sim.attn[:tracked], sim.attn_target[:tracked], strict=True)
        if tgt and x == x
    ]
    duty = a.run_budget_s / a.run_every_s
    return Result(
        tracked=tracked,
        never_checked=len(never_since),
        due=sum(1 for k in sim.key[:tracked] if (k >> sim.bits) <= int(end * 1000)),
        overdue=sum(1 for x in checked if end - x > p.max_interval)
        + sum(1 for age in never_since if age > p.max_interval),
        longest_unchecked_s=max([fig.max_gap, oldest] + never_since),
        longest_recheck_s=max(fig.recheck + open_recheck, default=0.0),
        recheck_p99_s=quantile(fig.recheck, 0.99),
        longest_other_recheck_s=fig.recheck_other,
        oldest_check_age_s=oldest,
        max_requests_per_hour=max((max(h) for h in fig.hour_requests.values()), default=0),
        full_pass_s=full_pass_seconds(tracked, a.docs, a.rate, duty),
        checks_per_day=fig.checks / ((end - EPOCH) / DAY),
        capacity_per_day=a.rate / a.docs * duty * DAY,
    )


def verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def report(sim: Sim, result: Result, elapsed: float) -> list[str]:
    """The printed figures, with each target's verdict and, when missed, why."""
    a, p, fig, r = sim.args, sim.policy, sim.fig, result
    return [
        f"schedule_sim: {sim.n:,} records (+{sim.new_count:,} new), {a.mirrors} mirrors,"
        f" {a.rate:g} req/s per mirror, {a.docs} requests per record per mirror,"
        f" {a.days:g} days of {a.run_budget_s:g} s runs every {a.run_every_s:g} s"
        f" ({'cold' if a.cold else 'warm'} start, seed {a.seed})",
        f"  policy: min_interval {p.min_interval:g} s, max_interval {p.max_interval / HOUR:g} h,"
        f" growth x{p.growth:g}, jitter up to -{p.jitter_spread:.0%}",
        f"  world: {a.change_per_day:.2%} of records change per day; found {fig.changes_found:,}"
        f" changes and {fig.divergences_found:,} divergences",
        f"  budget: one full pass takes {r.full_pass_s / DAY:.2f} days; checks"
        f" {r.checks_per_day:,.0f}/day of a capacity of {r.capacity_per_day:,.0f}/day",
        f"  longest unchecked: {r.longest_unchecked_s / HOUR:.1f} h (target {a.target_age_h:g} h)"
        f" {verdict(r.age_met(a))}",
        f"  changed/diverged -> re-check: longest {r.longest_recheck_s:.0f} s, p99"
        f" {r.recheck_p99_s:.0f} s (target {a.target_recheck_s:g} s)"
        f" {verdict(r.recheck_met(a))}",
        f"  degraded/unreachable -> re-check: longest {r.longest_other_recheck_s:.0f} s",
        f"  true change -> found (no change feed): median {quantile(fig.detect, 0.5) / HOUR:.1f}"
        f" h, longest {max(fig.detect, default=0) / HOUR:.1f} h",
        f"  requests per hour per mirror: max {r.max_requests_per_hour:,}"
        f" (budget {a.rate * HOUR:,.0f}) {verdict(r.budget_met(a))}",
        f"  coverage at the end: tracked {r.tracked:,}, due {r.due:,}, overdue {r.overdue:,},"
        f" never checked {r.never_checked:,}, oldest check {r.oldest_check_age_s / HOUR:.1f} h",
        f"  simulated in {elapsed:.1f} s of CPU",
    ] + why_missed(sim, r)


def why_missed(sim: Sim, r: Result) -> list[str]:
    """One line per missed target saying why."""
    a, p, lines = sim.args, sim.policy, []
    if not r.age_met(a):
        lines.append(
            f"  why missed: the checks wanted ({r.checks_per_day:,.0f}/day) reach the capacity"
            f" ({r.capacity_per_day:,.0f}/day) or max_interval ({p.max_interval / HOUR:g} h) plus"
            f" the queue exceeds {a.target_age_h:g} h; a pass alone takes"
            f" {r.full_pass_s / HOUR:.0f} h: raise the budget, lower max_interval or the target"
        )
    if not r.recheck_met(a):
        lines.append(
            f"  why missed: min_interval ({p.min_interval:g} s) plus the wait for the next run"
            f" ({a.run_every_s - a.run_budget_s:g} s between runs) and the attention queue"
            f" exceed {a.target_recheck_s:g} s: lower min_interval"
        )
    return lines


def figures(argv: list[str]) -> dict:
    """Run the simulation with `argv` (this module's options) and return its figures for the
    benchmark's table (bench/harness.py): the three targets, their limits, and its CPU time."""
    args = parse(argv)
    began = time.process_time()
    sim, end = simulate(args)
    r = measure(sim, end)
    cpu_s = time.process_time() - began
    return {
        "records": args.records,
        "mirrors": args.mirrors,
        "rate": args.rate,
        "days": args.days,
        "longest_unchecked_h": r.longest_unchecked_s / HOUR,
        "target_age_h": args.target_age_h,
        "longest_recheck_s": r.longest_recheck_s,
        "recheck_p99_s": r.recheck_p99_s,
        "target_recheck_s": args.target_recheck_s,
        "max_requests_per_hour": r.max_requests_per_hour,
        "budget_per_hour": args.rate * HOUR,
        "full_pass_days": r.full_pass_s / DAY,
        "cpu_s": cpu_s,
        "report": report(sim, r, cpu_s),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the simulation and print its figures."""
    args = parse(argv)
    began = time.process_time()
    sim, end = simulate(args)
    result = measure(sim, end)
    print("\n".join(report(sim, result, time.process_time() - began)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
