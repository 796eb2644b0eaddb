"""Input formats: detect what a path holds and read it into a :class:`LoadedSpec`.

Each format module provides a reader (path -> LoadedSpec, raising SpecError) and a
DocumentFormat (for the store's lossless write-back):

==============  ===========================================  ==================================
format          file                                         module
==============  ===========================================  ==================================
agent-os        ``<spec>/tasks.json`` (v2/v3, v4)            :mod:`.agentos`
agent-os-md     ``<spec>/tasks.md`` (Agent OS checklist)     :mod:`.agentos_md`
taskmaster      ``.taskmaster/tasks/tasks.json``,            :mod:`.taskmaster`
                legacy ``tasks/tasks.json``
spec-kit        ``specs/<feature>/tasks.md`` (``T001``)      :mod:`.speckit`
==============  ===========================================  ==================================

Detection (``--format`` overrides it):

* a ``*.json`` file, or a folder's ``tasks.json``: Task Master when it is tagged
  (``{"master": {"tasks": [...]}}``) or its tasks look like Task Master's (``title``,
  ``testStrategy``, ``details``, subtask objects) rather than Agent OS's (``type``,
  ``parallelization``, ``parent``, ``depends_on``, top-level ``execution_strategy``...);
  Agent OS otherwise;
* a folder holding ``.taskmaster/tasks/tasks.json`` (a project root), ``.taskmaster`` itself,
  or ``tasks/tasks.json`` (legacy Task Master): Task Master;
* a ``*.md`` file, or a folder's ``tasks.md``: spec-kit when a checkbox line carries a
  ``T001`` id, Agent OS otherwise;
* a folder holding exactly one ``specs/<feature>/tasks.md``: that feature.

A folder's ``tasks.json`` wins over its ``tasks.md`` (Agent OS folders often hold both).
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks_lib.errors import Problem, SpecError
from tasks_lib.spec import LoadedSpec
from tasks_lib.store import MAX_PLAN_BYTES, DocumentFormat, display_path

# Each format's module is imported when a plan needs it (detection, reading, writing back):
# reading an Agent OS tasks.json does not pay for the Markdown formats.

FORMATS = ("agent-os", "agent-os-md", "taskmaster", "spec-kit")
ALIASES = {
    "agentos": "agent-os", "agent-os-json": "agent-os", "agentos-md": "agent-os-md",
    "agent-os-markdown": "agent-os-md", "task-master": "taskmaster", "speckit": "spec-kit",
}

__all__ = ["FORMATS", "detect_format", "document_format", "load_spec"]

_AOS_TOP = frozenset({"version", "spec", "spec_path", "execution_strategy", "summary",
                      "orchestrator_state", "computed", "future_tasks"})
_AOS_TASK = frozenset({"type", "parallelization", "parent", "depends_on", "task_type",
                       "shared_files", "isolation_score", "progress_percent"})
_TM_TASK = frozenset({"title", "testStrategy", "details", "priority"})


def canonical_format(name: str | None, label: str = "--format") -> str | None:
    """A --format value in its canonical spelling (None stays None). Raises SpecError."""
    if name is None:
        return None
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in FORMATS:
        raise SpecError.single(label, f'unknown format "{name}"',
                               hint=f"use one of: {', '.join(FORMATS)}")
    return key


def _exists(p: Path) -> bool:
    return p.exists() or p.is_symlink()


def _read_small(p: Path) -> str | None:
    try:
        if not p.is_file() or p.stat().st_size > MAX_PLAN_BYTES:
            return None
        return p.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None


def json_kind(p: Path) -> str:
    """"taskmaster" or "agent-os" for a JSON plan (unreadable files: by location)."""
    from tasks_lib.formats.taskmaster import is_legacy, tags_of

    text = _read_small(p)
    raw = None
    if text is not None:
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError):
            raw = None
    in_tm_place = ".taskmaster" in p.parts or (p.parent.name == "tasks"
                                               and _exists(p.parent.parent / ".taskmaster"))
    if raw is None:
        return "taskmaster" if in_tm_place else "agent-os"
    if is_legacy(raw):
        if _AOS_TOP & raw.keys():
            return "agent-os"
        tm = aos = 0
        for t in raw["tasks"][:100]:
            if not isinstance(t, dict):
                continue
            subs = t.get("subtasks")
            tm += bool(_TM_TASK & t.keys()) or bool(
                isinstance(subs, list) and subs and isinstance(subs[0], dict))
            aos += bool(_AOS_TASK & t.keys())
        if tm != aos:
            return "taskmaster" if tm > aos else "agent-os"
        return "taskmaster" if in_tm_place or {"metadata", "meta"} & raw.keys() else "agent-os"
    if tags_of(raw):
        return "taskmaster"
    return "taskmaster" if in_tm_place else "agent-os"


def md_kind(p: Path) -> str:
    """"spec-kit" or "agent-os-md" for a tasks.md."""
    from tasks_lib.formats.markdown import split_lines
    from tasks_lib.formats.speckit import looks_like_speckit

    text = _read_small(p)
    if text is not None and looks_like_speckit(split_lines(text)[1]):
        return "spec-kit"
    if text is None and (p.parent / "plan.md").is_file():
        return "spec-kit"
    return "agent-os-md"


def _taskmaster_file(folder: Path) -> Path | None:
    for rel in (".taskmaster/tasks/tasks.json", "tasks/tasks.json"):
        if _exists(folder / rel):
            return folder / rel
    if folder.name == ".taskmaster" and _exists(folder / "tasks" / "tasks.json"):
        return folder / "tasks" / "tasks.json"
    return None


def detect_format(path: Path, format: str | None = None) -> tuple[str, Path, Path]:
    """Return (format name, spec folder, plan file) for a folder or a plan file.

    The spec folder is the folder of the plan file: the run record (``.specwave/``) is kept
    next to the file. ``format`` forces the format (its file is looked for in a folder).

    Example:
        >>> detect_format(Path("specs/001-photo-albums"))  # doctest: +SKIP
        ('spec-kit', PosixPath('specs/001-photo-albums'), PosixPath('specs/.../tasks.md'))
    """
    path = Path(path)
    label = display_path(path)
    forced = canonical_format(format)
    if not _exists(path):
        raise SpecError.single(label, "not found", hint="pass a spec folder or a tasks.json")
    if not path.is_dir():
        if forced:
            return forced, path.parent, path
        if path.name.endswith(".json"):
            return json_kind(path), path.parent, path
        if path.name.endswith(".md"):
            return md_kind(path), path.parent, path
        raise SpecError.single(label, "is not a plan specwave can read",
                               hint="pass a tasks.json, a tasks.md or the folder that holds it")

    if forced:
        if forced == "taskmaster":
            found = _taskmaster_file(path) or (path / "tasks.json")
        elif forced == "agent-os":
            found = path / "tasks.json"
        else:
            found = path / "tasks.md"
        if not _exists(found):
            raise SpecError.single(label, f"has no {found.name} for format {forced}",
                                   hint="point at the folder (or file) that holds the plan")
        return forced, found.parent, found

    if _exists(path / "tasks.json"):
        return json_kind(path / "tasks.json"), path, path / "tasks.json"
    tm = _taskmaster_file(path)
    if tm is not None and ".taskmaster" in tm.parts:
        return "taskmaster", tm.parent, tm
    if _exists(path / "tasks.md"):
        return md_kind(path / "tasks.md"), path, path / "tasks.md"
    if tm is not None:
        return json_kind(tm), tm.parent, tm
    if _exists(path / ".taskmaster"):
        raise SpecError.single(label, "has a .taskmaster folder but no "
                                      ".taskmaster/tasks/tasks.json",
                               hint="create the tasks first (task-master parse-prd)")
    features = sorted(p.parent for p in path.glob("specs/*/tasks.md"))
    if len(features) == 1:
        return md_kind(features[0] / "tasks.md"), features[0], features[0] / "tasks.md"
    if features:
        names = ", ".join(display_path(f) for f in features[:5]) + (
            ", ..." if len(features) > 5 else "")
        raise SpecError.single(label, f"holds {len(features)} spec-kit features ({names})",
                               hint="pass one feature folder")
    raise SpecError.single(label, "has no tasks.json or tasks.md",
                           hint="pass an Agent OS or spec-kit spec folder, or a Task Master "
                                "project (.taskmaster/tasks/tasks.json)")


def load_spec(path: Path, *, format: str | None = None, tag: str | None = None,
              parallel: bool = False) -> LoadedSpec:
    """Read any supported plan. Raises SpecError (one line per problem) for bad input.

    Args:
        path: a spec folder, a project root or a plan file.
        format: force a format (see :data:`FORMATS`).
        tag: Task Master tag (default: ``currentTag`` of ``.taskmaster/state.json``, else
            master).
        parallel: formats with no dependency data (Agent OS tasks.md): run the top-level
            tasks in parallel instead of in order.
    """
    name, folder, plan_file = detect_format(Path(path), format)
    extra: list[Problem] = []
    if tag is not None and name != "taskmaster":
        extra.append(Problem(display_path(plan_file), f"--tag has no effect on format {name}",
                             severity="warning", hint="drop --tag"))
    if name == "taskmaster":
        from tasks_lib.formats.taskmaster import read_taskmaster

        spec: LoadedSpec = read_taskmaster(plan_file, tag=tag, parallel=parallel)
    elif name == "spec-kit":
        from tasks_lib.formats.speckit import read_speckit

        spec = read_speckit(folder, plan_file, parallel=parallel)
    elif name == "agent-os-md":
        from tasks_lib.formats.agentos_md import read_agent_os_md

        spec = read_agent_os_md(folder, plan_file, parallel=parallel)
    else:
        from tasks_lib.formats.agentos import read_agent_os

        spec = read_agent_os(folder, plan_file)
        if parallel:
            extra.append(Problem(display_path(plan_file), "--parallel has no effect on an "
                                 "Agent OS tasks.json: its dependencies say what runs together",
                                 severity="warning", hint="drop --parallel"))
    spec.warnings[:0] = extra
    if name != "agent-os":
        _recorded_attempts(spec)
    return spec


def _recorded_attempts(spec: LoadedSpec) -> None:
    """Formats with no room for attempts: count them from the run records in ``.specwave/``
    (runs of this spec only: a Task Master file holds one spec per tag)."""
    from tasks_lib.runfolder import RunFolder, read_json, safe_name

    runs = RunFolder.runs_dir(spec.folder)
    if not runs.is_dir():
        return
    counts: dict[str, int] = {}
    for run in runs.iterdir():
        info = read_json(run / "run.json")
        if not isinstance(info, dict) or info.get("spec") != spec.name:
            continue
        tasks = run / "tasks"
        if not tasks.is_dir():
            continue
        for d in tasks.iterdir():
            counts[d.name] = counts.get(d.name, 0) + sum(1 for _ in d.glob("attempt-*.json"))
    for u in spec.units:
        u.attempts = max(u.attempts, counts.get(safe_name(u.id), 0))


def document_format(spec: LoadedSpec) -> DocumentFormat:
    """The DocumentFormat the store uses to write progress back into ``spec.tasks_path``."""
    if spec.format == "taskmaster":
        from tasks_lib.formats.taskmaster import TaskMasterJson

        return TaskMasterJson(tag=getattr(spec, "tag", None))
    if spec.format == "spec-kit":
        from tasks_lib.formats.speckit import SpecKitMarkdown

        return SpecKitMarkdown()
    if spec.format == "agent-os-md":
        from tasks_lib.formats.agentos_md import AgentOsMarkdown

        return AgentOsMarkdown()
    from tasks_lib.formats.agentos import AgentOsJson

    return AgentOsJson()
