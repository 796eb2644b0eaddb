"""Run the real :class:`~tasks_lib.scheduler.Scheduler` on a virtual clock (no processes).

    makespan = simulate(plan, durations, policy="eager")

Each started task finishes ``durations[task]`` seconds later; the scheduler is asked for ready
tasks after every finish, exactly as the flow loop does. The result is the makespan the
*policy* achieves with zero engine overhead, to set beside the plan's lower bound and beside a
real run's makespan (whose extra is the engine's per-task overhead).
"""

from __future__ import annotations

import heapq
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tasks_lib.planner import Plan  # noqa: E402
from tasks_lib.scheduler import Scheduler  # noqa: E402
from tasks_lib.spec import TaskStatus  # noqa: E402


def simulate(
    plan: Plan,
    durations: dict[str, float],
    policy: str = "eager",
    max_concurrency: int | None = None,
    overhead: float = 0.0,
) -> tuple[float, dict[str, tuple[float, float]]]:
    """Returns (makespan, {task: (start, end)}). ``overhead`` is added to every task."""
    sched = Scheduler(
        plan,
        {n: TaskStatus.PENDING for n in plan.order},
        policy=policy,
        max_concurrency=max_concurrency or plan.max_concurrency,
    )
    now = 0.0
    events: list[tuple[float, int, str]] = []
    spans: dict[str, tuple[float, float]] = {}
    seq = 0
    while True:
        for tid in sched.ready():
            sched.start(tid)
            end = now + durations[tid] + overhead
            spans[tid] = (now, end)
            heapq.heappush(events, (end, seq, tid))
            seq += 1
        if not events:
            if sched.is_finished():
                break
            raise RuntimeError("scheduler stalled: nothing running and nothing ready")
        now, _, tid = heapq.heappop(events)
        sched.finish(tid, TaskStatus.PASS)
        while events and events[0][0] == now:  # simultaneous finishes
            _, _, other = heapq.heappop(events)
            sched.finish(other, TaskStatus.PASS)
    return (max((e for _, e in spans.values()), default=0.0), spans)
