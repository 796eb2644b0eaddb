"""Every task in its own git worktree, on its own branch (``--isolation worktree``).

An attempt's agent works in ``<git common dir>/specwave/worktrees/<spec>--<task>`` on the
branch ``specwave/<spec>--<task>``, created from the integration branch's head at the moment
the attempt starts (so it holds every dependency's merged work). When the attempt is over,
whatever the agent left uncommitted (tracked changes and new files, never ignored ones) is
committed on the task branch as ``<task id>: <title>`` with trailers naming the task, run and
attempt; commits the agent made itself are kept. The record says which branch, base and
commit, and whether the attempt changed anything. Merging is the merge queue's job
(:mod:`tasks_lib.workspaces.integration`).

Worktrees live inside the repository's git directory: outside the tracked tree, invisible to
the user's own test runs and tools, and removed with the repository. The user's checkout is
never touched: no checkout, no index write, no branch switch.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tasks_lib.agents.process import run_process_group
from tasks_lib.errors import SpecError
from tasks_lib.records import AttemptRecord, WorkInfo
from tasks_lib.workspaces import SetupFailed, WorkspaceSpec, git
from tasks_lib.workspaces.names import integration_branch, task_branch, worktree_dirname

SETUP_TIMEOUT_S = 1800.0
INCLUDE_FILE = ".worktreeinclude"


def worktrees_root(repo: str) -> Path:
    """Where a repository's specwave worktrees live (inside its common git dir)."""
    return git.common_dir(repo) / "specwave" / "worktrees"


def worktree_spec(
    repo: str,
    spec_name: str,
    *,
    into: str | None = None,
    base: str | None = None,
    verify: str | None = None,
    keep_branches: bool = False,
    setup: str | None = None,
    include: list[str] | None = None,
) -> WorkspaceSpec:
    """Check that worktree isolation can run here and describe it; nothing is changed.

    Raises SpecError (one line, exit 2) for: git missing or too old, a folder that is not a
    repository or has no commits, a detached HEAD with no ``base``, a missing base ref, a
    branch name git refuses, or integrating into the branch the user has checked out."""
    try:
        git.require_git()
        root = git.repo_root(repo)
        if root is None:
            raise SpecError.single(
                repo,
                "is not a git repository",
                hint="run `git init` and commit, or pass --isolation shared",
            )
        if not git.has_commits(root):
            raise SpecError.single(
                str(root),
                "the repository has no commits yet",
                hint="commit once, or pass --isolation shared",
            )
        branch = into or integration_branch(spec_name)
        if not git.is_valid_branch_name(branch):
            raise SpecError.single(
                branch, "is not a branch name git accepts", hint="choose another --into"
            )
        checked_out = git.current_branch(root)
        if checked_out == branch:
            raise SpecError.single(
                str(root),
                f"branch {branch!r} is checked out here",
                hint="specwave never changes your checkout: switch to another branch first, "
                "or integrate into another branch with --into",
            )
        if base is None and checked_out is None and not git.branch_exists(root, branch):
            raise SpecError.single(
                str(root),
                "HEAD is detached",
                hint="pass --base REF to say what the work starts from",
            )
        base_ref = base or "HEAD"
        base_sha = git.rev_parse(root, base_ref)
        if base_sha is None:
            raise SpecError.single(
                base_ref,
                "base ref not found in the repository",
                hint="pass an existing branch, tag or commit with --base",
            )
    except git.GitError as exc:
        raise SpecError.single(repo, str(exc), hint="install git 2.25 or newer") from None
    return WorkspaceSpec(
        kind="worktree",
        path=str(root),
        spec_name=spec_name,
        integration_branch=branch,
        base=base_sha,
        worktrees_dir=str(worktrees_root(str(root))),
        verify=verify,
        keep_branches=keep_branches,
        setup=setup,
        include=list(include or []),
    )


class WorktreeCheckout:
    """One worktree per task; an attempt starts from the integration branch's head."""

    kind = "worktree"

    def __init__(self, spec: WorkspaceSpec):
        assert spec.spec_name and spec.integration_branch and spec.worktrees_dir
        self.spec = spec
        self.repo = spec.path
        self._base: dict[tuple[str, int], str] = {}
        self._title: dict[str, str] = {}

    def path_of(self, task_id: str) -> Path:
        return Path(self.spec.worktrees_dir or "") / worktree_dirname(
            self.spec.spec_name or "", task_id
        )

    def branch_of(self, task_id: str) -> str:
        return task_branch(self.spec.spec_name or "", task_id)

    async def enter(self, task_id: str, attempt: int, title: str = "") -> str:
        """A fresh worktree from the integration head, the checkout's listed untracked files
        copied in (.worktreeinclude, ``include``), then the setup command run there."""
        self._title[task_id] = title
        path = await asyncio.to_thread(self._enter, task_id, attempt)
        if self.spec.setup:
            await self._setup(path)
        return path

    async def _setup(self, path: str) -> None:
        import os
        import shlex

        argv = shlex.split(self.spec.setup or "")
        try:
            res = await run_process_group(
                argv, cwd=path, env={**os.environ, **self.spec.env}, timeout=SETUP_TIMEOUT_S
            )
        except Exception as exc:  # noqa: BLE001 - e.g. the command does not exist
            raise SetupFailed(f"setup command could not start: {exc}") from None
        text = "\n".join((res.stdout + "\n" + res.stderr).strip().splitlines()[-30:])[-4000:]
        if res.timed_out:
            raise SetupFailed(f"setup command timed out after {SETUP_TIMEOUT_S:g} s", text)
        if res.exit_code != 0:
            last = text.splitlines()[-1:] or ["(no output)"]
            raise SetupFailed(f"setup command failed (exit {res.exit_code}): {last[0][:200]}", text)

    def _enter(self, task_id: str, attempt: int) -> str:
        path, branch = self.path_of(task_id), self.branch_of(task_id)
        if git.find_worktree(self.repo, path) is not None or path.exists():
            git.worktree_remove(self.repo, path)  # an earlier attempt's: start afresh
        head = git.rev_parse(self.repo, self.spec.integration_branch or "")
        base = head or self.spec.base or "HEAD"
        path.parent.mkdir(parents=True, exist_ok=True)
        info = git.worktree_add(
            self.repo,
            path,
            branch,
            base,
            if_exists="reset",
            lock_reason=f"specwave: task {task_id} attempt {attempt}",
        )
        self._copy_included(path)
        self._base[(task_id, attempt)] = info.head or base
        return info.path

    def _copy_included(self, path: Path) -> None:
        """Untracked files the agents need (``.env``...) that git would not put in a worktree:
        those .worktreeinclude (gitignore syntax, the convention Claude Code reads) or
        ``include`` lists, copied from the user's checkout."""
        import shutil

        patterns = list(self.spec.include)
        include = Path(self.repo, INCLUDE_FILE)
        if include.is_file():
            patterns += include.read_text(encoding="utf-8").splitlines()
        for rel in git.untracked_matching(self.repo, patterns):
            src, dst = Path(self.repo, rel), path / rel
            if src.is_file() and not src.is_symlink():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)

    async def leave(self, task_id: str, attempt: int, record: AttemptRecord) -> AttemptRecord:
        return await asyncio.to_thread(self._leave, task_id, attempt, record)

    def _leave(self, task_id: str, attempt: int, record: AttemptRecord) -> AttemptRecord:
        title = self._title.get(task_id, "")
        path, branch = self.path_of(task_id), self.branch_of(task_id)
        base = self._base.get((task_id, attempt))
        if base is None or not path.exists():
            return record  # the worktree was never made (the attempt failed before)
        git.remove_index_lock(path)  # a killed agent's git may have left one
        subject = f"{task_id}: {' '.join(title.split())}" if title.strip() else task_id
        trailers = {
            "Specwave-Task": task_id,
            "Specwave-Run": self.spec.run_id or "",
            "Specwave-Attempt": str(attempt),
        }
        agent_commits = len(git.commits_between(path, base, "HEAD"))
        ours = git.commit_all(path, subject[:200], {k: v for k, v in trailers.items() if v})
        head = git.head_sha(path)
        git.worktree_unlock(self.repo, path)
        record.work = WorkInfo(
            branch=branch,
            integration=self.spec.integration_branch or "",
            worktree=str(path),
            base=base,
            commit=head,
            changed=head != base,
            agent_commits=agent_commits,
            committed_leftovers=ours is not None,
        )
        return record


class CheckoutWatch:
    """The isolation check: the user's checkout (HEAD, index, status, file contents), outside
    the spec folder specwave writes to, compared with how it was when the run started. Agents
    in worktrees should never change it; one that did (e.g. through an absolute path) is
    reported, never undone. Reads only."""

    def __init__(self, repo: str, exclude: list[str]):
        self.repo, self.exclude = repo, exclude
        self.start = git.snapshot(repo)
        self.last = self.start
        self.reported: set[str] = set()

    def new_changes(self) -> list[str]:
        """Paths changed since the start that were not reported yet."""
        self.last = git.snapshot(self.repo)
        changed = git.snapshot_diff(self.start, self.last, exclude=self.exclude)
        fresh = [p for p in changed if p not in self.reported]
        self.reported.update(fresh)
        return fresh
