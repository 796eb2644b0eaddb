"""One vocabulary for a task's state and one for a run's, with their terminal sets.

:class:`TaskStatus` is what a task *is*: in the plan file (normalized from the file's own words,
see :func:`tasks_lib.spec.normalize_status`), in the scheduler while a run goes on, in the run's
result, table and summary. An attempt's :class:`~tasks_lib.results.Outcome` (pass, fail,
blocked, crashed, timeout, parse_error) is a different thing: what one agent run amounted to;
:func:`status_of_outcome` says what it makes of the task.

:class:`RunStatus` is what a run is, in ``run.json``, the flow's result and the Prefect state
it ends in (:func:`prefect_state`, the one mapping).
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class TaskStatus(str, Enum):
    """A task's state. The first six are also plan-file words; ``done`` is a run's word for a
    task that was already done (pass or skipped) before the run started: it is never
    written to a file."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    PASS = "pass"
    FAIL = "fail"
    BLOCKED = "blocked"
    SKIPPED = "skipped"
    DONE = "done"


DONE_STATUSES = frozenset({TaskStatus.PASS, TaskStatus.SKIPPED})
"""Plan-file statuses that count as done for a task's dependents (and are not run again)."""
TERMINAL_STATUSES = frozenset(
    {TaskStatus.PASS, TaskStatus.SKIPPED, TaskStatus.FAIL, TaskStatus.BLOCKED}
)
"""Plan-file statuses of a task that is not waiting and not running."""

SATISFIED = frozenset({TaskStatus.PASS, TaskStatus.DONE})
"""In a run: a dependency in one of these lets its dependents start."""
FINISHED = frozenset({TaskStatus.PASS, TaskStatus.FAIL, TaskStatus.BLOCKED, TaskStatus.DONE})
"""In a run: a task in one of these will not run again in this run."""


def status_of_outcome(outcome: Any) -> TaskStatus:
    """The task's status after its last attempt: pass -> pass, blocked -> blocked (the agent
    says something outside the task stops it), anything else (fail, crashed, timeout,
    parse_error) -> fail."""
    value = getattr(outcome, "value", outcome)
    if value == "pass":
        return TaskStatus.PASS
    if value == "blocked":
        return TaskStatus.BLOCKED
    return TaskStatus.FAIL


class RunStatus(str, Enum):
    """What a run is (``run.json``'s ``status``, the flow result's ``status``)."""

    RUNNING = "running"  # the run is going on (or its orchestrator died without a word)
    SUCCESS = "success"  # every task passed (or was done before)
    PARTIAL = "partial"  # some tasks did not pass; the others ran
    BLOCKED = "blocked"  # fail-fast stopped the run after a failure
    STOPPED = "stopped"  # a reviewer stopped it between waves (approve_waves)
    CANCELLED = "cancelled"  # cancelled from Prefect, or a signal: running tasks are pending
    FAILED = "failed"  # our own error, or a plan-file write that failed
    DIED = "died"  # a later run found it ``running`` with its orchestrator gone
    DRY_RUN = "dry_run"  # planned and prompted, nothing launched

    @property
    def plan_file_word(self) -> str:
        """The word the plan file's ``orchestrator_state.status`` takes ("completed" for a
        successful run, the run status otherwise)."""
        return "completed" if self is RunStatus.SUCCESS else self.value


ENDED_NORMALLY = frozenset(
    {
        RunStatus.SUCCESS,
        RunStatus.PARTIAL,
        RunStatus.BLOCKED,
        RunStatus.STOPPED,
        RunStatus.CANCELLED,
    }
)
"""Runs that wrote every result they had before they ended (crash recovery skips them)."""


def prefect_state(status: RunStatus | str | None, message: str, data: Any = None) -> Any:
    """The Prefect state a run of this status ends in: success -> Completed; stopped and
    cancelled -> Cancelled; partial, blocked, failed -> Failed; died, running or unknown
    (its orchestrator died) -> Crashed."""
    from prefect.states import Cancelled, Completed, Crashed, Failed

    known = {s.value: s for s in RunStatus}
    key = known.get(getattr(status, "value", status))  # type: ignore[arg-type]
    make = {
        RunStatus.SUCCESS: Completed,
        RunStatus.STOPPED: Cancelled,
        RunStatus.CANCELLED: Cancelled,
        RunStatus.PARTIAL: Failed,
        RunStatus.BLOCKED: Failed,
        RunStatus.FAILED: Failed,
    }.get(key, Crashed)  # type: ignore[arg-type]
    return make(message=message, data=data)


__all__ = [
    "DONE_STATUSES",
    "ENDED_NORMALLY",
    "FINISHED",
    "SATISFIED",
    "TERMINAL_STATUSES",
    "RunStatus",
    "TaskStatus",
    "prefect_state",
    "status_of_outcome",
]
