"""A spec folder's own worktree settings: ``<spec folder>/specwave-worktree.json``.

Every key is optional; a command-line option or flow parameter wins over the file::

    {"verify": "python -m pytest -q", "setup": "npm ci", "include": [".env"], "into": null}

so a team can keep the verify command with the spec instead of every user typing it.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks_lib.errors import SpecError

CONFIG_FILE = "specwave-worktree.json"


class WorktreeSettings(BaseModel):
    """What ``specwave-worktree.json`` may say."""

    model_config = ConfigDict(extra="forbid")

    verify: str | None = Field(None, description="Run after each merge (see --verify).")
    setup: str | None = Field(None, description="Run in each new worktree (see --setup).")
    include: list[str] = Field(default_factory=list, description="See --include.")
    into: str | None = Field(None, description="The integration branch (see --into).")


def load_worktree_settings(spec_folder: str | Path) -> WorktreeSettings:
    """The spec folder's settings (empty when there is no file); a bad file is one line."""
    path = Path(spec_folder) / CONFIG_FILE
    if not path.is_file():
        return WorktreeSettings()
    try:
        return WorktreeSettings.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise SpecError.single(
            f"{path}:{exc.lineno}:{exc.colno}",
            f"invalid JSON: {exc.msg}",
            hint="fix the syntax at that position",
        ) from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise SpecError.single(
            str(path),
            f'field "{field}": {first["msg"]}',
            hint="the keys are verify, setup, include and into",
        ) from None


__all__ = ["CONFIG_FILE", "WorktreeSettings", "load_worktree_settings"]
