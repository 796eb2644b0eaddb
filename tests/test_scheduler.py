"""The scheduler (tasks_lib.scheduler), driven on a virtual clock over random plans.

Random specs (dependency DAGs, file conflicts, estimates, tasks already done, declared or
computed waves) are planned by the real planner; the scheduler is then driven the way the flow
drives it — start everything ready() offers, let one running task finish (pass or fail, chosen
at random), repeat — and every decision is checked:

* against the definition: a naive O(n) reference scheduler (ReferenceScheduler, below) must
  offer exactly the same tasks in the same order at every step;
* against the rules, from the recorded start/end times: no task starts before each of its
  dependencies passed; two tasks that share a file never run at once; never more running
  than max_concurrency (one after the sequential fallback); ``waves`` never starts a task of
  a later wave before every task of the earlier waves finished; a failure blocks exactly its
  transitive dependents; fail-fast starts nothing after the first failure; a run ends with
  every task accounted for.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tasks_lib.planner import Plan, plan_spec
from tasks_lib.scheduler import Scheduler
from tasks_lib.spec import DeclaredWave, LoadedSpec, SpecUnit
from tasks_lib.state import FINISHED, SATISFIED, TaskStatus

WAITING, RUNNING = TaskStatus.PENDING, TaskStatus.IN_PROGRESS
PASS, FAIL, BLOCKED, DONE = (TaskStatus.PASS, TaskStatus.FAIL, TaskStatus.BLOCKED, TaskStatus.DONE)

# --------------------------------------------------------------------------- the definition


@dataclass
class ReferenceScheduler:
    """The scheduler's rules written plainly, O(n) per question (the original code)."""

    plan: Plan
    initial: dict[str, TaskStatus]
    policy: str
    max_concurrency: int
    fail_fast: bool = False
    state: dict[str, TaskStatus] = field(default_factory=dict)
    sequential_fallback: bool = False
    stopped: bool = False

    def __post_init__(self) -> None:
        self.deps = {
            n: [a for a, b in self.plan.dependency_edges if b == n] for n in self.plan.order
        }
        self.after = {
            n: [a for a, b in self.plan.conflict_edges if b == n] for n in self.plan.order
        }
        self.rank = {n: i for i, n in enumerate(self.plan.order)}
        for n in self.plan.order:
            done = self.initial.get(n) in (TaskStatus.PASS, TaskStatus.SKIPPED)
            self.state[n] = DONE if done else WAITING
        self.checked: set[int] = set()

    def can_start(self, n: str) -> bool:
        return (
            self.state[n] == WAITING
            and all(self.state[d] in SATISFIED for d in self.deps[n])
            and all(self.state[c] in FINISHED for c in self.after[n])
        )

    def current_wave_tasks(self) -> list[str] | None:
        for w in self.plan.waves:
            if not all(self.state[t] in FINISHED for t in w.tasks):
                return w.tasks
        return None

    def ready(self) -> list[str]:
        if self.stopped:
            return []
        running = sum(1 for s in self.state.values() if s == RUNNING)
        free = (1 if self.sequential_fallback else self.max_concurrency) - running
        if free <= 0:
            return []
        if self.policy == "waves":
            pool = self.current_wave_tasks() or []
            cands = sorted((n for n in pool if self.can_start(n)), key=self.rank.__getitem__)
        else:
            cands = sorted(
                (n for n in self.plan.order if self.can_start(n)),
                key=lambda n: (-self.plan.remaining[n], -self.plan.downstream[n], self.rank[n]),
            )
        return cands[:free]

    def start(self, n: str) -> None:
        assert self.can_start(n)
        self.state[n] = RUNNING

    def finish(self, n: str, passed: bool) -> None:
        self.state[n] = PASS if passed else FAIL
        if not passed:
            stack = [b for a, b in self.plan.dependency_edges if a == n]
            while stack:
                d = stack.pop()
                if self.state[d] == WAITING:
                    self.state[d] = BLOCKED
                    stack.extend(b for a, b in self.plan.dependency_edges if a == d)
            if self.fail_fast:
                self.stopped = True
        wave = self.plan.wave_of.get(n)
        if wave is None or wave in self.checked or self.sequential_fallback:
            return
        members = [t for t, w in self.plan.wave_of.items() if w == wave]
        if any(self.state[t] in (WAITING, RUNNING) for t in members):
            return
        self.checked.add(wave)
        ran = [t for t in members if self.state[t] in (PASS, FAIL)]
        if len(ran) >= 2 and all(self.state[t] == FAIL for t in ran):
            self.sequential_fallback = True


# --------------------------------------------------------------------------- random plans


def make_spec(units: list[SpecUnit], declared: list[DeclaredWave] | None) -> LoadedSpec:
    return LoadedSpec(
        name="t",
        folder=Path("."),
        tasks_path=Path("tasks.json"),
        format="agent-os",
        units=units,
        declared_waves=declared,
    )


@st.composite
def cases(draw) -> dict:
    n = draw(st.integers(1, 14))
    ids = [str(i + 1) for i in range(n)]
    deps = {
        t: sorted({ids[j] for j in draw(st.lists(st.integers(0, i - 1), max_size=3))}, key=int)
        if i
        else []
        for i, t in enumerate(ids)
    }
    shared = draw(
        st.lists(st.sampled_from(["a.py", "b.py", "src/c/", "src/c/d.py"]), min_size=n, max_size=n)
    )
    files = {
        t: [f"own/{t}.py"] + ([shared[i]] if draw(st.booleans()) else []) for i, t in enumerate(ids)
    }
    with_minutes = draw(st.booleans())
    units = [
        SpecUnit(
            id=t,
            description=f"task {t}",
            deps=deps[t],
            files=files[t],
            estimate_minutes=draw(st.integers(1, 9)) if with_minutes else None,
        )
        for t in ids
    ]
    declared = None
    if draw(st.booleans()):  # declared waves: a valid layering, sometimes with gaps
        wave: dict[str, int] = {}
        for i, t in enumerate(ids):
            before = [wave[d] for d in deps[t]]
            before += [
                wave[o]
                for o in ids[:i]
                if set(files[o]) & set(files[t])
                or any(
                    f.endswith("/") and g.startswith(f) or g.endswith("/") and f.startswith(g)
                    for f in files[o]
                    for g in files[t]
                )
            ]
            wave[t] = max(before, default=0) + 1 + draw(st.integers(0, 1))
        declared = [
            DeclaredWave(w, [t for t in ids if wave[t] == w]) for w in sorted(set(wave.values()))
        ]
    initial = {
        t: draw(
            st.sampled_from(
                [TaskStatus.PENDING] * 4
                + [TaskStatus.PASS, TaskStatus.SKIPPED, TaskStatus.FAIL, TaskStatus.IN_PROGRESS]
            )
        )
        for t in ids
    }
    return {
        "spec": make_spec(units, declared),
        "initial": initial,
        "slots": draw(st.integers(1, 4)),
        "policy": draw(st.sampled_from(["eager", "waves"])),
        "fail_fast": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "fail_rate": draw(st.sampled_from([0.0, 0.0, 0.2, 0.5, 1.0])),
    }


# --------------------------------------------------------------------------- the driver


@dataclass
class Trace:
    start: dict[str, int] = field(default_factory=dict)
    end: dict[str, int] = field(default_factory=dict)
    passed: dict[str, bool] = field(default_factory=dict)
    running_at_start: dict[str, int] = field(default_factory=dict)
    fallback_at: int | None = None
    first_failure_at: int | None = None


def drive(plan: Plan, case: dict) -> tuple[Scheduler, Trace]:
    """Run the scheduler as the flow does, on a clock that ticks once per event."""
    rng = random.Random(case["seed"])
    sched = Scheduler(
        plan,
        case["initial"],
        policy=case["policy"],
        max_concurrency=case["slots"],
        fail_fast=case["fail_fast"],
    )
    ref = ReferenceScheduler(
        plan, case["initial"], case["policy"], case["slots"], case["fail_fast"]
    )
    trace = Trace()
    clock = 0
    running: list[str] = []
    for _ in range(10 * len(plan.order) + 10):
        offered = sched.ready()
        assert offered == ref.ready(), clock
        for tid in offered:
            clock += 1
            sched.start(tid)
            ref.start(tid)
            running.append(tid)
            trace.start[tid] = clock
            trace.running_at_start[tid] = len(running)
        if not running:
            assert sched.is_finished()
            return sched, trace
        tid = running.pop(rng.randrange(len(running)))
        passed = rng.random() >= case["fail_rate"]
        clock += 1
        trace.end[tid] = clock
        trace.passed[tid] = passed
        if not passed and trace.first_failure_at is None:
            trace.first_failure_at = clock
        was_sequential = sched.sequential_fallback
        blocked = sched.finish(tid, PASS if passed else FAIL, "tests fail")
        ref.finish(tid, passed)
        assert sched.state == ref.state
        assert sched.sequential_fallback == ref.sequential_fallback
        assert all(sched.state[b] == BLOCKED for b in blocked)
        if sched.sequential_fallback and not was_sequential:
            trace.fallback_at = clock
    raise AssertionError("the run did not end")


def transitive(edges: list[tuple[str, str]], roots: set[str]) -> set[str]:
    out: set[str] = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        for a, b in edges:
            if a == n and b not in out:
                out.add(b)
                stack.append(b)
    return out


# --------------------------------------------------------------------------- the properties


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_every_decision_follows_the_rules(case):
    plan = plan_spec(case["spec"], max_concurrency=case["slots"])
    assume(not plan.errors)
    sched, tr = drive(plan, case)
    done_before = {
        t for t, s in case["initial"].items() if s in (TaskStatus.PASS, TaskStatus.SKIPPED)
    }

    # tasks done before the run never run; the others run at most once
    assert not done_before & set(tr.start)
    for tid, t0 in tr.start.items():
        # every dependency passed (in this run, or before it) before the task started
        for a, b in plan.dependency_edges:
            if b == tid:
                assert a in done_before or (tr.passed.get(a) and tr.end[a] < t0), (a, tid)
        # a conflicting task ordered first had finished, one ordered after had not started
        for a, b in plan.conflict_edges:
            if b == tid and a in tr.start:
                assert tr.end[a] < t0, (a, tid)
        # never two conflicting tasks at once, whatever the orientation
        for c in plan.conflicts:
            if tid in (c.a, c.b):
                other = c.b if tid == c.a else c.a
                if other in tr.start:
                    s, e = tr.start[other], tr.end[other]
                    assert not (s < t0 < e), (tid, other)
        # never more than the slots (one after the sequential fallback)
        limit = 1 if tr.fallback_at is not None and t0 > tr.fallback_at else case["slots"]
        assert tr.running_at_start[tid] <= limit, (tid, tr.running_at_start[tid], limit)
        # fail-fast: nothing starts after the first failure
        if case["fail_fast"] and tr.first_failure_at is not None:
            assert t0 < tr.first_failure_at
    # waves: a barrier between consecutive waves
    if case["policy"] == "waves":
        for k, w in enumerate(plan.waves):
            later = [t for v in plan.waves[k + 1 :] for t in v.tasks if t in tr.start]
            ends = [tr.end[t] for t in w.tasks if t in tr.end]
            if later and ends:
                assert max(ends) < min(tr.start[t] for t in later), (w.wave_id, later)
    # a failure blocks exactly its transitive dependents that had not run
    failed = {t for t, p in tr.passed.items() if not p}
    expected_blocked = transitive(plan.dependency_edges, failed) - done_before - set(tr.start)
    blocked = {t for t, s in sched.state.items() if s == BLOCKED}
    if not case["fail_fast"]:
        assert blocked == expected_blocked
    else:
        assert blocked <= expected_blocked
    # every task is accounted for: without fail-fast, everything not blocked ran
    for t, s in sched.state.items():
        if t in done_before:
            assert s == DONE
        elif not case["fail_fast"]:
            assert s in (PASS, FAIL, BLOCKED), (t, s)
        else:
            # held back by fail-fast: still pending when the run ends
            assert s in (PASS, FAIL, BLOCKED, WAITING), (t, s)
    if case["fail_fast"] and failed:
        assert sched.stopped


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_eager_is_work_conserving_and_never_slower_than_waves_on_equal_tasks(case):
    """With unit durations and no failures, eager never idles a slot that a task could use,
    and its makespan is at most the barrier's."""
    case = {
        **case,
        "fail_rate": 0.0,
        "fail_fast": False,
        "initial": {t: TaskStatus.PENDING for t in case["initial"]},
    }
    plan = plan_spec(case["spec"], max_concurrency=case["slots"])
    assume(not plan.errors)
    spans = {}
    for policy in ("eager", "waves"):
        sched = Scheduler(plan, case["initial"], policy=policy, max_concurrency=case["slots"])
        t, running, end = 0, [], 0
        while True:
            for tid in sched.ready():
                sched.start(tid)
                running.append(tid)
            if policy == "eager":
                startable = [
                    n
                    for n in plan.order
                    if sched.state[n] == WAITING
                    and all(sched.state[a] in SATISFIED for a in plan.predecessors[n])
                ]
                assert not startable or len(running) == case["slots"]
            if not running:
                assert sched.is_finished()
                break
            t += 1  # every running task takes one tick
            for tid in running:
                sched.finish(tid, PASS)
            running = []
            end = t
        spans[policy] = end
    assert spans["eager"] <= spans["waves"]


def test_ready_is_a_peek_and_the_order_is_longest_remaining_path_first():
    units = [
        SpecUnit(id="1", description="", estimate_minutes=1),
        SpecUnit(id="2", description="", estimate_minutes=5),
        SpecUnit(id="3", description="", estimate_minutes=1),
        SpecUnit(id="4", description="", deps=["3"], estimate_minutes=9),
    ]
    plan = plan_spec(make_spec(units, None), max_concurrency=2)
    sched = Scheduler(plan, {}, policy="eager", max_concurrency=2)
    # remaining: 3 -> 10 (3 then 4), 2 -> 5, 1 -> 1
    assert sched.ready() == ["3", "2"]
    assert sched.ready() == ["3", "2"]  # asking again changes nothing
    sched.start("2")
    assert sched.ready() == ["3"]
    sched.start("3")
    assert sched.ready() == []
    sched.finish("3", PASS)
    assert sched.ready() == ["4"]


def test_waves_wait_for_the_whole_wave_eager_does_not():
    # 1 (long) and 2 (short) in wave 1; 3 depends on 2 only
    units = [
        SpecUnit(id="1", description=""),
        SpecUnit(id="2", description=""),
        SpecUnit(id="3", description="", deps=["2"]),
    ]
    plan = plan_spec(make_spec(units, None), max_concurrency=4)
    for policy, expected in (("eager", ["3"]), ("waves", [])):
        sched = Scheduler(plan, {}, policy=policy, max_concurrency=4)
        for t in sched.ready():
            sched.start(t)
        sched.finish("2", PASS)
        assert sched.ready() == expected, policy


def test_a_conflict_orders_but_a_failure_does_not_block_through_it():
    # 1 and 2 share a file (conflict edge 1 -> 2); 3 depends on 1
    units = [
        SpecUnit(id="1", description="", files=["a.py"]),
        SpecUnit(id="2", description="", files=["a.py"]),
        SpecUnit(id="3", description="", deps=["1"]),
    ]
    plan = plan_spec(make_spec(units, None), max_concurrency=4)
    assert plan.conflict_edges == [("1", "2")]
    sched = Scheduler(plan, {}, policy="eager", max_concurrency=4)
    assert sched.ready() == ["1"]
    sched.start("1")
    assert sched.finish("1", FAIL, "tests fail") == ["3"]
    assert sched.blockers["3"] == "blocked by 1: tests fail"
    assert sched.ready() == ["2"]  # it waited for 1 to finish, not to pass


def test_blocking_failures_keeps_ids_apart_from_messages():
    """Regression: blocking_failures() parsed ids back out of "blocked by <id>: <reason>", so a
    task id holding ":" (e.g. "api:auth") was cut at the colon and never reported."""
    units = [
        SpecUnit(id="api:auth", description=""),
        SpecUnit(id="ui", description="", deps=["api:auth"]),
        SpecUnit(id="docs", description=""),
    ]
    plan = plan_spec(make_spec(units, None), max_concurrency=4)
    sched = Scheduler(plan, {}, policy="eager", max_concurrency=4)
    for t in sched.ready():
        sched.start(t)
    assert sched.finish("api:auth", FAIL, "x: y") == ["ui"]
    sched.finish("docs", FAIL)
    assert sched.blockers["ui"] == "blocked by api:auth: x: y"
    assert sched.blocked_by == {"ui": "api:auth"}
    assert sched.blocking_failures() == ["api:auth"]
    assert sched.failed() == ["api:auth", "docs"]


def test_an_agent_that_reports_blocked_ends_blocked_and_blocks_its_dependents():
    units = [SpecUnit(id="1", description=""), SpecUnit(id="2", description="", deps=["1"])]
    plan = plan_spec(make_spec(units, None), max_concurrency=4)
    sched = Scheduler(plan, {}, policy="eager", max_concurrency=4)
    sched.start("1")
    assert sched.finish("1", BLOCKED, "needs a key") == ["2"]
    assert sched.state == {"1": BLOCKED, "2": BLOCKED}
    assert sched.failed() == ["1"] and sched.blocked_by == {"2": "1"}
    assert sched.is_finished()
    other = Scheduler(plan, {}, max_concurrency=1)
    other.start("1")
    with pytest.raises(ValueError, match="cannot end its task"):
        other.finish("1", WAITING)


def test_unknown_policy_is_refused():
    plan = plan_spec(make_spec([SpecUnit(id="1", description="")], None))
    with pytest.raises(ValueError, match='unknown scheduler "fast"'):
        Scheduler(plan, {}, policy="fast")


def test_five_thousand_tasks_schedule_in_well_under_a_second():
    """Regression: ready() used to scan every task (O(n) per start, O(n^2) per run)."""
    import time

    rng = random.Random(5)
    units = []
    for i in range(5000):
        deps = sorted(
            {str(j + 1) for j in rng.sample(range(max(0, i - 30), i), min(i, 2))}, key=int
        )
        units.append(SpecUnit(id=str(i + 1), description="", deps=deps))
    plan = plan_spec(make_spec(units, None), max_concurrency=16)
    for policy in ("eager", "waves"):
        sched = Scheduler(plan, {}, policy=policy, max_concurrency=16)
        t = time.perf_counter()
        running: list[str] = []
        while True:
            for tid in sched.ready():
                sched.start(tid)
                running.append(tid)
            if not running:
                break
            sched.finish(running.pop(0), PASS)
        assert all(s == PASS for s in sched.state.values())
        assert time.perf_counter() - t < 2.0, policy  # about 0.1 s on a laptop
