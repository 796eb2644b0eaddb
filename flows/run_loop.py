"""The run loop: start every task the scheduler offers, record each worker's result as it
finishes, until nothing more can run; then finalize the run.

* **who decides**: the scheduler (tasks_lib/scheduler.py, pure) says which tasks start and
  which a failure blocks; its state is the one record of every task's status in the run;
* **who runs a worker**: the dispatch (flows/dispatch.py) — a Prefect task run in this
  process today;
* **who writes**: the plan writer (flows/plan_writer.py) puts every start and every result in
  the user's plan file, in order, off the event loop; the run folder (tasks_lib/runfolder.py)
  keeps the run record; the UI (flows/ui.py) publishes progress, the table and the summary.

Failure semantics: a worker that does not pass blocks its dependents (nothing else); the
others keep running. Anything that stops the loop itself — the flow run cancelled, SIGTERM or
SIGINT, a plan-file write that failed, our own bug — stops every worker (cancelling a worker
kills its agent's process tree), puts the tasks that were running back to ``pending`` so a
rerun does them again, records the run as ``cancelled`` or ``failed``, and is re-raised.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from flows.approval import approve_next_wave
from flows.dispatch import Dispatch
from flows.merge_queue import MergeQueue, retry_prompt
from flows.plan_writer import PlanWriter
from flows.ui import RunUI
from tasks_lib.agents.process import MARKER_ENV
from tasks_lib.formats import document_format
from tasks_lib.planner import Plan
from tasks_lib.prompt import task_prompt
from tasks_lib.records import AttemptRecord, MergeInfo, RunRecord
from tasks_lib.report import (
    artifact_keys,
    compute_metrics,
    final_blocker,
    iso,
    result_update,
    summary_markdown,
    table_rows,
    task_status,
    worker_counts,
    worktree_cells,
)
from tasks_lib.runfolder import RunFolder
from tasks_lib.scheduler import Scheduler
from tasks_lib.spec import LoadedSpec
from tasks_lib.state import SATISFIED, RunStatus, TaskStatus, prefect_state
from tasks_lib.store import PlanStore, TaskUpdate
from tasks_lib.tasks import WorkerInput
from tasks_lib.workspaces import WorkspaceSpec, git
from tasks_lib.workspaces.worktree import CheckoutWatch


@dataclass(frozen=True)
class _Merged:
    """A merge-queue step's result: the task's records, the last one with its merge."""

    recs: list[AttemptRecord]
    info: MergeInfo


@dataclass(frozen=True)
class RunSettings:
    """How this run runs: plain values, recorded in run.json."""

    run_id: str
    scheduler: str
    agent: dict[str, Any]  # the agent config every worker gets (the run's marker included)
    agent_kind: str
    retries: int
    timeout_seconds: float
    fail_fast: bool
    workspace: WorkspaceSpec
    approve_waves: bool = False
    concurrency_limit: str | None = None

    def record(self, status: RunStatus, max_concurrency: int, **fields: Any) -> RunRecord:
        return RunRecord(
            status=status,
            run_id=self.run_id,
            scheduler=self.scheduler,
            agent=self.agent_kind,
            max_concurrency=max_concurrency,
            retries=self.retries,
            timeout_seconds=self.timeout_seconds,
            fail_fast=self.fail_fast,
            workdir=self.workspace.path,
            **fields,
        )


def ahead_of_agents(max_concurrency: int, isolation: str) -> int:
    """How many workers may start beyond the agent slots: in worktree isolation a worker
    spends time before its agent (taking and checking out the worktree) and after it
    (committing); with half as many again started ahead, that work overlaps the agents
    instead of holding their slots. None in shared mode: nothing to prepare."""
    return max(1, max_concurrency // 2) if isolation == "worktree" else 0


class RunLoop:
    """One run of one spec: ``await loop.run()`` then ``return await loop.finalize()``."""

    def __init__(self, spec: LoadedSpec, plan: Plan, settings: RunSettings, dispatch: Dispatch):
        self.spec, self.plan, self.settings, self.dispatch = spec, plan, settings, dispatch
        self.plan_json = plan.to_json()
        self.folder = RunFolder(spec.folder, settings.run_id)
        self.store = PlanStore(spec.tasks_path, document_format(spec))
        self.writer = PlanWriter(self.store)
        # worktree isolation: workers start ahead of a free agent slot, so a task's worktree
        # is ready (and the one before it committed) while other agents run; the agents
        # themselves stay within max_concurrency (WorkerInput.agent_slots)
        self._ahead = (
            0  # pool dispatch: each task run's agent is in its own flow run, anywhere
            if settings.workspace.git_url
            else ahead_of_agents(plan.max_concurrency, settings.workspace.kind)
        )
        self.sched = Scheduler(
            plan,
            {u.id: u.status for u in spec.units},
            policy=settings.scheduler,
            max_concurrency=plan.max_concurrency + self._ahead,
            fail_fast=settings.fail_fast,
        )
        self.ui = RunUI(artifact_keys(spec.name), spec.name)
        self.records: dict[str, list[AttemptRecord]] = {}
        self.interrupted: list[str] = []  # tasks running when the loop was stopped
        self.stopped_by_reviewer: str | None = None
        self.started_at = time.time()
        self._deps: dict[str, list[str]] = {}
        for a, b in plan.dependency_edges:
            self._deps.setdefault(b, []).append(a)
        self._wave_running: int | None = None  # approve_waves: the wave whose workers started
        # worktree isolation: a pass goes through the merge queue before the scheduler hears
        # of it, so dependents start from a base holding their dependencies' merged work
        worktrees = settings.workspace.kind == "worktree"
        marker = {k: v for k, v in settings.agent.get("env", {}).items() if k == MARKER_ENV}
        self.merges = MergeQueue(settings.workspace, marker) if worktrees else None
        self._merge_retries: dict[str, int] = {}
        self.watch: CheckoutWatch | None = None
        self._isolation: asyncio.Task | None = None  # the isolation check running, if any
        self._suspects: set[str] = set()  # tasks that ran since the last check began
        self.isolation_warnings: list[str] = []
        self.integration: dict[str, Any] | None = None
        self._counts: dict[TaskStatus, int] = {}  # tasks by state, kept as the state changes
        for st in self.sched.state.values():
            self._counts[st] = self._counts.get(st, 0) + 1
        self.logger = get_run_logger()

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Run until no task can start and none is running."""
        running: dict[asyncio.Task, str] = {}
        try:
            await self._begin()
            while True:
                if self.settings.approve_waves and not running:
                    await self._review_finished_wave()
                for tid in self.sched.ready():
                    running[self._start(tid)] = tid
                if not running:
                    if self.sched.is_finished():
                        return
                    continue
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for fut in finished:
                    tid = running.pop(fut)
                    if (step := await self._finish(tid, fut.result())) is not None:
                        running[step] = tid  # its merge, or a new attempt after one failed
        except BaseException as exc:
            await self._interrupt(exc, running)
            raise

    async def _begin(self) -> None:
        self.folder.root.mkdir(parents=True, exist_ok=True)
        await self.ui.start()
        self.folder.write_run(self._record(RunStatus.RUNNING, plan=self.plan_json))
        # the first write is inline: a plan file we cannot write stops the run before any agent
        self.store.apply(run_state=self._run_state(RunStatus.RUNNING))
        if self.merges is not None:
            await self.merges.open()
            self.watch = await asyncio.to_thread(
                CheckoutWatch, self.settings.workspace.path, [str(self.spec.folder)]
            )
            dirty = [
                e.path
                for e in self.watch.start.entries
                if not Path(self.watch.start.root, e.path).is_relative_to(self.spec.folder)
            ]
            if dirty:
                note = (
                    f"{len(dirty)} uncommitted change(s) in your checkout (e.g. {dirty[0]}) "
                    "are not in the agents' base: commit them first to include them"
                )
                self.isolation_warnings.append(note)
                self.logger.warning(note)
        await self._progress()

    def _start(self, tid: str) -> asyncio.Task:
        sched, unit = self.sched, self.spec.unit(tid)
        if self.settings.approve_waves and self._wave_running is None:
            self._wave_running = sched.current_wave()
        sched.start(tid)
        self._count(TaskStatus.PENDING, TaskStatus.IN_PROGRESS)
        self.writer.submit(
            TaskUpdate(
                tid,
                status=TaskStatus.IN_PROGRESS.value,
                started_at=iso(time.time()),
                completed_at=None,
                attempts=unit.attempts,
            ),
            run_state=self._run_state(RunStatus.RUNNING),
        )
        return self._dispatch(tid, task_prompt(self.spec, self.plan, tid))

    def _dispatch(self, tid: str, prompt: str) -> asyncio.Task:
        """Hand the task's worker to the dispatch: its first attempt, or one after its merge
        failed."""
        sched, unit, s = self.sched, self.spec.unit(tid), self.settings
        wave = self.plan.wave_of.get(tid)
        title = " ".join(unit.description.split())
        # the tags go in WorkerInput, not with_options: see tasks_lib.tasks.label_task_run
        inp = WorkerInput(
            task_id=tid,
            title=title,
            prompt=prompt,
            agent=s.agent,
            workspace=s.workspace,
            spec_dir=str(self.spec.folder),
            run_id=s.run_id,
            timeout_seconds=s.timeout_seconds,
            concurrency_limit=s.concurrency_limit,
            tags=[self.spec.name, f"wave-{wave}", s.agent_kind],
            agent_slots=self.plan.max_concurrency if self._ahead else None,
            slot_key=sched.rank(tid),
        )
        after = [d for d in self._deps.get(tid, ()) if sched.state[d] == TaskStatus.PASS]
        name = f"{tid}: {title}"
        self.logger.info(f"started {tid} ({len(sched.running)} running)")
        return asyncio.create_task(
            self.dispatch.run(inp, name=name, after=after), name=f"worker-{tid}"
        )

    async def _finish(self, tid: str, done: list[AttemptRecord] | _Merged) -> asyncio.Task | None:
        """A worker (or its merge) is done: record the result, block the dependents of a
        failure. Worktree isolation: a pass first goes to the merge queue, and a merge that
        failed gets a new attempt while retries last; the step to wait for is returned."""
        merge = done.info if isinstance(done, _Merged) else None
        recs = done.recs if isinstance(done, _Merged) else done
        self.records[tid] = recs
        last = recs[-1]
        if self.watch is not None and merge is None:
            self._check_isolation_soon(tid)
        if self.merges is not None and merge is None and last.passed and last.work:
            return asyncio.create_task(self._merge(tid, recs), name=f"merge-{tid}")
        if self.merges is not None and merge is not None and not merge.ok:
            used = self._merge_retries.get(tid, 0)
            if used < self.settings.retries:
                self._merge_retries[tid] = used + 1
                self.logger.warning(
                    f"{tid}: {merge.reason()}; a new attempt starts from the integration "
                    "branch's new head"
                )
                base = task_prompt(self.spec, self.plan, tid)
                prompt = retry_prompt(base, tid, merge, self.merges.previous_diff(last))
                return self._dispatch(tid, prompt)
        status, blocker = task_status(recs), final_blocker(recs)
        newly_blocked = self.sched.finish(tid, status, blocker or last.outcome.value)
        self._count(TaskStatus.IN_PROGRESS, status)
        updates = [result_update(tid, self.spec.unit(tid).attempts, recs)]
        for d in newly_blocked:
            self._count(TaskStatus.PENDING, TaskStatus.BLOCKED)
            updates.append(
                TaskUpdate(d, status=TaskStatus.BLOCKED.value, blocker=self.sched.blockers[d])
            )
            self.logger.warning(f"{d} is blocked: {self.sched.blockers[d]}")
        self.writer.submit(*updates, run_state=self._run_state(RunStatus.RUNNING))
        level = self.logger.info if status == TaskStatus.PASS else self.logger.error
        level(f"{tid}: {status.value}" + (f" — {blocker}" if blocker else ""))
        await self._progress()  # returns at once (see flows.ui)
        return None

    def _check_isolation_soon(self, tid: str) -> None:
        """Worktree isolation, after each worker: did an agent change the user's checkout?
        Checked beside the loop (it reads the whole checkout's status), one check at a time;
        workers that end during a check get one more after it."""
        self._suspects.update({tid, *self.sched.running})
        if self._isolation is None or self._isolation.done():
            self._isolation = asyncio.create_task(self._check_isolation(), name="isolation")

    async def _isolation_checked(self) -> None:
        """Wait for the last isolation check (the run is ending)."""
        while self._isolation is not None and not self._isolation.done():
            await asyncio.gather(self._isolation, return_exceptions=True)

    async def _check_isolation(self) -> None:
        """Say which files of the user's checkout changed, and which tasks were running (it
        was one of them)."""
        assert self.watch is not None
        while self._suspects:
            suspects = sorted(self._suspects | set(self.sched.running))
            self._suspects.clear()
            try:
                changed = await asyncio.to_thread(self.watch.new_changes)
            except git.GitError as exc:
                self.logger.warning(f"could not check your checkout: {exc}")
                return
            if not changed:
                continue
            shown = ", ".join(changed[:10]) + (
                f" (+{len(changed) - 10} more)" if len(changed) > 10 else ""
            )
            warning = (
                f"your checkout was changed outside the worktrees: {shown} — while "
                f"task(s) {', '.join(suspects)} ran (specwave left it as it is)"
            )
            self.isolation_warnings.append(warning)
            self.logger.warning(warning)

    async def _merge(self, tid: str, recs: list[AttemptRecord]) -> _Merged:
        """The merge queue's step for a passed attempt; its record keeps what it did."""
        assert self.merges is not None
        title = " ".join(self.spec.unit(tid).description.split())
        info = await self.merges.merge(tid, title, recs[-1])
        recs[-1].merge = info
        await asyncio.to_thread(self.folder.write_attempt, recs[-1])
        return _Merged(recs, info)

    async def _review_finished_wave(self) -> None:
        """approve_waves: nothing runs; if the wave is over and another follows, publish the
        table and pause until someone decides."""
        sched = self.sched
        if self._wave_running is None:
            return
        nxt = sched.current_wave()
        if nxt == self._wave_running:
            return
        done_wave, self._wave_running = self._wave_running, None
        if nxt is None or sched.stopped:
            return
        await self.ui.table(self._rows())
        decision = await approve_next_wave(done_wave, nxt, len(self.plan.waves))
        label = decision.label(done_wave)
        sched.events.append(label)
        self.logger.info(label)
        if not decision.continue_:
            sched.stopped = True
            self.stopped_by_reviewer = label

    async def _interrupt(self, exc: BaseException, running: dict[asyncio.Task, str]) -> None:
        """Stop every worker (cancelling one kills its agent's tree), put the running tasks
        back to pending and record how the run ended. A pass whose status could not be
        written is recorded by the next run from its attempt record (tasks_lib.recovery)."""
        cancelled = isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))
        ending = RunStatus.CANCELLED if cancelled else RunStatus.FAILED
        for fut in running:
            fut.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await self._isolation_checked()
        self.interrupted = list(running.values())
        await self.ui.close()
        try:  # what is queued goes first, so the file cannot end on a stale update
            await self.writer.close()
        except BaseException as err:  # noqa: BLE001 - we are already failing
            self.logger.error(f"could not record the last task updates: {err!r}")
        try:
            self.store.apply(
                *[
                    TaskUpdate(t, status=TaskStatus.PENDING.value, completed_at=None)
                    for t in self.interrupted
                ],
                run_state=self._run_state(ending),
            )
            self.folder.write_run(
                self._record(
                    ending,
                    ended_at=iso(time.time()),
                    interrupted=self.interrupted,
                    error=None if cancelled else f"{type(exc).__name__}: {exc}",
                )
            )
        except Exception as err:  # noqa: BLE001 - we are already failing
            self.logger.error(f"could not record the interrupted tasks: {err}")

    # ------------------------------------------------------------------ finalize

    async def finalize(self) -> Any:
        """Write the last state, publish the table and the summary; return the flow's final
        Prefect state, carrying the run's result."""
        sched, spec = self.sched, self.spec
        total = len(spec.units)
        await self._isolation_checked()
        wall = time.time() - self.started_at
        metrics = compute_metrics(
            wall_seconds=wall,
            task_records=self.records,
            final_status=sched.state,
            plan_json=self.plan_json,
            spec_estimate=spec.estimated_parallel_speedup,
            waves=len(self.plan.waves),
            max_running=sched.max_running_seen,
            scheduler=self.settings.scheduler,
            events=sched.events,
        )
        not_passed = [t for t, s in sched.state.items() if s not in SATISFIED]
        if not not_passed:
            status = RunStatus.SUCCESS
        elif self.stopped_by_reviewer:
            status = RunStatus.STOPPED
        elif sched.stopped:
            status = RunStatus.BLOCKED
        else:
            status = RunStatus.PARTIAL
        try:
            await self.writer.close()
        except BaseException as exc:  # a status write failed after the last worker: say so
            self.folder.write_run(
                self._record(
                    RunStatus.FAILED,
                    ended_at=iso(time.time()),
                    error=f"{type(exc).__name__}: {exc}",
                    interrupted=[],
                )
            )
            raise
        self.store.apply(
            run_state={
                **self._run_state(status),
                "active_workers": [],
                "completed_at": iso(time.time()),
            }
        )
        if self.merges is not None:
            head = await self.merges.close()
            branch = self.merges.integration.branch
            merged = sum(m["status"] == "merged" for m in self.merges.log)
            self.integration = {
                "branch": branch,
                "commit": head,
                "merges": self.merges.log,
                "take": f"git merge --ff-only {branch}",
            }
            self.logger.info(
                f"integration branch {branch} at {(head or '?')[:12]} "
                f"({merged} merges): take the work with "
                f"`git merge --ff-only {branch}`"
            )
        rows = self._rows()
        await self.ui.table(rows)
        await self.ui.progress(total, total, self._describe_counts())
        await self.ui.close()
        status_line = {
            RunStatus.SUCCESS: f"all {total} tasks passed",
            RunStatus.PARTIAL: f"{len(not_passed)} of {total} tasks did not pass",
            RunStatus.STOPPED: f"{self.stopped_by_reviewer}; {len(not_passed)} of {total} "
            "tasks did not run or did not pass",
            RunStatus.BLOCKED: f"stopped after failures ({', '.join(sched.blocking_failures())})"
            f"; {len(not_passed)} of {total} tasks did not pass",
        }[status]
        await self.ui.summary(
            summary_markdown(
                spec_name=spec.name,
                plan_json=self.plan_json,
                metrics=metrics,
                rows=rows,
                records=self.records,
                run_dir=str(self.folder.root),
                status_line=status_line,
                integration=self.integration,
            )
        )
        blockers = self._blockers()
        tasks = {
            u.id: {
                "status": sched.state[u.id].value,
                "outcome": r[-1].outcome.value if (r := self.records.get(u.id)) else None,
                "attempts": len(self.records.get(u.id, [])),
                "blocker": blockers.get(u.id),
                **(
                    worktree_cells(r[-1] if (r := self.records.get(u.id)) else None)
                    if self.merges is not None
                    else {}
                ),
            }
            for u in spec.units
        }
        result = {
            "status": status.value,
            "spec": spec.name,
            "run_id": self.settings.run_id,
            "run_dir": str(self.folder.root),
            "tasks_file": str(spec.tasks_path),
            "blocking_failures": sched.blocking_failures() if status == RunStatus.BLOCKED else [],
            "tasks": tasks,
            "metrics": metrics,
            **({"integration": self.integration} if self.integration else {}),
            **({"isolation_warnings": self.isolation_warnings} if self.isolation_warnings else {}),
        }
        self.folder.write_run(
            self._record(
                status, ended_at=iso(time.time()), plan=self.plan_json, metrics=metrics, tasks=tasks
            )
        )
        self.logger.info(
            f"{spec.name}: {status_line}; wall {wall:.1f} s, measured speed-up "
            f"{metrics['measured_speedup']}×"
        )
        return prefect_state(status, status_line, result)

    # ------------------------------------------------------------------ views of the state

    def _record(self, status: RunStatus, **fields: Any) -> RunRecord:
        return self.settings.record(
            status,
            self.plan.max_concurrency,
            spec=self.spec.name,
            started_at=iso(self.started_at),
            **fields,
        )

    def _run_state(self, status: RunStatus) -> dict[str, Any]:
        """The plan file's ``orchestrator_state``."""
        return {
            "run_id": self.settings.run_id,
            "status": status.plan_file_word,
            "scheduler": self.settings.scheduler,
            "started_at": iso(self.started_at),
            "updated_at": iso(time.time()),
            "active_workers": self.sched.running,
            **worker_counts(self.records),
        }

    def _blockers(self) -> dict[str, str]:
        """Why each task that did not pass did not: its own last attempt, or what blocked it."""
        out = dict(self.sched.blockers)
        for tid, recs in self.records.items():
            if blocker := final_blocker(recs):
                out[tid] = blocker
        return out

    def _rows(self) -> list[dict[str, Any]]:
        return table_rows(
            self.spec.units,
            self.plan.wave_of,
            self.sched.state,
            self.records,
            self._blockers(),
            worktree=self.merges is not None,
        )

    def _count(self, was: TaskStatus, now: TaskStatus) -> None:
        self._counts[was] -= 1
        self._counts[now] = self._counts.get(now, 0) + 1

    def _describe_counts(self) -> str:
        """ "2 in_progress, 1 pass, 3 pending": the progress artifact's line of counts."""
        return ", ".join(f"{n} {s.value}" for s, n in self._counts.items() if n)

    async def _progress(self) -> None:
        finished = (
            len(self.spec.units)
            - self._counts.get(TaskStatus.PENDING, 0)
            - (self._counts.get(TaskStatus.IN_PROGRESS, 0))
        )
        await self.ui.progress(finished, len(self.spec.units), self._describe_counts())


__all__ = ["RunLoop", "RunSettings"]
