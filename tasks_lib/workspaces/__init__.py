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
* ``worktree`` (:class:`~tasks_lib.workspaces.worktree.WorktreeCheckout`): each task in its
  own git worktree and branch, started from the integration branch; what the agent did is
  committed there, and the merge queue (:mod:`tasks_lib.workspaces.integration`) merges it.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, Field

from tasks_lib.records import AttemptRecord


class SetupFailed(RuntimeError):
    """The worktree's setup command failed: the attempt is ``crashed`` (``tail``: its output)."""

    def __init__(self, message: str, tail: str = ""):
        super().__init__(message)
        self.tail = tail


class WorkspaceSpec(BaseModel):
    """A workspace, as plain values (what crosses the worker seam)."""

    kind: Literal["shared", "worktree"] = Field(
        "shared", description="Which workspace: shared or worktree."
    )
    path: str = Field(description="The repository (its root, for worktree).")
    # worktree only
    spec_name: str | None = Field(None, description="The spec (names branches, worktrees).")
    run_id: str | None = Field(None, description="The run (a commit trailer).")
    integration_branch: str | None = Field(None, description="Where finished work is merged.")
    base: str | None = Field(None, description="The commit the integration branch starts at.")
    worktrees_dir: str | None = Field(None, description="Where the task worktrees live.")
    verify: str | None = Field(None, description="Command run after each merge (shlex-split).")
    keep_branches: bool = Field(False, description="Keep a merged task's branch.")
    setup: str | None = Field(
        None, description="Command (shlex-split) run in each new worktree before the agent."
    )
    include: list[str] = Field(
        default_factory=list,
        description="Gitignore-style patterns of untracked/ignored files copied from the "
        "checkout into each new worktree (plus the repository's .worktreeinclude).",
    )
    start: str | None = Field(
        None,
        description="The commit every attempt starts from, when the orchestrator chose it "
        "(pool dispatch); None: the integration branch's head when the attempt starts.",
    )
    git_url: str | None = Field(
        None, description="Pool dispatch: the git remote shared with the task runs."
    )
    identity: list[str] | None = Field(
        None,
        description="git -c user.name/user.email arguments for specwave's commits when the "
        "repository configures no identity (empty: it does); None: looked up at each commit.",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment added for setup (the run's marker)."
    )


class Workspace(Protocol):
    """Where one task's attempts run."""

    kind: str

    async def enter(self, task_id: str, attempt: int, title: str = "") -> str:
        """Make the attempt's directory ready; return its path (the agent's workdir).
        ``title``: the task's one-line description (e.g. for a commit subject)."""
        ...

    async def leave(self, task_id: str, attempt: int, record: AttemptRecord) -> AttemptRecord:
        """The attempt is over (whatever its outcome): take the directory back and return
        the record, with whatever the workspace adds to it."""
        ...


def open_workspace(spec: WorkspaceSpec | dict) -> Workspace:
    """The workspace a spec describes."""
    spec = spec if isinstance(spec, WorkspaceSpec) else WorkspaceSpec.model_validate(spec)
    if spec.kind == "worktree":
        from tasks_lib.workspaces.worktree import WorktreeCheckout

        return WorktreeCheckout(spec)
    from tasks_lib.workspaces.shared import SharedCheckout

    return SharedCheckout(spec)


__all__ = ["SetupFailed", "Workspace", "WorkspaceSpec", "open_workspace"]
