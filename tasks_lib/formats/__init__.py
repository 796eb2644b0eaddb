"""Input formats: detect what a path holds and read it into a :class:`LoadedSpec`.

Each format module provides a reader (path -> LoadedSpec, raising SpecError) and a
DocumentFormat (for the store's lossless write-back).
"""

from __future__ import annotations

from pathlib import Path

from tasks_lib.errors import SpecError
from tasks_lib.formats.agentos import AgentOsJson, read_agent_os
from tasks_lib.spec import LoadedSpec
from tasks_lib.store import DocumentFormat, display_path

FORMATS = ("agent-os",)


def detect_format(path: Path) -> tuple[str, Path, Path]:
    """Return (format name, spec folder, plan file) for a folder or a plan file."""
    path = Path(path)
    label = display_path(path)
    if not path.exists() and not path.is_symlink():
        raise SpecError.single(label, "not found", hint="pass a spec folder or a tasks.json")
    if path.is_dir():
        if (path / "tasks.json").exists() or (path / "tasks.json").is_symlink():
            return "agent-os", path, path / "tasks.json"
        raise SpecError.single(label, "has no tasks.json",
                               hint="pass an Agent OS spec folder (it holds tasks.json)")
    if path.name.endswith(".json"):
        return "agent-os", path.parent, path
    raise SpecError.single(label, "is not a plan specwave can read",
                           hint="pass an Agent OS spec folder or its tasks.json")


def load_spec(path: Path, *, format: str | None = None, tag: str | None = None,
              parallel: bool = False) -> LoadedSpec:
    """Read any supported plan. Raises SpecError (one line per problem) for bad input."""
    name, folder, plan_file = detect_format(Path(path))
    if format and format != name:
        if format not in FORMATS:
            raise SpecError.single(display_path(Path(path)), f'unknown format "{format}"',
                                   hint=f"use one of: {', '.join(FORMATS)}")
        name = format
    return read_agent_os(folder, plan_file)


def document_format(spec: LoadedSpec) -> DocumentFormat:
    """The DocumentFormat the store uses to write progress back into ``spec.tasks_path``."""
    return AgentOsJson()
