"""The ``execute_spec`` flow: one spec folder, run as concurrent Prefect task runs.

It reads like the original design:

1. **load and validate** the spec (an invalid spec fails the flow with one line per problem);
2. **plan** it (waves, conflicts, critical path);
3. **guard** the run (flows/run_guard.py): one run per spec, recovery from runs that died,
   the agents' marker, a cancel from Prefect;
4. **run the tasks** (flows/run_loop.py): each ready task becomes a worker (flows/dispatch.py:
   a Prefect task run) that launches a coding agent where its workspace says
   (tasks_lib/workspaces); after every worker its result is recorded in the plan file (locked,
   atomic, lossless), the dependents of a failure are blocked, the UI is updated;
5. **finalize**: metrics (measured, not estimated), the run record, the table and the summary.

The flow is async on purpose: a sync flow pays a ~1 s tail per run and runs no cleanup on
SIGTERM. Cancellation (a cancelled flow run, SIGTERM/SIGINT to ``specwave run``) cancels every
running worker, which kills each agent's process tree, and puts those tasks back to
``pending``.

Import it as ``from flows.execute_spec import execute_spec``; its parameters are the public
interface of deployments and scripts.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelled, Failed, State

from flows.dispatch import LocalDispatch, PoolDispatch, cancel_leftover_task_runs
from flows.run_guard import RunGuard
from flows.run_loop import RunLoop, RunSettings
from tasks_lib.agents import parse_agent_config
from tasks_lib.errors import SpecError
from tasks_lib.formats import load_spec
from tasks_lib.planner import Plan, plan_spec
from tasks_lib.prompt import task_prompt
from tasks_lib.runfolder import RunFolder
from tasks_lib.spec import LoadedSpec
from tasks_lib.state import RunStatus
from tasks_lib.store import WriteFailed
from tasks_lib.tasks import agent_task
from tasks_lib.workspaces import WorkspaceSpec
from tasks_lib.workspaces.config import load_worktree_settings
from tasks_lib.workspaces.worktree import worktree_spec


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    folder = str(params.get("spec_folder") or "spec")
    return Path(folder.rstrip("/")).name or "spec"


@agent_task(name="load-and-validate")
async def load_and_validate(
    spec_folder: str, format: str | None, tag: str | None, parallel: bool
) -> LoadedSpec:
    """Read the plan file (+ context); raise with every validation problem."""
    spec = load_spec(Path(spec_folder), format=format, tag=tag, parallel=parallel)
    logger = get_run_logger()
    for w in spec.warnings:
        logger.warning(f"warning: {w}")
    logger.info(f"{spec.name}: {len(spec.units)} tasks ({spec.format})")
    return spec


@agent_task(name="plan")
async def make_plan(spec: LoadedSpec, max_concurrency: int | None, replan: bool) -> Plan:
    plan = plan_spec(spec, max_concurrency=max_concurrency, replan=replan)
    if plan.errors:
        raise SpecError(plan.errors)
    logger = get_run_logger()
    logger.info(
        f"plan: {plan.mode}, {len(plan.waves)} waves ({plan.source}); critical path "
        f"{' → '.join(plan.critical_path)}; best speed-up {plan.estimated_speedup:.2f}× "
        f"with {plan.max_concurrency} workers"
    )
    return plan


@flow(name="execute-spec", flow_run_name=_flow_run_name, persist_result=False, log_prints=False)
async def execute_spec(
    spec_folder: str,
    agent: dict[str, Any] | None = None,
    repo: str | None = None,
    max_concurrency: int | None = None,
    retries: int = 1,
    timeout_seconds: float = 1800,
    fail_fast: bool = False,
    dry_run: bool = False,
    scheduler: Literal["eager", "waves"] = "eager",
    replan: bool = False,
    format: str | None = None,
    tag: str | None = None,
    parallel: bool = False,
    approve_waves: bool = False,
    concurrency_limit: str | None = None,
    isolation: Literal["shared", "worktree"] = "shared",
    verify: str | None = None,
    into: str | None = None,
    base: str | None = None,
    keep_branches: bool = False,
    setup: str | None = None,
    include: list[str] | None = None,
    dispatch: Literal["local", "pool"] = "local",
    task_deployment: str = "run-task/specwave-task",
    git_url: str | None = None,
    queue_timeout: float | None = None,
) -> dict[str, Any] | State:
    """Run every pending task of a spec through coding-agent workers, concurrently.

    Args:
        spec_folder: the spec folder (or its plan file).
        agent: the agent config, e.g. ``{"kind": "command", "command": "python a.py
            {prompt_file}"}``.
        repo: the repository the agents work in (default: the current directory).
        max_concurrency: worker slots (default: the spec's max_concurrent_workers, else 4).
        retries: extra attempts for crashed / timed-out / unparseable workers.
        timeout_seconds: first attempt's timeout; a timed-out attempt's retry gets double.
        fail_fast: after the first failure start no new workers.
        dry_run: plan and build the prompts, launch nothing.
        scheduler: ``eager`` (start each task when its dependencies pass) or ``waves``.
        replan: ignore the declared waves and compute them.
        format, tag, parallel: input format options (see ``specwave run --help``).
        approve_waves: pause after each wave until someone approves the next one in the
            Prefect UI (a form: continue / stop, an optional note); implies the ``waves``
            scheduler. Stopping leaves the remaining tasks ``pending``.
        concurrency_limit: name of a Prefect global concurrency limit that every agent
            launch occupies (one slot per running agent), shared by every flow run that
            names it, e.g. ``specwave-agents``. It must exist (``specwave deploy
            --agent-slots N`` or ``prefect gcl create NAME --limit N``). None: no shared
            limit (``max_concurrency`` still bounds this run).
        isolation: ``shared`` (every agent in ``repo`` itself) or ``worktree`` (each task in
            its own git worktree and branch, merged into an integration branch in dependency
            order through the merge queue; ``repo`` is never changed).
        verify: worktree: a command (shlex-split) run after each merge in the integration
            worktree; a failure undoes the merge, e.g. ``"python -m pytest -q"``. ``verify``,
            ``setup``, ``include`` and ``into`` may also come from the spec folder's
            ``specwave-worktree.json`` (a parameter wins).
        into: worktree: the integration branch (default ``specwave/<spec>``).
        base: worktree: what a new integration branch starts from (default ``HEAD``).
        keep_branches: worktree: keep each merged task's branch.
        setup: worktree: a command (shlex-split) run in each new worktree before its agent
            (e.g. ``"npm ci"``); a failure is the attempt's ``crashed``.
        include: worktree: gitignore-style patterns of ignored files (``.env``...) copied
            from ``repo`` into each new worktree, besides the repository's .worktreeinclude.
        dispatch: ``local`` (every worker a task run of this flow run, its agent a child
            process here) or ``pool`` (every attempt a flow run of ``task_deployment`` on
            its work pool, anywhere; needs ``isolation="worktree"`` and a git remote).
        task_deployment: pool: the ``run-task`` deployment (``flow/deployment``) whose
            work pool runs the tasks, e.g. ``run-task/specwave-task-docker``.
        git_url: pool: the remote the task runs clone and push to (default: ``repo``'s
            ``origin``); a local path only for workers on this machine.
        queue_timeout: pool: seconds a task run may wait for a worker before it is
            cancelled and the attempt counted as crashed (None: no bound). Time queued
            never counts against the attempt's timeout.

    Returns:
        A dict with ``status``, ``tasks`` (per-task status, outcome, attempts, blocker),
        ``metrics`` and ``run_dir``.
    """
    spec = await load_and_validate(spec_folder, format, tag, parallel)
    plan = await make_plan(spec, max_concurrency, replan)
    if dry_run:
        return _dry_run(spec, plan)
    agent_cfg = _agent_config(agent)
    if concurrency_limit:
        await _check_concurrency_limit(concurrency_limit)
    policy = _approval_scheduler(approve_waves, scheduler)
    workdir = str(Path(repo or os.getcwd()).resolve())  # noqa: ASYNC240
    run_id, flow_run_id = _run_ids()
    if isolation == "worktree":
        folder = load_worktree_settings(spec.folder)  # the spec's own; parameters win
        workspace = worktree_spec(
            workdir,
            spec.name,
            into=into or folder.into,
            base=base,
            verify=verify or folder.verify,
            keep_branches=keep_branches,
            setup=setup or folder.setup,
            include=[*(include or []), *folder.include],
        ).model_copy(update={"run_id": run_id})
    else:
        workspace = WorkspaceSpec(path=workdir)
    runner: Any = LocalDispatch(retries=retries)
    if dispatch == "pool":
        _no_plain_secrets(agent_cfg.model_dump(mode="json"))
        runner, workspace = await _pool_dispatch(
            workspace, task_deployment, git_url, queue_timeout, retries
        )

    guard, loop = RunGuard(spec, run_id, flow_run_id), None
    try:
        async with guard:
            settings = RunSettings(
                run_id=run_id,
                scheduler=policy,
                agent_kind=agent_cfg.kind,
                agent={
                    **agent_cfg.model_dump(mode="json"),
                    "env": {**agent_cfg.env, **guard.agent_env},
                },
                retries=retries,
                timeout_seconds=timeout_seconds,
                fail_fast=fail_fast,
                # the setup command runs with the run's marker (reaped like an agent)
                workspace=workspace.model_copy(update={"env": guard.agent_env})
                if workspace.kind == "worktree"
                else workspace,
                approve_waves=approve_waves,
                concurrency_limit=concurrency_limit,
            )
            if isinstance(runner, PoolDispatch):  # a killed run's task runs: never two agents
                stale = await cancel_leftover_task_runs(runner.deployment, str(spec.folder), run_id)
                if stale:
                    get_run_logger().warning(
                        f"cancelled {stale} task run(s) an earlier run of this spec left "
                        "running; their tasks run again"
                    )
            loop = RunLoop(spec, plan, settings, runner)
            await loop.run()
            return await loop.finalize()
    except WriteFailed as exc:
        # the plan file cannot be written (disk full, permissions): the loop stopped every
        # agent; the passes its attempt records prove are recorded by the next run
        message = (
            f"the run stopped: {exc}. Passes already proved are kept in the run "
            "folder and recorded by the next run (they are not run again)"
        )
        get_run_logger().error(message)
        return Failed(
            message=message,
            data={**_ended(spec, run_id, RunStatus.FAILED), "error": str(exc), "message": message},
        )
    except asyncio.CancelledError:
        if not guard.cancelled_from_prefect:
            raise  # SIGTERM/SIGINT or a caller's cancel: the flow run crashes, as Prefect does
        # the loop has killed every agent and put the running tasks back to pending; end
        # the flow run Cancelled (not Crashed) and say so
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
        message = (
            f"cancelled from Prefect (flow run {guard.cancelled_from_prefect}): "
            "every agent was stopped; the running tasks are pending again"
        )
        get_run_logger().warning(message)
        return Cancelled(
            message=message,
            data={
                **_ended(spec, run_id, RunStatus.CANCELLED),
                "interrupted": loop.interrupted if loop else [],
                "message": message,
            },
        )


def _no_plain_secrets(agent: dict[str, Any]) -> None:
    """Pool dispatch sends the agent config to every task run as a flow parameter: a secret
    in its env would be stored in the API for every run to read. Refused in one line."""
    from tasks_lib.agents.base import secret_values

    env = {k: str(v) for k, v in (agent.get("env") or {}).items()}
    leaked = [k for k, v in env.items() if v in secret_values(env)]
    if leaked:
        raise SpecError.single(
            "agent",
            f"env {', '.join(sorted(leaked))} would be a secret in every task run's parameters",
            hint="put it in a Prefect Secret block and name it in env_secrets",
        )


async def _pool_dispatch(
    workspace: WorkspaceSpec,
    deployment: str,
    git_url: str | None,
    queue_timeout: float | None,
    retries: int,
) -> tuple[PoolDispatch, WorkspaceSpec]:
    """Pool dispatch's checks (one line each, before anything starts): worktree isolation,
    a deployment that exists, a git URL its workers can use."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from tasks_lib.workspaces import remote

    if workspace.kind != "worktree":
        raise SpecError.single(
            "dispatch",
            "pool dispatch needs worktree isolation (the task runs share only a git remote)",
            hint="pass --isolation worktree (in a git repository with a commit)",
        )
    if not PREFECT_API_URL.value():
        raise SpecError.single(
            "dispatch",
            "pool dispatch needs a Prefect server its workers talk to; this run uses an "
            "ephemeral one",
            hint="start one (prefect server start), set PREFECT_API_URL and start a worker",
        )
    async with get_client() as client:
        try:
            dep = await client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise SpecError.single(
                deployment,
                "no such deployment of the run-task flow",
                hint="create it: specwave deploy (or --docker), or pass --task-pool",
            ) from None
        pool_type = ""
        if dep.work_pool_name:
            pool = await client.read_work_pool(dep.work_pool_name)
            pool_type = pool.type
    url = remote.check_url(git_url, workspace.path, containers=pool_type != "process")
    runner = PoolDispatch(
        retries=retries,
        deployment=deployment,
        git_url=url,
        repo=workspace.path,
        queue_timeout=queue_timeout,
    )
    return runner, workspace.model_copy(update={"git_url": url})


def _dry_run(spec: LoadedSpec, plan: Plan) -> dict[str, Any]:
    """Plan and prompts, exactly as the agents would get them; nothing launched."""
    logger = get_run_logger()
    prompts = {}
    for w in plan.waves:
        for tid in w.tasks:
            prompts[tid] = task_prompt(spec, plan, tid)
            logger.info(f"[{tid}] prompt ({len(prompts[tid])} chars):\n{prompts[tid]}")
    return {
        "status": RunStatus.DRY_RUN.value,
        "plan": plan.to_json(),
        "prompts": prompts,
        "tasks": {u.id: {"status": u.status.value} for u in spec.units},
    }


def _agent_config(agent: dict[str, Any] | None) -> Any:
    if agent is None:
        raise SpecError.single(
            "agent",
            "no agent configured",
            hint='pass agent={"kind": "command", "command": "..."} '
            "(or --agent/--command on the CLI)",
        )
    return parse_agent_config(agent)


def _approval_scheduler(approve_waves: bool, scheduler: str) -> str:
    """approve_waves needs a Prefect server (something must answer the pause form) and the
    waves scheduler (approval happens between waves)."""
    if not approve_waves:
        return scheduler
    if not PREFECT_API_URL.value():
        raise SpecError.single(
            "approve_waves",
            "approving waves needs a Prefect server (its UI "
            "or API answers the pause form); this run uses an ephemeral one",
            hint="start one (prefect server start) and set PREFECT_API_URL="
            "http://127.0.0.1:4200/api",
        )
    if scheduler != "waves":
        get_run_logger().info(
            "approve_waves: using the waves scheduler (approval happens between waves)"
        )
    return "waves"


async def _check_concurrency_limit(name: str) -> None:
    """Fail early (not in every worker) when the shared limit does not exist; warn when it is
    inactive (Prefect then lets every acquisition through)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            limit = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            raise SpecError.single(
                "concurrency_limit",
                f'global concurrency limit "{name}" does not exist',
                hint=f"create it: prefect gcl create {name} --limit 4 "
                f"(or specwave deploy --agent-slots 4 --limit-name {name})",
            ) from None
    if not limit.active:
        get_run_logger().warning(
            f'global concurrency limit "{name}" is inactive: agent launches are not limited by it'
        )


def _run_ids() -> tuple[str, str | None]:
    """(the run id, the flow run id): the run is its flow run, or a local id when there is
    none."""
    from prefect.runtime import flow_run

    rid = str(flow_run.id) if flow_run.id else None
    return rid or time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}", rid


def _ended(spec: LoadedSpec, run_id: str, status: RunStatus) -> dict[str, Any]:
    return {
        "status": status.value,
        "spec": spec.name,
        "run_id": run_id,
        "run_dir": str(RunFolder(spec.folder, run_id).root),
        "tasks_file": str(spec.tasks_path),
    }
