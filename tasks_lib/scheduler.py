"""Which task starts next: a pure state machine over a :class:`Plan` (no I/O, no clocks).

Two policies, same failure semantics:

* ``eager`` (default): a task starts as soon as every dependency has passed, every task it
  conflicts with that is ordered before it has finished, and a slot is free. Ready tasks are
  taken longest-remaining-path first (then most downstream tasks, then plan order).
* ``waves``: the original design's barrier — wave N+1 starts only when every task of wave N
  has finished.

Failure semantics (both policies):

* a task that does not pass blocks its transitive *dependents* (never tasks it merely conflicts
  with: those run after it either way); independent tasks keep running;
* ``fail_fast``: after the first failure no new worker starts; running workers finish;
* if every worker of a planned wave fails (at least two ran), the rest of the run is sequential
  (one worker at a time), the original design's "all workers fail → fall back to sequential";
* tasks already done in the file (pass, skipped) are not run; everything else (pending,
  in_progress left by a dead run, fail, blocked) runs again.

States are :class:`~tasks_lib.state.TaskStatus` values, the vocabulary the run loop, the
report and the plan file share: ``pending`` (waiting; still pending when the run ends without
starting it), ``in_progress``, ``pass``, ``fail``, ``blocked`` (by a failed dependency, or
the agent said so), ``done`` (done before this run). Which task blocked which is kept as ids
(:attr:`Scheduler.blocked_by`), apart from the messages (:attr:`Scheduler.blockers`).

Cost: every transition is O(log n + its edges) — a count of unmet predecessors per task and
a heap of the ready ones — so a 5,000-task run does not pay O(n) per started task
(tests/test_scheduler.py checks every decision against the O(n) definition).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from tasks_lib.planner import Plan
from tasks_lib.state import DONE_STATUSES, FINISHED, TaskStatus

WAITING, RUNNING = TaskStatus.PENDING, TaskStatus.IN_PROGRESS
#: what a finished worker can make of its task
WORKER_ENDS = frozenset({TaskStatus.PASS, TaskStatus.FAIL, TaskStatus.BLOCKED})


@dataclass
class Scheduler:
    plan: Plan
    initial: dict[str, TaskStatus]
    policy: str = "eager"
    max_concurrency: int = 4
    fail_fast: bool = False
    state: dict[str, TaskStatus] = field(default_factory=dict)
    #: blocked task -> why ("blocked by 2: tests fail"), for people
    blockers: dict[str, str] = field(default_factory=dict)
    #: blocked task -> the id of the task whose failure blocked it, for code
    blocked_by: dict[str, str] = field(default_factory=dict)
    sequential_fallback: bool = False
    stopped: bool = False
    events: list[str] = field(default_factory=list)
    max_running_seen: int = 0

    def __post_init__(self) -> None:
        if self.policy not in ("eager", "waves"):
            raise ValueError(f'unknown scheduler "{self.policy}" — use "eager" or "waves"')
        order = self.plan.order
        self._rank = {n: i for i, n in enumerate(order)}
        self._dependents: dict[str, list[str]] = {n: [] for n in order}
        self._conflict_after: dict[str, list[str]] = {n: [] for n in order}
        # predecessors not yet good enough: a dependency until it passed (or was done), a
        # conflicting task ordered first until it finished (whatever the outcome)
        self._unmet: dict[str, int] = {n: 0 for n in order}
        for a, b in self.plan.dependency_edges:
            self._dependents[a].append(b)
            self._unmet[b] += 1
        for a, b in self.plan.conflict_edges:
            self._conflict_after[a].append(b)
            self._unmet[b] += 1
        self._running: set[str] = set()
        self._waves = [w.tasks for w in self.plan.waves]
        self._wave_index = 0
        self._wave_pos: dict[str, int] = {}  # task -> index in self._waves (waves policy)
        for i, w in enumerate(self._waves):
            for t in w:
                self._wave_pos.setdefault(t, i)
        self._wave_members: dict[int, list[str]] = {}
        for t, wave in self.plan.wave_of.items():
            self._wave_members.setdefault(wave, []).append(t)
        self._fallback_checked: set[int] = set()
        self._ran: set[str] = set()  # tasks whose worker finished in this run
        # ready tasks (WAITING, nothing unmet): one heap (eager: best first) or one heap per
        # wave (waves: plan order). Entries are never removed in place: a popped entry whose
        # task is no longer WAITING is dropped.
        self._heaps: dict[int, list[tuple]] = {}
        for n in order:
            self.state[n] = TaskStatus.DONE if self.initial.get(n) in DONE_STATUSES else WAITING
        for n in order:  # done before the run: counts as passed (pushed once, just below)
            if self.state[n] == TaskStatus.DONE:
                for s in self._dependents[n] + self._conflict_after[n]:
                    self._unmet[s] -= 1
        for n in order:
            if self.state[n] == WAITING and self._unmet[n] == 0:
                self._push(n)

    # ------------------------------------------------------------------ bookkeeping

    def _key(self, n: str) -> tuple:
        if self.policy == "waves":
            return (self._rank[n], n)
        return (-self.plan.remaining.get(n, 0.0), -self.plan.downstream.get(n, 0), self._rank[n], n)

    def rank(self, n: str) -> list[float]:
        """How good ``n`` is to run next, as numbers (smaller first): what ready() sorts by
        (eager: the most work left behind it first; waves: plan order)."""
        return [float(x) for x in self._key(n)[:-1]]

    def _push(self, n: str) -> None:
        slot = self._wave_pos.get(n, -1) if self.policy == "waves" else 0
        heapq.heappush(self._heaps.setdefault(slot, []), self._key(n))

    def _release(self, successors: list[str]) -> None:
        for s in successors:
            self._unmet[s] -= 1
            if self._unmet[s] == 0 and self.state[s] == WAITING:
                self._push(s)

    def _satisfied(self, n: str) -> None:
        """n passed (or was done): its dependents and its conflict successors may go."""
        self._release(self._dependents[n])
        self._release(self._conflict_after[n])

    def _finished_unsatisfied(self, n: str) -> None:
        """n failed or was blocked: only its conflict successors may go (its dependents are
        blocked by the caller)."""
        self._release(self._conflict_after[n])

    # ------------------------------------------------------------------ queries

    @property
    def running(self) -> list[str]:
        return sorted(self._running, key=self._rank.__getitem__)

    @property
    def limit(self) -> int:
        return 1 if self.sequential_fallback else self.max_concurrency

    def _can_start(self, n: str) -> bool:
        return self.state[n] == WAITING and self._unmet[n] == 0

    def current_wave(self) -> int | None:
        """(waves policy) the wave being run, 1-based; None when all are done."""
        self._advance()
        return (
            self.plan.waves[self._wave_index].wave_id
            if self._wave_index < len(self._waves)
            else None
        )

    def _advance(self) -> None:
        while self._wave_index < len(self._waves) and all(
            self.state[t] in FINISHED for t in self._waves[self._wave_index]
        ):
            self._wave_index += 1

    def ready(self) -> list[str]:
        """Tasks to start now (at most the free slots), best first. Call start() on each."""
        if self.stopped:
            return []
        free = self.limit - len(self._running)
        if free <= 0:
            return []
        if self.policy == "waves":
            self._advance()
            if self._wave_index >= len(self._waves):
                return []
            heap = self._heaps.get(self._wave_index)
        else:
            heap = self._heaps.get(0)
        if not heap:
            return []
        out: list[tuple] = []
        while heap and len(out) < free:
            entry = heapq.heappop(heap)
            if self._can_start(entry[-1]):
                out.append(entry)
        for entry in out:  # a peek: the caller starts them (or not)
            heapq.heappush(heap, entry)
        return [e[-1] for e in out]

    def is_finished(self) -> bool:
        """Nothing runs and nothing can start: the run is over (tasks still ``pending`` were
        held back: fail-fast, a stop, or their wave never came)."""
        return not self._running and not self.ready()

    # ------------------------------------------------------------------ transitions

    def start(self, n: str) -> None:
        if not self._can_start(n):
            raise RuntimeError(f'task "{n}" cannot start now (state {self.state[n].value})')
        self.state[n] = RUNNING
        self._running.add(n)
        self.max_running_seen = max(self.max_running_seen, len(self._running))

    def finish(self, n: str, status: TaskStatus, reason: str = "") -> list[str]:
        """Record a finished worker: its task is now ``status`` (pass, fail, or blocked when
        the agent said so). Returns the tasks this newly blocks."""
        if self.state[n] != RUNNING:
            raise RuntimeError(f'task "{n}" is not running')
        if status not in WORKER_ENDS:
            raise ValueError(f'a worker cannot end its task "{status.value}"')
        self._running.discard(n)
        self._ran.add(n)
        self.state[n] = status
        blocked: list[str] = []
        if status == TaskStatus.PASS:
            self._satisfied(n)
        else:
            self._finished_unsatisfied(n)
            root_reason = f"blocked by {n}: {reason}" if reason else f"blocked by {n}"
            stack = list(self._dependents[n])
            while stack:
                d = stack.pop()
                if self.state[d] == WAITING:
                    self.state[d] = TaskStatus.BLOCKED
                    self.blockers[d] = root_reason
                    self.blocked_by[d] = n
                    blocked.append(d)
                    self._finished_unsatisfied(d)
                    stack.extend(self._dependents[d])
            if self.fail_fast and not self.stopped:
                self.stopped = True
                self.events.append(f"fail-fast: {n} did not pass; no new workers start")
        self._check_fallback(n)
        return sorted(blocked, key=self._rank.__getitem__)

    def _check_fallback(self, n: str) -> None:
        wave = self.plan.wave_of.get(n)
        if wave is None or wave in self._fallback_checked or self.sequential_fallback:
            return
        members = self._wave_members.get(wave, [])
        if any(self.state[t] in (WAITING, RUNNING) for t in members):
            return
        self._fallback_checked.add(wave)
        ran = [t for t in members if t in self._ran]
        if len(ran) >= 2 and all(self.state[t] != TaskStatus.PASS for t in ran):
            self.sequential_fallback = True
            self.events.append(
                f"every worker of wave {wave} failed: the rest of the run is sequential"
            )

    def failed(self) -> list[str]:
        """Tasks whose worker ran in this run and did not pass, in plan order."""
        return [n for n in self.plan.order if n in self._ran and self.state[n] != TaskStatus.PASS]

    def blocking_failures(self) -> list[str]:
        """Failed tasks that blocked others (all failed tasks when none did), for the
        fail-fast result."""
        roots = set(self.blocked_by.values())
        failed = self.failed()
        return [n for n in failed if n in roots] or failed
