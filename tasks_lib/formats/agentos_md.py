"""Agent OS ``tasks.md`` (the checklist older Agent OS versions write, with no ``tasks.json``).

Two layouts are read:

* parents as top-level checkboxes under a ``## Tasks`` heading, subtasks indented under them
  (what ``create-tasks`` writes)::

      ## Tasks

      - [ ] 1. **Create the token model**
        - [ ] 1.1 Write tests for the token model
        - [ ] 1.2 Implement the model
          - use the existing Base class     <- a nested bullet: goes into the prompt

* parents as headings, subtasks as checkboxes below them::

      ## Task 1: Create the token model
      - [ ] 1.1 Write tests for the token model

The file carries no dependency data: parent tasks run in order (each depends on the one before
it) unless ``--parallel`` is given; "Wave 1: tasks 1, 2" style prose is not read. Each parent is
one worker; its subtasks go into its prompt. The spec the file points to
(``@.agent-os/specs/<spec>/spec.md``) and the folder's ``spec.md`` / ``spec-lite.md`` /
``sub-specs/*.md`` go into the prompt context.

Write-back: a passed parent gets its box (or, for the heading layout, its subtasks' boxes)
ticked, with its subtasks; a failed or blocked one gets a ``— specwave: failed: reason`` note on
its line (see :mod:`tasks_lib.formats.markdown`).
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from tasks_lib.errors import Problem, SpecError
from tasks_lib.formats.documents import read_documents, spec_project
from tasks_lib.formats.markdown import (
    CHECKBOX_RE,
    HEADING_RE,
    Entry,
    MarkdownChecklist,
    clean_title,
    done_but_unticked,
    find_paths,
    note_status,
    order_through_done,
    split_lines,
    split_note,
    visible_lines,
)
from tasks_lib.spec import LoadedSpec, SpecUnit, SubUnit, TaskStatus
from tasks_lib.store import display_path, read_text

FORMAT = "agent-os-md"
TASKS_MD = "tasks.md"

_TASK_HEADING_RE = re.compile(
    r"^(?:\*\*|__)?Task(?:\s+Group)?\s+(?P<id>\d+)(?:\.0)?(?:\*\*|__)?"
    r"(?:\s*[:.)—–-]\s*|\s+|$)(?P<title>.*)$",
    re.IGNORECASE,
)
_PARENT_ID_RE = re.compile(
    r"^(?:\*\*|__)?(?:Task\s+)?(?P<id>\d+)(?:\.0)?(?:[.):])?(?:\*\*|__)?(?:\s+|$)(?P<title>.*)$",
    re.IGNORECASE,
)
_SUB_ID_RE = re.compile(
    r"^(?:\*\*|__)?(?P<id>\d+(?:\.\d+)+)(?:[.):])?(?:\*\*|__)?(?:\s+|$)"
    r"(?P<title>.*)$"
)
_TASKS_SECTION_RE = re.compile(r"^(?:implementation\s+)?tasks?(?:\s+list)?\s*:?$", re.IGNORECASE)
_SPEC_REF_RE = re.compile(r"@([\w./-]+\.md)\b")


@dataclass
class MdSub:
    id: str
    title: str
    line: int
    indent: int
    checked: bool
    details: list[str] = field(default_factory=list)


@dataclass
class MdTask:
    id: str | None
    title: str
    line: int
    indent: int
    has_box: bool
    checked: bool
    mark: str | None
    done_decoration: bool
    note: tuple[str, str | None] | None
    details: list[str] = field(default_factory=list)
    subtasks: list[MdSub] = field(default_factory=list)


def _heading_title(text: str) -> str:
    body, _ = split_note(text)
    return body.rstrip().rstrip("#").rstrip()


def parse_tasks_md(lines: list[str], label: str) -> tuple[list[MdTask], list[Problem]]:
    """Find the parent tasks and their subtasks. Raises SpecError for duplicate numbers."""
    visible = list(visible_lines(lines))
    headings = []
    for ln in visible:
        m = HEADING_RE.match(ln.text)
        if m:
            headings.append((ln.index, len(m.group("hashes")), m.group("text")))
    heading_layout = any(_TASK_HEADING_RE.match(_heading_title(h[2])) for h in headings)
    tasks = _parse_headings(visible) if heading_layout else _parse_checklist(visible, headings)

    # ids: numbered parents keep their number; unnumbered ones take the next free number
    used = {t.id for t in tasks if t.id is not None}
    nxt = 1
    for t in tasks:
        if t.id is None:
            while str(nxt) in used:
                nxt += 1
            t.id = str(nxt)
            used.add(t.id)
        for k, s in enumerate(t.subtasks, 1):
            if not s.id:
                s.id = f"{t.id}.{k}"
    seen: dict[str, MdTask] = {}
    errors = []
    for t in tasks:
        assert t.id is not None  # numbered above
        if t.id in seen:
            errors.append(
                Problem(
                    label,
                    f"two tasks have this number (lines {seen[t.id].line + 1} and {t.line + 1})",
                    task_id=t.id,
                    where=str(t.line + 1),
                    hint="renumber one of them",
                )
            )
        seen.setdefault(t.id, t)
    if errors:
        raise SpecError(errors)
    return tasks, []


def _box(text: str):
    m = CHECKBOX_RE.match(text)
    if not m:
        return None
    return m


def _parse_headings(visible) -> list[MdTask]:
    tasks: list[MdTask] = []
    current: MdTask | None = None
    level = 0
    for ln in visible:
        h = HEADING_RE.match(ln.text)
        if h:
            title_text = _heading_title(h.group("text"))
            m = _TASK_HEADING_RE.match(title_text)
            if m:
                title, done = clean_title(m.group("title") or "")
                _, note = split_note(h.group("text"))
                current = MdTask(
                    id=m.group("id"),
                    title=title or f"Task {m.group('id')}",
                    line=ln.index,
                    indent=0,
                    has_box=False,
                    checked=False,
                    mark=None,
                    done_decoration=done,
                    note=note,
                )
                level = len(h.group("hashes"))
                tasks.append(current)
            elif current is not None and len(h.group("hashes")) <= level:
                current = None
            continue
        if current is None or not ln.text.strip():
            continue
        b = _box(ln.text)
        if b:
            text, _ = split_note(b.group("text") or "")
            sm = _SUB_ID_RE.match(text.strip())
            sid = sm.group("id") if sm else ""
            title, done = clean_title(sm.group("title") if sm else text)
            current.subtasks.append(
                MdSub(sid, title, ln.index, ln.indent, b.group("mark") != " " or done)
            )
        elif current.subtasks and ln.indent > current.subtasks[-1].indent:
            current.subtasks[-1].details.append(ln.text.strip())
        else:
            current.details.append(ln.text.strip())
    return tasks


def _parse_checklist(visible, headings) -> list[MdTask]:
    # scope: the "## Tasks" sections when the file has them, else the whole file
    sections = [
        (i, lvl)
        for i, lvl, text in headings
        if _TASKS_SECTION_RE.match(clean_title(_heading_title(text))[0])
    ]
    in_scope: set[int] | None = None
    if sections:
        in_scope = set()
        for start, lvl in sections:
            end = next((i for i, lv, _ in headings if i > start and lv <= lvl), None)
            in_scope.update(
                ln.index for ln in visible if ln.index > start and (end is None or ln.index < end)
            )
    tasks: list[MdTask] = []
    parent_indent: int | None = None
    target: MdTask | MdSub | None = None  # where nested non-checkbox lines go
    for ln in visible:
        if in_scope is not None and ln.index not in in_scope:
            continue
        if HEADING_RE.match(ln.text):
            target = None
            continue
        if not ln.text.strip():
            continue
        b = _box(ln.text)
        if b is None:
            if target is not None and ln.indent > target.indent:
                target.details.append(ln.text.strip())
            else:
                target = None
            continue
        text, note = split_note(b.group("text") or "")
        text = text.strip()
        checked = b.group("mark") != " "
        if parent_indent is None:
            parent_indent = ln.indent
        sm = _SUB_ID_RE.match(text)
        current = tasks[-1] if tasks else None
        flat_sub = (
            sm is not None
            and current is not None
            and current.id is not None
            and sm.group("id").split(".")[0] == current.id
            and not sm.group("id").endswith(".0")
        )
        if current is not None and (ln.indent > parent_indent or flat_sub):
            title, done = clean_title(sm.group("title") if sm else text)
            sub = MdSub(sm.group("id") if sm else "", title, ln.index, ln.indent, checked or done)
            current.subtasks.append(sub)
            target = sub
            continue
        pm = _PARENT_ID_RE.match(text)
        if sm is not None and sm.group("id").endswith(".0"):  # "- [ ] 1.0 Title"
            tid, raw_title = sm.group("id")[:-2], sm.group("title")
        elif pm is not None and not (sm is not None):
            tid, raw_title = pm.group("id"), pm.group("title")
        else:
            tid, raw_title = None, text
        title, done = clean_title(raw_title)
        task = MdTask(
            id=tid,
            title=title,
            line=ln.index,
            indent=ln.indent,
            has_box=True,
            checked=checked,
            mark=b.group("mark"),
            done_decoration=done,
            note=note,
        )
        tasks.append(task)
        target = task
    return tasks


# ------------------------------------------------------------------------------ write-back


class AgentOsMarkdown(MarkdownChecklist):
    """DocumentFormat for an Agent OS tasks.md: ticks boxes, adds/removes one-line notes."""

    name = FORMAT
    default_tick = "x"

    def index(self, lines: list[str], label: str) -> dict[str, Entry]:
        tasks, _ = parse_tasks_md(lines, label)
        return {
            t.id: Entry(t.line, t.has_box, [s.line for s in t.subtasks])
            for t in tasks
            if t.id is not None
        }  # parse_tasks_md numbers every task


# ------------------------------------------------------------------------------ reading


def read_agent_os_md(
    folder: Path, tasks_path: Path | None = None, *, parallel: bool = False
) -> LoadedSpec:
    """Read an Agent OS tasks.md into a LoadedSpec. Raises SpecError for unusable input."""
    tasks_path = tasks_path or folder / TASKS_MD
    label = display_path(tasks_path)
    text = read_text(tasks_path, root=folder, what="tasks.md")
    _, lines = split_lines(text)
    tasks, warnings = parse_tasks_md(lines, label)
    if not tasks:
        raise SpecError.single(
            label,
            "has no tasks",
            hint='write them as "- [ ] 1. Title" with indented '
            '"  - [ ] 1.1 Step" lines under a "## Tasks" heading',
        )
    units: list[SpecUnit] = []
    for t in tasks:
        subs = [
            SubUnit(
                s.id,
                s.title,
                TaskStatus.PASS if s.checked else TaskStatus.PENDING,
                "\n".join(s.details) or None,
            )
            for s in t.subtasks
        ]
        open_subs = [s.id for s in subs if s.status != TaskStatus.PASS]
        if t.has_box and (t.checked or t.done_decoration):
            status = TaskStatus.PASS
            if not t.checked:
                warnings.append(done_but_unticked(label, t.id, t.line))
        elif not t.has_box and (t.done_decoration or (subs and not open_subs)):
            status = TaskStatus.PASS
        else:
            status = note_status(t.note) or TaskStatus.PENDING
        if status == TaskStatus.PASS and open_subs:
            many = len(open_subs) > 1
            warnings.append(
                Problem(
                    label,
                    f"is ticked but subtask{'s' if many else ''} "
                    f"{', '.join(open_subs)} {'are' if many else 'is'} "
                    "not — treated as done",
                    task_id=t.id,
                    where=str(t.line + 1),
                    severity="warning",
                    hint="untick the task to run it again",
                )
            )
        if not t.has_box and not subs:
            warnings.append(
                Problem(
                    label,
                    "has no checkbox, so its progress cannot be written back",
                    task_id=t.id,
                    where=str(t.line + 1),
                    severity="warning",
                    hint='add "- [ ] N.1 step" lines under the heading',
                )
            )
        files: list[str] = []
        for source in [t.title] + [s.title for s in t.subtasks]:
            files += [p for p in find_paths(source) if p not in files]
        raw = f"[{t.mark}]" if t.mark is not None else None
        if t.note:
            raw = (raw + " " if raw else "") + t.note[0]
        assert t.id is not None  # parse_tasks_md numbers every task
        units.append(
            SpecUnit(
                id=t.id,
                description=t.title,
                status=status,
                raw_status=raw,
                files=files,
                subtasks=subs,
                details="\n".join(t.details) or None,
            )
        )
    if not parallel:
        for prev, unit in itertools.pairwise(units):
            unit.deps.append(prev.id)
        order_through_done(units)
    spec = LoadedSpec(
        name=folder.resolve().name,
        folder=folder,
        tasks_path=tasks_path,
        format=FORMAT,
        units=units,
        warnings=warnings,
        unit_parallel_default=parallel,
    )
    read_documents(spec, spec_documents(folder, text), project=spec_project(folder))
    return spec


def spec_documents(folder: Path, text: str) -> list[tuple[str, Path]]:
    """The spec files a tasks.md points to (``@.agent-os/specs/x/spec.md``, looked up from the
    folder and its ancestors up to the project root), else the folder's own spec.md /
    spec-lite.md, plus sub-specs/*.md: ``(name, path)`` in prompt order, each file once, names
    relative to the spec folder. :func:`~tasks_lib.formats.documents.read_documents` reads them.
    """
    folder_r = folder.resolve()
    project = spec_project(folder_r)
    bases = [folder_r, *folder_r.parents]
    bases = bases[: bases.index(project) + 1]
    found: list[Path] = []
    for ref in _SPEC_REF_RE.findall(text[:20_000]):
        if ref.startswith("/") or ".." in Path(ref).parts:
            continue
        for base in bases:
            if (base / ref).is_file():
                found.append(base / ref)
                break
    if not found:
        found += [folder_r / name for name in ("spec.md", "spec-lite.md")]
    sub = folder_r / "sub-specs"
    if sub.is_dir():
        found += sorted(p for p in sub.glob("*.md") if p.is_file())
    seen = {folder_r / TASKS_MD}  # a pointer to the tasks.md itself is not a spec document
    docs: list[tuple[str, Path]] = []
    for p in found:
        try:
            real = p.resolve()
        except (OSError, RuntimeError):  # a link loop: read_documents leaves it out
            real = p
        if real not in seen:
            seen.add(real)
            docs.append((os.path.relpath(p, folder_r), p))
    return docs
