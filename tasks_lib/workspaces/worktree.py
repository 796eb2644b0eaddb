"""Every task in its own git worktree, on its own branch (``--isolation worktree``).

An attempt's agent works in ``<git common dir>/specwave/worktrees/<spec>--<task>`` on the
branch ``specwave/<spec>--<task>``, created from the integration branch's head at the moment
the attempt starts (so it holds every dependency's merged work). When the attempt is over,
whatever the agent left uncommitted (tracked changes and new files, never ignored ones) is
committed on the task branch as ``<task id>: <title>`` with trailers naming the task, run and
attempt; commits the agent made itself are kept. The record says which branch, base and
commit, and whether the attempt changed anything. Merging is the merge queue's job
(:mod:`tasks_lib.workspaces.integration`).

Worktrees live in ``<repo>/.specwave/worktrees`` (see :func:`worktrees_root`): ignored through
``.git/info/exclude``, skipped by test runners. The user's checkout is never touched: no
checkout, no index write, no branch switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import threading
from pathlib import Path
from typing import Literal

from tasks_lib.agents.process import run_process_group
from tasks_lib.errors import SpecError
from tasks_lib.records import AttemptRecord, WorkInfo
from tasks_lib.workspaces import SetupFailed, WorkspaceSpec, git
from tasks_lib.workspaces.names import (
    integration_branch,
    parked_dirname,
    task_branch,
    worktree_dirname,
)

SETUP_TIMEOUT_S = 1800.0
INCLUDE_FILE = ".worktreeinclude"


#: the folder, at the repository's root, holding specwave's worktrees (git-ignored through
#: .git/info/exclude, never through a tracked file)
WORKTREES_DIR = ".specwave"


def worktrees_root(repo: str) -> Path:
    """Where a repository's specwave worktrees live: ``<root>/.specwave/worktrees``.

    Not inside ``.git``: coding agents refuse to write under a ``.git`` folder (Claude Code
    denies it even with acceptEdits). A dot folder, so test runners skip it (pytest's
    norecursedirs, unittest's package discovery), and excluded in ``.git/info/exclude`` so
    ``git status`` and the tools that read ignores leave it alone."""
    root = git.repo_root(repo) or Path(repo)
    return Path(root) / WORKTREES_DIR / "worktrees"


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
        identity=git.identity_args(root),
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
        head = self.spec.start or git.rev_parse(self.repo, self.spec.integration_branch or "")
        base = head or git.rev_parse(self.repo, self.spec.base or "HEAD") or "HEAD"
        path.parent.mkdir(parents=True, exist_ok=True)
        reuse: Path | None = None
        if (path / ".git").is_file():
            reuse = path  # an earlier attempt's: its files are brought to the new base
        elif path.exists() or git.find_worktree(self.repo, path) is not None:
            git.worktree_remove(self.repo, path)  # not a worktree any more: start afresh
        else:
            reuse = _parked.claim(self.spec)
        reason = f"specwave: task {task_id} attempt {attempt}"
        try:
            info = git.take_worktree(self.repo, path, branch, base, reuse=reuse, lock_reason=reason)
        except git.GitError:
            if reuse is None:
                raise
            # moved or broken since it was set aside (or another process took it): a new one
            with contextlib.suppress(git.GitError):
                git.worktree_remove(self.repo, path if reuse == path else reuse)
            info = git.take_worktree(self.repo, path, branch, base, lock_reason=reason)
        finally:
            if reuse is not None and reuse != path:
                _parked.release(reuse)
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
        ours = git.commit_all(
            path,
            subject[:200],
            {k: v for k, v in trailers.items() if v},
            identity=self.spec.identity,
        )
        head = ours or git.head_sha(path)
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


class _ParkedWorktrees:
    """Merged tasks' worktrees, set aside in the worktrees folder as ``<spec>--parked_<n>_``
    for the next task to take (:func:`park`, :meth:`WorktreeCheckout.enter`): bringing one to
    a new base writes only the files that changed, where a new worktree writes every file of
    the repository (seconds on a large one). The run removes them when it ends
    (:func:`remove_parked`); after a crash they are leftovers like any merged worktree.

    Threads of one process claim them through this registry; another process that took one
    first makes :func:`~tasks_lib.workspaces.git.take_worktree` fail, and the taker falls
    back to a new worktree."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claimed: set[str] = set()

    def _all(self, spec: WorkspaceSpec) -> list[Path]:
        root = Path(spec.worktrees_dir or "")
        prefix = parked_dirname(spec.spec_name or "", 0).removesuffix("0_")
        try:
            names = sorted(os.listdir(root))
        except FileNotFoundError:
            return []
        return [root / n for n in names if n.startswith(prefix) and n.endswith("_")]

    def claim(self, spec: WorkspaceSpec) -> Path | None:
        with self._lock:
            for path in self._all(spec):
                if str(path) not in self._claimed and (path / ".git").is_file():
                    self._claimed.add(str(path))
                    return path
        return None

    def reserve(self, spec: WorkspaceSpec) -> Path:
        """A free name to park a worktree under."""
        root = Path(spec.worktrees_dir or "")
        with self._lock:
            n = 0
            while True:
                path = root / parked_dirname(spec.spec_name or "", n)
                if str(path) not in self._claimed and not path.exists():
                    self._claimed.add(str(path))
                    return path
                n += 1

    def release(self, path: Path) -> None:
        with self._lock:
            self._claimed.discard(str(path))


_parked = _ParkedWorktrees()


def park(spec: WorkspaceSpec, worktree: str) -> str | None:
    """A merged task's worktree: set aside for the next task to reuse (its branch stays
    checked out there until one takes it). Returns where it was parked; None when git could
    not move it (it is removed instead)."""
    target = _parked.reserve(spec)
    try:
        git.park_worktree(spec.path, worktree, target)
        return str(target)
    except git.GitError:
        git.worktree_remove(spec.path, worktree)
        return None
    finally:
        _parked.release(target)


def remove_parked(spec: WorkspaceSpec) -> int:
    """The run is over: its parked worktrees go. Returns how many."""
    gone = 0
    for path in _parked._all(spec):
        with contextlib.suppress(git.GitError):
            gone += git.worktree_remove(spec.path, path)
    return gone


def auto_isolation(repo: str) -> tuple[str, str | None]:
    """``--isolation auto``: worktree in a git repository with a commit, else shared with a
    one-line notice saying why."""
    try:
        git.require_git()
        root = git.repo_root(repo)
        if root is not None and git.has_commits(root):
            return "worktree", None
        why = "is not a git repository" if root is None else "has no commit yet"
    except git.GitError as exc:
        why = f"cannot use git ({exc})"
    return "shared", (
        f"{repo} {why}: every agent works in it directly (--isolation shared); "
        "commit once to give each task its own worktree"
    )


def land(repo: str, branch: str) -> tuple[bool, str]:
    """``--land``: fast-forward the checked-out branch of ``repo`` to ``branch``, only when it
    is an ancestor and the merge touches no file with uncommitted changes; else say why and
    change nothing. Returns (landed, one line)."""
    root = str(git.repo_root(repo) or repo)
    mine = git.current_branch(root)
    if mine is None:
        return False, f"not landed: HEAD is detached (take it with `git merge --ff-only {branch}`)"
    head, target = git.head_sha(root), git.rev_parse(root, branch)
    if target is None:
        return False, f"not landed: {branch} does not exist"
    if head == target:
        return True, f"{mine} is already at {branch}"
    if not git.is_ancestor(root, head, target):
        return False, (
            f"not landed: {mine} moved since the run started (it is not an ancestor "
            f"of {branch}): merge it yourself"
        )
    touched = set(git.changed_files(root, head, target, merge_base=False))
    dirty = {e.path for e in git.status(root)} | {
        e.orig_path for e in git.status(root) if e.orig_path
    }
    clash = sorted(touched & dirty)
    if clash:
        return False, (
            f"not landed: the merge touches files you have modified "
            f"({', '.join(clash[:5])}): commit or stash them, then "
            f"`git merge --ff-only {branch}`"
        )
    try:
        git.run_git(["merge", "--ff-only", "-q", branch], root)
    except git.GitError as exc:  # e.g. an untracked file of yours is in the way
        return False, f"not landed: {exc}"
    return True, f"{mine} fast-forwarded to {branch} ({target[:12]})"


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
        self.last = git.snapshot(self.repo, root=self.start.root)
        changed = git.snapshot_diff(self.start, self.last, exclude=self.exclude)
        fresh = [p for p in changed if p not in self.reported]
        self.reported.update(fresh)
        return fresh


# ------------------------------------------------------------- what a spec's runs left behind
#
# ``specwave clean``: the worktrees and branches a spec's runs left in a repository (merged
# tasks' are removed at merge time; failed tasks' are kept for the user to look at), found
# (:func:`leftovers`, reads only), decided on (:func:`clean_plan`, pure) and removed
# (:func:`remove_leftover`). Unmerged work is only ever removed when asked (``force``); the
# integration branch, the user's checkout and every branch outside ``specwave/<spec>--*`` are
# never touched.


LeftoverKind = Literal["task", "integration", "directory", "marker"]


@dataclasses.dataclass(frozen=True)
class Leftover:
    """One thing a spec's runs left in a repository.

    ``kind``: ``task`` (a task branch ``specwave/<spec>--<task>``, with its worktree when it
    has one, or a task worktree on no branch of ours), ``integration`` (the integration
    worktree: it holds nothing of anyone's; its branch is never a leftover), ``directory`` (a
    folder named like the spec's worktrees that git does not know as a worktree) or
    ``marker`` (the ``.verifying`` file: a merge was being verified when its run stopped).
    """

    kind: LeftoverKind
    branch: str | None = None  # a task branch of ours, deleted with the leftover
    path: str | None = None  # the worktree, folder or marker file
    head: str | None = None
    unmerged: int = 0  # commits of ``head`` the integration branch does not have
    uncommitted: int = 0  # changed or new files in the worktree, not committed
    stale: bool = False  # git records a worktree whose directory is gone: pruned
    checked_out_at: str | None = None  # the branch is checked out in a worktree not ours

    @property
    def holds_work(self) -> bool:
        """Whether removing it could lose work (only ever done with ``force``)."""
        return self.unmerged > 0 or self.uncommitted != 0 or self.kind == "directory"


@dataclasses.dataclass(frozen=True)
class Leftovers:
    """What :func:`leftovers` found, and what it compared the task branches with."""

    root: Path  # the repository's top
    worktrees_dir: Path  # where runs put worktrees now
    folders: list[Path]  # every folder searched
    integration_branch: str
    integration_exists: bool
    compared_with: str | None  # the ref "merged" means reachable from (None: nothing)
    branch_prefix: str  # ``specwave/<spec>--``: the only branches ever deleted
    items: list[Leftover]


@dataclasses.dataclass(frozen=True)
class CleanStep:
    """What ``specwave clean`` does with one leftover, and why."""

    leftover: Leftover
    remove: bool
    reason: str


def _under(folders: list[Path], path: str) -> bool:
    parent = os.path.dirname(os.path.realpath(path))
    return any(parent == os.path.realpath(f) for f in folders)


def _worktree_folders(root: str) -> list[Path]:
    """Where a repository's specwave worktrees are: :func:`worktrees_root`."""
    return [worktrees_root(root)]


def _own_branches(repo: str, prefix: str) -> dict[str, str]:
    """Local branches whose name starts with ``prefix``, with their commits."""
    out = git.run_git(
        ["for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/" + prefix.split("/")[0]],
        repo,
    ).out
    found: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, ref = line.partition(" ")
        name = ref.removeprefix("refs/heads/")
        if name.startswith(prefix) and len(name) > len(prefix):
            found[name] = sha
    return found


def _unmerged(repo: str, head: str | None, target: str | None) -> int:
    """How many commits ``head`` has that ``target`` has not (all of them: no target)."""
    if head is None:
        return 0
    args = [head, "--not", target] if target else [head]
    return int(git.run_git(["rev-list", "--count", *args, "--"], repo).out or 0)


def _uncommitted(worktree: str) -> int:
    """How many files of ``worktree`` differ from its HEAD (-1: git cannot tell)."""
    try:
        return len(git.status(worktree))
    except git.GitError:
        return -1


def leftovers(repo: str, spec_name: str, into: str | None = None) -> Leftovers:
    """Every worktree in the worktrees folder (:func:`worktrees_root`) whose name starts
    with ``<spec>--`` (task worktrees, the integration worktree), every branch
    ``specwave/<spec>--*``, unknown folders there and the ``.verifying`` marker; reads only.

    A task branch is merged when its head is reachable from the integration branch
    (``specwave/<spec>`` or ``into``) as it stands once a merge still being verified is
    undone (what the next run would do); when that branch does not exist, from the
    repository's HEAD instead. A branch checked out in a worktree that is not one of the
    spec's (the user's checkout...) is noted: it is never removed."""
    from tasks_lib.workspaces.integration import pending_path
    from tasks_lib.workspaces.names import MAX_SPEC_CHARS, SEPARATOR, integration_dirname, sanitize

    root = git.repo_root(repo)
    if root is None:
        raise git.GitError(f"{repo} is not in a git repository")
    main = git.worktree_list(root)[0]  # the main checkout, even when called from another
    if not main.bare and os.path.isdir(main.path):
        root = Path(main.path)
    where = str(root)
    folders = _worktree_folders(where)
    dir_prefix = sanitize(spec_name, MAX_SPEC_CHARS) + SEPARATOR
    branch_prefix = integration_branch(spec_name) + SEPARATOR
    target_branch = into or integration_branch(spec_name)
    integ_dir = integration_dirname(spec_name)
    markers = [m for m in (pending_path(f, spec_name) for f in folders) if m.is_file()]

    git.check_branch_name(target_branch)
    integration_exists = git.branch_exists(where, target_branch)
    integ_head = git.rev_parse(where, f"refs/heads/{target_branch}") if integration_exists else None
    before = markers[0].read_text(encoding="utf-8").strip() if markers else ""
    settled = (git.rev_parse(where, before) if before else None) or integ_head
    compared_with: str | None = target_branch if integration_exists else None
    if not integration_exists:
        settled = git.rev_parse(where, "HEAD")
        compared_with = "HEAD" if settled else None

    entries = git.worktree_list(where)
    ours = [
        w for w in entries if _under(folders, w.path) and Path(w.path).name.startswith(dir_prefix)
    ]
    ours_paths = {os.path.realpath(w.path) for w in ours}
    elsewhere = {
        w.branch: w.path for w in entries if w.branch and os.path.realpath(w.path) not in ours_paths
    }
    branches = _own_branches(where, branch_prefix)
    branches.pop(target_branch, None)  # the integration branch is never a leftover

    items: list[Leftover] = []
    with_worktree: set[str] = set()
    for w in sorted(ours, key=lambda w: w.path):
        if Path(w.path).name == integ_dir:
            items.append(
                Leftover("integration", path=w.path, head=w.head, stale=not os.path.isdir(w.path))
            )
            continue
        if not os.path.isdir(w.path):
            items.append(Leftover("task", path=w.path, head=w.head, stale=True))
            continue  # its branch, if any, is judged on its own below
        branch = w.branch if w.branch in branches else None
        if branch:
            with_worktree.add(branch)
        items.append(
            Leftover(
                "task",
                branch=branch,
                path=w.path,
                head=w.head,
                unmerged=_unmerged(where, w.head, settled),
                uncommitted=_uncommitted(w.path),
            )
        )
    for name, sha in sorted(branches.items()):
        if name not in with_worktree:
            items.append(
                Leftover(
                    "task",
                    branch=name,
                    head=sha,
                    unmerged=_unmerged(where, sha, settled),
                    checked_out_at=elsewhere.get(name),
                )
            )
    for folder in folders:
        for p in sorted(folder.iterdir()) if folder.is_dir() else []:
            known = os.path.realpath(p) in ours_paths
            if p.is_dir() and not p.is_symlink() and p.name.startswith(dir_prefix) and not known:
                items.append(Leftover("directory", path=str(p)))
    # a merge was being verified when its run stopped: the next run undoes it
    unverified = _unmerged(where, integ_head, settled) if integ_head and settled else 0
    for marker in markers:
        items.append(Leftover("marker", path=str(marker), head=before or None, unmerged=unverified))
    return Leftovers(
        root=root,
        worktrees_dir=folders[0],
        folders=folders,
        integration_branch=target_branch,
        integration_exists=integration_exists,
        compared_with=compared_with,
        branch_prefix=branch_prefix,
        items=items,
    )


def clean_plan(found: Leftovers, *, force: bool = False) -> list[CleanStep]:
    """What to remove and what to keep (pure): everything that holds no work (merged task
    branches and their clean worktrees, the integration worktree, stale entries); what does
    (unmerged commits, uncommitted files, unknown folders, an unverified merge's marker) only
    with ``force``; a branch checked out outside the spec's worktrees never."""
    target = found.compared_with or "anything"
    steps: list[CleanStep] = []
    for item in found.items:
        if item.stale:
            steps.append(CleanStep(item, True, "its directory is gone"))
        elif item.kind == "integration":
            steps.append(
                CleanStep(
                    item, True, f"holds nothing of anyone's ({found.integration_branch} stays)"
                )
            )
        elif item.checked_out_at:
            steps.append(CleanStep(item, False, f"checked out at {item.checked_out_at}"))
        elif item.kind == "directory":
            steps.append(
                CleanStep(
                    item, force, "a folder git does not know as a worktree (files not in git)"
                )
            )
        elif item.kind == "marker":
            why = (
                f"a merge into {found.integration_branch} was being verified when its run "
                "stopped (the next run undoes it)"
                if item.unmerged
                else "no unverified merge left"
            )
            steps.append(CleanStep(item, force or not item.unmerged, why))
        else:
            parts = []
            if item.unmerged:
                parts.append(f"{item.unmerged} commit(s) not merged into {target}")
            if item.uncommitted > 0:
                parts.append(f"{item.uncommitted} uncommitted file(s)")
            elif item.uncommitted < 0:
                parts.append("git cannot read its status")
            why = ", ".join(parts) or f"merged into {target}"
            steps.append(CleanStep(item, force or not item.holds_work, why))
    return steps


def remove_leftover(found: Leftovers, item: Leftover) -> None:
    """Remove one leftover: its worktree (even locked or dirty: :func:`clean_plan` decided),
    then its branch; a folder git does not know, or the marker file. Refuses (GitError) to
    delete the integration branch, a branch outside ``specwave/``, one checked out anywhere
    else, or one whose head moved since it was found."""
    import shutil

    repo = str(found.root)
    if item.kind in ("task", "integration") and item.path:
        git.worktree_remove(repo, item.path)
    elif item.kind == "directory" and item.path:
        shutil.rmtree(item.path)
    elif item.kind == "marker" and item.path:
        Path(item.path).unlink(missing_ok=True)
    if item.kind != "task" or not item.branch:
        return
    branch = item.branch
    if branch == found.integration_branch or not branch.startswith(found.branch_prefix):
        raise git.GitError(f"refusing to delete branch {branch!r}")
    holder = next((w.path for w in git.worktree_list(repo) if w.branch == branch), None)
    if holder is not None:
        raise git.GitError(f"branch {branch!r} is checked out at {holder}: not deleted")
    now = git.rev_parse(repo, f"refs/heads/{branch}")
    if now is not None and item.head and now != item.head:
        raise git.GitError(f"branch {branch!r} moved since it was looked at: not deleted")
    git.delete_branch(repo, branch, force=True)


def finish_clean(found: Leftovers) -> list[str]:
    """After removing: ``git worktree prune``, then each worktrees folder (and the folder
    holding it, e.g. ``.specwave``) that is empty; returns the folders removed."""
    git.worktree_prune(found.root)
    gone: list[str] = []
    for folder in found.folders:
        for empty in (folder, folder.parent):
            try:
                empty.rmdir()
            except OSError:
                break
            gone.append(str(empty))
    return gone
