"""Agent OS spec folders: ``tasks.json`` (v2/v3 and v4) + optional ``context-summary.json``."""

from __future__ import annotations

import contextlib
import gc
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from tasks_lib import jsondoc
from tasks_lib.errors import Problem, SpecError
from tasks_lib.formats.documents import read_documents, spec_project
from tasks_lib.spec import (
    ContextSummary,
    DeclaredWave,
    LoadedSpec,
    SpecUnit,
    SubUnit,
    Task,
    TasksFile,
    TaskStatus,
    id_str,
    normalize_status,
)
from tasks_lib.store import TaskUpdate, display_path, read_text

TASKS_FILE = "tasks.json"
CONTEXT_FILE = "context-summary.json"
DOCUMENTS = ("spec.md", "spec-lite.md", "technical-spec.md")  # prompt order
MAX_SCHEMA_PROBLEMS = 20


def _json_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_json(text: str, label: str) -> Any:
    """Parse JSON text; a syntax error becomes one line with line:col."""
    try:
        doc = jsondoc.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError.single(
            label,
            f"invalid JSON: {exc.msg}",
            where=f"{exc.lineno}:{exc.colno}",
            hint="fix the syntax at that position",
        ) from None
    except RecursionError:
        raise SpecError.single(
            label, "invalid JSON: nested too deeply", hint="flatten the structure"
        ) from None
    if _SURROGATE_ESCAPE.search(text):
        where = _lone_surrogate(doc, "")
        if where is not None:
            raise SpecError.single(
                label,
                "contains a lone UTF-16 surrogate escape (such as \\ud800), which is not text",
                where=where or None,
                hint="remove the escape or complete the surrogate pair",
            )
    return doc


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE_CHAR = re.compile("[\ud800-\udfff]")


def _lone_surrogate(value: Any, path: str) -> str | None:
    """The JSON path of the first string holding a lone surrogate, else None."""
    if isinstance(value, str):
        return path if _SURROGATE_CHAR.search(value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            if _SURROGATE_CHAR.search(str(k)):
                return path or "$"
            found = _lone_surrogate(v, f"{path}.{k}" if path else str(k))
            if found is not None:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _lone_surrogate(v, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _union_member(part: Any) -> bool:
    """pydantic tags errors of a ``str | int`` field with the member tried ('str', 'int')."""
    return isinstance(part, str) and (
        part in ("str", "int", "float", "bool", "none") or "[" in part
    )


def validation_problems(
    exc: ValidationError, label: str, raw: Any, id_of: Any = None
) -> list[Problem]:
    """pydantic errors -> one Problem per wrong value, with the JSON path and the task id when
    known (the errors of every member of a union are folded into one line)."""
    grouped: dict[tuple, list[ErrorDetails]] = {}
    for err in exc.errors():
        loc = tuple(err["loc"])
        while loc and _union_member(loc[-1]):
            loc = loc[:-1]
        grouped.setdefault(loc, []).append(err)
    problems = []
    for loc, errs in list(grouped.items())[:MAX_SCHEMA_PROBLEMS]:
        task_id = id_of(raw, loc) if id_of else None
        value = errs[0].get("input")
        shown = json.dumps(value)[:60] if isinstance(value, (str, int, float, bool)) else None
        if value is None and "input" in errs[0]:
            shown = "null"
        wants = list(dict.fromkeys(e["msg"].removeprefix("Input should be ") for e in errs))
        msg = errs[0]["msg"] if len(wants) == 1 else "Input should be " + " or ".join(wants)
        msg += f" (got {shown})" if shown else ""
        problems.append(
            Problem(
                label,
                msg,
                task_id=task_id,
                where=_json_path(loc),
                hint="fix the value to match the format",
            )
        )
    return problems


def _task_id_at(raw: Any, loc: tuple) -> str | None:
    try:
        if loc[0] in ("tasks",) and isinstance(loc[1], int):
            if loc[2:] == ("id",):  # the id itself is wrong: the path and value say which
                return None
            tid = raw["tasks"][loc[1]].get("id")
            return None if tid is None else id_str(tid)
        if loc[0] == "tasks" and isinstance(loc[1], str):  # context-summary keyed by id
            return loc[1]
    except (IndexError, KeyError, TypeError, AttributeError):
        return None
    return None


class AgentOsJson:
    """DocumentFormat for Agent OS tasks.json (the store uses it to parse/render/update)."""

    name = "agent-os"

    def parse(self, text: str, label: str) -> Any:
        raw = parse_json(text, label)
        if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), list):
            raise SpecError.single(
                label,
                'top level must be a JSON object with a "tasks" list',
                hint="see the tasks.json format in docs/formats.md",
            )
        return raw

    @classmethod
    def for_spec(cls, spec: LoadedSpec) -> AgentOsJson:
        """The write-back for a spec read from an Agent OS tasks.json."""
        return cls()

    def __init__(self) -> None:
        # (text this object last rendered, the style it used): the next write of the same
        # file reads that text back, and detecting its style again is a regex pass over the
        # whole file (~10 ms at 500 tasks, on every write of a run). One store, one file.
        self._last: tuple[str, jsondoc.JsonStyle] | None = None

    def render(self, doc: Any, original: str) -> str:
        last = self._last
        style = (
            last[1] if last is not None and last[0] == original else jsondoc.detect_style(original)
        )
        text = jsondoc.dumps(doc, style)
        self._last = (text, style)
        return text

    @staticmethod
    def _find(doc: dict, task_id: str) -> dict | None:
        for t in doc.get("tasks", []):
            if isinstance(t, dict) and id_str(t.get("id")) == task_id:
                return t
        return None

    def apply(self, doc: Any, update: TaskUpdate) -> None:
        task = self._find(doc, update.task_id)
        if task is None:
            raise KeyError(f'task "{update.task_id}" is no longer in tasks.json')
        if update.status is not None:
            task["status"] = update.status
        for key in ("attempts", "started_at", "completed_at", "duration_minutes", "notes"):
            value = getattr(update, key)
            if value is not None:
                task[key] = value
        if update.blocker is not None:
            task["blocker"] = update.blocker
        elif update.clear_blocker and task.get("blocker") is not None:
            task["blocker"] = None
        if update.artifacts:
            arts = task.get("artifacts")
            if not isinstance(arts, dict):
                arts = task["artifacts"] = {}
            for key, values in update.artifacts.items():
                merged = list(arts.get(key) or [])
                merged += [v for v in values if v not in merged]
                arts[key] = merged
        if update.subtasks_status is not None:
            for sid in task.get("subtasks") or []:
                sub = self._find(doc, id_str(sid))
                if sub is not None:
                    sub["status"] = update.subtasks_status
            for sub in doc.get("tasks", []):
                if (
                    isinstance(sub, dict)
                    and sub.get("parent") is not None
                    and id_str(sub.get("parent")) == update.task_id
                ):
                    sub["status"] = update.subtasks_status

    def apply_run_state(self, doc: Any, state: dict[str, Any]) -> None:
        current = doc.get("orchestrator_state")
        if not isinstance(current, dict):
            current = doc["orchestrator_state"] = {}
        current.update(state)

    def finalize(self, doc: Any, now: str) -> None:
        tasks = [t for t in doc.get("tasks", []) if isinstance(t, dict)]
        by_id = {id_str(t.get("id")): t for t in tasks}
        for t in tasks:
            listed = [by_id.get(id_str(s)) for s in t.get("subtasks") or []]
            subs = [s for s in listed if s is not None]
            if subs and "progress_percent" in t or subs and t.get("type") == "parent":
                done = sum(1 for s in subs if normalize_status(s.get("status")) == TaskStatus.PASS)
                t["progress_percent"] = round(100 * done / len(subs))
        if "updated" in doc or "created" in doc:
            doc["updated"] = now
        summary = doc.get("summary")
        if summary is None:
            return
        if not isinstance(summary, dict):
            return
        statuses = [normalize_status(t.get("status")) for t in tasks]
        parents = [t for t in tasks if t.get("type") != "subtask" and t.get("parent") is None]
        done = sum(1 for s in statuses if s in (TaskStatus.PASS, TaskStatus.SKIPPED))
        values: dict[str, Any] = {
            "total_tasks": len(tasks),
            "parent_tasks": len(parents),
            "subtasks": len(tasks) - len(parents),
            "completed": done,
            "in_progress": sum(1 for s in statuses if s == TaskStatus.IN_PROGRESS),
            "blocked": sum(1 for s in statuses if s in (TaskStatus.BLOCKED, TaskStatus.FAIL)),
            "pending": sum(1 for s in statuses if s in (TaskStatus.PENDING, None)),
            "failed": sum(1 for s in statuses if s == TaskStatus.FAIL),
            "skipped": sum(1 for s in statuses if s == TaskStatus.SKIPPED),
            "overall_percent": round(100 * done / len(tasks)) if tasks else 0,
        }
        strategy = doc.get("execution_strategy")
        waves = strategy.get("waves") if isinstance(strategy, dict) else None
        if isinstance(waves, list) and waves:
            values["parallel_waves"] = len(waves)
            values["max_parallelism"] = max(
                (len(w.get("tasks") or []) for w in waves if isinstance(w, dict)), default=0
            )
        # v2/v3 summaries get the format's standard keys; other layouts (v4 has its own
        # counters) only have the keys they already hold refreshed.
        standard = not str(doc.get("version", "")).startswith("4")
        for key, value in values.items():
            if key in summary or (standard and key in _STANDARD_SUMMARY_KEYS):
                summary[key] = value


_STANDARD_SUMMARY_KEYS = (
    "total_tasks",
    "parent_tasks",
    "subtasks",
    "completed",
    "in_progress",
    "blocked",
    "pending",
    "overall_percent",
    "parallel_waves",
    "max_parallelism",
)


# ------------------------------------------------------------------ reading into LoadedSpec


def read_agent_os(
    folder: Path, tasks_path: Path | None = None, *, parallel: bool = False
) -> LoadedSpec:
    """Read and check an Agent OS spec folder. Raises SpecError with every problem found.

    ``parallel`` only earns a warning: the file's dependencies say what runs together.
    """
    with _gc_paused():
        return _read_agent_os(folder, tasks_path, parallel)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a spec is read.

    A 5,000-task spec allocates about a million small dicts, lists and models; each
    allocation burst triggers collections that scan everything built so far, which was half
    of the load time (more on a busy machine). Reading makes almost no reference cycles (an
    exception's traceback at most); they are collected once the collector resumes. The
    previous state is restored even on errors.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read_agent_os(folder: Path, tasks_path: Path | None, parallel: bool) -> LoadedSpec:
    tasks_path = tasks_path or folder / TASKS_FILE
    label = display_path(tasks_path)
    text = read_text(tasks_path, root=folder, what="tasks.json")
    raw = AgentOsJson().parse(text, label)
    try:
        model = TasksFile.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(validation_problems(exc, label, raw, _task_id_at)) from None

    context: ContextSummary | None = None
    ctx_path = folder / CONTEXT_FILE
    ctx_label = display_path(ctx_path)
    if ctx_path.exists() or ctx_path.is_symlink():
        ctx_text = read_text(ctx_path, root=folder, what="context-summary.json")
        ctx_raw = parse_json(ctx_text, ctx_label)
        if not isinstance(ctx_raw, dict):
            raise SpecError.single(
                ctx_label,
                "top level must be a JSON object",
                hint="see the context-summary.json format in docs/formats.md",
            )
        try:
            context = ContextSummary.model_validate(ctx_raw)
        except ValidationError as exc:
            raise SpecError(validation_problems(exc, ctx_label, ctx_raw, _task_id_at)) from None

    spec = _to_loaded(model, folder, tasks_path, label, context, ctx_label)
    if parallel:
        spec.warnings.insert(
            0,
            Problem(
                label,
                "--parallel has no effect on an Agent OS "
                "tasks.json: its dependencies say what runs "
                "together",
                severity="warning",
                hint="drop --parallel",
            ),
        )
    read_documents(
        spec, [(name, folder / name) for name in DOCUMENTS], project=spec_project(folder)
    )
    return spec


def _to_loaded(
    model: TasksFile,
    folder: Path,
    tasks_path: Path,
    label: str,
    context: ContextSummary | None,
    ctx_label: str,
) -> LoadedSpec:
    errors: list[Problem] = []
    warnings: list[Problem] = []
    wave_problems: list[Problem] = []

    by_id: dict[str, Task] = {}
    for t in model.tasks:
        tid = id_str(t.id)
        if tid in by_id:
            errors.append(
                Problem(label, "duplicate task id", task_id=tid, hint="give each task its own id")
            )
        by_id.setdefault(tid, t)

    def known(ref: Any, owner: str, field_name: str, file: str = label) -> str | None:
        rid = id_str(ref)
        if rid not in by_id:
            errors.append(
                Problem(
                    file,
                    f'{field_name} names unknown task "{rid}"',
                    task_id=owner,
                    hint="fix the id or remove it",
                )
            )
            return None
        return rid

    # parent/subtask structure
    parent_of: dict[str, str] = {}
    for tid, t in by_id.items():
        if t.parent is not None:
            p = known(t.parent, tid, "parent")
            if p is not None:
                parent_of[tid] = p
        for s in t.subtasks:
            sid = known(s, tid, "subtasks")
            if sid is not None:
                if sid in parent_of and parent_of[sid] != tid:
                    errors.append(
                        Problem(
                            label,
                            f'is listed as a subtask of both "{parent_of[sid]}" and "{tid}"',
                            task_id=sid,
                            hint="keep it under one parent",
                        )
                    )
                parent_of.setdefault(sid, tid)
        if t.type == "subtask" and t.parent is None and tid not in parent_of:
            errors.append(
                Problem(
                    label,
                    "is a subtask with no parent",
                    task_id=tid,
                    hint='set "parent", or make it a parent task',
                )
            )

    # a parent chain that loops (a is the parent of b, b of a) would silently drop its tasks
    in_cycle: set[str] = set()
    for tid in by_id:
        chain, cur = [tid], tid
        while cur in parent_of and parent_of[cur] not in chain:
            cur = parent_of[cur]
            chain.append(cur)
        if cur in parent_of and not in_cycle.intersection(chain):
            loop = chain[chain.index(parent_of[cur]) :]
            in_cycle.update(loop)
            errors.append(
                Problem(
                    label,
                    "parent/subtask cycle " + " → ".join(f'"{x}"' for x in loop + loop[:1]),
                    task_id=loop[0],
                    hint="a subtask's parent must be a task that is not under it",
                )
            )

    def root(tid: str) -> str:
        seen = set()
        while tid in parent_of and tid not in seen:
            seen.add(tid)
            tid = parent_of[tid]
        return tid

    unit_ids = [
        id_str(t.id)
        for t in model.tasks
        if id_str(t.id) not in parent_of and by_id.get(id_str(t.id)) is t
    ]
    units: dict[str, SpecUnit] = {}
    ctx_tasks = context.tasks if context else {}
    for uid in unit_ids:
        t = by_id[uid]
        status = normalize_status(t.status)
        if status is None:
            warnings.append(
                Problem(
                    label,
                    f'unknown status "{t.status}" is treated as pending',
                    task_id=uid,
                    severity="warning",
                    hint="use pending, in_progress, pass, fail, blocked or skipped",
                )
            )
            status = TaskStatus.PENDING
        est = t.estimated_minutes
        for k in ("estimated_duration_minutes", "estimate_minutes"):
            v = (t.model_extra or {}).get(k)
            if est is None and isinstance(v, (int, float)) and v > 0:
                est = float(v)
        units[uid] = SpecUnit(
            id=uid,
            description=t.description,
            status=status,
            raw_status=t.status,
            declared_wave=t.parallelization.wave if t.parallelization else None,
            estimate_minutes=est,
            task_type=t.task_type,
            config=t.config,
            context=ctx_tasks.get(uid),
            attempts=t.attempts or 0,
        )

    blocked_by_pairs: set[tuple[str, str]] = set()
    blocks_pairs: set[tuple[str, str]] = set()
    for tid, t in by_id.items():
        if by_id.get(tid) is not t:
            continue
        owner = root(tid)
        unit = units.get(owner)
        if unit is None:
            continue
        if tid != owner:
            status = normalize_status(t.status) or TaskStatus.PENDING
            unit.subtasks.append(SubUnit(id=tid, description=t.description, status=status))
        par = t.parallelization
        deps: list[str] = []
        if par:
            for ref in par.blocked_by:
                d = known(ref, tid, "blocked_by")
                if d:
                    deps.append(d)
                    blocked_by_pairs.add((d, tid))
            for ref in par.blocks:
                b = known(ref, tid, "blocks")
                if b:
                    blocks_pairs.add((tid, b))
                    if root(b) in units and root(b) != owner:
                        units[root(b)].deps.append(owner)
            unit.files.extend(par.shared_files)
        for ref in t.depends_on or []:
            d = known(ref, tid, "depends_on")
            if d:
                deps.append(d)
        unit.files.extend(t.shared_files or [])
        c = ctx_tasks.get(tid)
        if c is not None:
            unit.files.extend(c.relevant_files)
            for ref in c.dependencies:
                d = known(ref, tid, "dependencies", ctx_label)
                if d:
                    deps.append(d)
        for d in deps:
            if root(d) != owner and root(d) in units:
                unit.deps.append(root(d))

    for u in units.values():
        u.deps = list(dict.fromkeys(u.deps))
        u.files = list(dict.fromkeys(u.files))
        if u.estimated_tokens is None:
            toks = [c.estimated_tokens for c in [ctx_tasks.get(u.id)] if c and c.estimated_tokens]
            if not toks:
                toks = [
                    c.estimated_tokens
                    for c in (ctx_tasks.get(s.id) for s in u.subtasks)
                    if c is not None and c.estimated_tokens
                ]
            u.estimated_tokens = sum(toks) if toks else None

    for a, b in sorted(blocked_by_pairs - blocks_pairs):
        if a in units and b in units:
            warnings.append(
                Problem(
                    label,
                    f'is blocked_by "{a}", but "{a}" does not list it in blocks',
                    task_id=b,
                    severity="warning",
                    hint="make blocked_by and blocks agree",
                )
            )
    for a, b in sorted(blocks_pairs - blocked_by_pairs):
        if a in units and b in units:
            warnings.append(
                Problem(
                    label,
                    f'blocks "{b}", but "{b}" does not list it in blocked_by',
                    task_id=a,
                    severity="warning",
                    hint="make blocked_by and blocks agree",
                )
            )

    if context is not None:
        for uid in units:
            if uid not in ctx_tasks:
                warnings.append(
                    Problem(
                        ctx_label,
                        "has no context for this task",
                        task_id=uid,
                        severity="warning",
                        hint="regenerate context-summary.json",
                    )
                )
        for cid in ctx_tasks:
            if cid not in by_id:
                warnings.append(
                    Problem(
                        ctx_label,
                        "has context for a task that is not in tasks.json",
                        task_id=cid,
                        severity="warning",
                        hint="regenerate context-summary.json",
                    )
                )

    # declared waves (v2/v3); v4 waves are derived data
    declared: list[DeclaredWave] | None = None
    strategy = model.execution_strategy
    if strategy and strategy.waves and not model.is_v4:
        declared = []
        seen_in: dict[str, int] = {}
        for w in strategy.waves:
            ids = []
            for ref in w.tasks:
                rid = id_str(ref)
                if rid not in by_id:
                    errors.append(
                        Problem(
                            label,
                            f'names unknown task "{rid}"',
                            where=f"execution_strategy.waves[wave {w.wave_id}]",
                            hint="fix the id or remove it from the wave",
                        )
                    )
                    continue
                if rid in parent_of:
                    wave_problems.append(
                        Problem(
                            label,
                            f"is a subtask but is listed in wave {w.wave_id}",
                            task_id=rid,
                            hint=f'list its parent "{root(rid)}" instead; subtasks run inside '
                            "their parent's worker",
                        )
                    )
                    continue
                if rid in seen_in:
                    wave_problems.append(
                        Problem(
                            label,
                            f"is listed in two waves ({seen_in[rid]} and {w.wave_id})",
                            task_id=rid,
                            hint="keep it in one wave",
                        )
                    )
                    continue
                seen_in[rid] = w.wave_id
                ids.append(rid)
            declared.append(DeclaredWave(w.wave_id, ids, w.estimated_duration_minutes, w.rationale))
        for uid in units:
            if uid not in seen_in:
                wave_problems.append(
                    Problem(
                        label,
                        "is in no wave",
                        task_id=uid,
                        hint="add it to a wave in execution_strategy",
                    )
                )
            elif units[uid].declared_wave not in (None, seen_in[uid]):
                warnings.append(
                    Problem(
                        label,
                        f"parallelization.wave is "
                        f"{units[uid].declared_wave} but execution_strategy"
                        f" puts it in wave {seen_in[uid]}",
                        task_id=uid,
                        severity="warning",
                        hint="make them agree",
                    )
                )
        wave_ids = [w.wave_id for w in strategy.waves]
        if len(set(wave_ids)) != len(wave_ids):
            wave_problems.append(
                Problem(
                    label,
                    "two waves share one wave_id",
                    where="execution_strategy.waves",
                    hint="number the waves 1, 2, 3, ...",
                )
            )

    if model.is_v4 and model.computed and model.computed.dependency_graph:
        for uid, unit in units.items():
            stated = {
                root(id_str(d))
                for d in model.computed.dependency_graph.get(uid, [])
                if id_str(d) in by_id
            }
            if uid in model.computed.dependency_graph and stated != set(unit.deps):
                warnings.append(
                    Problem(
                        label,
                        "computed.dependency_graph disagrees with depends_on (depends_on wins)",
                        task_id=uid,
                        severity="warning",
                        hint="regenerate the computed block",
                    )
                )

    if errors:
        raise SpecError(errors, warnings)

    mcw = (strategy.max_concurrent_workers if strategy else None) or (
        model.computed.max_concurrent_workers if model.computed else None
    )
    return LoadedSpec(
        name=model.spec or folder.resolve().name,
        folder=folder,
        tasks_path=tasks_path,
        format=AgentOsJson.name,
        units=[units[u] for u in unit_ids],
        declared_waves=declared,
        declared_mode=strategy.mode if strategy else None,
        max_concurrent_workers=mcw,
        estimated_parallel_speedup=(strategy.estimated_parallel_speedup if strategy else None)
        or (model.computed.estimated_parallel_speedup if model.computed else None),
        total_sequential_minutes=strategy.total_sequential_minutes if strategy else None,
        global_context=context.global_context if context else None,
        context_present=context is not None,
        warnings=warnings,
        wave_problems=wave_problems,
    )
