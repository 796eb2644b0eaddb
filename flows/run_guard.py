"""The run guard: what holds around a run of one spec, from before its first agent to after
its last.

On entry, in this order:

1. **the run lock** (one run per spec at a time; a second run is refused in one line);
2. **recovery** from the runs before it (decided in tasks_lib/recovery.py, applied here): an
   earlier run that still says it runs is closed (``died``, and its Prefect flow run set to
   a final state); agents that outlived it are killed; passes it proved but never wrote to
   the plan file are recorded (and those tasks are not run again);
3. **the run's agent marker**: every agent of this run inherits it, so a later run can find
   the ones this run could not record;
4. **the watchdog** (tasks_lib/agents/watchdog.py): a small process that kills every agent
   carrying the marker if this orchestrator dies without cleaning up, even by SIGKILL;
5. **the cancel watch**: a cancel from Prefect (UI, API) stops the run like a signal.

On exit (also on failure and cancellation): the watch is stopped, the watchdog told goodbye
(the run's agents are ended by then) and the lock released.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger

from flows.cancel_watch import watch_for_cancellation
from tasks_lib.agents.process import MARKER_ENV, ProcessInfo, reap
from tasks_lib.agents.watchdog import Watchdog
from tasks_lib.formats import document_format
from tasks_lib.records import AttemptRecord
from tasks_lib.recovery import agents_to_reap, close_dead_run, passes_to_recover
from tasks_lib.report import iso
from tasks_lib.runfolder import RunFolder, safe_name
from tasks_lib.spec import LoadedSpec, id_str
from tasks_lib.state import DONE_STATUSES, TaskStatus, prefect_state
from tasks_lib.store import PlanStore, RunLock
from tasks_lib.workspaces import git
from tasks_lib.workspaces.integration import settled_head


def _merged_in(repo: str | None, spec_name: str) -> Callable[[AttemptRecord], bool]:
    """Worktree isolation: is an attempt's commit in its integration branch already (a
    merge still being verified when its run died does not count)?"""

    def merged(rec: AttemptRecord) -> bool:
        work = rec.work
        if repo is None or work is None or not work.integration or not work.changed:
            return False
        try:
            head = settled_head(repo, work.integration, Path(work.worktree).parent, spec_name)
            return head is not None and git.is_ancestor(repo, work.commit, head)
        except git.GitError:
            return False

    return merged


class RunGuard:
    """``async with RunGuard(spec, run_id) as guard:`` — see the module docstring.

    ``guard.agent_env`` is what every agent's environment must carry (the marker);
    ``guard.cancelled_from_prefect`` names the Prefect state (Cancelling, Cancelled) when the
    run was cancelled from Prefect, else None."""

    def __init__(self, spec: LoadedSpec, run_id: str, flow_run_id: str | None):
        self.spec = spec
        self.run_id = run_id
        self.flow_run_id = flow_run_id
        self.folder = RunFolder(spec.folder, run_id)
        self.lock = RunLock(spec.folder)
        self.marker = ""
        self._seen: dict[str, str] = {}
        self._watcher: asyncio.Task | None = None
        self._watchdog: Watchdog | None = None

    @property
    def agent_env(self) -> dict[str, str]:
        return {MARKER_ENV: self.marker}

    @property
    def cancelled_from_prefect(self) -> str | None:
        return self._seen.get("state")

    async def __aenter__(self) -> RunGuard:
        logger = get_run_logger()
        previous = self.lock.holder()
        stale = self.lock.acquire(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at": iso(time.time()),
                "flow_run_id": self.run_id,
                "active": True,
            }
        )
        try:
            if stale:
                logger.warning(
                    f"took over the run lock of pid {stale.get('pid')} on "
                    f"{stale.get('host')} (started {stale.get('started_at')}): "
                    "that run died without releasing it"
                )
            if stale or previous:
                await self._close_dead_run(stale or previous or {}, known_dead=bool(stale))
            self._reap_earlier_agents()
            self._recover_unrecorded_passes()
            self.marker = self._marker()
            self._watchdog = Watchdog(self.marker)
            self._watchdog.start()
            logger.debug(f"agent watchdog started (pid {self._watchdog.pid})")
            if self.flow_run_id:
                flow_task = asyncio.current_task()
                assert flow_task is not None  # we run in the flow's task
                self._watcher = asyncio.create_task(
                    watch_for_cancellation(self.flow_run_id, flow_task, self._seen),
                    name="specwave-cancel-watcher",
                )
        except BaseException:
            self._stop_watchdog()
            self.lock.release()
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await asyncio.to_thread(self._stop_watchdog)
        self.lock.release()
        get_run_logger().debug("run lock released")

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None

    # ------------------------------------------------------------------ recovery, applied

    async def _close_dead_run(self, holder: dict[str, Any], *, known_dead: bool) -> None:
        """Say what happened to a run whose orchestrator died, so neither its run folder nor
        the UI reports a run that is not running."""
        import psutil

        dead_id = str(holder.get("flow_run_id") or "")
        pid = holder.get("pid")
        record = RunFolder(self.spec.folder, dead_id).read_run() if dead_id else None
        verdict = close_dead_run(
            holder,
            record,
            self.run_id,
            known_dead=known_dead,
            this_host=socket.gethostname(),
            pid_alive=isinstance(pid, int) and psutil.pid_exists(pid),
        )
        if verdict is None:
            return
        if verdict.record is not None:
            RunFolder(self.spec.folder, verdict.flow_run_id).write_run(verdict.record)
        try:
            from prefect.client.orchestration import get_client

            async with get_client() as client:
                run = await client.read_flow_run(UUID(verdict.flow_run_id))
                if run.state is not None and not run.state.is_final():
                    await client.set_flow_run_state(
                        UUID(verdict.flow_run_id),
                        prefect_state(verdict.prefect_status, verdict.note),
                        force=True,
                    )
        except Exception:  # noqa: BLE001 - not a flow run of this API (or no API): nothing to fix
            pass

    def _reap_earlier_agents(self) -> None:
        """Agents recorded by earlier runs are orphans (we hold the run lock, so those runs
        are dead): kill any that survive, then forget them. Run markers catch agents an
        earlier run started but died before recording (pid 0 never matches a live process,
        so only the marker does)."""
        logger = get_run_logger()
        spec_folder = self.spec.folder
        infos = []
        for r in agents_to_reap(RunFolder.recorded_agents(spec_folder), self.run_id):
            try:
                infos.append(ProcessInfo.from_dict(r))
            except ValueError:
                continue
        if infos and (killed := reap(infos)):
            logger.warning(
                f"killed {len(killed)} agent processes left by an earlier run that died: {killed}"
            )
        markers = RunFolder.markers_of_other_runs(spec_folder, self.run_id)
        if markers:
            killed = reap(
                [
                    ProcessInfo(
                        pid=0,
                        pgid=0,
                        create_time=-1.0,
                        argv0="",
                        marker=f.read_text(encoding="utf-8").strip(),
                    )
                    for f in markers
                ]
            )
            if killed:
                logger.warning(
                    f"killed {len(killed)} unrecorded agent processes left by an "
                    f"earlier run that died: {killed}"
                )
            for f in markers:
                RunFolder.retire(f)
        for f in RunFolder.agent_logs(spec_folder):
            if f.parent.name != self.run_id:
                RunFolder.retire(f)

    def _recover_unrecorded_passes(self) -> list[str]:
        """Record the passes an earlier run proved but never wrote (see
        tasks_lib.recovery.passes_to_recover). Agent OS ``tasks.json`` only: the other formats
        keep no completion time, so a pass set back by hand could not be told from one never
        written; there a pass that never reached the file runs again."""
        spec = self.spec
        units = [u for u in spec.units if u.status not in DONE_STATUSES]
        if spec.format != "agent-os" or not units or not RunFolder.runs_dir(spec.folder).is_dir():
            return []
        store = PlanStore(spec.tasks_path, document_format(spec))
        doc, _ = store.read()
        # Only the run that last wrote this file (orchestrator_state.run_id): a tasks.json
        # regenerated or replaced since is a new plan, and an old run's records say nothing
        # about it. (A run that recovers passes writes them before it writes its own run
        # state, so a chain of crashed runs loses nothing.)
        state = doc.get("orchestrator_state")
        last_writer = str(state.get("run_id") or "") if isinstance(state, dict) else ""
        if not last_writer or last_writer == self.run_id:
            return []
        last = RunFolder(spec.folder, last_writer)
        tasks_dir = last.root / "tasks"
        if not tasks_dir.is_dir():
            return []
        present = {d.name for d in tasks_dir.iterdir()}  # one listing, not one stat per task
        attempts = {u.id: last.attempts(u.id) for u in units if safe_name(u.id) in present}
        in_file = {id_str(t.get("id")): t for t in doc.get("tasks", []) if isinstance(t, dict)}
        run = last.read_run()
        updates = passes_to_recover(
            units,
            in_file,
            run,
            attempts,
            merged=_merged_in(run.workdir if run else None, spec.name),
        )
        if not updates:
            return []
        store.apply(*updates)
        for u in updates:
            unit = spec.unit(u.task_id)
            unit.status = TaskStatus.PASS
            unit.attempts = u.attempts or unit.attempts
        recovered = [u.task_id for u in updates]
        get_run_logger().warning(
            f"recorded {len(recovered)} pass(es) that an earlier run proved (attempt records) "
            f"but never wrote to {spec.tasks_path.name}: {', '.join(recovered)} (not run again)"
        )
        return recovered

    def _marker(self) -> str:
        """This run's agent marker, written to the run folder before any agent starts; the
        same flow run, retried, keeps its marker."""
        marker = self.folder.marker()
        if marker is None:
            marker = f"run-{uuid.uuid4().hex}"
            self.folder.write_marker(marker)
        return marker


__all__ = ["RunGuard"]
