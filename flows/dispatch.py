"""How a worker is run: the dispatch seam.

A :class:`Dispatch` takes one task's :class:`~tasks_lib.tasks.WorkerInput` (plain values) and
returns the task's attempt records once its worker is done (every attempt, the last one
decides). The run loop neither knows nor cares where the worker ran.

Implementations:

* :class:`LocalDispatch`: the worker is a Prefect task run (``run_worker``) in the flow's own
  process; its agent is a child process of this machine. The task run's inputs name the task
  runs of the task's dependencies (``wait_for``), so Prefect's graph shows the spec's own
  dependency graph.
* :class:`PoolDispatch`: each attempt is a flow run of the ``run-task`` deployment on a work
  pool (flows/run_task.py), started with ``run_deployment(..., as_subflow=True)`` so the UI
  shows it under the spec's flow run; the task run shares nothing with this one but the
  Prefect API and the git remote. Its attempt record comes back as an artifact; a passed
  attempt's branch is fetched from the remote for the merge queue.
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


TERMINAL_WAIT_S = 60.0
"""After cancelling a task run, how long to wait for it to end before giving up on it."""
EXTRA_S = 600.0
"""What a running task run may take beyond its agent's timeout (clone, setup, push)."""


class PoolDispatch:
    """Workers as flow runs of the ``run-task`` deployment ``deployment`` on a work pool;
    ``retries`` extra attempts each for retryable outcomes (the same rule as local). Time
    queued in the pool does not count against an attempt's timeout; ``queue_timeout``
    bounds it (None: wait for a worker as long as it takes)."""

    def __init__(
        self,
        *,
        retries: int,
        deployment: str,
        git_url: str,
        repo: str,
        queue_timeout: float | None = None,
        poll_s: float = 0.5,
    ):
        self.retries, self.deployment, self.git_url = retries, deployment, git_url
        self.repo, self.queue_timeout, self.poll_s = repo, queue_timeout, poll_s

    async def run(
        self, inp: WorkerInput, *, name: str, after: Sequence[str] = ()
    ) -> list[AttemptRecord]:
        from tasks_lib.results import RETRYABLE_OUTCOMES
        from tasks_lib.workspaces import remote

        folder = RunFolder(inp.spec_dir, inp.run_id)
        prompt_file = folder.prompt_path(inp.task_id)
        if not prompt_file.exists() or prompt_file.read_text(encoding="utf-8") != inp.prompt:
            folder.write_prompt(inp.task_id, inp.prompt)
        records = folder.attempts(inp.task_id)
        for _ in range(self.retries + 1):
            record = await self._attempt(inp, records, name)
            if record.passed and record.work is not None:
                try:
                    await asyncio.to_thread(
                        remote.fetch_branch, self.repo, self.git_url, record.work.branch
                    )
                except Exception as exc:  # noqa: BLE001 - its work cannot be merged here
                    record = record.model_copy(
                        update={
                            "outcome": Outcome.CRASHED,
                            "reason": f"could not fetch {record.work.branch}: {exc}",
                        }
                    )
            folder.write_attempt(record)
            records.append(record)
            if record.outcome not in RETRYABLE_OUTCOMES or record.final:
                break
        return records

    async def _attempt(
        self, inp: WorkerInput, previous: list[AttemptRecord], name: str
    ) -> AttemptRecord:
        from prefect.deployments import run_deployment

        from tasks_lib.tasks import PoolAttempt, attempt_timeout
        from tasks_lib.workspaces import git

        start = git.rev_parse(self.repo, inp.workspace.integration_branch or "") or ""
        job = PoolAttempt(
            worker=inp.model_copy(update={"agent_slots": None, "slot_key": []}),
            git_url=self.git_url,
            start=start,
            previous=[r.plain() for r in previous],
        )
        attempt = len(previous) + 1
        limit = attempt_timeout(inp.timeout_seconds, previous) + EXTRA_S
        flow_run = await run_deployment(  # type: ignore[misc]
            self.deployment,
            parameters={"attempt": job.model_dump(mode="json")},
            timeout=0,
            as_subflow=True,
            tags=inp.tags,
        )
        try:
            return await self._wait(flow_run.id, inp.task_id, attempt, limit)
        except BaseException:  # the run is stopping: so does the task run (and its agent)
            await asyncio.shield(self._cancel(flow_run.id))
            raise

    async def _wait(self, flow_run_id: Any, tid: str, attempt: int, limit: float) -> AttemptRecord:
        from prefect.client.orchestration import get_client

        queued_at, running_at = time.time(), None
        async with get_client() as client:
            while True:
                fr = await client.read_flow_run(flow_run_id)
                state = fr.state
                now = time.time()
                if state is not None and state.is_final():
                    break
                if state is not None and state.is_running():
                    running_at = running_at or now
                    if now - running_at > limit:
                        await self._cancel(flow_run_id)
                        return _lost(
                            tid,
                            attempt,
                            running_at,
                            f"the task run {flow_run_id} did not end within {limit:g} s "
                            "of starting: cancelled",
                        )
                elif self.queue_timeout is not None and now - queued_at > self.queue_timeout:
                    await self._cancel(flow_run_id)
                    return _lost(
                        tid,
                        attempt,
                        queued_at,
                        f"no worker of the pool took the task run within --queue-timeout "
                        f"{self.queue_timeout:g} s: cancelled",
                        final=True,
                    )
                await asyncio.sleep(self.poll_s)
            record = await _artifact_record(client, flow_run_id)
        if record is not None:
            return record
        what = state.type.value.lower() if state is not None else "gone"
        return _lost(
            tid,
            attempt,
            running_at or queued_at,
            f"the task run {flow_run_id} ended {what} without a record"
            + (f": {state.message}" if state is not None and state.message else ""),
        )

    async def _cancel(self, flow_run_id: Any) -> None:
        await cancel_task_run(flow_run_id)


async def cancel_task_run(flow_run_id: Any) -> None:
    """Ask the task run's worker to stop it (its agent dies with it)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    try:
        async with get_client() as client:
            fr = await client.read_flow_run(flow_run_id)
            if fr.state is not None and fr.state.is_final():
                return
            if fr.state is not None and (fr.state.is_scheduled() or fr.state.is_pending()):
                from prefect.states import Cancelled

                await client.set_flow_run_state(flow_run_id, Cancelled(), force=True)
                return
            await client.set_flow_run_state(flow_run_id, Cancelling(), force=True)
    except Exception:  # noqa: BLE001 - best effort: the run is stopping anyway
        return


async def cancel_leftover_task_runs(deployment: str, spec_dir: str, run_id: str) -> int:
    """Task runs of an earlier run of this spec still queued or running (its orchestrator
    was killed): cancelled, so a rerun never has two agents on one task. Returns how many."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    name = deployment.split("/", 1)[-1]
    live = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
    async with get_client() as client:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=live))
            ),
        )
    stale = []
    for fr in runs:
        worker = ((fr.parameters or {}).get("attempt") or {}).get("worker") or {}
        if worker.get("spec_dir") == spec_dir and worker.get("run_id") != run_id:
            stale.append(fr.id)
    for flow_run_id in stale:
        await cancel_task_run(flow_run_id)
    return len(stale)


async def _artifact_record(client: Any, flow_run_id: Any) -> AttemptRecord | None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.run_task import record_from_artifact
    from tasks_lib.tasks import ATTEMPT_ARTIFACT

    artifacts = await client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    for art in artifacts:
        if (art.key or "").startswith(ATTEMPT_ARTIFACT) and isinstance(art.data, str):
            return record_from_artifact(art.data)
    return None


def _lost(
    tid: str, attempt: int, started: float, reason: str, final: bool = False
) -> AttemptRecord:
    return AttemptRecord(
        task_id=tid,
        attempt=attempt,
        outcome=Outcome.CRASHED,
        started=started,
        ended=time.time(),
        reason=reason,
        final=final,
    )


__all__ = ["Dispatch", "LocalDispatch", "PoolDispatch", "cancel_leftover_task_runs"]
