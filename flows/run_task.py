"""The ``run-task`` flow: one attempt at one task, on a pool worker (``dispatch: pool``).

The spec's flow run starts one flow run of this flow per attempt (``run_deployment(...,
as_subflow=True)``, flows/dispatch.py), on a deployment of a work pool: a process worker
anywhere, a container of a docker or Kubernetes worker. It shares nothing with the spec's
flow run but the Prefect API and a git remote:

1. **clone or fetch** the remote into this machine's clone (one per URL, reused by every task
   run here) and make the commit it was sent present;
2. **run the worker** (tasks_lib.tasks.run_worker, the same code as local dispatch, one
   attempt) in a worktree of that clone started at that commit: the agent's output streams
   into this flow run's logs; what it left is committed on the task branch;
3. **push** the task branch, park the worktree for the next task run here;
4. **hand back** the attempt record as an artifact of this flow run (``specwave-attempt-*``,
   JSON in markdown): it lives in the Prefect API's database, so the orchestrator reads it
   wherever the task ran, with no disk or result storage shared (on Kubernetes, no volume).

Every agent carries this task run's own marker, and a watchdog kills them all if this process
dies (``docker kill``, kill -9 of the flow-run process): nothing outlives the attempt.
"""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from tasks_lib.agents.process import MARKER_ENV
from tasks_lib.agents.watchdog import Watchdog
from tasks_lib.records import AttemptRecord
from tasks_lib.results import Outcome
from tasks_lib.runfolder import RunFolder
from tasks_lib.tasks import ATTEMPT_ARTIFACT, PoolAttempt, run_worker
from tasks_lib.workspaces import git, remote
from tasks_lib.workspaces.worktree import park, worktrees_root


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    job = (flow_run.parameters or {}).get("attempt") or {}
    worker = job.get("worker") or {}
    n = len(job.get("previous") or []) + 1
    return f"{worker.get('task_id', 'task')} · attempt {n}"


@flow(name="run-task", flow_run_name=_flow_run_name, persist_result=False, log_prints=False)
async def run_task(attempt: dict[str, Any]) -> dict[str, Any]:
    """Run one attempt of one task in a worktree of a clone of ``attempt.git_url``; push
    its branch; return (and publish as an artifact) its attempt record.

    Args:
        attempt: a :class:`~tasks_lib.tasks.PoolAttempt` as plain values.
    """
    job = PoolAttempt.model_validate(attempt)
    inp, logger = job.worker, get_run_logger()
    started = time.time()
    host = socket.gethostname()
    marker = f"specwave-task-{uuid.uuid4().hex}"
    watchdog = Watchdog(marker)
    watchdog.start()
    try:
        try:
            clone = await asyncio.to_thread(remote.cached_clone, job.git_url)
            branch = inp.workspace.integration_branch or ""
            await asyncio.to_thread(remote.fetch_start, clone, branch, job.start)
        except git.GitError as exc:
            record = _crashed(inp.task_id, len(job.previous) + 1, started, str(exc))
            return await _hand_back(record, logger)
        scratch = Path(tempfile.mkdtemp(prefix="specwave-task-"))  # this attempt's run folder
        folder = RunFolder(str(scratch), inp.run_id)
        for rec in job.previous:
            folder.write_attempt(AttemptRecord.model_validate(rec))
        env = {MARKER_ENV: marker}
        local = inp.model_copy(
            update={
                "spec_dir": str(scratch),
                "agent": {**inp.agent, "env": {**inp.agent.get("env", {}), **env}},
                "agent_slots": None,
                "workspace": inp.workspace.model_copy(
                    update={
                        "path": str(clone),
                        "worktrees_dir": str(worktrees_root(str(clone))),
                        "start": job.start,
                        "env": env,
                        "include": [],  # the clone holds no ignored files to copy
                    }
                ),
            }
        )
        state = await run_worker.with_options(retries=0)(local, return_state=True)
        data = await state.result(raise_on_failure=False)
        if isinstance(data, list) and data:
            record = AttemptRecord.model_validate(data[-1])
        elif state.is_cancelled():
            raise asyncio.CancelledError
        else:
            record = _crashed(
                inp.task_id, len(job.previous) + 1, started, f"the worker failed: {data!r}"
            )
        if record.work is not None:
            record.work.host = host
            worktree = record.work.worktree
            try:
                await asyncio.to_thread(remote.push_branch, clone, record.work.branch)
            except git.GitError as exc:
                record = record.model_copy(
                    update={"outcome": Outcome.CRASHED, "reason": f"push failed: {exc}"}
                )
            # its branch is on the remote: the worktree is the next task run's here
            await asyncio.to_thread(park, local.workspace, worktree)
        return await _hand_back(record, logger)
    finally:
        await asyncio.to_thread(watchdog.stop)


def _crashed(task_id: str, attempt: int, started: float, reason: str) -> AttemptRecord:
    return AttemptRecord(
        task_id=task_id,
        attempt=attempt,
        outcome=Outcome.CRASHED,
        started=started,
        ended=time.time(),
        reason=reason[:500],
    )


async def _hand_back(record: AttemptRecord, logger: Any) -> dict[str, Any]:
    """The record as this flow run's artifact (what the orchestrator reads)."""
    from prefect.artifacts import acreate_markdown_artifact
    from prefect.runtime import flow_run

    plain = record.plain()
    text = (
        f"**{record.task_id}**, attempt {record.attempt}: {record.outcome.value}"
        + (f" — {record.reason}" if record.reason else "")
        + "\n\n```json\n"
        + json.dumps(plain, indent=1)
        + "\n```\n"
    )
    await acreate_markdown_artifact(
        text,
        key=f"{ATTEMPT_ARTIFACT}-{flow_run.id}",
        description=f"specwave attempt record of task {record.task_id}",
    )
    level = logger.info if record.passed else logger.error
    level(f"[{record.task_id}] attempt {record.attempt}: {record.outcome.value}")
    return plain


def record_from_artifact(text: str) -> AttemptRecord | None:
    """The attempt record in a ``run-task`` artifact's markdown; None when it has none."""
    start = text.find("```json\n")
    end = text.rfind("\n```")
    if start < 0 or end <= start:
        return None
    return AttemptRecord.model_validate(json.loads(text[start + 8 : end]))


__all__ = ["record_from_artifact", "run_task"]
