"""The git layer of worktree isolation: every call drives the ``git`` command.

Rules every function here keeps:

* git runs as an argv list, never through a shell, with stdin closed, in its own process
  group, under a timeout (:data:`DEFAULT_TIMEOUT`); on timeout the whole group (git and any
  hook it started) is killed and :class:`GitTimeout` raised.
* The environment is the caller's, plus ``GIT_TERMINAL_PROMPT=0`` (never ask for a password),
  ``LC_ALL=C`` (stable messages to parse), ``GIT_EDITOR=true`` (never wait for an editor),
  and minus the variables that would point git at another repository (``GIT_DIR``,
  ``GIT_WORK_TREE``, ``GIT_INDEX_FILE``, ... as set inside a git hook).
* Failures raise :class:`GitError`, whose message is one line: the command, where, the exit
  code and the telling line of git's stderr.
* Everything that adds, locks, unlocks, removes or prunes worktrees, or creates or deletes
  branches, holds the repository's lock (:func:`repository_lock`: a thread lock plus an
  ``flock`` on ``<git common dir>/specwave-worktrees.lock``), so threads and processes never
  run two of them at once (two ``git worktree add`` at once can fail: "failed to read
  .git/worktrees/<name>/commondir").
* Commits specwave makes use the repository's identity; only when none is configured do they
  fall back to ``specwave <specwave@localhost>``. They skip the user's commit hooks unless
  asked (the run's ``verify`` command is the gate).

Merges (:func:`merge`) make a merge commit (``--no-ff``): the task's own commits stay as the
agent made them, each task is one commit on the integration branch's first-parent history
(the merge log, in order), and undoing a merge whose verify failed is one ``reset --hard`` to
the commit before it. ``squash=True`` makes one plain commit instead.

Functions are synchronous; async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

DEFAULT_TIMEOUT = 60.0
"""Seconds one git command may run before it is killed."""
LOCK_TIMEOUT = 600.0
"""Seconds to wait for the repository's worktree lock."""
MIN_VERSION = (2, 25)
LOCK_FILE = "specwave-worktrees.lock"
FALLBACK_NAME = "specwave"
FALLBACK_EMAIL = "specwave@localhost"

StrPath = str | os.PathLike[str]

# what git sets for hooks and `git -C`-less plumbing; inherited, they would redirect every call
_SCRUBBED = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_COMMON_DIR",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_IMPLICIT_WORK_TREE",
        "GIT_PREFIX",
        "GIT_INTERNAL_SUPER_PREFIX",
        "GIT_GRAFT_FILE",
        "GIT_SHALLOW_FILE",
        "GIT_NAMESPACE",
        "GIT_NO_REPLACE_OBJECTS",
        "GIT_REPLACE_REF_BASE",
        "GIT_QUARANTINE_PATH",
    }
)
_TRAILER_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


# ----------------------------------------------------------------------------- running git


class GitError(Exception):
    """A git command failed (or could not run). ``str()`` is one line for a CLI error."""

    def __init__(
        self,
        message: str,
        *,
        command: Sequence[str] = (),
        returncode: int | None = None,
        stderr: str = "",
        cwd: str | None = None,
    ):
        super().__init__(message)
        self.command = list(command)
        self.returncode = returncode
        self.stderr = stderr
        self.cwd = cwd


class GitTimeout(GitError):
    """A git command ran past its timeout and was killed (with its process group)."""


@dataclass(frozen=True)
class GitResult:
    """What one git command did."""

    args: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        """stdout as text (file names keep undecodable bytes: surrogateescape), stripped."""
        return os.fsdecode(self.stdout).strip()


def git_env() -> dict[str, str]:
    """The environment git runs with (see the module docstring)."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_EDITOR="true", GIT_MERGE_AUTOEDIT="no")
    return env


def _show(args: Sequence[str]) -> str:
    """The command, shell-quoted, without its leading ``-c name=value`` settings and with long
    arguments (messages) shortened."""
    args = list(args)
    while len(args) >= 2 and args[0] == "-c":
        args = args[2:]
    shown = [a.replace("\n", "\\n") for a in args]
    shown = [a if len(a) <= 60 else a[:57] + "..." for a in shown]
    text = shlex.join(["git", *shown])
    return text if len(text) <= 200 else text[:197] + "..."


def _tail(stderr: str, stdout: str = "") -> str:
    """The line of git's output that says what went wrong."""
    lines = [ln.strip() for ln in (stderr or stdout).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("hint:")]
    if not lines:
        return "no error output"
    telling = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
    text = "; ".join(telling[:2]) if telling else lines[-1]
    return text if len(text) <= 300 else text[:297] + "..."


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def run_git(
    args: Sequence[str],
    cwd: StrPath,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    input: bytes | None = None,
) -> GitResult:
    """Run ``git <args>`` in ``cwd``; raise :class:`GitError` on a non-zero exit when
    ``check`` (else return the result), always on a timeout or when git cannot start."""
    args = [os.fspath(a) for a in args]
    where = os.fspath(cwd)
    if not os.path.isdir(where):
        raise GitError(f"{_show(args)}: {where}: no such directory", command=args, cwd=where)
    try:
        proc = subprocess.Popen(
            ["git", *args],
            cwd=where,
            env=git_env(),
            process_group=0,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError:
        raise GitError(
            "git is not installed (or not on PATH): specwave needs git "
            f"{MIN_VERSION[0]}.{MIN_VERSION[1]} or newer",
            command=args,
            cwd=where,
        ) from None
    except OSError as exc:
        raise GitError(f"cannot run git: {exc}", command=args, cwd=where) from None
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = b"", b""
        with contextlib.suppress(subprocess.TimeoutExpired):
            out, err = proc.communicate(timeout=5)
        raise GitTimeout(
            f"{_show(args)} in {where} timed out after {timeout:g} s (killed)",
            command=args,
            stderr=os.fsdecode(err),
            cwd=where,
        ) from None
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    result = GitResult(args, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise _failed(result, where)
    return result


def _failed(result: GitResult, cwd: StrPath) -> GitError:
    stderr = os.fsdecode(result.stderr)
    return GitError(
        f"{_show(result.args)} in {os.fspath(cwd)} failed (exit {result.returncode}): "
        f"{_tail(stderr, os.fsdecode(result.stdout))}",
        command=result.args,
        returncode=result.returncode,
        stderr=stderr,
        cwd=os.fspath(cwd),
    )


def _git(cwd: StrPath, *args: str, timeout: float = DEFAULT_TIMEOUT) -> str:
    return run_git(args, cwd, timeout=timeout).out


def _ref(ref: str) -> str:
    """A ref or branch argument; one starting with '-' would be read as an option."""
    if not ref or ref.startswith("-") or "\0" in ref:
        raise GitError(f"invalid git ref {ref!r}")
    return ref


def _split_z(data: bytes) -> list[str]:
    return [os.fsdecode(p) for p in data.split(b"\0") if p]


# ------------------------------------------------------------------------------- versions


def parse_version(text: str) -> tuple[int, int, int]:
    """``"git version 2.39.5"`` (or ``2.37.1 (Apple Git-137.1)``, ``2.41.0.windows.1``)."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if m is None:
        raise GitError(f"cannot read git's version from {text.strip()!r}")
    return int(m[1]), int(m[2]), int(m[3] or 0)


def git_version() -> tuple[int, int, int]:
    """The installed git's version (GitError when git is missing)."""
    return parse_version(_git(os.path.abspath(os.sep), "--version"))


@cache
def _cached_version() -> tuple[int, int, int]:
    return git_version()


def require_git(minimum: tuple[int, int] = MIN_VERSION) -> tuple[int, int, int]:
    """The git version, or GitError when git is missing or older than ``minimum``."""
    version = git_version()
    if version[:2] < minimum:
        have = ".".join(map(str, version))
        raise GitError(
            f"git {have} is too old: specwave needs git {minimum[0]}.{minimum[1]} "
            "or newer (worktree lock --reason, merge --no-verify)"
        )
    return version


# ---------------------------------------------------------------------- repository facts


def repo_root(path: StrPath) -> Path | None:
    """The top of the working tree ``path`` is in; None when it is in no git repository."""
    where = Path(path)
    if not where.is_dir():
        where = where.parent
    result = run_git(["rev-parse", "--show-toplevel"], where, check=False)
    if result.returncode == 0 and result.out:
        return Path(result.out)
    if b"not a git repository" in result.stderr:
        return None
    raise _failed(result, where)


def common_dir(repo: StrPath) -> Path:
    """The repository's common git directory (shared by all its worktrees), absolute."""
    return (Path(repo) / _git(repo, "rev-parse", "--git-common-dir")).resolve()


def rev_parse(repo: StrPath, ref: str) -> str | None:
    """The commit ``ref`` names (tags peeled), or None when it names no commit."""
    result = run_git(["rev-parse", "-q", "--verify", f"{_ref(ref)}^{{commit}}"], repo, check=False)
    if result.returncode == 0:
        return result.out
    if result.returncode == 1:
        return None
    raise _failed(result, repo)


def rev_parse_tree(repo: StrPath, rev: str) -> str:
    """The tree of commit ``rev``."""
    return _git(repo, "rev-parse", "--verify", f"{_ref(rev)}^{{tree}}")


def has_commits(repo: StrPath) -> bool:
    """Whether HEAD names a commit (False in a repository with no commits yet)."""
    return rev_parse(repo, "HEAD") is not None


def head_sha(repo: StrPath) -> str:
    """The commit HEAD names (GitError when there is none yet)."""
    sha = rev_parse(repo, "HEAD")
    if sha is None:
        raise GitError(f"{os.fspath(repo)}: the repository has no commits yet")
    return sha


def current_branch(repo: StrPath) -> str | None:
    """The checked-out branch's short name; None when HEAD is detached."""
    result = run_git(["symbolic-ref", "-q", "--short", "HEAD"], repo, check=False)
    if result.returncode == 0:
        return result.out
    if result.returncode == 1:
        return None
    raise _failed(result, repo)


def branch_exists(repo: StrPath, name: str) -> bool:
    """Whether the local branch ``name`` exists."""
    result = run_git(["rev-parse", "-q", "--verify", f"refs/heads/{_ref(name)}"], repo, check=False)
    if result.returncode in (0, 1):
        return result.returncode == 0
    raise _failed(result, repo)


def is_ancestor(repo: StrPath, ancestor: str, descendant: str) -> bool:
    """Whether ``ancestor`` is reachable from ``descendant`` (a commit is its own)."""
    result = run_git(
        ["merge-base", "--is-ancestor", _ref(ancestor), _ref(descendant)], repo, check=False
    )
    if result.returncode in (0, 1):
        return result.returncode == 0
    raise _failed(result, repo)


def is_valid_branch_name(name: str) -> bool:
    """Whether git accepts ``name`` as a branch name (``git check-ref-format --branch``)."""
    if not name or name.startswith("-") or "\0" in name:
        return False
    result = run_git(["check-ref-format", "--branch", name], os.path.abspath(os.sep), check=False)
    return result.returncode == 0 and result.out == name


def check_branch_name(name: str) -> str:
    """``name`` when git accepts it as a branch name, else GitError saying so."""
    if not is_valid_branch_name(name):
        raise GitError(f"{name!r} is not a valid git branch name")
    return name


# ------------------------------------------------------------------------- locking


_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextlib.contextmanager
def repository_lock(repo: StrPath, *, timeout: float = LOCK_TIMEOUT) -> Iterator[Path]:
    """Hold the repository's worktree lock (threads of this process and other processes);
    yield the lock file's path. GitError when it cannot be had within ``timeout``."""
    path = common_dir(repo) / LOCK_FILE
    key = str(path)
    with _thread_locks_guard:
        thread_lock = _thread_locks.setdefault(key, threading.Lock())
    deadline = time.monotonic() + timeout
    busy = GitError(f"{os.fspath(repo)}: another process has held {path} for over {timeout:g} s")
    if not thread_lock.acquire(timeout=timeout):
        raise busy
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise busy from None
                    time.sleep(0.01)
            yield path
        finally:
            os.close(fd)  # releases the flock
    finally:
        thread_lock.release()


# ------------------------------------------------------------------------- branches


def create_branch(repo: StrPath, name: str, base: str) -> str:
    """Create branch ``name`` at ``base`` (no upstream); return its commit. GitError when
    it exists or ``base`` names no commit."""
    check_branch_name(name)
    with repository_lock(repo):
        sha = _base_commit(repo, base)
        if branch_exists(repo, name):
            raise GitError(f"branch {name!r} already exists")
        _git(repo, "branch", "--no-track", name, sha)
    return sha


def delete_branch(repo: StrPath, name: str, *, force: bool = False) -> bool:
    """Delete branch ``name``; False when there was none. Without ``force`` git refuses to
    delete a branch that is not merged into HEAD; it always refuses one checked out."""
    with repository_lock(repo):
        if not branch_exists(repo, name):
            return False
        _git(repo, "branch", "-D" if force else "-d", "-q", name)
    return True


def _base_commit(repo: StrPath, base: str) -> str:
    sha = rev_parse(repo, base)
    if sha is None:
        raise GitError(f"{os.fspath(repo)}: {base!r} names no commit")
    return sha


# ------------------------------------------------------------------------ worktrees


@dataclass(frozen=True)
class WorktreeInfo:
    """One entry of ``git worktree list --porcelain``."""

    path: str
    head: str | None
    branch: str | None  # short name; None when detached (or bare)
    locked: bool = False
    lock_reason: str | None = None
    prunable: bool = False
    bare: bool = False


def _same_path(a: StrPath, b: StrPath) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _parse_worktrees(text: str, sep: str) -> list[WorktreeInfo]:
    entries: list[WorktreeInfo] = []
    for block in text.split(sep * 2):
        fields: dict[str, str | None] = {}
        for line in block.split(sep):
            if line:
                key, _, value = line.partition(" ")
                fields[key] = value if _ else None
        if "worktree" not in fields:
            continue
        branch = fields.get("branch")
        reason = fields.get("locked")
        if reason and sep == "\n" and reason.startswith('"'):  # C-quoted without -z
            reason = (
                reason[1:-1]
                .encode()
                .decode("unicode_escape")
                .encode("latin-1")
                .decode("utf-8", "replace")
            )
        entries.append(
            WorktreeInfo(
                path=fields["worktree"] or "",
                head=fields.get("HEAD"),
                branch=branch.removeprefix("refs/heads/") if branch else None,
                locked="locked" in fields,
                lock_reason=reason or None,
                prunable="prunable" in fields,
                bare="bare" in fields,
            )
        )
    return entries


def worktree_list(repo: StrPath) -> list[WorktreeInfo]:
    """The repository's worktrees, the main one first."""
    if _cached_version() >= (2, 36, 0):
        data = run_git(["worktree", "list", "--porcelain", "-z"], repo).stdout
        return _parse_worktrees(os.fsdecode(data), "\0")
    data = run_git(["worktree", "list", "--porcelain"], repo).stdout
    return _parse_worktrees(os.fsdecode(data), "\n")


def find_worktree(repo: StrPath, path: StrPath) -> WorktreeInfo | None:
    """The worktree at ``path``, if the repository has one there."""
    return next((w for w in worktree_list(repo) if _same_path(w.path, path)), None)


IfBranchExists = Literal["error", "reuse", "reset"]


def worktree_add(
    repo: StrPath,
    path: StrPath,
    branch: str,
    base_ref: str,
    *,
    if_exists: IfBranchExists = "error",
    lock_reason: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> WorktreeInfo:
    """A new worktree at ``path`` with ``branch`` checked out, created from ``base_ref``.

    When ``branch`` already exists: ``"error"`` (GitError), ``"reuse"`` (check it out as it
    is; ``base_ref`` is not used) or ``"reset"`` (move it to ``base_ref`` first; git refuses
    when it is checked out elsewhere). ``lock_reason``: lock the new worktree with it."""
    check_branch_name(branch)
    target = os.path.abspath(path)
    with repository_lock(repo):
        exists = branch_exists(repo, branch)
        if exists and if_exists == "error":
            raise GitError(
                f"branch {branch!r} already exists (a previous run's?): delete it or reuse it"
            )
        if exists and if_exists == "reuse":
            args = ["worktree", "add", target, branch]
        else:
            sha = _base_commit(repo, base_ref)
            args = ["worktree", "add", "-B" if exists else "-b", branch, target, sha]
        run_git(args, repo, timeout=timeout)
        if lock_reason is not None:
            _lock(repo, target, lock_reason)
        return WorktreeInfo(
            path=target,
            head=head_sha(target),
            branch=branch,
            locked=lock_reason is not None,
            lock_reason=lock_reason or None,
        )


def _head_file(worktree: StrPath) -> str:
    """What the worktree's HEAD file says (``ref: refs/heads/...`` on a branch, a commit id
    when detached), read from the file system."""
    try:
        return (_git_dir(worktree) / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _lock_file(path: str) -> Path | None:
    """``<git dir>/locked`` of the linked worktree at ``path`` (gitrepository-layout(5):
    the file ``git worktree lock`` writes its reason to); None when ``path`` is not one."""
    if not os.path.isfile(os.path.join(path, ".git")):
        return None
    admin = _git_dir(path)
    return admin / "locked" if (admin / "commondir").is_file() else None


def _lock(repo: StrPath, path: str, reason: str) -> None:
    lock = _lock_file(path)
    if lock is not None:  # what `git worktree lock` does, without a git process
        with contextlib.suppress(FileExistsError):
            with open(lock, "x", encoding="utf-8") as fh:
                fh.write(reason)
        return
    args = ["worktree", "lock", path] + (["--reason", reason] if reason else [])
    result = run_git(args, repo, check=False)
    if result.returncode != 0 and b"already locked" not in result.stderr:
        raise _failed(result, repo)


def worktree_lock(repo: StrPath, path: StrPath, reason: str) -> None:
    """Lock the worktree at ``path`` (prune and remove leave it alone). Already locked: no-op
    (the first reason stays)."""
    with repository_lock(repo):
        _lock(repo, os.path.abspath(path), reason)


def worktree_unlock(repo: StrPath, path: StrPath) -> None:
    """Unlock the worktree at ``path``; not locked: no-op."""
    with repository_lock(repo):
        _unlock(repo, os.path.abspath(path))


def _unlock(repo: StrPath, path: str) -> None:
    lock = _lock_file(path)
    if lock is not None:
        lock.unlink(missing_ok=True)
        return
    result = run_git(["worktree", "unlock", path], repo, check=False)
    if result.returncode != 0 and b"is not locked" not in result.stderr:
        raise _failed(result, repo)


def worktree_remove(
    repo: StrPath, path: StrPath, *, force: bool = True, timeout: float = DEFAULT_TIMEOUT
) -> bool:
    """Remove the worktree at ``path`` (its directory and git's record of it); False when
    there was none. ``force`` removes it even when locked, modified or holding untracked
    files; without it git refuses those. A worktree whose directory is already gone is
    unlocked and pruned. The branch stays (:func:`delete_branch`)."""
    target = os.path.abspath(path)
    with repository_lock(repo):
        entry = next((w for w in worktree_list(repo) if _same_path(w.path, target)), None)
        if entry is None:
            if os.path.exists(target):
                raise GitError(f"{target} is not a worktree of {os.fspath(repo)}")
            return False
        if not os.path.isdir(entry.path):
            if entry.locked:
                _unlock(repo, entry.path)
            _git(repo, "worktree", "prune")
            return True
        run_git(
            ["worktree", "remove", *(["--force", "--force"] if force else []), entry.path],
            repo,
            timeout=timeout,
        )
    return True


def take_worktree(
    repo: StrPath,
    path: StrPath,
    branch: str,
    sha: str,
    *,
    reuse: StrPath | None = None,
    lock_reason: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> WorktreeInfo:
    """``branch`` at ``sha`` checked out in a worktree at ``path``, exactly as ``sha`` has
    it (no untracked or ignored file); git refuses (GitError) when ``branch`` is checked out
    elsewhere.

    ``reuse``: an existing worktree of the repository to take instead of adding one (the
    one already at ``path``, or a parked one that is moved there): only the files that
    differ between its commit and ``sha`` are written, where a new worktree writes every
    file; what it holds beyond ``sha`` (untracked and ignored files) is deleted. Without
    ``reuse`` a new worktree is added. The repository's lock is held for the bookkeeping only (refs,
    the worktree's record, the move, the lock); the files are written after it is released,
    so several worktrees can be checked out at once."""
    check_branch_name(branch)
    target = os.path.abspath(path)
    with repository_lock(repo):
        if reuse is not None and _head_file(reuse) == f"ref: refs/heads/{branch}":
            # on no branch first: ``branch -f`` refuses a branch checked out anywhere
            _git(reuse, "update-ref", "--no-deref", "HEAD", "HEAD")
        _git(repo, "branch", "--no-track", "-f", branch, sha)
        if reuse is None:
            run_git(["worktree", "add", "-q", "--no-checkout", target, branch], repo)
        else:
            if not _same_path(reuse, target):
                _git(repo, "worktree", "move", os.path.abspath(reuse), target)
            _git(target, "symbolic-ref", "HEAD", f"refs/heads/{branch}")
        if lock_reason is not None:
            _lock(repo, target, lock_reason)
    run_git(["reset", "-q", "--hard", "HEAD"], target, timeout=timeout)
    if reuse is not None:  # as a new worktree would be: not even ignored files stay
        run_git(["clean", "-q", "-f", "-f", "-d", "-x"], target, timeout=timeout)
    return WorktreeInfo(
        path=target,
        head=sha,
        branch=branch,
        locked=lock_reason is not None,
        lock_reason=lock_reason or None,
    )


def park_worktree(repo: StrPath, path: StrPath, parked: StrPath) -> None:
    """Set the worktree at ``path`` aside for :func:`take_worktree` to reuse: moved to
    ``parked``, as it is (its branch stays checked out there until a task takes it). GitError
    when git cannot move it (e.g. it holds submodules)."""
    with repository_lock(repo):
        _git(repo, "worktree", "move", os.path.abspath(path), os.path.abspath(parked))


def delete_branches(repo: StrPath, names: Sequence[str]) -> None:
    """Delete every branch of ``names`` that exists, in one git command (those checked out
    somewhere stay: git refuses them, and so does this, silently)."""
    if not names:
        return
    with repository_lock(repo):
        existing = [n for n in names if branch_exists(repo, n)]
        for n in existing:
            check_branch_name(n)
        if existing:
            run_git(["branch", "-D", "-q", *existing], repo, check=False)


def worktree_prune(repo: StrPath) -> None:
    """Forget worktrees whose directories are gone (locked ones stay)."""
    with repository_lock(repo):
        _git(repo, "worktree", "prune")


# --------------------------------------------------------------------- the user's checkout


@dataclass(frozen=True)
class StatusEntry:
    """One entry of ``git status --porcelain=v1``: ``code`` is the two letters XY."""

    code: str
    path: str
    orig_path: str | None = None  # renames and copies


@dataclass(frozen=True)
class CheckoutSnapshot:
    """A checkout's state, to tell afterwards whether anything touched it."""

    root: str
    head: str | None
    branch: str | None
    entries: tuple[StatusEntry, ...]
    hashes: Mapping[str, str] = field(default_factory=dict)  # changed path -> content hash


def _parse_status(data: bytes) -> list[StatusEntry]:
    parts = data.split(b"\0")
    entries: list[StatusEntry] = []
    i = 0
    while i < len(parts):
        item = parts[i]
        i += 1
        if len(item) < 4:
            continue
        code, path = os.fsdecode(item[:2]), os.fsdecode(item[3:])
        orig = None
        if "R" in code or "C" in code:
            orig = os.fsdecode(parts[i]) if i < len(parts) else None
            i += 1
        entries.append(StatusEntry(code, path, orig))
    return entries


def status(worktree: StrPath, *, untracked: bool = True) -> list[StatusEntry]:
    """``git status --porcelain=v1 -z`` (all untracked files, or none), without taking the
    index lock (so the user's own git commands never collide with it)."""
    data = run_git(
        [
            "--no-optional-locks",
            "status",
            "--porcelain=v1",
            "-z",
            f"--untracked-files={'all' if untracked else 'no'}",
        ],
        worktree,
    ).stdout
    return _parse_status(data)


def _index_shas(root: str) -> dict[str, str]:
    """Staged blob per path that differs from HEAD (what ``git add`` put in the index)."""
    data = run_git(
        ["--no-optional-locks", "diff", "--cached", "--raw", "-z", "--no-renames", "--no-abbrev"],
        root,
    ).stdout
    parts = data.split(b"\0")
    shas: dict[str, str] = {}
    for meta, path in zip(parts[0::2], parts[1::2]):
        fields = meta.split()
        if len(fields) >= 4:
            shas[os.fsdecode(path)] = os.fsdecode(fields[3])
    return shas


def _content_hash(root: str, path: str, staged: str | None) -> str:
    digest = hashlib.sha256(f"index:{staged or '-'}\0".encode())
    full = os.path.join(root, path)
    try:
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            digest.update(b"link:" + os.fsencode(os.readlink(full)))
        elif stat.S_ISDIR(st.st_mode):
            digest.update(b"dir")
        elif stat.S_ISREG(st.st_mode):
            digest.update(b"exec:" if st.st_mode & 0o111 else b"file:")
            with open(full, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        else:
            digest.update(b"other")
    except FileNotFoundError:
        digest.update(b"missing")
    except OSError as exc:
        digest.update(f"unreadable:{exc.errno}".encode())
    return digest.hexdigest()


def snapshot(repo: StrPath, *, root: StrPath | None = None) -> CheckoutSnapshot:
    """HEAD, branch, status (all untracked files) and a content hash of every changed path
    of the checkout ``repo`` is in (``root``: its top, when the caller knows it). Reads only:
    never writes the index."""
    top = Path(root) if root is not None else repo_root(repo)
    if top is None:
        raise GitError(f"{os.fspath(repo)} is not in a git repository")
    where = str(top)
    entries = status(where)
    staged = _index_shas(where) if any(e.code[0] not in " ?!" for e in entries) else {}
    hashes = {e.path: _content_hash(where, e.path, staged.get(e.path)) for e in entries}
    return CheckoutSnapshot(
        root=where,
        head=rev_parse(where, "HEAD"),
        branch=current_branch(where),
        entries=tuple(entries),
        hashes=hashes,
    )


def snapshot_diff(
    before: CheckoutSnapshot, after: CheckoutSnapshot, *, exclude: Sequence[StrPath] = ()
) -> list[str]:
    """The paths (relative to the checkout's root, sorted) whose status or content differ
    between two snapshots, plus the files of any commits between their HEADs when HEAD moved.
    ``exclude``: folders (absolute, or relative to the root) whose paths do not count, such
    as the spec folder specwave itself writes to."""
    changed: set[str] = set()
    old = {e.path: e for e in before.entries}
    new = {e.path: e for e in after.entries}
    for path in old.keys() | new.keys():
        if old.get(path) != new.get(path) or before.hashes.get(path) != after.hashes.get(path):
            changed.add(path)
    if before.head != after.head:
        if before.head and after.head:
            changed.update(changed_files(after.root, before.head, after.head, merge_base=False))
        elif after.head:
            changed.update(
                _split_z(
                    run_git(["ls-tree", "-r", "-z", "--name-only", after.head], after.root).stdout
                )
            )
    skip = []
    for folder in exclude:
        rel = os.path.relpath(os.path.abspath(os.path.join(after.root, folder)), after.root)
        skip.append("" if rel == "." else rel.replace(os.sep, "/").rstrip("/") + "/")
    return sorted(p for p in changed if not any(p.startswith(s) for s in skip))


def exclude(repo: StrPath, pattern: str) -> bool:
    """Add ``pattern`` to the repository's ``info/exclude`` (untracked, the user's own ignore
    list: no tracked file changes) unless it is there; True when added."""
    path = common_dir(repo) / "info" / "exclude"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if pattern in (ln.strip() for ln in lines):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        if lines and not path.read_text(encoding="utf-8").endswith("\n"):
            fh.write("\n")
        fh.write(f"# specwave's worktrees\n{pattern}\n")
    return True


def untracked_matching(repo: StrPath, patterns: Sequence[str]) -> list[str]:
    """Files of the checkout that git ignores and that ``patterns`` (gitignore syntax: a
    ``.worktreeinclude``'s lines) match, relative to the root: what a new worktree lacks."""
    lines = [p for p in patterns if p.strip() and not p.lstrip().startswith("#")]
    if not lines:
        return []
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".include", delete=False) as fh:
        fh.write("\n".join(lines) + "\n")
    try:
        listed = _split_z(
            run_git(
                ["ls-files", "-z", "--others", "--ignored", f"--exclude-from={fh.name}"], repo
            ).stdout
        )
    finally:
        os.unlink(fh.name)
    if not listed:
        return []
    # only what the repository itself ignores: anything else a worktree has, or would commit
    res = run_git(
        ["check-ignore", "-z", "--stdin"],
        repo,
        check=False,
        input=b"\0".join(p.encode() for p in listed) + b"\0",
    )
    if res.returncode not in (0, 1):
        raise _failed(res, repo)
    return sorted(_split_z(res.stdout))


# ------------------------------------------------------------------------------- commits


def identity_args(cwd: StrPath) -> list[str]:
    """``-c user.name=... -c user.email=...`` for what the repository has not configured."""
    result = run_git(["config", "--get-regexp", r"^user\.(name|email)$"], cwd, check=False)
    if result.returncode not in (0, 1):
        raise _failed(result, cwd)
    have = set()
    for line in result.out.splitlines():
        key, _, value = line.partition(" ")
        if value.strip():
            have.add(key)
    args: list[str] = []
    if "user.name" not in have:
        args += ["-c", f"user.name={FALLBACK_NAME}"]
    if "user.email" not in have:
        args += ["-c", f"user.email={FALLBACK_EMAIL}"]
    return args


def with_trailers(cwd: StrPath, message: str, trailers: Mapping[str, str] | None) -> str:
    """``message`` with ``Key: value`` trailers added (``git interpret-trailers``: joins an
    existing trailer block instead of starting a second one)."""
    if not trailers:
        return message
    lines = []
    for key, value in trailers.items():
        if not _TRAILER_KEY.fullmatch(key):
            raise GitError(f"invalid trailer key {key!r}")
        lines.append(f"{key}: {' '.join(str(value).split())}")
    text = message if message.endswith("\n") else message + "\n"
    if "\n" not in text.strip():  # a subject alone: git never reads it as a trailer
        return text.strip() + "\n\n" + "\n".join(lines) + "\n"
    args = ["interpret-trailers", "--no-divider"]
    for line in lines:
        args += ["--trailer", line]
    return os.fsdecode(run_git(args, cwd, input=os.fsencode(text)).stdout)


def commit_all(
    worktree: StrPath,
    message: str,
    trailers: Mapping[str, str] | None = None,
    *,
    run_hooks: bool = False,
    identity: list[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> str | None:
    """Commit everything left in ``worktree``: tracked changes and new untracked files,
    never ignored ones (``git add -A``); return the commit, or None when there was nothing
    to commit. ``run_hooks``: let the repository's commit hooks run (skipped by default).
    ``identity``: :func:`identity_args`, when the caller looked it up already."""
    run_git(["add", "-A"], worktree, timeout=timeout)
    text = with_trailers(worktree, message, trailers)
    result = run_git(
        [
            *(identity_args(worktree) if identity is None else identity),
            "commit",
            "-q",
            "-F",
            "-",
            "--cleanup=whitespace",
            *([] if run_hooks else ["--no-verify"]),
        ],
        worktree,
        timeout=timeout,
        input=os.fsencode(text),
        check=False,
    )
    if result.returncode != 0:
        if result.returncode == 1 and b"nothing to commit" in result.stdout:
            return None
        raise _failed(result, worktree)
    return head_sha(worktree)


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str


def commits_between(repo: StrPath, base: str, head: str) -> list[Commit]:
    """The commits ``head`` has and ``base`` has not (``base..head``), oldest first."""
    out = _git(repo, "log", "--reverse", "--format=%H %s", f"{_ref(base)}..{_ref(head)}", "--")
    return [
        Commit(*line.split(" ", 1)) if " " in line else Commit(line, "")
        for line in out.splitlines()
    ]


def _range(base: str, head: str, merge_base: bool) -> list[str]:
    return [f"{_ref(base)}...{_ref(head)}"] if merge_base else [_ref(base), _ref(head)]


def changed_files(repo: StrPath, base: str, head: str, *, merge_base: bool = True) -> list[str]:
    """The files ``head`` changed since it left ``base`` (``base...head``; with
    ``merge_base=False``: every difference between the two trees)."""
    data = run_git(
        [
            "diff",
            "--name-only",
            "-z",
            "--no-renames",
            "--no-ext-diff",
            *_range(base, head, merge_base),
            "--",
        ],
        repo,
    ).stdout
    return _split_z(data)


def diff_text(
    repo: StrPath, base: str, head: str, max_bytes: int = 20_000, *, merge_base: bool = True
) -> str:
    """The diff ``head`` made since it left ``base``, cut at ``max_bytes`` (with a last line
    saying how much was left out)."""
    data = run_git(
        ["diff", "--no-color", "--no-ext-diff", *_range(base, head, merge_base), "--"], repo
    ).stdout
    if len(data) <= max_bytes:
        return data.decode("utf-8", "replace")
    cut = data[:max_bytes].decode("utf-8", "ignore")  # drops a split character at the end
    if not cut.endswith("\n"):
        cut = cut[: cut.rfind("\n") + 1] if "\n" in cut else cut + "\n"
    return cut + f"... (diff cut: {len(data) - len(cut.encode())} more bytes)\n"


# -------------------------------------------------------------------------------- merges


@dataclass(frozen=True)
class MergeResult:
    """What :func:`merge` did: ``merged`` (``commit`` is the new integration head),
    ``up_to_date`` (the branch held nothing new) or ``conflict`` (``files``; the merge was
    aborted, the worktree is as before). ``before``: the integration head before."""

    status: Literal["merged", "up_to_date", "conflict"]
    before: str
    commit: str | None = None
    files: list[str] = field(default_factory=list)


def is_clean(worktree: StrPath, *, untracked: bool = True) -> bool:
    """No staged or unstaged changes (and, with ``untracked``, no untracked files)."""
    return not status(worktree, untracked=untracked)


def merge_in_progress(worktree: StrPath) -> bool:
    """Whether a merge is stopped half-way in ``worktree`` (MERGE_HEAD exists)."""
    return rev_parse(worktree, "MERGE_HEAD") is not None


def unmerged_files(worktree: StrPath) -> list[str]:
    """Files with unresolved conflicts in ``worktree``'s index."""
    data = run_git(["diff", "--name-only", "--diff-filter=U", "-z"], worktree).stdout
    return list(dict.fromkeys(_split_z(data)))


def abort_merge(worktree: StrPath) -> bool:
    """Undo a merge stopped half-way (also a conflicted squash merge, which leaves no
    MERGE_HEAD); False when there was none. Falls back to ``reset --hard HEAD``: meant for
    the integration worktree, which holds nothing uncommitted of anyone's."""
    if merge_in_progress(worktree):
        result = run_git(["merge", "--abort"], worktree, check=False)
        if result.returncode != 0:
            _git(worktree, "reset", "-q", "--hard", "HEAD")
        return True
    if unmerged_files(worktree):
        _git(worktree, "reset", "-q", "--hard", "HEAD")
        return True
    return False


def reset_hard(worktree: StrPath, sha: str, *, clean_untracked: bool = False) -> None:
    """Move ``worktree``'s branch, index and files to ``sha`` (e.g. to undo a merge whose
    verify failed); ``clean_untracked`` also deletes untracked files (never ignored ones)."""
    _git(worktree, "reset", "-q", "--hard", _base_commit(worktree, sha))
    if clean_untracked:
        _git(worktree, "clean", "-q", "-f", "-d")


def _git_dir(worktree: StrPath) -> Path:
    """The git directory of the worktree whose top is ``worktree`` (``.git``, or where a
    linked worktree's ``.git`` file points), read from the file system: no git process."""
    dot = Path(worktree) / ".git"
    if dot.is_file():
        text = dot.read_text(encoding="utf-8", errors="surrogateescape").strip()
        if text.startswith("gitdir:"):
            where = Path(text.removeprefix("gitdir:").strip())
            return where if where.is_absolute() else Path(worktree) / where
    if dot.is_dir():
        return dot
    return Path(worktree) / _git(worktree, "rev-parse", "--git-dir")


def remove_index_lock(worktree: StrPath) -> bool:
    """Delete ``worktree``'s ``index.lock`` left by a git that was killed; False when there
    is none. Only when no git command can be running there (e.g. when a run resumes)."""
    lock = _git_dir(worktree) / "index.lock"
    try:
        lock.unlink()
    except FileNotFoundError:
        return False
    return True


MERGE_TREE_VERSION = (2, 38, 0)
"""``git merge-tree --write-tree``: merges computed without a worktree."""


def can_merge_without_worktree() -> bool:
    return _cached_version() >= MERGE_TREE_VERSION


def merge_commit(
    repo: StrPath,
    into: str,
    head: str,
    tree: str,
    branch: str,
    message: str,
    *,
    trailers: Mapping[str, str] | None = None,
    identity: list[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[MergeResult, str]:
    """Merge ``branch`` into branch ``into``, whose head is ``head`` with tree ``tree``,
    without a worktree (git 2.38+: ``merge-tree --write-tree``, ``commit-tree``, then
    ``update-ref`` from ``head``, atomic, refused when ``into`` moved meanwhile): a merge
    commit with ``message``, no file written. Returns the result and the tree of ``into``'s
    head after it. A conflict changes nothing and names the files; a merge that would
    change nothing is ``up_to_date`` (no commit)."""
    result = run_git(
        ["merge-tree", "--write-tree", "-z", "--name-only", "--no-messages", head, _ref(branch)],
        repo,
        timeout=timeout,
        check=False,
    )
    parts = _split_z(result.stdout)
    if result.returncode == 1 and parts:
        return MergeResult("conflict", before=head, files=list(dict.fromkeys(parts[1:]))), tree
    if result.returncode != 0 or not parts:
        raise _failed(result, repo)
    merged_tree = parts[0]
    if merged_tree == tree:
        return MergeResult("up_to_date", before=head), tree
    text = with_trailers(repo, message, trailers)
    ident = identity_args(repo) if identity is None else identity
    sha = run_git(
        [*ident, "commit-tree", merged_tree, "-p", head, "-p", _ref(branch), "-F", "-"],
        repo,
        timeout=timeout,
        input=os.fsencode(text),
    ).out
    _git(repo, "update-ref", "-m", f"specwave: merge {branch}", f"refs/heads/{into}", sha, head)
    return MergeResult("merged", before=head, commit=sha), merged_tree


def merge(
    worktree: StrPath,
    branch: str,
    message: str,
    *,
    trailers: Mapping[str, str] | None = None,
    squash: bool = False,
    run_hooks: bool = False,
    check: bool = True,
    identity: list[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> MergeResult:
    """Merge ``branch`` into the branch checked out in ``worktree`` (the integration
    worktree): a merge commit (``--no-ff``) with ``message``, or with ``squash`` one plain
    commit. A conflict is aborted (the worktree left as it was) and reported with its files.
    GitError when the worktree has uncommitted changes or a merge in progress, when
    ``branch`` names no commit, or when git fails otherwise (e.g. untracked files in the
    way). ``check=False`` skips the checks of the worktree and of ``branch`` (git's own
    refusal still stops a merge), for a caller that keeps the worktree clean itself;
    ``identity``: :func:`identity_args` looked up once by the caller."""
    if check:
        if merge_in_progress(worktree):
            raise GitError(f"{os.fspath(worktree)}: a merge is already in progress (abort it)")
        if not is_clean(worktree, untracked=False):
            raise GitError(f"{os.fspath(worktree)}: has uncommitted changes; cannot merge there")
        _base_commit(worktree, branch)
    before = head_sha(worktree)
    text = with_trailers(worktree, message, trailers)
    ident = identity_args(worktree) if identity is None else identity
    hooks = [] if run_hooks else ["--no-verify"]
    if squash:
        args = [*ident, "-c", "merge.ff=true", "merge", "--squash", "--no-stat", _ref(branch)]
    else:
        args = [
            *ident,
            "merge",
            "--no-ff",
            "--no-edit",
            "--no-stat",
            *hooks,
            "-m",
            text,
            _ref(branch),
        ]
    result = run_git(args, worktree, timeout=timeout, check=False)
    if result.returncode != 0:
        files = unmerged_files(worktree)
        if files or merge_in_progress(worktree):
            if squash:
                _git(worktree, "reset", "-q", "--hard", before)
            else:
                abort_merge(worktree)
            return MergeResult("conflict", before=before, files=files)
        raise _failed(result, worktree)
    if squash:
        if run_git(["diff", "--cached", "--quiet"], worktree, check=False).returncode == 0:
            return MergeResult("up_to_date", before=before)
        run_git(
            [*ident, "commit", "-q", "-F", "-", "--cleanup=whitespace", *hooks],
            worktree,
            timeout=timeout,
            input=os.fsencode(text),
        )
    after = head_sha(worktree)
    if after == before:
        return MergeResult("up_to_date", before=before)
    return MergeResult("merged", before=before, commit=after)


__all__ = [
    "DEFAULT_TIMEOUT",
    "MIN_VERSION",
    "CheckoutSnapshot",
    "Commit",
    "GitError",
    "GitResult",
    "GitTimeout",
    "MergeResult",
    "StatusEntry",
    "WorktreeInfo",
    "abort_merge",
    "branch_exists",
    "changed_files",
    "check_branch_name",
    "commit_all",
    "commits_between",
    "common_dir",
    "create_branch",
    "current_branch",
    "can_merge_without_worktree",
    "delete_branch",
    "delete_branches",
    "diff_text",
    "find_worktree",
    "git_env",
    "git_version",
    "has_commits",
    "head_sha",
    "identity_args",
    "is_ancestor",
    "is_clean",
    "is_valid_branch_name",
    "merge",
    "merge_commit",
    "merge_in_progress",
    "parse_version",
    "remove_index_lock",
    "repo_root",
    "repository_lock",
    "require_git",
    "reset_hard",
    "rev_parse",
    "rev_parse_tree",
    "run_git",
    "snapshot",
    "snapshot_diff",
    "status",
    "unmerged_files",
    "with_trailers",
    "park_worktree",
    "take_worktree",
    "worktree_add",
    "worktree_list",
    "worktree_lock",
    "worktree_prune",
    "worktree_remove",
    "worktree_unlock",
]
