"""The formats, each declared once: its names, its module, its reader, its write-back.

Everything that depends on which format a spec is in goes through :data:`REGISTRY`: the name a
user types (``--format``), where its plan file is in a folder, how it is read and how progress is
written back. A format's module is imported the first time a spec needs it (reading an Agent OS
tasks.json does not import the Markdown formats).

Adding a format: write ``tasks_lib/formats/<name>.py`` with a reader
``(folder, plan_file, *, parallel, [tag]) -> LoadedSpec`` that ends with
:func:`tasks_lib.formats.documents.read_documents`, and a DocumentFormat class with a
``for_spec(spec)`` classmethod; add one :class:`Format` line below; teach
:func:`tasks_lib.formats.detect.detect_format` how to recognise its file when ``--format`` is
not given.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks_lib.errors import Problem, SpecError
from tasks_lib.spec import LoadedSpec
from tasks_lib.store import DocumentFormat, display_path


@dataclass(frozen=True)
class Format:
    """One input format.

    Attributes:
        name: the canonical name (``spec.format``, ``--format``, JSON outputs).
        aliases: other spellings ``--format`` accepts (lower case).
        module: the module that implements it, imported when first needed.
        reader: the module's ``(folder, plan_file, *, parallel, [tag]) -> LoadedSpec``.
        document: the module's DocumentFormat class (built per spec by ``for_spec(spec)``).
        plan_files: where its plan file is in a folder, for ``--format``: the first that
            exists; when none does, the last one is named in the error.
        takes_tag: the reader takes ``tag`` (else ``--tag`` earns a warning).
        keeps_attempts: the plan file records attempts (else they are counted from the run
            records in ``.specwave/``).
    """

    name: str
    aliases: tuple[str, ...]
    module: str
    reader: str
    document: str
    plan_files: tuple[str, ...]
    takes_tag: bool = False
    keeps_attempts: bool = False

    def _attr(self, attr: str) -> Any:
        return getattr(importlib.import_module(self.module), attr)

    def read(
        self, folder: Path, plan_file: Path, *, tag: str | None = None, parallel: bool = False
    ) -> LoadedSpec:
        """Read a spec in this format. Raises SpecError (one line per problem)."""
        options: dict[str, Any] = {"parallel": parallel}
        if self.takes_tag:
            options["tag"] = tag
        spec: LoadedSpec = self._attr(self.reader)(folder, plan_file, **options)
        return spec

    def document_format(self, spec: LoadedSpec) -> DocumentFormat:
        """The DocumentFormat the store uses to write progress back into ``spec.tasks_path``."""
        fmt: DocumentFormat = self._attr(self.document).for_spec(spec)
        return fmt


REGISTRY: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "agent-os",
            ("agentos", "agent-os-json"),
            "tasks_lib.formats.agentos",
            "read_agent_os",
            "AgentOsJson",
            ("tasks.json",),
            keeps_attempts=True,
        ),
        Format(
            "agent-os-md",
            ("agentos-md", "agent-os-markdown"),
            "tasks_lib.formats.agentos_md",
            "read_agent_os_md",
            "AgentOsMarkdown",
            ("tasks.md",),
        ),
        Format(
            "taskmaster",
            ("task-master",),
            "tasks_lib.formats.taskmaster",
            "read_taskmaster",
            "TaskMasterJson",
            (".taskmaster/tasks/tasks.json", "tasks/tasks.json", "tasks.json"),
            takes_tag=True,
        ),
        Format(
            "spec-kit",
            ("speckit",),
            "tasks_lib.formats.speckit",
            "read_speckit",
            "SpecKitMarkdown",
            ("tasks.md",),
        ),
    )
}

FORMATS = tuple(REGISTRY)
ALIASES = {alias: f.name for f in REGISTRY.values() for alias in f.aliases}


def canonical_format(name: str | None, label: str = "--format") -> str | None:
    """A --format value in its canonical spelling (None stays None). Raises SpecError."""
    if name is None:
        return None
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in REGISTRY:
        raise SpecError.single(
            label, f'unknown format "{name}"', hint=f"use one of: {', '.join(FORMATS)}"
        )
    return key


def load_spec(
    path: Path, *, format: str | None = None, tag: str | None = None, parallel: bool = False
) -> LoadedSpec:
    """Read any supported plan. Raises SpecError (one line per problem) for bad input.

    Args:
        path: a spec folder, a project root or a plan file.
        format: force a format (see :data:`FORMATS`).
        tag: Task Master tag (default: ``currentTag`` of ``.taskmaster/state.json``, else
            master).
        parallel: formats with no dependency data (Agent OS tasks.md): run the top-level
            tasks in parallel instead of in order.

    Example:
        >>> spec = load_spec(Path("examples/small-feature"))  # doctest: +SKIP
        >>> spec.format, [u.id for u in spec.units]  # doctest: +SKIP
        ('agent-os', ['1', '2', '3'])
    """
    from tasks_lib.formats.detect import detect_format

    name, folder, plan_file = detect_format(Path(path), format)
    fmt = REGISTRY[name]
    extra: list[Problem] = []
    if tag is not None and not fmt.takes_tag:
        extra.append(
            Problem(
                display_path(plan_file),
                f"--tag has no effect on format {name}",
                severity="warning",
                hint="drop --tag",
            )
        )
    spec = fmt.read(folder, plan_file, tag=tag, parallel=parallel)
    spec.warnings[:0] = extra
    if not fmt.keeps_attempts:
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
    """The DocumentFormat the store uses to write progress back into ``spec.tasks_path``
    (a spec whose ``format`` is none of :data:`FORMATS` is written back as Agent OS JSON)."""
    return REGISTRY.get(spec.format, REGISTRY["agent-os"]).document_format(spec)
