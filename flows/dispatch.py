"""How a worker is run: the dispatch seam.

A :class:`Dispatch` takes one task's :class:`~tasks_lib.tasks.WorkerInput` (plain values) and
returns the task's attempt records once its worker is done (every attempt, the last one
decides). The run loop neither knows nor cares where the worker ran.

Implementations:

* :class:`LocalDispatch`: the worker is a Prefect task run (``run_worker``) in the flow's own
  process; its agent is a child process of this machine. The task run's inputs name the task
  runs of the task's dependencies (``wait_for``), so Prefect's graph shows the spec's own
  dependency graph.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Protocol

from tasks_lib.records import AttemptRecord
from tasks_lib.results import Outcome
from tasks_lib.runfolder import RunFolder
from tasks_lib.tasks import WorkerInput, run_worker


class Dispatch(Protocol):
    """Runs workers somewhere."""

    async def run(
        self, inp: WorkerInput, *, name: str, after: Sequence[str] = ()
    ) -> list[AttemptRecord]:
        """Run the worker of ``inp.task_id`` (shown as ``name``) to its end, retries
        included; return its attempt records. ``after``: the tasks it depends on whose
        workers passed in this run (for the UI's graph; the scheduler already waited for
        them). Raises ``asyncio.CancelledError`` when the worker was stopped because the run
        is stopping (its agent is dead)."""
        ...


class LocalDispatch:
    """Workers as Prefect task runs in this process (``run_worker``), ``retries`` extra
    attempts each for retryable outcomes."""

    def __init__(self, *, retries: int):
        # One Task object for every worker of the run: with_options costs 4-8 ms per call
        # (Prefect reads the function's source to key the task), which was paid per worker.
        self._names: dict[str, str] = {}
        self._worker = run_worker.with_options(
            name="worker",
            retries=retries,
            task_run_name=lambda parameters: self._names[parameters["inp"].task_id],
        )
        self._states: dict[str, Any] = {}  # task id -> its worker's final Prefect state

    async def run(
        self, inp: WorkerInput, *, name: str, after: Sequence[str] = ()
    ) -> list[AttemptRecord]:
        tid = inp.task_id
        self._names[tid] = name[:100]
        # completed states: Prefect records them as the task run's inputs and waits for none
        upstream = [self._states[t] for t in after if t in self._states]
        state = await self._worker(inp, wait_for=upstream or None, return_state=True)
        if state.is_cancelled():  # the worker stopped because this coroutine was cancelled
            raise asyncio.CancelledError
        self._states[tid] = state
        data = await state.result(raise_on_failure=False)
        if isinstance(data, list) and data:
            return [AttemptRecord.model_validate(r) for r in data]
        # our own code failed before the worker handed back a record
        recs = RunFolder(inp.spec_dir, inp.run_id).attempts(tid)
        if recs:
            return recs
        now = time.time()
        return [
            AttemptRecord(
                task_id=tid,
                attempt=1,
                outcome=Outcome.CRASHED,
                started=now,
                ended=now,
                reason=f"worker failed before launching the agent: {data!r}",
            )
        ]


__all__ = ["Dispatch", "LocalDispatch"]
