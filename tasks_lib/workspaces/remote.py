"""A git remote between the orchestrator and pool workers (``dispatch: pool``).

With pool dispatch the orchestrator and the task runs share nothing but the Prefect API and
one git remote (``--git-url``, default the repository's ``origin``):

* the orchestrator publishes the integration branch there (:func:`publish`) before the
  first task and after every verified merge, so a task run can start from the commit it is
  sent;
* a task run keeps a clone of the remote per worker machine (:func:`cached_clone`: one
  folder per URL under the cache, reused by every task run there), fetches the integration
  branch into it (:func:`fetch_start`), works in a worktree of that clone (the worktree code
  of :mod:`tasks_lib.workspaces.worktree`), and pushes its task branch (:func:`push_branch`);
* the orchestrator fetches the task branch into the user's repository (:func:`fetch_branch`:
  a branch ref only, never their checkout) and merges it there.

Every call is the ``git`` command through :mod:`tasks_lib.workspaces.git` (argv, timeouts).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from tasks_lib.errors import SpecError
from tasks_lib.workspaces import git

NETWORK_TIMEOUT = 600.0
"""Seconds a clone, fetch or push may take."""
CACHE_ENV = "SPECWAVE_CACHE_DIR"

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_SCP = re.compile(r"^[^/:]+@[^/:]+:")  # git@host:path


def origin_url(repo: str) -> str | None:
    """The URL of the repository's ``origin`` remote, if it has one."""
    res = git.run_git(["remote", "get-url", "origin"], repo, check=False)
    return res.out or None if res.returncode == 0 else None


def is_local(url: str) -> bool:
    """A path or file:// URL: only a worker on this machine can use it."""
    return url.lower().startswith("file://") or not (_URL.match(url) or _SCP.match(url))


def check_url(url: str | None, repo: str, *, containers: bool) -> str:
    """The git URL pool workers use (``url``, else ``origin``'s); SpecError (one line, exit
    2) when there is none, or when it is a local path and the workers run in containers."""
    chosen = url or origin_url(repo)
    if not chosen:
        raise SpecError.single(
            repo,
            "pool dispatch needs a git remote the workers can reach, and this repository "
            "has no origin",
            hint="pass --git-url URL (e.g. ssh://git@host/team/app.git)",
        )
    if containers and is_local(chosen):
        raise SpecError.single(
            chosen,
            "is a local path: workers in containers cannot reach it",
            hint="pass --git-url with a URL they reach (ssh://, https://, git://)",
        )
    return chosen


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "specwave") / "repos"


@contextlib.contextmanager
def _folder_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def cached_clone(url: str, root: Path | None = None) -> Path:
    """This machine's clone of ``url`` (made once, ``--no-checkout``: task runs work in
    worktrees of it), shared by every task run here; the first task run clones it, the
    others wait for it."""
    folder = (root or cache_root()) / hashlib.sha256(url.encode()).hexdigest()[:16]
    with _folder_lock(folder):
        if not (folder / ".git").is_dir():
            tmp = folder.with_name(folder.name + ".partial")
            if tmp.exists():
                import shutil

                shutil.rmtree(tmp)
            git.run_git(
                ["clone", "-q", "--no-checkout", "--", url, str(tmp)],
                folder.parent,
                timeout=NETWORK_TIMEOUT,
            )
            tmp.rename(folder)
    return folder


def fetch_start(clone: Path, branch: str, commit: str) -> None:
    """Make ``commit`` (the head of ``branch`` on the remote, or one of its ancestors)
    present in the clone; GitError when the remote does not have it."""
    if git.run_git(["cat-file", "-e", f"{commit}^{{commit}}"], clone, check=False).returncode:
        with _folder_lock(clone):  # one fetch at a time into one clone
            git.run_git(
                ["fetch", "-q", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}"],
                clone,
                timeout=NETWORK_TIMEOUT,
            )
        git.run_git(["cat-file", "-e", f"{commit}^{{commit}}"], clone)


def push_branch(repo: str | Path, branch: str, url: str = "origin") -> None:
    """Push ``branch`` to the remote, replacing what is there (an attempt's branch replaces
    the attempt before it; the integration branch only ever moves forward)."""
    git.check_branch_name(branch)
    git.run_git(
        ["push", "-q", "--force", url, f"refs/heads/{branch}:refs/heads/{branch}"],
        repo,
        timeout=NETWORK_TIMEOUT,
    )


publish = push_branch


def fetch_branch(repo: str, url: str, branch: str) -> str:
    """Fetch the remote's ``branch`` into the same branch of ``repo`` (a ref, nothing
    checked out changes); returns its commit."""
    git.check_branch_name(branch)
    git.run_git(
        ["fetch", "-q", "--no-tags", url, f"+refs/heads/{branch}:refs/heads/{branch}"],
        repo,
        timeout=NETWORK_TIMEOUT,
    )
    return git.rev_parse(repo, f"refs/heads/{branch}") or ""


def delete_remote_branches(repo: str, url: str, names: Sequence[str]) -> None:
    """Delete ``names`` on the remote (those already gone are fine)."""
    if names:
        git.run_git(
            ["push", "-q", url, *(f":refs/heads/{n}" for n in names)],
            repo,
            timeout=NETWORK_TIMEOUT,
            check=False,
        )


__all__ = [
    "cache_root",
    "cached_clone",
    "check_url",
    "delete_remote_branches",
    "fetch_branch",
    "fetch_start",
    "is_local",
    "origin_url",
    "publish",
    "push_branch",
]
