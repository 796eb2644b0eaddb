"""The integration branch and its merges (``--isolation worktree``).

Finished work is merged into the integration branch (``specwave/<spec>``, or ``--into``) in a
worktree of its own, one merge at a time (the run's merge queue, flows/merge_queue.py, says
when). A merge is a merge commit (``--no-ff``): the agent's commits stay as it made them, and
``git log --first-parent`` is the merge log in order. When a verify command is set it runs in
the integration worktree after the merge; a failure undoes the merge (``reset --hard`` to the
commit before it). A conflict is aborted at once. Either way the integration branch only ever
holds complete, verified merges.

The user's checkout is never touched: the integration branch is never the one they have
checked out (refused before the run starts), and its worktree is private to specwave.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from tasks_lib.agents.process import run_process_group
from tasks_lib.records import MergeInfo
from tasks_lib.workspaces import WorkspaceSpec, git
from tasks_lib.workspaces.names import integration_dirname
from tasks_lib.workspaces.worktree import park, remove_parked

VERIFY_TIMEOUT_S = 1800.0


def pending_path(worktrees_dir: str | Path, spec_name: str) -> Path:
    """Where a merge being verified is noted (the commit before it)."""
    return Path(worktrees_dir) / (integration_dirname(spec_name) + ".verifying")


def settled_head(repo: str, branch: str, worktrees_dir: str | Path, spec_name: str) -> str | None:
    """The integration branch's head once a run's repair is done: a merge that was being
    verified when its run died does not count (prepare() undoes it)."""
    pending = pending_path(worktrees_dir, spec_name)
    if pending.exists():
        before = pending.read_text(encoding="utf-8").strip()
        if before:
            return before
    return git.rev_parse(repo, branch)


class Integration:
    """The integration branch of one run: prepared once, merged into one task at a time."""

    def __init__(self, spec: WorkspaceSpec):
        assert spec.kind == "worktree" and spec.integration_branch and spec.worktrees_dir
        self.spec = spec
        self.repo = spec.path
        self.branch = spec.integration_branch
        self.path = Path(spec.worktrees_dir) / integration_dirname(spec.spec_name or "")
        self._identity: list[str] | None = spec.identity
        # the branch's head and tree as the merges left them (the branch is ours alone)
        self._head = ""
        self._tree: str | None = None
        self._synced = True  # whether the worktree's files are at the head
        self._merged_branches: list[str] = []

    def prepare(self) -> str:
        """Create the integration branch from the base when missing, and its worktree; return
        the branch's head."""
        git.exclude(
            self.repo, "/" + self.path.parent.parent.relative_to(self.repo).as_posix() + "/"
        )  # .specwave/: never in the user's git status
        if not git.branch_exists(self.repo, self.branch):
            git.create_branch(self.repo, self.branch, self.spec.base or "HEAD")
        if git.find_worktree(self.repo, self.path) is None:
            if self.path.exists():
                git.worktree_prune(self.repo)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            git.worktree_add(
                self.repo,
                self.path,
                self.branch,
                self.branch,
                if_exists="reuse",
                lock_reason="specwave: integration",
            )
        # a run killed mid-merge or mid-verify left it dirty, or merged but unproved: back
        # to the last whole, verified merge
        git.remove_index_lock(self.path)
        if git.merge_in_progress(self.path):
            git.abort_merge(self.path)
        if self._pending.exists():
            before = self._pending.read_text(encoding="utf-8").strip()
            git.reset_hard(self.path, before or "HEAD", clean_untracked=True)
            self.end_verify()
        git.reset_hard(self.path, "HEAD", clean_untracked=True)
        self._head = git.head_sha(self.path)
        self._tree = git.rev_parse_tree(self.path, self._head)
        self._synced = True
        return self._head

    def head(self) -> str:
        return git.head_sha(self.path)

    def sync(self) -> None:
        """The integration worktree's files brought to the branch's head (merges without a
        worktree only move the branch): before the verify command runs there."""
        if not self._synced:
            git.reset_hard(self.path, "HEAD")
            self._synced = True

    def merge(self, task_id: str, branch: str, title: str) -> tuple[MergeInfo, str]:
        """Merge ``branch``; returns the outcome (without verify) and the commit before it."""
        start = time.monotonic()
        subject = f"Merge {task_id}: {' '.join(title.split())}"[:200]
        if self._identity is None:
            self._identity = git.identity_args(self.path)
        trailers = {
            "Specwave-Task": task_id,
            **({"Specwave-Run": self.spec.run_id} if self.spec.run_id else {}),
        }
        if git.can_merge_without_worktree() and self._tree is not None:
            # no file written: the branch moves; the worktree follows when verify needs it
            result, self._tree = git.merge_commit(
                self.repo,
                self.branch,
                self._head,
                self._tree,
                branch,
                subject,
                trailers=trailers,
                identity=self._identity,
            )
            if result.status == "merged":
                self._synced = False
        else:
            result = git.merge(
                self.path,
                branch,
                subject,
                check=False,  # prepare() left it clean, and every merge leaves it clean
                identity=self._identity,
                trailers=trailers,
            )
        self._head = result.commit or result.before
        info = MergeInfo(
            status=result.status,
            commit=result.commit or result.before,
            files=result.files,
            seconds=round(time.monotonic() - start, 3),
        )
        return info, result.before

    @property
    def _pending(self) -> Path:
        return pending_path(self.path.parent, self.spec.spec_name or "")

    def begin_verify(self, before: str) -> None:
        """A merge is being verified: a run killed now must not leave it merged."""
        self._pending.write_text(before + "\n", encoding="utf-8")

    def end_verify(self) -> None:
        self._pending.unlink(missing_ok=True)

    def undo(self, before: str) -> None:
        git.reset_hard(self.path, before, clean_untracked=True)
        self._head, self._synced = before, True
        self._tree = git.rev_parse_tree(self.path, before)
        self.end_verify()

    def remove_task(self, worktree: str, branch: str) -> None:
        """A merged task's worktree is parked for the next task (or removed when it cannot
        be); its branch is deleted when the run closes (unless kept)."""
        park(self.spec, worktree)
        self._merged_branches.append(branch)

    def forget_task(self, branch: str) -> None:
        """A merged task that ran elsewhere (pool dispatch): only its fetched branch is
        here, deleted when the run closes (unless kept)."""
        self._merged_branches.append(branch)

    def close(self) -> None:
        """The run is over: the integration worktree and the parked ones go, and the merged
        tasks' branches (unless kept); the integration branch stays."""
        remove_parked(self.spec)
        if not self.spec.keep_branches:
            git.delete_branches(self.repo, self._merged_branches)
        git.worktree_remove(self.repo, self.path)


async def run_verify(
    command: str, cwd: str, limit_s: float = VERIFY_TIMEOUT_S, env: dict[str, str] | None = None
) -> tuple[bool, str]:
    """Run the user's verify command (shlex-split, no shell) in its own process group, killed
    as a group on timeout or cancel; returns (passed, the output's last lines)."""
    import os

    result = await run_process_group(
        shlex.split(command), cwd=cwd, env={**os.environ, **(env or {})}, timeout=limit_s
    )
    text = (result.stdout or "") + ("\n" + result.stderr if result.stderr else "")
    tail = "\n".join(text.strip().splitlines()[-30:])[-4000:]
    if result.timed_out:
        return False, f"verify timed out after {limit_s:g} s\n{tail}"
    return result.exit_code == 0, tail


__all__ = ["Integration", "run_verify"]
