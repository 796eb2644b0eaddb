"""Detection: which format a path holds, its spec folder and its plan file.

The rules (``--format`` overrides them; the format's file is then looked for in a folder, see
:attr:`~tasks_lib.formats.registry.Format.plan_files`):

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
Telling JSON (or Markdown) formats apart imports only the modules of that kind.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks_lib.errors import SpecError
from tasks_lib.formats.registry import REGISTRY, canonical_format
from tasks_lib.store import MAX_PLAN_BYTES, display_path

_AOS_TOP = frozenset(
    {
        "version",
        "spec",
        "spec_path",
        "execution_strategy",
        "summary",
        "orchestrator_state",
        "computed",
        "future_tasks",
    }
)
_AOS_TASK = frozenset(
    {
        "type",
        "parallelization",
        "parent",
        "depends_on",
        "task_type",
        "shared_files",
        "isolation_score",
        "progress_percent",
    }
)
_TM_TASK = frozenset({"title", "testStrategy", "details", "priority"})


def _exists(p: Path) -> bool:
    return p.exists() or p.is_symlink()


def _plan_file(name: str, folder: Path) -> Path:
    """The plan file of format ``name`` in ``folder``: the first of its ``plan_files`` that
    exists, else the last one (which the caller reports missing)."""
    rels = REGISTRY[name].plan_files
    return next((folder / rel for rel in rels if _exists(folder / rel)), folder / rels[-1])


def _read_small(p: Path) -> str | None:
    try:
        if not p.is_file() or p.stat().st_size > MAX_PLAN_BYTES:
            return None
        return p.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None


def json_kind(p: Path) -> str:
    """ "taskmaster" or "agent-os" for a JSON plan (unreadable files: by location)."""
    from tasks_lib.formats.taskmaster import is_legacy, tags_of

    text = _read_small(p)
    raw = None
    if text is not None:
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError):
            raw = None
    in_tm_place = ".taskmaster" in p.parts or (
        p.parent.name == "tasks" and _exists(p.parent.parent / ".taskmaster")
    )
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
                isinstance(subs, list) and subs and isinstance(subs[0], dict)
            )
            aos += bool(_AOS_TASK & t.keys())
        if tm != aos:
            return "taskmaster" if tm > aos else "agent-os"
        return "taskmaster" if in_tm_place or {"metadata", "meta"} & raw.keys() else "agent-os"
    if tags_of(raw):
        return "taskmaster"
    return "taskmaster" if in_tm_place else "agent-os"


def md_kind(p: Path) -> str:
    """ "spec-kit" or "agent-os-md" for a tasks.md."""
    from tasks_lib.formats.markdown import split_lines
    from tasks_lib.formats.speckit import looks_like_speckit

    text = _read_small(p)
    if text is not None and looks_like_speckit(split_lines(text)[1]):
        return "spec-kit"
    if text is None and (p.parent / "plan.md").is_file():
        return "spec-kit"
    return "agent-os-md"


def _taskmaster_file(folder: Path) -> Path | None:
    """A Task Master plan file in a project root (``.taskmaster/tasks/tasks.json``), in
    ``.taskmaster`` or in a legacy project (``tasks/tasks.json``)."""
    for rel in (".taskmaster/tasks/tasks.json", "tasks/tasks.json"):
        if _exists(folder / rel):
            return folder / rel
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
        raise SpecError.single(
            label,
            "is not a plan specwave can read",
            hint="pass a tasks.json, a tasks.md or the folder that holds it",
        )

    if forced:
        found = _plan_file(forced, path)
        if not _exists(found):
            raise SpecError.single(
                label,
                f"has no {found.name} for format {forced}",
                hint="point at the folder (or file) that holds the plan",
            )
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
        raise SpecError.single(
            label,
            "has a .taskmaster folder but no .taskmaster/tasks/tasks.json",
            hint="create the tasks first (task-master parse-prd)",
        )
    features = sorted(p.parent for p in path.glob("specs/*/tasks.md"))
    if len(features) == 1:
        return md_kind(features[0] / "tasks.md"), features[0], features[0] / "tasks.md"
    if features:
        names = ", ".join(display_path(f) for f in features[:5]) + (
            ", ..." if len(features) > 5 else ""
        )
        raise SpecError.single(
            label,
            f"holds {len(features)} spec-kit features ({names})",
            hint="pass one feature folder",
        )
    raise SpecError.single(
        label,
        "has no tasks.json or tasks.md",
        hint="pass an Agent OS or spec-kit spec folder, or a Task Master "
        "project (.taskmaster/tasks/tasks.json)",
    )
