"""Where a task's agent works: the workspace seam.

A :class:`Workspace` gives each attempt the directory its agent works in (:meth:`enter`) and
takes it back when the attempt is over (:meth:`leave`: e.g. commit what the agent left, give
the record what it needs to know about the work). The flow describes the workspace once as a
:class:`WorkspaceSpec` — plain values, so a worker can open the same workspace in another
process or on another machine — and every worker opens it with :func:`open_workspace`.

Implementations:

* ``shared`` (:class:`~tasks_lib.workspaces.shared.SharedCheckout`): every agent works in the
  one repository checkout, at the same time (the spec's declared file conflicts keep two
  tasks off the same declared files; nothing else separates them).
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, Field

from tasks_lib.records import AttemptRecord


class WorkspaceSpec(BaseModel):
    """A workspace, as plain values (what crosses the worker seam)."""

    kind: Literal["shared"] = Field("shared", description="Which workspace: shared.")
    path: str = Field(description="The repository checkout the agents work in.")


class Workspace(Protocol):
    """Where one task's attempts run."""

    kind: str

    async def enter(self, task_id: str, attempt: int) -> str:
        """Make the attempt's directory ready; return its path (the agent's workdir)."""
        ...

    async def leave(self, task_id: str, attempt: int, record: AttemptRecord) -> AttemptRecord:
        """The attempt is over (whatever its outcome): take the directory back and return
        the record, with whatever the workspace adds to it."""
        ...


def open_workspace(spec: WorkspaceSpec | dict) -> Workspace:
    """The workspace a spec describes."""
    spec = spec if isinstance(spec, WorkspaceSpec) else WorkspaceSpec.model_validate(spec)
    from tasks_lib.workspaces.shared import SharedCheckout

    return {"shared": SharedCheckout}[spec.kind](spec)


__all__ = ["Workspace", "WorkspaceSpec", "open_workspace"]
