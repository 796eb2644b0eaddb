"""The ``execute_spec`` flow: one spec folder, run as concurrent Prefect task runs.

It reads like the original design:

1. **load and validate** the spec (an invalid spec fails the flow with one line per problem);
2. **plan** it (waves, conflicts, critical path);
3. **run the tasks**: each ready task becomes a ``run_worker`` task run that launches a coding
   agent; after every worker its result is recorded in the plan file (locked, atomic,
   lossless), the dependents of a failure are blocked, the UI artifacts are updated;
4. **finalize**: metrics (measured, not estimated), the run record, the summary artifact.

The flow is async on purpose: a sync flow pays a ~1 s tail per run and runs no cleanup on
SIGTERM. Cancellation (a cancelled flow run, SIGTERM/SIGINT to ``specwave run``) cancels every
running worker, which kills each agent's process tree, and puts those tasks back to
``pending``.

Import it as ``from flows.execute_spec import execute_spec``; its parameters are the public
interface of deployments and scripts.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.input import RunInput
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelled, Completed, Failed
from pydantic import ConfigDict, Field

from tasks_lib.agents import parse_agent_config
from tasks_lib.agents.process import MARKER_ENV, ProcessInfo, reap
from tasks_lib.errors import SpecError
from tasks_lib.formats import document_format, load_spec
from tasks_lib.planner import Plan, plan_spec
from tasks_lib.prompt import TEMPLATE_FILE, build_prompt
from tasks_lib.report import (
    artifact_keys,
    compute_metrics,
    final_blocker,
    iso,
    summary_markdown,
    table_rows,
)
from tasks_lib.runfolder import RunFolder, read_json
from tasks_lib.scheduler import Scheduler, State
from tasks_lib.spec import DONE_STATUSES, LoadedSpec, TaskStatus, id_str
from tasks_lib.store import PlanStore, RunLock, TaskUpdate, WriteFailed
from tasks_lib.tasks import WorkerInput, agent_task, run_worker

DEFAULT_MAX_CONCURRENCY = 4
#: approve_waves: how long a paused run waits for a decision before it fails, and how often
#: it checks for one.
APPROVAL_TIMEOUT_SECONDS = 24 * 3600
APPROVAL_POLL_SECONDS = 1


class WaveApproval(RunInput):
    """The form the Prefect UI shows when a run pauses between waves (approve_waves)."""

    continue_: bool = Field(True, alias="continue", title="Continue",
                            description="Start the next wave (untick to stop the run; the "
                                        "remaining tasks stay pending).")
    note: str = Field("", title="Note", description="Optional note, kept in the run's log "
                                                    "and summary.")

    model_config = ConfigDict(populate_by_name=True)


async def approve_next_wave(done_wave: int, next_wave: int, waves: int) -> WaveApproval:
    """Pause the flow run until someone answers the form (UI: "Resume"; API:
    ``resume_flow_run(id, run_input={"continue": true, "note": "..."})``). Workers are idle
    meanwhile; the task table artifact shows the finished wave. Raises
    ``prefect.exceptions.FlowPauseTimeout`` (the run fails, nothing is running) when nobody
    answers within APPROVAL_TIMEOUT_SECONDS."""
    from prefect.flow_runs import apause_flow_run

    logger = get_run_logger()
    logger.info(f"wave {done_wave} of {waves} finished: waiting for approval to start wave "
                f"{next_wave} (resume the flow run in the Prefect UI: continue or stop)")
    answer = await apause_flow_run(wait_for_input=WaveApproval,
                                   timeout=APPROVAL_TIMEOUT_SECONDS,
                                   poll_interval=APPROVAL_POLL_SECONDS,
                                   key=f"approve-wave-{done_wave}")
    return answer


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    folder = str(params.get("spec_folder") or "spec")
    return Path(folder.rstrip("/")).name or "spec"


@agent_task(name="load-and-validate")
async def load_and_validate(spec_folder: str, format: str | None, tag: str | None,
                            parallel: bool) -> LoadedSpec:
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
    logger.info(f"plan: {plan.mode}, {len(plan.waves)} waves ({plan.source}); critical path "
                f"{' → '.join(plan.critical_path)}; best speed-up {plan.estimated_speedup:.2f}× "
                f"with {plan.max_concurrency} workers")
    return plan


@flow(name="execute-spec", flow_run_name=_flow_run_name, persist_result=False,
      log_prints=False)
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
) -> dict[str, Any]:
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

    Returns:
        A dict with ``status``, ``tasks`` (per-task status, outcome, attempts, blocker),
        ``metrics`` and ``run_dir``.
    """
    logger = get_run_logger()
    spec = await load_and_validate(spec_folder, format, tag, parallel)
    plan = await make_plan(spec, max_concurrency, replan)
    workdir = str(Path(repo or os.getcwd()).resolve())  # noqa: ASYNC240 - once per run
    template = _template(spec)

    if dry_run:
        prompts = {}
        for w in plan.waves:
            for tid in w.tasks:
                prompts[tid] = build_prompt(spec, spec.unit(tid), wave=w.wave_id,
                                            concurrent=[t for t in w.tasks if t != tid],
                                            template=template)
                logger.info(f"[{tid}] prompt ({len(prompts[tid])} chars):\n{prompts[tid]}")
        return {"status": "dry_run", "plan": plan.to_json(), "prompts": prompts,
                "tasks": {u.id: {"status": u.status.value} for u in spec.units}}

    if agent is None:
        raise SpecError.single("agent", "no agent configured",
                               hint='pass agent={"kind": "command", "command": "..."} '
                                    "(or --agent/--command on the CLI)")
    agent_cfg = parse_agent_config(agent)
    agent_dict = agent_cfg.model_dump(mode="json")
    if concurrency_limit:
        await _check_concurrency_limit(concurrency_limit)
    if approve_waves and not PREFECT_API_URL.value():
        raise SpecError.single("approve_waves", "approving waves needs a Prefect server (its UI "
                               "or API answers the pause form); this run uses an ephemeral one",
                               hint="start one (prefect server start) and set PREFECT_API_URL="
                                    "http://127.0.0.1:4200/api")
    if approve_waves and scheduler != "waves":
        logger.info("approve_waves: using the waves scheduler (approval happens between waves)")
        scheduler = "waves"
    return await _run(spec, plan, agent_dict, agent_cfg.kind, workdir=workdir, retries=retries,
                      timeout_seconds=timeout_seconds, fail_fast=fail_fast, policy=scheduler,
                      template=template, approve_waves=approve_waves,
                      concurrency_limit=concurrency_limit)


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
                "concurrency_limit", f'global concurrency limit "{name}" does not exist',
                hint=f"create it: prefect gcl create {name} --limit 4 "
                     f"(or specwave deploy --agent-slots 4 --limit-name {name})") from None
    if not limit.active:
        get_run_logger().warning(f'global concurrency limit "{name}" is inactive: agent '
                                 "launches are not limited by it")


def _template(spec: LoadedSpec) -> str | None:
    p = spec.folder / TEMPLATE_FILE
    if p.is_file():
        return p.read_text(encoding="utf-8")
    return None


def _run_id() -> str:
    from prefect.runtime import flow_run

    rid = flow_run.id
    return str(rid) if rid else time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"


async def _run(spec: LoadedSpec, plan: Plan, agent: dict[str, Any], agent_kind: str, *,
               workdir: str, retries: int, timeout_seconds: float, fail_fast: bool,
               policy: str, template: str | None, approve_waves: bool = False,
               concurrency_limit: str | None = None) -> Any:
    logger = get_run_logger()
    run_id = _run_id()
    lock = RunLock(spec.folder)
    previous = lock.holder()
    stale = lock.acquire({"pid": os.getpid(), "host": socket.gethostname(),
                          "started_at": iso(time.time()), "flow_run_id": run_id,
                          "active": True})
    if stale:
        logger.warning(f"took over the run lock of pid {stale.get('pid')} on "
                       f"{stale.get('host')} (started {stale.get('started_at')}): that run "
                       "died without releasing it")
    if stale or previous:
        await _close_dead_run(spec, stale or previous, run_id, known_dead=bool(stale))
    watcher: asyncio.Task | None = None
    cancelled_from_prefect: dict[str, str] = {}
    try:
        _reap_earlier_agents(spec, run_id)
        _recover_unrecorded_passes(spec, run_id)
        # every agent of this run carries the run's marker (inherited by all it starts), so
        # a later run can reap them even if we die before recording one (see _reap_...)
        marker = _run_marker(spec, run_id)
        agent = {**agent, "env": {**(agent.get("env") or {}), MARKER_ENV: marker}}
        flow_run_id = _flow_run_id()
        if flow_run_id:
            watcher = asyncio.create_task(_watch_for_cancellation(
                flow_run_id, asyncio.current_task(), cancelled_from_prefect),
                name="specwave-cancel-watcher")
        return await _execute(spec, plan, agent, agent_kind, run_id=run_id, workdir=workdir,
                              retries=retries, timeout_seconds=timeout_seconds,
                              fail_fast=fail_fast, policy=policy, template=template,
                              approve_waves=approve_waves, concurrency_limit=concurrency_limit)
    except WriteFailed as exc:
        # the plan file cannot be written (disk full, permissions): _execute stopped every
        # agent; the passes its attempt records prove are recorded by the next run
        message = (f"the run stopped: {exc}. Passes already proved are kept in the run "
                   "folder and recorded by the next run (they are not run again)")
        logger.error(message)
        return Failed(message=message, data={
            "status": "failed", "spec": spec.name, "run_id": run_id,
            "run_dir": str(RunFolder(spec.folder, run_id).root),
            "tasks_file": str(spec.tasks_path), "error": str(exc), "message": message})
    except asyncio.CancelledError:
        if not cancelled_from_prefect:
            raise  # SIGTERM/SIGINT or a caller's cancel: the flow run crashes, as Prefect does
        # _execute has killed every agent and put the running tasks back to pending; end the
        # flow run Cancelled (not Crashed) and say so
        asyncio.current_task().uncancel()
        run = RunFolder(spec.folder, run_id)
        message = (f"cancelled from Prefect (flow run {cancelled_from_prefect['state']}): "
                   "every agent was stopped; the running tasks are pending again")
        logger.warning(message)
        record = read_json(run.root / "run.json") or {}
        return Cancelled(message=message, data={
            "status": "cancelled", "spec": spec.name, "run_id": run_id,
            "run_dir": str(run.root), "tasks_file": str(spec.tasks_path),
            "interrupted": record.get("interrupted", []), "message": message})
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        lock.release()
        logger.debug("run lock released")


async def _close_dead_run(spec: LoadedSpec, holder: dict[str, Any], run_id: str, *,
                          known_dead: bool) -> None:
    """The previous run's process is gone but its records may say otherwise: killed while
    running (SIGKILL, power loss), its run.json says ``running`` and its flow run is Running
    in Prefect; killed after its last write but before Prefect recorded the end, its flow
    run is Running. Say what happened, so neither the run folder nor the UI reports a run
    that is not running. ``known_dead``: it held the lock when it died; otherwise it is only
    touched when it ran on this host and its pid no longer exists."""
    dead = str(holder.get("flow_run_id") or "")
    if not dead or dead == run_id:
        return
    if not known_dead:
        import psutil

        pid = holder.get("pid")
        if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or (
                psutil.pid_exists(pid)):
            return
    folder = RunFolder(spec.folder, dead)
    record = read_json(folder.root / "run.json")
    ended = record.get("status") if isinstance(record, dict) else None
    note = f"the orchestrator (pid {holder.get('pid')}) died; found by run {run_id}"
    if isinstance(record, dict) and ended == "running":
        folder.write_run({**record, "status": "died", "note": note})
    try:
        from uuid import UUID

        from prefect.client.orchestration import get_client
        from prefect.states import Cancelled, Completed, Crashed, Failed

        state = {"success": Completed, "cancelled": Cancelled, "stopped": Cancelled,
                 "partial": Failed, "blocked": Failed, "failed": Failed}.get(ended, Crashed)
        if ended not in (None, "running", "died"):
            note = (f"the run ended {ended} (run.json), then its orchestrator (pid "
                    f"{holder.get('pid')}) died before Prefect recorded it; found by run "
                    f"{run_id}")
        async with get_client() as client:
            run = await client.read_flow_run(UUID(dead))
            if run.state is not None and not run.state.is_final():
                await client.set_flow_run_state(UUID(dead), state(message=note), force=True)
    except Exception:  # noqa: BLE001 - not a flow run of this API (or no API): nothing to fix
        pass


#: How often a running flow asks the Prefect API whether its flow run was cancelled.
CANCEL_POLL_SECONDS = 1.0


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else None


async def _watch_for_cancellation(flow_run_id: str, target: asyncio.Task,
                                  flag: dict[str, str]) -> None:
    """Cancel ``target`` when the flow run is cancelled from Prefect.

    A flow run that this process runs itself (``specwave run``, a script, a test; no worker,
    no runner) is not stopped by ``prefect flow-run cancel`` or the UI's Cancel: the API
    marks it CANCELLING and nothing else happens. So the flow polls its own state every
    CANCEL_POLL_SECONDS and, on CANCELLING or CANCELLED, cancels the flow's task — the same
    path as SIGTERM: every agent tree is killed, the running tasks go back to ``pending``.
    API errors (a busy SQLite server answers 503s; a restart) are retried at the next poll.
    """
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    async with get_client() as client:
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            try:
                run = await client.read_flow_run(UUID(flow_run_id))
            except Exception:  # noqa: BLE001 - try again at the next poll
                continue
            if run.state is not None and run.state.type in (StateType.CANCELLING,
                                                            StateType.CANCELLED):
                flag["state"] = run.state.name
                target.cancel()
                return


def _run_marker(spec: LoadedSpec, run_id: str) -> str:
    """This run's agent marker, written to the run folder before any agent starts."""
    import uuid

    folder = RunFolder(spec.folder, run_id)
    folder.root.mkdir(parents=True, exist_ok=True)
    path = folder.root / RUN_MARKER_FILE
    if path.exists():  # the same flow run, retried: keep its marker
        return path.read_text(encoding="utf-8").strip()
    marker = f"run-{uuid.uuid4().hex}"
    path.write_text(marker + "\n", encoding="utf-8")
    return marker


RUN_MARKER_FILE = "agent-marker"


#: run.json statuses of runs that wrote every result they had before they ended
_RUN_ENDED_NORMALLY = frozenset({"success", "partial", "blocked", "cancelled"})


def _recover_unrecorded_passes(spec: LoadedSpec, run_id: str) -> list[str]:
    """Record passes that an earlier run proved but never wrote to the plan file.

    A worker passed and its attempt record says so, but the plan file does not: the status
    write failed (disk full, permissions) or the orchestrator was killed before it landed
    (updates are coalesced, so even the task's ``in_progress`` may not have). Running the
    task again would redo finished work and count it twice, so the pass is recorded from the
    attempt record (attempts, times, notes, artifacts) and the task is not run.

    Only runs that did not end normally (killed: ``running``/``died``; a failed write:
    ``failed``) are looked at. Only a pass the file never saw is recovered: the task is not
    done in the file, its latest
    attempt (over every earlier run folder) passed, and the file's ``completed_at`` is not
    that attempt's end. Every recorded result sets ``completed_at`` to its attempt's end, so
    a pass someone set back by hand (to ``pending`` to run it again) keeps it and runs again;
    a task whose latest attempt did not pass runs again too.

    Agent OS ``tasks.json`` only: the other formats (Markdown checklists, Task Master) keep
    no completion time, so a pass set back by hand could not be told from one never
    written; there a pass that never reached the file runs again.
    """
    units = [u for u in spec.units if u.status not in DONE_STATUSES]
    runs_dir = RunFolder.runs_dir(spec.folder)
    if spec.format != "agent-os" or not units or not runs_dir.is_dir():
        return []
    store = PlanStore(spec.tasks_path, document_format(spec))
    doc, _ = store.read()
    in_file = {id_str(t.get("id")): t for t in doc.get("tasks", []) if isinstance(t, dict)}
    # Only the run that last wrote this file (orchestrator_state.run_id): a tasks.json
    # regenerated or replaced since (no such state, or another run's) is a new plan, and
    # an old run's records say nothing about it. (A run that recovers passes writes them
    # before it writes its own run state, so a chain of crashed runs loses nothing.)
    state = doc.get("orchestrator_state")
    last_writer = str(state.get("run_id") or "") if isinstance(state, dict) else ""
    from tasks_lib.runfolder import safe_name

    # one pass over that run's task folders (not one per task: 5,000 tasks)
    by_dir = {safe_name(u.id): u for u in units}
    found: dict[str, list[dict[str, Any]]] = {}
    for run_dir in runs_dir.iterdir():
        tasks_dir = run_dir / "tasks"
        if run_dir.name in (run_id, "") or run_dir.name != last_writer or (
                not tasks_dir.is_dir()):
            continue
        # a run that ended normally wrote every result it had: if the file no longer says
        # pass, someone reset it (or regenerated the file) — run the task again
        if (read_json(run_dir / "run.json") or {}).get("status") in _RUN_ENDED_NORMALLY:
            continue
        for task_dir in tasks_dir.iterdir():
            unit = by_dir.get(task_dir.name)
            if unit is None:
                continue
            recs = RunFolder(spec.folder, run_dir.name).attempts(unit.id)
            latest = found.get(unit.id)
            if recs and (not latest or float(recs[-1].get("ended") or 0)
                         > float(latest[-1].get("ended") or 0)):
                found[unit.id] = recs
    updates, recovered = [], []
    for unit in units:
        latest = found.get(unit.id) or []
        if not latest or latest[-1].get("outcome") != "pass":
            continue
        last = latest[-1]
        if (in_file.get(unit.id) or {}).get("completed_at") == iso(last.get("ended")):
            continue  # this pass was written; someone set the task back since
        result = last.get("result") or {}
        arts = {k: result.get(k) for k in ("files_modified", "files_created",
                                           "functions_created", "exports_added",
                                           "test_files") if result.get(k)}
        updates.append(TaskUpdate(
            unit.id, status="pass", attempts=unit.attempts + len(latest),
            started_at=iso(latest[0].get("started")), completed_at=iso(last.get("ended")),
            duration_minutes=round(sum(r.get("duration_s") or 0 for r in latest) / 60, 2),
            clear_blocker=True, notes=result.get("notes"), artifacts=arts or None,
            subtasks_status="pass"))
        recovered.append(unit.id)
    if not updates:
        return []
    store.apply(*updates)
    for unit, u in zip([x for x in units if x.id in recovered], updates):
        unit.status = TaskStatus.PASS
        unit.attempts = u.attempts or unit.attempts
    get_run_logger().warning(
        f"recorded {len(recovered)} pass(es) that an earlier run proved (attempt records) "
        f"but never wrote to {spec.tasks_path.name}: {', '.join(recovered)} (not run again)")
    return recovered


def _reap_earlier_agents(spec: LoadedSpec, run_id: str) -> None:
    """Agents recorded by earlier runs are orphans (we hold the run lock, so those runs are
    dead): kill any that survive, then forget them."""
    logger = get_run_logger()
    records = RunFolder.recorded_agents(spec.folder)
    stale = [r for r in records if r.get("run_id") != run_id]
    if stale:
        infos = []
        for r in stale:
            try:
                infos.append(ProcessInfo.from_dict(r))
            except ValueError:
                continue
        killed = reap(infos)
        if killed:
            logger.warning(f"killed {len(killed)} agent processes left by an earlier run that "
                           f"died: {killed}")
    # Run markers catch agents an earlier run started but died before recording (every
    # process carrying the marker is killed; pid 0 never matches a live process).
    markers = [f for f in RunFolder.runs_dir(spec.folder).glob(f"*/{RUN_MARKER_FILE}")
               if f.parent.name != run_id]
    if markers:
        killed = reap([ProcessInfo(pid=0, pgid=0, create_time=-1.0, argv0="",
                                   marker=f.read_text(encoding="utf-8").strip())
                       for f in markers])
        if killed:
            logger.warning(f"killed {len(killed)} unrecorded agent processes left by an "
                           f"earlier run that died: {killed}")
        for f in markers:
            f.rename(f.with_name(f.name + ".reaped"))
    for f in RunFolder.runs_dir(spec.folder).glob("*/agents.jsonl"):
        if f.parent.name != run_id:
            f.rename(f.with_suffix(".reaped"))


class _PlanWriter:
    """Records task updates in the plan file off the event loop, coalesced.

    One write of a plan file is a locked read-parse-render-fsync of the whole file: ~13 ms for
    500 tasks on a quiet core, several times that under load (measured; it was ~40 ms quiet and
    130–350 ms loaded before the renderer used json's C string encoder). Done inline, every
    start and every finish stalled every other worker's start and completion. Here updates
    are queued and written by one dedicated thread: while a write runs the next updates
    gather, and go together in the next write. Between two writes the writer rests
    ``min_interval`` or twice the last write's duration, whichever is longer, so the writing
    thread (pure-Python rendering: it holds the GIL) takes at most a third of the
    orchestrator's time however large the file.

    Failure semantics: updates reach the file in the order submitted (one writer, one lock),
    so the file always shows a prefix of the run's history. A failed write is raised by the
    next ``submit``/``flush`` (the run fails as before, instead of going on with a plan file
    that does not say what happened). If the orchestrator dies, updates not yet written are
    lost: those tasks keep their previous status (pending / in_progress) and run again on the
    next run — never a ``pass`` that did not happen. ``close()`` writes everything queued and
    waits for a write in flight even when the caller is being cancelled.
    """

    def __init__(self, store: PlanStore, *, min_interval: float = 0.2):
        from concurrent.futures import ThreadPoolExecutor

        self.store = store
        self.min_interval = min_interval
        self.writes = 0
        self.write_seconds = 0.0
        self._last_write = 0.0
        self._pending: list[TaskUpdate] = []
        self._run_state: dict[str, Any] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="specwave-plan-writer")
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._inflight: asyncio.Future | None = None  # the write in progress
        self._started = 0.0
        self._error: BaseException | None = None

    def submit(self, *updates: TaskUpdate, run_state: dict[str, Any] | None = None) -> None:
        if self._error is not None:
            raise self._error
        self._pending.extend(updates)
        if run_state is not None:
            self._run_state = run_state
        self._wake.set()
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._loop(), name="specwave-plan-writer")

    async def flush(self) -> None:
        """Return when everything submitted so far is in the file."""
        async with self._lock:
            await self._write_pending()
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        """Stop the background loop, then write what is queued."""
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        inflight = self._inflight
        if inflight is not None:  # a thread write cannot be cancelled: let it land
            await asyncio.shield(asyncio.wait([inflight]))
            self._settle(inflight)
        try:
            await self.flush()
        finally:
            self._executor.shutdown(wait=False)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            async with self._lock:
                await self._write_pending()
            if self._error is not None:
                return
            await asyncio.sleep(max(self.min_interval, 2.0 * self._last_write))

    async def _write_pending(self) -> None:
        if self._error is not None or (not self._pending and self._run_state is None):
            return
        updates, self._pending = self._pending, []
        run_state, self._run_state = self._run_state, None
        from functools import partial

        self._started = time.perf_counter()
        inflight = asyncio.wrap_future(self._executor.submit(
            partial(self.store.apply, *updates, run_state=run_state)))
        self._inflight = inflight
        try:
            # if we are cancelled here the thread's write still lands; close() waits for it
            # and settles it. Whoever gets there first records the outcome (see _settle).
            await asyncio.wait([inflight])
        finally:
            if inflight.done():
                self._settle(inflight)

    def _settle(self, inflight: asyncio.Future) -> None:
        """Record a finished write's outcome, once: its error fails the run at the next
        ``submit``/``flush``/``close``. Settled by whichever of the writer loop and
        ``close()`` sees it done first — the loop may be cancelled after the thread finished
        but before it looked, and an error must not be lost there (it once was: a run whose
        last status write failed ended "success")."""
        if self._inflight is not inflight:
            return
        self._inflight = None
        exc = inflight.exception()
        if exc is not None:
            self._error = self._error or exc
            return
        self.writes += 1
        self._last_write = time.perf_counter() - self._started
        self.write_seconds += self._last_write


async def _execute(spec: LoadedSpec, plan: Plan, agent: dict[str, Any], agent_kind: str, *,
                   run_id: str, workdir: str, retries: int, timeout_seconds: float,
                   fail_fast: bool, policy: str, template: str | None,
                   approve_waves: bool = False, concurrency_limit: str | None = None) -> Any:
    logger = get_run_logger()
    folder = RunFolder(spec.folder, run_id)
    folder.root.mkdir(parents=True, exist_ok=True)
    store = PlanStore(spec.tasks_path, document_format(spec))
    sched = Scheduler(plan, {u.id: u.status for u in spec.units}, policy=policy,
                      max_concurrency=plan.max_concurrency, fail_fast=fail_fast)
    units = {u.id: u for u in spec.units}
    keys = artifact_keys(spec.name)
    from flows.ui import RunUI

    ui = RunUI(keys, spec.name)
    await ui.start()

    records: dict[str, list[dict[str, Any]]] = {}
    blockers: dict[str, str] = {}
    status: dict[str, str] = {u.id: ("done" if sched.state[u.id] == State.DONE else "pending")
                              for u in spec.units}
    counters = {"workers_spawned": 0, "workers_completed": 0, "workers_failed": 0,
                "workers_retried": 0}
    started_at = time.time()
    run_params = {"run_id": run_id, "scheduler": policy, "agent": agent_kind,
                  "max_concurrency": plan.max_concurrency, "retries": retries,
                  "timeout_seconds": timeout_seconds, "fail_fast": fail_fast,
                  "workdir": workdir}
    folder.write_run({"status": "running", "spec": spec.name, "started_at": iso(started_at),
                      **run_params, "plan": plan.to_json()})

    def run_state(state: str) -> dict[str, Any]:
        return {"run_id": run_id, "status": state, "scheduler": policy,
                "started_at": iso(started_at), "updated_at": iso(time.time()),
                "active_workers": sched.running, **counters}

    store.apply(run_state=run_state("running"))
    writer = _PlanWriter(store)  # every later update: written off the event loop
    done_count = sum(1 for s in status.values() if s == "done")
    total = len(spec.units)
    await ui.progress(done_count, total)

    # One Task object for every worker of the run: with_options costs 4-8 ms per call
    # (Prefect reads the function's source to key the task), which was paid per worker.
    worker_names: dict[str, str] = {}
    worker = run_worker.with_options(
        name="worker", retries=retries,
        task_run_name=lambda parameters: worker_names[parameters["inp"].task_id])

    async def run_one(tid: str) -> list[dict[str, Any]]:
        unit = units[tid]
        wave = plan.wave_of.get(tid)
        mates = [t for w in plan.waves if w.wave_id == wave for t in w.tasks if t != tid]
        prompt = build_prompt(spec, unit, wave=wave, concurrent=mates, template=template)
        name = f"{tid}: {' '.join(unit.description.split())}"
        worker_names[tid] = name[:100]
        # the tags go in WorkerInput, not with_options: see tasks_lib.tasks.label_task_run
        inp = WorkerInput(task_id=tid, prompt=prompt, agent=agent, workdir=workdir,
                          spec_dir=str(spec.folder), run_id=run_id,
                          timeout_seconds=timeout_seconds,
                          concurrency_limit=concurrency_limit,
                          tags=[spec.name, f"wave-{wave}", agent_kind])
        state = await worker(inp, return_state=True)
        if state.is_cancelled():  # the worker stopped because this coroutine was cancelled
            raise asyncio.CancelledError
        result = await state.result(raise_on_failure=False)
        if isinstance(result, dict) and result.get("task_id") == tid and result.get(
                "attempt") == 1:  # one attempt: its record is the result (skip the files)
            return [json.loads(json.dumps(result, default=str))]
        recs = folder.attempts(tid)
        if not recs:  # our own code failed before the first attempt record
            msg = result.get("reason") if isinstance(result, dict) else repr(result)
            recs = [{"task_id": tid, "attempt": 1, "outcome": "crashed",
                     "reason": f"worker failed before launching the agent: {msg}",
                     "started": time.time(), "ended": time.time(), "duration_s": 0.0,
                     "result": None, "info": {}}]
        return recs

    pending: dict[asyncio.Task, str] = {}
    wave_running: int | None = None  # approve_waves: the wave whose workers were started
    stopped_by_reviewer: str | None = None
    try:
        while True:
            if approve_waves and not pending and wave_running is not None:
                # Nothing runs: if the wave is over and another follows, ask before it starts.
                nxt = sched.current_wave()
                if nxt != wave_running:
                    done_wave, wave_running = wave_running, None
                    if nxt is not None and not sched.stopped:
                        await ui.table(table_rows(spec.units, plan.wave_of, status, records,
                                                  blockers), force=True)
                        decision = await approve_next_wave(done_wave, nxt, len(plan.waves))
                        label = f"wave {done_wave} reviewed: " + (
                            "continue" if decision.continue_ else "stop") + (
                            f" ({decision.note})" if decision.note else "")
                        sched.events.append(label)
                        logger.info(label)
                        if not decision.continue_:
                            sched.stopped = True
                            stopped_by_reviewer = label
            for tid in sched.ready():
                if approve_waves and wave_running is None:
                    wave_running = sched.current_wave()
                sched.start(tid)
                status[tid] = "in_progress"
                prior = units[tid].attempts
                writer.submit(TaskUpdate(tid, status="in_progress",
                                         started_at=iso(time.time()), completed_at=None,
                                         attempts=prior), run_state=run_state("running"))
                pending[asyncio.create_task(run_one(tid), name=f"worker-{tid}")] = tid
                logger.info(f"started {tid} ({len(sched.running)} running)")
            if not pending:
                if sched.is_finished():
                    break
                continue
            finished, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for fut in finished:
                tid = pending.pop(fut)
                recs = fut.result()
                records[tid] = recs
                last = recs[-1]
                outcome = last.get("outcome")
                passed = outcome == "pass"
                blocker = final_blocker(recs)
                counters["workers_spawned"] += len(recs)
                counters["workers_retried"] += len(recs) - 1
                counters["workers_completed" if passed else "workers_failed"] += 1
                new_status = "pass" if passed else ("blocked" if outcome == "blocked" else "fail")
                status[tid] = new_status
                if blocker:
                    blockers[tid] = blocker
                newly_blocked = sched.finish(tid, passed, blocker or outcome or "")
                result = last.get("result") or {}
                arts = {k: result.get(k) or [] for k in ("files_modified", "files_created",
                                                         "functions_created", "exports_added",
                                                         "test_files") if result.get(k)}
                updates = [TaskUpdate(
                    tid, status=new_status, attempts=units[tid].attempts + len(recs),
                    started_at=iso(recs[0].get("started")), completed_at=iso(last.get("ended")),
                    duration_minutes=round(sum(r.get("duration_s") or 0 for r in recs) / 60, 2),
                    blocker=blocker, clear_blocker=passed, notes=result.get("notes"),
                    artifacts=arts or None, subtasks_status="pass" if passed else None)]
                for d in newly_blocked:
                    status[d] = "blocked"
                    blockers[d] = sched.blockers[d]
                    updates.append(TaskUpdate(d, status="blocked", blocker=sched.blockers[d]))
                    logger.warning(f"{d} is blocked: {sched.blockers[d]}")
                writer.submit(*updates, run_state=run_state("running"))
                level = logger.info if passed else logger.error
                level(f"{tid}: {new_status}" + (f" — {blocker}" if blocker else ""))
                done_count += 1 + len(newly_blocked)
                await ui.progress(done_count, total)  # both return at once (see flows.ui)
                await ui.table(lambda: table_rows(spec.units, plan.wave_of, status, records,
                                                  blockers))
    except BaseException as exc:
        # Cancelled (flow run cancelled, SIGTERM/SIGINT), a plan-file write that failed, or
        # our own bug: stop every worker — cancelling the coroutine kills its agent's process
        # tree — and put the tasks that were running back to pending, so a rerun does them
        # again. A pass whose status could not be written is recorded by the next run from
        # its attempt record (see _recover_unrecorded_passes).
        cancelled = isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))
        ending = {"status": "cancelled"} if cancelled else {
            "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        for fut in pending:
            fut.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        interrupted = [pending[f] for f in pending]
        await ui.close()
        try:  # what is queued goes first, so the file cannot end on a stale update
            await writer.close()
        except BaseException as exc:  # noqa: BLE001 - we are already failing
            logger.error(f"could not record the last task updates: {exc!r}")
        try:
            store.apply(*[TaskUpdate(t, status="pending", completed_at=None) for t in
                          interrupted], run_state=run_state(ending["status"]))
            folder.write_run({**ending, "spec": spec.name,
                              "started_at": iso(started_at), "ended_at": iso(time.time()),
                              **run_params, "interrupted": interrupted})
        except Exception as exc:  # noqa: BLE001 - we are already failing
            logger.error(f"could not record the interrupted tasks: {exc}")
        raise

    for tid, s in sched.state.items():
        if s == State.HELD:
            status[tid] = "pending"
    wall = time.time() - started_at
    metrics = compute_metrics(
        wall_seconds=wall, task_records=records, final_status=status,
        plan_json=plan.to_json(), spec_estimate=spec.estimated_parallel_speedup,
        waves=len(plan.waves), max_running=sched.max_running_seen, scheduler=policy,
        events=sched.events)
    not_passed = [t for t, s in status.items() if s not in ("pass", "done")]
    if not not_passed:
        run_status = "success"
    elif stopped_by_reviewer:
        run_status = "stopped"
    elif sched.stopped:
        run_status = "blocked"
    else:
        run_status = "partial"
    final_state = "completed" if run_status == "success" else run_status
    try:
        await writer.close()
    except BaseException as exc:  # a status write failed after the last worker: say so
        folder.write_run({"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                          "spec": spec.name, "started_at": iso(started_at),
                          "ended_at": iso(time.time()), **run_params, "interrupted": []})
        raise
    store.apply(run_state={**run_state(final_state), "active_workers": [],
                           "completed_at": iso(time.time())})
    rows = table_rows(spec.units, plan.wave_of, status, records, blockers)
    await ui.table(rows, force=True)
    await ui.progress(total, total)
    await ui.close()
    status_line = {"success": f"all {total} tasks passed",
                   "partial": f"{len(not_passed)} of {total} tasks did not pass",
                   "stopped": f"{stopped_by_reviewer}; {len(not_passed)} of {total} tasks "
                              "did not run or did not pass",
                   "blocked": f"stopped after failures ({', '.join(sched.blocking_failures())}); "
                              f"{len(not_passed)} of {total} tasks did not pass"}[run_status]
    await ui.summary(summary_markdown(spec_name=spec.name, plan_json=plan.to_json(),
                                      metrics=metrics, rows=rows, records=records,
                                      run_dir=str(folder.root), status_line=status_line))
    result = {
        "status": run_status,
        "spec": spec.name,
        "run_id": run_id,
        "run_dir": str(folder.root),
        "tasks_file": str(spec.tasks_path),
        "blocking_failures": sched.blocking_failures() if run_status == "blocked" else [],
        "tasks": {u.id: {"status": status[u.id],
                         "outcome": (records.get(u.id) or [{}])[-1].get("outcome"),
                         "attempts": len(records.get(u.id, [])),
                         "blocker": blockers.get(u.id)} for u in spec.units},
        "metrics": metrics,
    }
    folder.write_run({"status": run_status, "spec": spec.name, "started_at": iso(started_at),
                      "ended_at": iso(time.time()), **run_params, "plan": plan.to_json(),
                      "metrics": metrics, "tasks": result["tasks"]})
    logger.info(f"{spec.name}: {status_line}; wall {wall:.1f} s, measured speed-up "
                f"{metrics['measured_speedup']}×")
    if run_status == "success":
        return Completed(message=status_line, data=result)
    if run_status == "stopped":
        return Cancelled(message=status_line, data=result)
    return Failed(message=status_line, data=result)
