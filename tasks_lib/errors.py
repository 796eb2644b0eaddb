"""Problems found in user input, and the exception that carries them.

Every message follows one shape, so a user can act on it without reading code::

    tasks.json: task "3": blocked_by names unknown task "9" — fix the id or remove it
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One problem in a spec: which file, which task (if any), what is wrong, what to do."""

    file: str
    message: str
    task_id: str | None = None
    hint: str | None = None
    severity: Severity = "error"
    where: str | None = None  # line:col or a JSON path, when known

    def __str__(self) -> str:
        head = self.file
        if self.where:
            head += f":{self.where}" if self.where[0].isdigit() else f" ({self.where})"
        parts = [head]
        if self.task_id is not None:
            parts.append(f'task "{self.task_id}"')
        text = ": ".join(parts) + ": " + self.message
        if self.hint:
            text += f" — {self.hint}"
        return text

    def to_dict(self) -> dict:
        return {
            "severity": self.severity,
            "file": self.file,
            "task_id": self.task_id,
            "where": self.where,
            "message": self.message,
            "hint": self.hint,
            "text": str(self),
        }


class SpecError(Exception):
    """The input cannot be used. Carries one or more error Problems (and any warnings)."""

    def __init__(self, problems: list[Problem], warnings: list[Problem] | None = None):
        self.problems = [p for p in problems if p.severity == "error"] or list(problems)
        self.warnings = list(warnings or [])
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def single(
        cls,
        file: str,
        message: str,
        *,
        hint: str | None = None,
        task_id: str | None = None,
        where: str | None = None,
    ) -> SpecError:
        return cls([Problem(file=file, message=message, hint=hint, task_id=task_id, where=where)])
