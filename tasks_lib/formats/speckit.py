"""spec-kit ``specs/<feature>/tasks.md``: ``- [ ] T001 [P] [US1] description with file path``.

Reading (each line with a checkbox and a ``T<digits>`` id is one task, one worker):

* markers right after the id: ``[P]`` (may run in parallel), ``[US1]`` (the user story),
  any other ``[...]`` label; they go into the prompt, not into the description;
* **order**: phases (every heading starts one) run in order; inside a phase, tasks run in file
  order, except that a run of consecutive ``[P]`` tasks runs in parallel. Expressed as
  dependencies: each task depends on every task of the group before it (a group is one
  non-``[P]`` task or a run of ``[P]`` tasks), which makes each phase a barrier;
* **files**: paths named in the description (``src/models/user.py``) become the task's files,
  so two ``[P]`` tasks naming the same file never run together (the planner orders them);
* nested bullets under a task, its phase and its user story go into the prompt;
  ``plan.md``, ``spec.md``, ``data-model.md``, ``research.md`` and ``quickstart.md`` of the
  feature folder are the prompt's spec documents;
* not tasks: lines in fenced code blocks (``T006~T010`` in a "parallel example") and HTML
  comments, legends such as ``- **[P]**: Can run in parallel``, checkboxes without a ``T`` id
  (checklists), the ``TXXX`` placeholders of the template. "(depends on T012)" prose is not
  read: the file order already runs T012 first.

Write-back: ``[X]`` (spec-kit's own ``/implement`` ticks with a capital X; a file that already
uses ``x`` keeps it) for a passed task, a ``— specwave: failed: reason`` note for one that did
not pass (see :mod:`tasks_lib.formats.markdown`).
"""

from __future__ import annotations

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
from tasks_lib.spec import LoadedSpec, SpecUnit, TaskStatus
from tasks_lib.store import display_path, read_text

FORMAT = "spec-kit"
TASKS_MD = "tasks.md"
DOCUMENTS = ("spec.md", "plan.md", "data-model.md", "research.md", "quickstart.md")  # in order

TASK_ID_RE = re.compile(r"^(?:\*\*|__)?(?P<id>T\d+)(?:\*\*|__)?:?(?=\s|$)\s*(?P<rest>.*)$")
_MARKER_RE = re.compile(r"^(?:\*\*|__)?\[(?P<m>[^\]\[]{1,40})\](?:\*\*|__)?\s*")
_STORY_RE = re.compile(r"^(?:US|Story\s*)\d+$", re.IGNORECASE)


@dataclass
class KitTask:
    id: str
    description: str
    line: int
    indent: int
    checked: bool
    mark: str
    parallel: bool
    story: str | None
    labels: list[str]
    phase: list[str]  # heading path, outermost first
    group: int  # phase/section number: a new heading starts a new one
    note: tuple[str, str | None] | None
    done_decoration: bool
    details: list[str] = field(default_factory=list)


def looks_like_speckit(lines: list[str]) -> bool:
    """True when at least one checkbox line carries a ``T<digits>`` task id."""
    for ln in visible_lines(lines):
        m = CHECKBOX_RE.match(ln.text)
        if m and TASK_ID_RE.match((m.group("text") or "").strip()):
            return True
    return False


def parse_tasks_md(lines: list[str], label: str) -> list[KitTask]:
    tasks: list[KitTask] = []
    stack: list[tuple[int, str]] = []  # (level, heading text)
    section = 0
    target: KitTask | None = None
    for ln in visible_lines(lines):
        h = HEADING_RE.match(ln.text)
        if h:
            level = len(h.group("hashes"))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, clean_title(h.group("text"))[0]))
            section += 1
            target = None
            continue
        if not ln.text.strip():
            continue
        b = CHECKBOX_RE.match(ln.text)
        m = TASK_ID_RE.match(split_note(b.group("text") or "")[0].strip()) if b else None
        if m is None:
            if target is not None and ln.indent > target.indent:
                target.details.append(ln.text.strip())  # nested bullets (checkbox or not)
            else:
                target = None
            continue
        assert b is not None  # m was matched in b's text
        _, note = split_note(b.group("text") or "")
        rest = m.group("rest")
        parallel, story, labels = False, None, []
        while True:
            mm = _MARKER_RE.match(rest)
            if not mm:
                break
            marker = mm.group("m").strip()
            if marker.upper() == "P":
                parallel = True
            elif _STORY_RE.match(marker) and story is None:
                story = marker
            else:
                labels.append(marker)
            rest = rest[mm.end() :]
        description, done = clean_title(rest)
        task = KitTask(
            id=m.group("id"),
            description=description or m.group("id"),
            line=ln.index,
            indent=ln.indent,
            checked=b.group("mark") != " ",
            mark=b.group("mark"),
            parallel=parallel,
            story=story,
            labels=labels,
            phase=[t for lv, t in stack if lv > 1] or [t for _, t in stack],
            group=section,
            note=note,
            done_decoration=done,
        )
        tasks.append(task)
        target = task
    seen: dict[str, KitTask] = {}
    errors = []
    for t in tasks:
        if t.id in seen:
            errors.append(
                Problem(
                    label,
                    f"two tasks have this id (lines {seen[t.id].line + 1} and {t.line + 1})",
                    task_id=t.id,
                    where=str(t.line + 1),
                    hint="renumber one of them",
                )
            )
        seen.setdefault(t.id, t)
    if errors:
        raise SpecError(errors)
    return tasks


def order_dependencies(tasks: list[KitTask]) -> dict[str, list[str]]:
    """Each task depends on every task of the previous group (see the module docstring)."""
    groups: list[list[KitTask]] = []
    prev_group = None
    for t in tasks:
        same_run = groups and t.parallel and groups[-1][-1].parallel and t.group == prev_group
        if same_run:
            groups[-1].append(t)
        else:
            groups.append([t])
        prev_group = t.group
    deps: dict[str, list[str]] = {}
    for k, g in enumerate(groups):
        before = [t.id for t in groups[k - 1]] if k else []
        for t in g:
            deps[t.id] = list(before)
    return deps


class SpecKitMarkdown(MarkdownChecklist):
    """DocumentFormat for a spec-kit tasks.md."""

    name = FORMAT
    default_tick = "X"

    def index(self, lines: list[str], label: str) -> dict[str, Entry]:
        return {t.id: Entry(t.line, True) for t in parse_tasks_md(lines, label)}


def read_speckit(
    folder: Path, tasks_path: Path | None = None, *, parallel: bool = False
) -> LoadedSpec:
    """Read a spec-kit feature folder. Raises SpecError for unusable input."""
    tasks_path = tasks_path or folder / TASKS_MD
    label = display_path(tasks_path)
    text = read_text(tasks_path, root=folder, what="tasks.md")
    _, lines = split_lines(text)
    tasks = parse_tasks_md(lines, label)
    if not tasks:
        raise SpecError.single(
            label,
            "has no tasks",
            hint='write them as "- [ ] T001 [P] [US1] Description in path/to/file.py"',
        )
    warnings: list[Problem] = []
    if parallel:
        warnings.append(
            Problem(
                label,
                "--parallel has no effect on a spec-kit tasks.md: its "
                "phases and [P] markers say what runs together",
                severity="warning",
                hint="drop --parallel",
            )
        )
    deps = order_dependencies(tasks)
    units = []
    for t in tasks:
        if t.checked or t.done_decoration:
            status = TaskStatus.PASS
            if not t.checked:
                warnings.append(done_but_unticked(label, t.id, t.line))
        else:
            status = note_status(t.note) or TaskStatus.PENDING
        details = []
        if t.phase:
            details.append(f"Phase: {' › '.join(t.phase)}")
        if t.story:
            details.append(f"User story: {t.story} (see spec.md)")
        if t.labels:
            details.append(f"Labels: {', '.join(t.labels)}")
        details.append(
            "May run in parallel with the other [P] tasks of its phase"
            if t.parallel
            else "Runs in order within its phase"
        )
        details += t.details
        raw = f"[{t.mark}]" + (f" {t.note[0]}" if t.note else "")
        units.append(
            SpecUnit(
                id=t.id,
                description=t.description,
                status=status,
                raw_status=raw,
                deps=deps[t.id],
                files=find_paths(t.description),
                details="\n".join(details),
            )
        )
    order_through_done(units)
    spec = LoadedSpec(
        name=folder.resolve().name,
        folder=folder,
        tasks_path=tasks_path,
        format=FORMAT,
        units=units,
        warnings=warnings,
    )
    read_documents(
        spec, [(name, folder / name) for name in DOCUMENTS], project=spec_project(folder)
    )
    return spec
