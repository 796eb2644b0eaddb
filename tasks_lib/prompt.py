"""The worker prompt: everything one coding agent needs to do one task, and how to answer.

Sections follow the original design's BUILD_WORKER_PROMPT_PATTERN (task details, project
context, spec sections, files to modify, existing functions "USE EXACT NAMES", parallel context
with the concurrent tasks and worker instructions, patterns, testing requirements, subtasks,
the expected JSON output, then ``TASK COMPLETE``). Pure: no I/O.

A spec folder may override the whole template with its own ``worker-prompt.md`` (read with the
spec: ``LoadedSpec.prompt_template``); it is a ``string.Template`` (``$task_id``,
``$description``, ``$sections``, ``$output_format``, ...).

:func:`task_prompt` is the one way to get the prompt an agent is given: the flow uses it for
every worker, ``specwave run --dry-run`` prints it.
"""

from __future__ import annotations

import json
from string import Template
from typing import TYPE_CHECKING

from tasks_lib.spec import LoadedSpec, SpecUnit

if TYPE_CHECKING:
    from tasks_lib.planner import Plan

TEMPLATE_FILE = "worker-prompt.md"

OUTPUT_FORMAT = """## Expected Output

Complete the task following TDD (test first, then implement). When done, output your result as
one fenced json block — the last one in your answer:

```json
{
  "status": "pass|fail|blocked",
  "files_modified": ["path/to/file.py"],
  "files_created": ["path/to/new.py"],
  "functions_created": ["name"],
  "exports_added": [],
  "test_files": ["tests/test_x.py"],
  "test_results": {"ran": 5, "passed": 5, "failed": 0},
  "blocker": null,
  "notes": "Implementation summary",
  "duration_minutes": 15
}
```

Use "fail" if the work is not done or tests fail, and "blocked" (with a blocker) if something
outside this task stops you. Then state: **TASK COMPLETE**
"""


def _bullets(items: list[str]) -> str:
    return "\n".join(f"- {i}" for i in items)


def _section(title: str, body: str) -> str:
    return f"## {title}\n{body.strip()}\n" if body and body.strip() else ""


def extract_sections(markdown: str, names: list[str]) -> dict[str, str]:
    """Return the text of the named headings (case-insensitive match on the heading text)."""
    wanted = {n.strip().lstrip("#").strip().lower(): n for n in names}
    found: dict[str, str] = {}
    lines = markdown.splitlines()
    current: str | None = None
    level = 0
    buf: list[str] = []
    for line in lines + ["# "]:
        stripped = line.lstrip()
        if stripped.startswith("#"):
            hashes = len(stripped) - len(stripped.lstrip("#"))
            title = stripped[hashes:].strip().lower()
            if current is not None and hashes <= level:
                found[current] = "\n".join(buf).strip()
                current = None
            if current is None and title in wanted:
                current, level, buf = wanted[title], hashes, []
                continue
        if current is not None:
            buf.append(line)
    return found


def build_sections(
    spec: LoadedSpec, unit: SpecUnit, *, wave: int | None, concurrent: list[str]
) -> str:
    """All sections between the header and the output format, as markdown."""
    ctx = unit.context
    g = spec.global_context
    parts: list[str] = []

    details = [f"- **ID**: {unit.id}", f"- **Description**: {unit.description}"]
    if ctx and ctx.summary and ctx.summary != unit.description:
        details.append(f"- **Summary**: {ctx.summary}")
    if unit.task_type:
        details.append(f"- **Type**: {unit.task_type}")
    if unit.config:
        details.append(f"- **Config**: `{json.dumps(unit.config, ensure_ascii=False)}`")
    parts.append(_section("Task Details", "\n".join(details)))
    if unit.details:
        parts.append(_section("Implementation Details", unit.details))

    if g:
        proj = []
        if g.product_pitch:
            proj.append(f"- **Product**: {g.product_pitch}")
        if g.tech_stack:
            proj.append(f"- **Tech Stack**: {', '.join(g.tech_stack)}")
        if g.branch_name:
            proj.append(f"- **Branch**: {g.branch_name}")
        parts.append(_section("Project Context", "\n".join(proj)))

    if ctx and ctx.spec_sections:
        body = _bullets(ctx.spec_sections)
        for doc_name, text in spec.documents.items():
            found = extract_sections(text, ctx.spec_sections)
            for name, section_text in found.items():
                if section_text:
                    body += f"\n\n### {name} (from {doc_name})\n{section_text}"
        parts.append(_section("Spec Sections to Reference", body))
    elif spec.documents:
        names = ", ".join(spec.documents)
        parts.append(
            _section(
                "Spec Documents",
                f"Read {names} in the spec folder ({spec.folder}) for the full specification.",
            )
        )

    files = list(dict.fromkeys((ctx.relevant_files if ctx else []) + unit.files))
    parts.append(_section("Files to Modify", _bullets(files)))

    refs = ctx.codebase_refs if ctx else None
    if refs and refs.functions:
        parts.append(
            _section(
                "Existing Functions (USE EXACT NAMES)",
                "```\n" + "\n".join(refs.functions) + "\n```",
            )
        )
    if refs and refs.imports:
        parts.append(_section("Imports to Use", "```\n" + "\n".join(refs.imports) + "\n```"))
    if refs and refs.schemas:
        parts.append(_section("Schemas", _bullets(refs.schemas)))

    pc = ctx.parallel_context if ctx else None
    par = [f"- **Wave**: {wave if wave is not None else (pc.wave if pc else '-')}"]
    if pc and pc.conflict_risk:
        par.append(f"- **Conflict Risk**: {pc.conflict_risk}")
    if concurrent:
        par.append(
            f"- **Concurrent With**: Tasks {', '.join(concurrent)} (other workers are "
            "editing the repository at the same time: touch only your files)"
        )
    else:
        par.append("- **Sequential Execution**")
    if pc and pc.shared_resources:
        par.append(f"- **Shared Resources**: {', '.join(pc.shared_resources)}")
    if pc and pc.prerequisite_outputs:
        par.append("- **Prerequisite Outputs**:")
        for tid, out in pc.prerequisite_outputs.items():
            par.append(f"  - {tid}: {json.dumps(out, ensure_ascii=False)}")
    if pc and pc.worker_instructions:
        par.append(f"\n### Worker Instructions\n{pc.worker_instructions}")
    parts.append(_section("Parallel Execution Context", "\n".join(par)))

    std = ctx.standards if ctx else None
    if std and std.patterns:
        parts.append(_section("Patterns to Follow", _bullets(std.patterns)))
    testing = list(std.testing) if std and std.testing else []
    if unit.test_strategy:
        testing.append(unit.test_strategy)
    if testing:
        parts.append(_section("Testing Requirements", _bullets(testing)))

    if unit.subtasks:
        lines = []
        for s in unit.subtasks:
            box = "x" if s.status.value == "pass" else " "
            lines.append(f"- [{box}] {s.id} {s.description}")
            if s.details:
                lines.append("  " + s.details.replace("\n", "\n  "))
        parts.append(_section("Subtasks (do them all, in order)", "\n".join(lines)))
    return "\n".join(p for p in parts if p)


def build_prompt(
    spec: LoadedSpec,
    unit: SpecUnit,
    *,
    wave: int | None = None,
    concurrent: list[str] | None = None,
    template: str | None = None,
) -> str:
    """The full worker prompt for one unit.

    Example:
        >>> build_prompt(spec, spec.unit("1"), wave=1, concurrent=["2"])  # doctest: +SKIP
    """
    concurrent = concurrent or []
    sections = build_sections(spec, unit, wave=wave, concurrent=concurrent)
    if template:
        return Template(template).safe_substitute(
            task_id=unit.id,
            description=unit.description,
            spec_name=spec.name,
            spec_dir=str(spec.folder),
            sections=sections,
            output_format=OUTPUT_FORMAT,
            wave="" if wave is None else str(wave),
            concurrent=", ".join(concurrent),
        )
    header = (
        f"# Task Worker: Execute Task {unit.id}\n\n"
        f"You are a task worker agent executing a single task of the spec "
        f'"{spec.name}". Complete this task and return a structured result.\n'
    )
    return f"{header}\n{sections}\n{OUTPUT_FORMAT}"


def task_prompt(spec: LoadedSpec, plan: Plan, task_id: str) -> str:
    """The prompt the agent of ``task_id`` gets: its wave, the tasks planned alongside it, and
    the spec's own template when it has one.

    Example:
        >>> task_prompt(spec, plan_spec(spec), "1")  # doctest: +SKIP
    """
    wave = plan.wave_of.get(task_id)
    members = next((w.tasks for w in plan.waves if w.wave_id == wave), [])
    mates = [t for t in members if t != task_id]
    return build_prompt(
        spec, spec.unit(task_id), wave=wave, concurrent=mates, template=spec.prompt_template
    )
