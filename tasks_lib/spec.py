"""Models of the spec-folder files, and the format-neutral view the planner and the flow use.

Two layers:

* pydantic models of Agent OS ``tasks.json`` (v2/v3 and v4) and ``context-summary.json``.
  They validate; they are never written back (the store patches the raw document instead,
  which is what keeps unknown fields, key order and id types).
* :class:`SpecUnit` / :class:`LoadedSpec`: plain dataclasses, one unit per worker, that every
  input format (Agent OS, Task Master, spec-kit, ...) is mapped to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

# the task-status vocabulary lives in tasks_lib.state; re-exported for the formats
from tasks_lib.state import DONE_STATUSES as DONE_STATUSES
from tasks_lib.state import TERMINAL_STATUSES as TERMINAL_STATUSES
from tasks_lib.state import TaskStatus as TaskStatus

TaskId = StrictStr | StrictInt
"""A task id as the file wrote it: a string ("1.2", "W1-VERIFY") or an integer."""


_STATUS_ALIASES = {
    "pending": TaskStatus.PENDING,
    "todo": TaskStatus.PENDING,
    "not_started": TaskStatus.PENDING,
    "in_progress": TaskStatus.IN_PROGRESS,
    "in-progress": TaskStatus.IN_PROGRESS,
    "running": TaskStatus.IN_PROGRESS,
    "pass": TaskStatus.PASS,
    "passed": TaskStatus.PASS,
    "done": TaskStatus.PASS,
    "complete": TaskStatus.PASS,
    "completed": TaskStatus.PASS,
    "fail": TaskStatus.FAIL,
    "failed": TaskStatus.FAIL,
    "blocked": TaskStatus.BLOCKED,
    "skipped": TaskStatus.SKIPPED,
    "cancelled": TaskStatus.SKIPPED,
    "canceled": TaskStatus.SKIPPED,
}


def normalize_status(value: Any) -> TaskStatus | None:
    """Map a status word from a file to a TaskStatus; None when the word is unknown."""
    if value is None:
        return TaskStatus.PENDING
    return _STATUS_ALIASES.get(str(value).strip().lower())


def id_str(value: Any) -> str:
    """The canonical (string) form of a task id."""
    return str(value)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --------------------------------------------------------------------------- tasks.json


class Parallelization(_Lenient):
    wave: int | None = Field(None, description="Declared wave of this task (1-based).")
    can_parallel_with: list[TaskId] = Field(
        default_factory=list, description="Tasks the author says may run alongside."
    )
    blocked_by: list[TaskId] = Field(
        default_factory=list, description="Tasks that must pass before this one starts."
    )
    blocks: list[TaskId] = Field(
        default_factory=list, description="Tasks that wait for this one (inverse of blocked_by)."
    )
    shared_files: list[str] = Field(
        default_factory=list, description="Files (or 'dir/' trees) this task touches."
    )
    isolation_score: float | None = Field(
        None, ge=0, le=1, description="0..1, how isolated the task is."
    )


class TaskArtifacts(_Lenient):
    files_modified: list[str] = Field(default_factory=list, description="Files changed.")
    files_created: list[str] = Field(default_factory=list, description="Files added.")
    functions_created: list[str] = Field(default_factory=list, description="New functions.")
    exports_added: list[str] = Field(default_factory=list, description="New exports.")
    test_files: list[str] = Field(default_factory=list, description="Test files written.")


class Task(_Lenient):
    id: TaskId = Field(description='Task id, e.g. "1", "1.2" or 3.')
    type: Literal["parent", "subtask"] | None = Field(None, description="parent or subtask.")
    task_type: str | None = Field(None, description="v4: implementation, verification, ...")
    description: str = Field("", description="What to do.")
    status: StrictStr | None = Field("pending", description="pending, in_progress, pass, ...")
    parent: TaskId | None = Field(None, description="The parent task of a subtask.")
    subtasks: list[TaskId] = Field(default_factory=list, description="Ids of subtasks.")
    progress_percent: float | None = Field(None, description="Share of subtasks passed.")
    attempts: int | None = Field(None, ge=0, description="Worker attempts so far.")
    started_at: str | None = Field(None, description="ISO 8601 time the worker started.")
    completed_at: str | None = Field(None, description="ISO 8601 time the worker finished.")
    duration_minutes: float | None = Field(None, description="Measured worker duration.")
    notes: str | None = Field(None, description="Worker notes.")
    blocker: str | None = Field(None, description="Why the task did not pass.")
    parallelization: Parallelization | None = Field(None, description="Dependencies and files.")
    artifacts: TaskArtifacts | None = Field(None, description="What the worker produced.")
    # v4
    depends_on: list[TaskId] | None = Field(None, description="v4: tasks this one depends on.")
    shared_files: list[str] | None = Field(None, description="v4: files this task touches.")
    isolation_score: float | None = Field(None, ge=0, le=1, description="v4: 0..1.")
    complexity: str | None = Field(None, description="v4: LOW, MEDIUM or HIGH.")
    config: dict[str, Any] | None = Field(None, description="v4: type-specific settings.")
    estimated_minutes: float | None = Field(
        None, ge=0, description="Optional estimate used for planning."
    )


class Wave(_Lenient):
    wave_id: StrictInt = Field(description="1-based wave number.")
    tasks: list[TaskId] = Field(description="Parent task ids run together in this wave.")
    rationale: str | None = Field(None, description="Why these tasks run together.")
    estimated_duration_minutes: float | None = Field(
        None, ge=0, description="Estimated wave duration."
    )


class ExecutionStrategy(_Lenient):
    mode: Literal["sequential", "parallel_waves", "fully_parallel"] | None = Field(
        None, description="How the author expects the spec to run."
    )
    waves: list[Wave] = Field(default_factory=list, description="Declared waves, in order.")
    estimated_parallel_speedup: float | None = Field(None, description="Author's estimate.")
    max_concurrent_workers: int | None = Field(None, ge=1, description="Worker slots.")
    total_sequential_minutes: float | None = Field(None, description="Estimated serial time.")
    total_parallel_minutes: float | None = Field(None, description="Estimated parallel time.")


class ComputedWave(_Lenient):
    depth: int | None = None
    tasks: list[TaskId] = Field(default_factory=list)
    label: str | None = None
    parallel: bool | None = None


class Computed(_Lenient):
    waves: list[ComputedWave] = Field(default_factory=list)
    dependency_graph: dict[str, list[TaskId]] = Field(default_factory=dict)
    max_concurrent_workers: int | None = Field(None, ge=1)
    estimated_parallel_speedup: float | None = None


class TasksFile(_Lenient):
    """An Agent OS tasks.json (versions 2.x, 3.x and 4.0)."""

    version: StrictStr | int | float | None = Field(None, description='"2.0", "3.0", "4.0"...')
    spec: str | None = Field(None, description="Spec folder name.")
    spec_path: str | None = Field(None, description="Path of the spec folder.")
    created: str | None = Field(None, description="ISO 8601 creation time.")
    updated: str | None = Field(None, description="ISO 8601 time of the last write.")
    execution_strategy: ExecutionStrategy | None = Field(None, description="Declared waves.")
    tasks: list[Task] = Field(description="All tasks, parents and subtasks.")
    summary: dict[str, Any] | None = Field(None, description="Derived counts (recomputed).")
    orchestrator_state: dict[str, Any] | None = Field(None, description="Run bookkeeping.")
    future_tasks: list[Any] | None = Field(None, description="v4 backlog: never executed.")
    computed: Computed | None = Field(None, description="v4 derived waves and graph.")

    @property
    def is_v4(self) -> bool:
        return str(self.version or "").startswith("4")


# ------------------------------------------------------------------- context-summary.json


class GlobalContext(_Lenient):
    product_pitch: str | None = Field(None, description="What the product is.")
    tech_stack: list[str] = Field(default_factory=list, description="Languages, frameworks.")
    branch_name: str | None = Field(None, description="Git branch of the feature.")


class CodebaseRefs(_Lenient):
    functions: list[str] = Field(default_factory=list, description="Existing functions to use.")
    imports: list[str] = Field(default_factory=list, description="Imports to use.")
    schemas: list[str] = Field(default_factory=list, description="Schemas to follow.")


class Standards(_Lenient):
    patterns: list[str] = Field(default_factory=list, description="Patterns to follow.")
    testing: list[str] = Field(default_factory=list, description="Testing requirements.")


class ParallelContext(_Lenient):
    wave: int | None = Field(None, description="Declared wave.")
    concurrent_tasks: list[TaskId] = Field(default_factory=list, description="Run alongside.")
    conflict_risk: str | None = Field(None, description="low, medium or high.")
    shared_resources: list[str] = Field(default_factory=list, description="Shared resources.")
    prerequisite_outputs: dict[str, Any] = Field(
        default_factory=dict, description="What earlier tasks produce."
    )
    worker_instructions: str | None = Field(None, description="Instructions for the worker.")


class TaskContext(_Lenient):
    summary: str | None = Field(None, description="What the task is about.")
    parent: TaskId | None = Field(None, description="Parent task id.")
    spec_sections: list[str] = Field(default_factory=list, description="Spec sections to read.")
    relevant_files: list[str] = Field(default_factory=list, description="Files to modify.")
    codebase_refs: CodebaseRefs | None = Field(None, description="Existing code to use.")
    standards: Standards | None = Field(None, description="Patterns and testing rules.")
    dependencies: list[TaskId] = Field(default_factory=list, description="Prerequisite tasks.")
    estimated_tokens: int | None = Field(None, ge=0, description="Estimated context size.")
    parallel_context: ParallelContext | None = Field(None, description="Concurrency context.")


class ContextSummary(_Lenient):
    """An Agent OS context-summary.json."""

    version: StrictStr | int | float | None = None
    spec: str | None = None
    generated: str | None = None
    source_hashes: dict[str, Any] = Field(default_factory=dict)
    global_context: GlobalContext | None = Field(None, description="Product-wide context.")
    tasks: dict[str, TaskContext] = Field(default_factory=dict, description="Context per task.")
    metadata: dict[str, Any] | None = None


# --------------------------------------------------------------- format-neutral view


@dataclass
class SubUnit:
    """A subtask: runs inside its parent's worker."""

    id: str
    description: str
    status: TaskStatus = TaskStatus.PENDING
    details: str | None = None


@dataclass
class SpecUnit:
    """One unit of work = one worker run. Every input format maps its tasks to these."""

    id: str
    description: str
    status: TaskStatus = TaskStatus.PENDING
    raw_status: str | None = None
    deps: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    subtasks: list[SubUnit] = field(default_factory=list)
    declared_wave: int | None = None
    estimate_minutes: float | None = None
    estimated_tokens: int | None = None
    task_type: str | None = None
    config: dict[str, Any] | None = None
    context: TaskContext | None = None
    details: str | None = None  # free text from formats that have it (Task Master details)
    test_strategy: str | None = None
    attempts: int = 0


@dataclass
class DeclaredWave:
    wave_id: int
    tasks: list[str]
    estimated_duration_minutes: float | None = None
    rationale: str | None = None


@dataclass
class LoadedSpec:
    """A spec in the neutral form: what the planner plans and the flow runs."""

    name: str
    folder: Path
    tasks_path: Path
    format: str
    units: list[SpecUnit]
    declared_waves: list[DeclaredWave] | None = None
    declared_mode: str | None = None
    max_concurrent_workers: int | None = None
    estimated_parallel_speedup: float | None = None
    total_sequential_minutes: float | None = None
    global_context: GlobalContext | None = None
    context_present: bool = False
    documents: dict[str, str] = field(default_factory=dict)  # name -> text for prompts
    prompt_template: str | None = None  # the spec folder's worker-prompt.md, when it has one
    warnings: list = field(default_factory=list)  # list[Problem]
    wave_problems: list = field(default_factory=list)  # errors that matter only for declared waves
    unit_parallel_default: bool = True  # formats with no dependency data run in order
    _index: dict[str, SpecUnit] = field(default_factory=dict, repr=False, compare=False)

    def unit(self, task_id: str) -> SpecUnit:
        """The unit with this id (KeyError when there is none)."""
        unit = self._index.get(task_id)
        if unit is None or unit.id != task_id:  # first use, or the units changed
            self._index = {u.id: u for u in self.units}
            unit = self._index[task_id]
        return unit
