"""Crash recovery, decided: what a new run must do about the runs before it. Pure: no I/O.

A run that is killed (SIGKILL, power loss) leaves three kinds of debris, and the next run of
the spec, holding the run lock (so every earlier run is dead), cleans them up:

* **a run that still says it runs**: its ``run.json`` says ``running`` and its Prefect flow
  run is Running. :func:`close_dead_run` says what to write instead (``died``) and which
  Prefect state to give the flow run.
* **agents that outlived it** (they may still be working on the checkout):
  :func:`agents_to_reap` lists the recorded ones; every other run's marker catches the rest.
* **passes it proved but never wrote** (the status write failed, or it was killed before the
  coalesced write landed): :func:`passes_to_recover` says which tasks to record as passed
  from their attempt records instead of running them again.

The caller (flows/run_guard.py) reads the files, calls these, and applies what they return.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tasks_lib.records import AttemptRecord, RunRecord
from tasks_lib.report import iso, result_update
from tasks_lib.spec import SpecUnit
from tasks_lib.state import DONE_STATUSES, ENDED_NORMALLY, RunStatus
from tasks_lib.store import TaskUpdate


@dataclass(frozen=True)
class DeadRun:
    """What to do about an earlier run whose orchestrator died."""

    flow_run_id: str
    record: RunRecord | None  # the run.json to write (``died``); None: leave it as it is
    prefect_status: RunStatus | None  # whose Prefect state the flow run gets (None: Crashed)
    note: str  # what happened, for the flow run's state message


def close_dead_run(
    holder: Mapping[str, Any],
    record: RunRecord | None,
    run_id: str,
    *,
    known_dead: bool,
    this_host: str,
    pid_alive: bool,
) -> DeadRun | None:
    """The earlier run named by the lock file's ``holder``: None when there is nothing to do
    (no flow run id, it is this run, or it may still be alive: not ``known_dead`` and not a
    dead pid on this host). ``record``: its run.json, if any. ``known_dead``: it held the
    lock when it died (the kernel dropped the lock); ``pid_alive``: its pid exists here."""
    dead = str(holder.get("flow_run_id") or "")
    if not dead or dead == run_id:
        return None
    if not known_dead and (
        holder.get("host") != this_host or not isinstance(holder.get("pid"), int) or pid_alive
    ):
        return None
    pid = holder.get("pid")
    ended = record.status if record is not None else None
    if ended is None or ended in (RunStatus.RUNNING, RunStatus.DIED):
        note = f"the orchestrator (pid {pid}) died; found by run {run_id}"
        died = (
            record.model_copy(update={"status": RunStatus.DIED, "note": note})
            if record is not None and ended == RunStatus.RUNNING
            else None
        )
        return DeadRun(dead, died, None, note)  # None: Crashed
    note = (
        f"the run ended {ended.value} (run.json), then its orchestrator (pid {pid}) died "
        f"before Prefect recorded it; found by run {run_id}"
    )
    return DeadRun(dead, None, ended, note)


def agents_to_reap(recorded: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    """Agents recorded by runs other than this one (those runs are dead: we hold the lock)."""
    return [r for r in recorded if r.get("run_id") != run_id]


def passes_to_recover(
    units: list[SpecUnit],
    file_tasks: Mapping[str, Mapping[str, Any]],
    last_run: RunRecord | None,
    attempts: Mapping[str, list[AttemptRecord]],
    merged: Callable[[AttemptRecord], bool] = lambda rec: False,
) -> list[TaskUpdate]:
    """The passes an earlier run proved (attempt records) but never wrote to the plan file.

    ``units``: the spec's tasks; ``file_tasks``: the plan file's raw tasks by id;
    ``last_run``: the record of the run that last wrote the file (its
    ``orchestrator_state.run_id``), ``attempts``: that run's attempt records by task.

    Only a run that did not end normally (killed: ``running``/``died``; a failed write:
    ``failed``) is looked at: one that ended normally wrote every result it had, so if the file
    no longer says pass, someone reset it. Only a pass the file never saw is recovered: the
    task is not done in the file, its latest attempt passed, and the file's ``completed_at``
    is not that attempt's end. Every recorded result sets ``completed_at`` to its attempt's
    end, so a pass someone set back by hand keeps it and runs again.

    Worktree isolation: a pass counts only once its work is merged: its record says so, or
    (killed between the merge and rewriting the record) ``merged(record)`` finds its commit in
    the integration branch. A pass never merged runs again, from the integration head.
    """
    if last_run is not None and last_run.status in ENDED_NORMALLY:
        return []
    updates = []
    for unit in units:
        recs = attempts.get(unit.id) or []
        if unit.status in DONE_STATUSES or not recs or not recs[-1].passed:
            continue
        last = recs[-1]
        if last.work is not None and not (
            (last.merge is not None and last.merge.ok) or (last.merge is None and merged(last))
        ):
            continue  # its work never reached the integration branch: it runs again
        if (file_tasks.get(unit.id) or {}).get("completed_at") == iso(recs[-1].ended):
            continue  # this pass was written; someone set the task back since
        updates.append(result_update(unit.id, unit.attempts, recs))
    return updates


__all__ = ["DeadRun", "agents_to_reap", "close_dead_run", "passes_to_recover"]
