"""The git layer: real git in tmp repositories (worktrees, commits, merges, snapshots)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tasks_lib.workspaces import git
from tasks_lib.workspaces.git import GitError, GitTimeout
from tests.workspaces.conftest import make_repo, sh

ROOT = Path(__file__).resolve().parents[2]


def files_of(repo: Path, rev: str = "HEAD") -> set[str]:
    return set(sh(repo, "ls-tree", "-r", "--name-only", rev).splitlines())


def integration(repo: Path, tmp_path: Path) -> Path:
    """An integration worktree on branch specwave/s, started at main."""
    path = tmp_path / "integration"
    git.worktree_add(repo, path, "specwave/s", "main")
    return path


def task(
    repo: Path,
    tmp_path: Path,
    name: str,
    edits: dict[str, str],
    base: str = "main",
    append: bool = False,
) -> Path:
    """A task worktree on branch specwave/s--<name> whose commit made ``edits``."""
    path = tmp_path / f"wt-{name}"
    git.worktree_add(repo, path, f"specwave/s--{name}", base)
    for file, text in edits.items():
        target = path / file
        target.parent.mkdir(parents=True, exist_ok=True)
        old = target.read_text() if append and target.exists() else ""
        target.write_text(old + text)
    assert git.commit_all(path, f"{name}: edit") is not None
    return path


# ------------------------------------------------------------------ running git, errors


def test_environment_is_scrubbed_and_fixed(repo, tmp_path, monkeypatch):
    other = make_repo(tmp_path / "other", {"x.txt": "other\n"})
    ours = sh(repo, "rev-parse", "HEAD")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    env = git.git_env()
    assert not {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"} & env.keys()
    assert env["GIT_TERMINAL_PROMPT"] == "0" and env["LC_ALL"] == "C"
    assert env["PATH"] == os.environ["PATH"]
    # inherited, they point every git at the other repository (as plain git shows)
    assert sh(repo, "rev-parse", "HEAD") != ours
    assert git.head_sha(repo) == ours
    assert git.repo_root(repo) == repo
    assert git.snapshot(repo).entries == ()


def test_error_is_one_line_naming_command_exit_and_cause(repo):
    with pytest.raises(GitError) as exc:
        git.run_git(["merge", "no-such-branch"], repo)
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith("git merge no-such-branch in ")
    assert str(repo) in message and "(exit 1)" in message
    assert "no-such-branch - not something we can merge" in message
    assert exc.value.returncode == 1 and exc.value.command == ["merge", "no-such-branch"]
    assert "not something we can merge" in exc.value.stderr


def test_missing_directory_and_missing_git_are_clear(tmp_path, monkeypatch):
    with pytest.raises(GitError, match="no such directory"):
        git.run_git(["status"], tmp_path / "nope")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(GitError, match="git is not installed"):
        git.git_version()


def test_version_check(monkeypatch):
    assert git.parse_version("git version 2.39.5") == (2, 39, 5)
    assert git.parse_version("git version 2.37.1 (Apple Git-137.1)") == (2, 37, 1)
    assert git.parse_version("git version 2.41.0.windows.1") == (2, 41, 0)
    assert git.require_git() == git.git_version() >= (2, 25, 0)
    monkeypatch.setattr(git, "git_version", lambda: (2, 20, 1))
    with pytest.raises(GitError, match=r"git 2\.20\.1 is too old: specwave needs git 2\.25"):
        git.require_git()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_timeout_kills_git_and_the_hook_it_started(repo, tmp_path):
    pidfile = tmp_path / "hook.pid"
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\necho $$ > '{pidfile}'\nexec sleep 30\n")
    hook.chmod(0o755)
    (repo / "README.md").write_text("changed\n")
    started = time.monotonic()
    with pytest.raises(GitTimeout, match=r"^git commit .* timed out after 1 s \(killed\)$"):
        git.commit_all(repo, "slow", run_hooks=True, timeout=1)
    assert time.monotonic() - started < 10
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the hook's sleep outlived the timeout"
    # hooks are skipped by default: the same commit goes through at once
    git.remove_index_lock(repo)
    assert git.commit_all(repo, "fast", timeout=10) == git.head_sha(repo)


# ----------------------------------------------------------------------- repository facts


def test_facts_outside_a_repository(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert git.repo_root(plain) is None
    assert git.repo_root(plain / "file-not-there.txt") is None
    with pytest.raises(GitError, match="not in a git repository"):
        git.snapshot(plain)


def test_facts_of_a_repository_without_commits(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    sh(empty, "init", "-q", "-b", "trunk")
    assert git.repo_root(empty) == empty
    assert git.has_commits(empty) is False
    assert git.current_branch(empty) == "trunk"
    assert git.rev_parse(empty, "HEAD") is None
    with pytest.raises(GitError, match="no commits yet"):
        git.head_sha(empty)
    (empty / "new.txt").write_text("x")
    snap = git.snapshot(empty)
    assert snap.head is None and [e.path for e in snap.entries] == ["new.txt"]


def test_facts_of_a_repository(repo):
    (repo / "sub" / "deep").mkdir(parents=True)
    (repo / "sub" / "deep" / "f.txt").write_text("x")
    assert git.repo_root(repo / "sub" / "deep") == repo
    assert git.repo_root(repo / "README.md") == repo
    assert git.common_dir(repo) == repo / ".git"
    first = git.head_sha(repo)
    assert git.has_commits(repo) and git.current_branch(repo) == "main"
    assert git.rev_parse(repo, "main") == first and git.rev_parse(repo, "nope") is None
    sh(repo, "tag", "-a", "-m", "annotated", "v1")
    assert git.rev_parse(repo, "v1") == first  # peeled to the commit
    sh(repo, "commit", "-q", "--allow-empty", "-m", "second")
    second = git.head_sha(repo)
    assert git.is_ancestor(repo, first, second) and not git.is_ancestor(repo, second, first)
    assert git.branch_exists(repo, "main") and not git.branch_exists(repo, "v1")
    sh(repo, "checkout", "-q", "--detach", first)
    assert git.current_branch(repo) is None and git.head_sha(repo) == first
    with pytest.raises(GitError, match="invalid git ref"):
        git.rev_parse(repo, "--all")


def test_branch_name_validation_and_creation(repo):
    assert git.is_valid_branch_name("specwave/s--1.1")
    for bad in ("a..b", "-x", "a b", "x.lock", "a~1", "a:b", "", "a/", "@{-1}"):
        assert not git.is_valid_branch_name(bad), bad
    with pytest.raises(GitError, match="not a valid git branch name"):
        git.check_branch_name("a..b")
    sha = git.create_branch(repo, "specwave/s", "HEAD")
    assert sha == git.head_sha(repo) and git.branch_exists(repo, "specwave/s")
    git.create_branch(repo, "specwave/s--1", "specwave/s")  # coexists with specwave/s
    with pytest.raises(GitError, match="already exists"):
        git.create_branch(repo, "specwave/s", "HEAD")
    with pytest.raises(GitError, match="names no commit"):
        git.create_branch(repo, "specwave/t", "no-such-ref")
    assert git.delete_branch(repo, "specwave/s--1") is True
    assert git.delete_branch(repo, "specwave/s--1") is False


# ------------------------------------------------------------------------------- worktrees


def test_worktree_add_lock_list_remove_prune(repo, tmp_path):
    base = git.head_sha(repo)
    wt = tmp_path / "wt"
    info = git.worktree_add(repo, wt, "specwave/s--1", "main", lock_reason="specwave task 1")
    assert info.path == str(wt) and info.head == base and info.locked
    assert (wt / "README.md").read_text() == "hello\n"
    main, entry = git.worktree_list(repo)
    assert main.path == str(repo) and main.branch == "main" and not main.locked
    assert (entry.path, entry.head, entry.branch) == (str(wt), base, "specwave/s--1")
    assert entry.locked and entry.lock_reason == "specwave task 1"
    assert git.find_worktree(repo, wt) == entry

    with pytest.raises(GitError, match="already exists"):
        git.worktree_add(repo, tmp_path / "again", "specwave/s--1", "main")
    with pytest.raises(GitError, match="already checked out|is already used by worktree"):
        git.worktree_add(repo, tmp_path / "again", "specwave/s--1", "main", if_exists="reuse")
    with pytest.raises(GitError, match="names no commit"):
        git.worktree_add(repo, tmp_path / "x", "specwave/s--2", "no-such-base")

    git.worktree_unlock(repo, wt)
    git.worktree_unlock(repo, wt)  # not locked: no-op
    assert not git.find_worktree(repo, wt).locked
    git.worktree_lock(repo, wt, "again")
    git.worktree_lock(repo, wt, "twice")  # already locked: no-op
    assert git.find_worktree(repo, wt).lock_reason == "again"
    (wt / "dirty.txt").write_text("left behind")
    assert git.worktree_remove(repo, wt) is True  # locked and dirty: force removes it
    assert not wt.exists() and git.find_worktree(repo, wt) is None
    assert git.worktree_remove(repo, wt) is False
    assert git.branch_exists(repo, "specwave/s--1")  # the branch stays

    # the branch can be checked out again; "reset" moves it to a new base
    sh(repo, "commit", "-q", "--allow-empty", "-m", "newer")
    again = git.worktree_add(repo, tmp_path / "wt2", "specwave/s--1", "main", if_exists="reuse")
    assert again.head == base
    git.worktree_remove(repo, again.path)
    moved = git.worktree_add(repo, tmp_path / "wt3", "specwave/s--1", "main", if_exists="reset")
    assert moved.head == git.head_sha(repo) != base

    # directories deleted behind git's back: prune forgets unlocked ones, remove locked ones
    gone, kept = tmp_path / "gone", tmp_path / "gone-locked"
    git.worktree_add(repo, gone, "specwave/s--g", "main")
    git.worktree_add(repo, kept, "specwave/s--k", "main", lock_reason="busy")
    subprocess.run(["rm", "-rf", str(gone), str(kept)], check=True)
    git.worktree_prune(repo)
    assert git.find_worktree(repo, gone) is None
    assert git.find_worktree(repo, kept).locked
    assert git.worktree_remove(repo, kept) is True
    assert [w.path for w in git.worktree_list(repo)] == [str(repo), str(tmp_path / "wt3")]

    not_a_worktree = tmp_path / "plain"
    not_a_worktree.mkdir()
    with pytest.raises(GitError, match="is not a worktree"):
        git.worktree_remove(repo, not_a_worktree)


def test_take_and_park_reuse_a_worktree_writing_only_what_changed(tmp_path):
    repo = make_repo(
        tmp_path / "repo", {".gitignore": "build/\n", "same.txt": "same\n", "lib.py": "X = 1\n"}
    )
    one = tmp_path / "wt-1"
    info = git.take_worktree(repo, one, "specwave/s--1", "main", lock_reason="task 1")
    assert info.branch == "specwave/s--1" and info.locked
    assert (one / "same.txt").read_text() == "same\n" and git.is_clean(one)
    assert git.find_worktree(repo, one).lock_reason == "task 1"
    (one / "lib.py").write_text("X = 2\n")
    assert git.commit_all(one, "1: edit") is not None
    for leftover in ("build/out.o", "stray.txt"):  # ignored, untracked: not the next task's
        (one / leftover).parent.mkdir(exist_ok=True)
        (one / leftover).write_text("left\n")
    same_inode = (one / "same.txt").stat().st_ino
    sh(repo, "merge", "-q", "specwave/s--1")  # as the merge queue would (into main here)

    git.worktree_unlock(repo, one)
    parked = tmp_path / "parked"
    git.park_worktree(repo, one, parked)
    assert not one.exists() and parked.is_dir()
    assert git.find_worktree(repo, parked).branch == "specwave/s--1"  # as it was, moved

    sh(repo, "commit", "-q", "--allow-empty", "-m", "newer")
    two = tmp_path / "wt-2"
    head = git.head_sha(repo)
    took = git.take_worktree(repo, two, "specwave/s--2", head, reuse=parked, lock_reason="task 2")
    assert took.head == head and not parked.exists()
    entry = git.find_worktree(repo, two)
    assert (entry.branch, entry.head, entry.locked) == ("specwave/s--2", head, True)
    assert (two / "lib.py").read_text() == "X = 2\n"
    git.delete_branches(repo, ["specwave/s--1", "specwave/s--2", "no-such-branch"])
    assert not git.branch_exists(repo, "specwave/s--1")  # free once the next task took it
    assert git.branch_exists(repo, "specwave/s--2")  # checked out: git refuses, so do we
    assert (two / "same.txt").stat().st_ino == same_inode  # not written again
    assert not (two / "build").exists() and not (two / "stray.txt").exists()
    assert git.is_clean(two)

    # its own worktree again (a new attempt): back to the given commit, leftovers gone
    (two / "lib.py").write_text("X = 3\n")
    (two / "new.txt").write_text("new\n")
    base = sh(repo, "rev-parse", "HEAD~1")
    again = git.take_worktree(repo, two, "specwave/s--2", base, reuse=two)
    assert again.head == base and git.head_sha(two) == base and git.is_clean(two)
    assert not (two / "new.txt").exists()

    # never a branch checked out elsewhere (the user's), whatever it reuses
    with pytest.raises(GitError, match="checked out|used by worktree"):
        git.take_worktree(repo, tmp_path / "wt-3", "main", head)
    assert git.current_branch(repo) == "main" and git.head_sha(repo) == head


def test_concurrent_adds_from_threads_all_succeed(tmp_path):
    # unserialized, 16 adds at once in a repository of 100 files nearly always see a failure
    # here ("failed to read .git/worktrees/<name>/commondir"); 8 at once, about every third
    repo = make_repo(tmp_path / "repo", {f"d{i % 10}/f{i}.txt": f"{i}\n" for i in range(100)})
    base = git.head_sha(repo)

    def add(gate: threading.Barrier, errors: list[BaseException], round_: int, i: int) -> None:
        gate.wait()
        try:
            git.worktree_add(
                repo,
                tmp_path / f"r{round_}" / f"wt{i}",
                f"specwave/s--{round_}-{i}",
                "main",
                lock_reason=f"task {i}",
            )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    for round_ in range(2):
        gate, errors = threading.Barrier(16), []
        threads = [threading.Thread(target=add, args=(gate, errors, round_, i)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
    entries = git.worktree_list(repo)[1:]
    assert len(entries) == 32
    assert all(e.head == base and e.locked for e in entries)
    assert {e.branch for e in entries} == {
        f"specwave/s--{r}-{i}" for r in (0, 1) for i in range(16)
    }
    assert all(len(list(Path(e.path).rglob("*.txt"))) == 100 for e in entries)


HOLDER = """
import sys, time
from tasks_lib.workspaces import git
with git.repository_lock(sys.argv[1]) as path:
    print(path, flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_the_lock_holds_across_processes(repo):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(repo), "1.5"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = holder.stdout.readline().strip()
        assert line == str(repo / ".git" / git.LOCK_FILE)
        with pytest.raises(GitError, match="another process has held"):
            with git.repository_lock(repo, timeout=0.3):
                pass
        started = time.monotonic()
        with git.repository_lock(repo, timeout=30):
            waited = time.monotonic() - started
        assert holder.wait(timeout=30) == 0
        assert waited > 0.3
    finally:
        holder.kill()
        holder.wait()


def test_worktree_list_parses_the_output_of_older_git():
    text = (
        "worktree /r\nHEAD " + "a" * 40 + "\nbranch refs/heads/main\n\n"
        "worktree /w\nHEAD " + "b" * 40 + '\ndetached\nlocked "in use\\nby t\\303\\251"\n\n'
        "worktree /p\nHEAD " + "c" * 40 + "\nbranch refs/heads/x\nlocked\nprunable gone\n"
    )
    r, w, p = git._parse_worktrees(text, "\n")
    assert (r.branch, r.locked) == ("main", False)
    assert (w.branch, w.head, w.locked, w.lock_reason) == (None, "b" * 40, True, "in use\nby té")
    assert (p.locked, p.lock_reason, p.prunable) == (True, None, True)


# ------------------------------------------------------------------------------- commits


def test_commit_all_commits_tracked_and_untracked_never_ignored(repo, tmp_path):
    (repo / ".gitignore").write_text("*.log\nbuild/\n")
    sh(repo, "add", ".gitignore")
    sh(repo, "commit", "-q", "-m", "ignore")
    wt = tmp_path / "wt"
    git.worktree_add(repo, wt, "specwave/s--3", "main")
    base = git.head_sha(wt)
    assert git.commit_all(wt, "3: nothing", {"Specwave-Task": "3"}) is None
    assert git.head_sha(wt) == base

    (wt / "README.md").write_text("hello\nchanged\n")
    (wt / "new dir").mkdir()
    (wt / "new dir" / "new file.py").write_text("print(1)\n")
    (wt / "debug.log").write_text("noise")
    (wt / "build").mkdir()
    (wt / "build" / "out.bin").write_text("noise")
    message = "3: Add the thing\n\nBody line.\n---\nnot a divider"
    sha = git.commit_all(
        wt, message, {"Specwave-Task": "3", "Specwave-Run": "run 1", "Specwave-Attempt": "2"}
    )
    assert sha == git.head_sha(wt) and sha != base
    assert git.changed_files(wt, base, sha) == ["README.md", "new dir/new file.py"]
    assert (wt / "debug.log").exists() and (wt / "build" / "out.bin").exists()
    assert git.is_clean(wt)
    trailers = sh(wt, "log", "-1", "--format=%(trailers)").splitlines()
    assert trailers == ["Specwave-Task: 3", "Specwave-Run: run 1", "Specwave-Attempt: 2"]
    assert sh(wt, "log", "-1", "--format=%s") == "3: Add the thing"
    assert "---\nnot a divider" in sh(wt, "log", "-1", "--format=%B")
    # no identity configured anywhere: the fallback
    assert sh(wt, "log", "-1", "--format=%an <%ae>") == "specwave <specwave@localhost>"

    sh(repo, "config", "user.name", "Repo Owner")
    sh(repo, "config", "user.email", "owner@example.com")
    (wt / "README.md").write_text("again\n")
    (wt / "gone.txt").write_text("x")
    git.commit_all(wt, "3: again")
    assert sh(wt, "log", "-1", "--format=%an <%ae>") == "Repo Owner <owner@example.com>"
    (wt / "gone.txt").unlink()
    git.commit_all(wt, "3: delete")
    assert "gone.txt" not in files_of(wt)

    assert [c.subject for c in git.commits_between(wt, base, "HEAD")] == [
        "3: Add the thing",
        "3: again",
        "3: delete",
    ]
    assert git.commits_between(wt, "HEAD", "HEAD") == []


def test_diff_text_is_cut_at_max_bytes(repo, tmp_path):
    wt = task(repo, tmp_path, "1", {"big.txt": "".join(f"line {i} é\n" for i in range(2000))})
    full = git.diff_text(wt, "main", "HEAD")
    assert full.startswith("diff --git a/big.txt b/big.txt") and len(full.encode()) < 20_000 * 2
    cut = git.diff_text(wt, "main", "HEAD", max_bytes=500)
    body, last = cut.rstrip("\n").rsplit("\n", 1)
    assert len(body.encode()) <= 500 and body + "\n" == full[: len(body) + 1]
    assert last.startswith("... (diff cut: ") and last.endswith(" more bytes)")
    assert git.diff_text(wt, "main", "main") == ""


# ------------------------------------------------------------------------------- merges


def test_merge_in_dependency_order(repo, tmp_path):
    into = integration(repo, tmp_path)
    one = task(repo, tmp_path, "1", {"one.txt": "1\n"})
    two = task(repo, tmp_path, "2", {"two.txt": "2\n"})
    before = git.head_sha(into)
    first = git.merge(into, "specwave/s--1", "Merge task 1", trailers={"Specwave-Task": "1"})
    assert first.status == "merged" and first.before == before and first.files == []
    assert first.commit == git.head_sha(into)
    parents = sh(into, "log", "-1", "--format=%P").split()
    assert parents == [before, git.head_sha(one)]
    assert sh(into, "log", "-1", "--format=%(trailers)") == "Specwave-Task: 1"
    second = git.merge(into, "specwave/s--2", "Merge task 2")
    assert second.status == "merged" and second.before == first.commit
    assert files_of(into) == {"README.md", "one.txt", "two.txt"}
    assert git.is_ancestor(into, git.head_sha(two), "specwave/s")
    assert sh(into, "log", "--first-parent", "--format=%s", "main..HEAD").splitlines() == [
        "Merge task 2",
        "Merge task 1",
    ]
    # a dependent starts from the integration head: it has its dependencies' work
    three = task(repo, tmp_path, "3", {"three.txt": "3\n"}, base="specwave/s")
    assert {"one.txt", "two.txt"} <= files_of(three)
    again = git.merge(into, "specwave/s--1", "Merge task 1 again")
    assert again.status == "up_to_date" and again.commit is None
    assert git.head_sha(into) == second.commit
    assert files_of(repo, "main") == {"README.md"} and git.is_clean(repo)


@pytest.mark.skipif(not git.can_merge_without_worktree(), reason="needs git 2.38+")
def test_merge_commit_merges_without_a_worktree(repo, tmp_path):
    into = integration(repo, tmp_path)
    stamp = (into / "README.md").stat().st_mtime_ns
    head = git.head_sha(into)
    tree = git.rev_parse_tree(repo, head)
    task(repo, tmp_path, "1", {"a.py": "A = 1\n", "README.md": "hello\nmore\n"})
    res, tree1 = git.merge_commit(
        repo,
        "specwave/s",
        head,
        tree,
        "specwave/s--1",
        "Merge 1: one",
        trailers={"Specwave-Task": "1"},
    )
    assert res.status == "merged" and res.before == head
    assert git.rev_parse(repo, "specwave/s") == res.commit and tree1 != tree
    assert sh(repo, "rev-parse", "specwave/s^2") == git.rev_parse(repo, "specwave/s--1")
    assert files_of(repo, "specwave/s") == {"README.md", "a.py"}
    assert "Specwave-Task: 1" in sh(repo, "log", "-1", "--format=%B", "specwave/s")
    assert (into / "README.md").stat().st_mtime_ns == stamp  # no file written
    # the same branch again: nothing new, no commit
    again, tree2 = git.merge_commit(repo, "specwave/s", res.commit, tree1, "specwave/s--1", "m")
    assert again.status == "up_to_date" and tree2 == tree1
    # a conflict changes nothing and names the file
    task(repo, tmp_path, "2", {"a.py": "A = 2\n"})
    bad, tree3 = git.merge_commit(repo, "specwave/s", res.commit, tree1, "specwave/s--2", "m")
    assert (bad.status, bad.files, tree3) == ("conflict", ["a.py"], tree1)
    assert git.rev_parse(repo, "specwave/s") == res.commit
    # the branch moved meanwhile: refused, not overwritten
    task(repo, tmp_path, "3", {"c.py": "C = 1\n"})
    with pytest.raises(GitError):
        git.merge_commit(repo, "specwave/s", head, tree, "specwave/s--3", "m")
    assert git.rev_parse(repo, "specwave/s") == res.commit


def test_merge_conflict_is_aborted_and_reported(repo, tmp_path):
    (repo / "shared.txt").write_text("base\n")
    sh(repo, "add", "shared.txt")
    sh(repo, "commit", "-q", "-m", "shared")
    into = integration(repo, tmp_path)
    task(repo, tmp_path, "a", {"shared.txt": "from a\n", "a.txt": "a\n"}, append=True)
    task(repo, tmp_path, "b", {"shared.txt": "from b\n", "b.txt": "b\n"}, append=True)
    assert git.merge(into, "specwave/s--a", "Merge a").status == "merged"
    head = git.head_sha(into)
    result = git.merge(into, "specwave/s--b", "Merge b")
    assert result.status == "conflict" and result.files == ["shared.txt"]
    assert result.before == head and result.commit is None
    assert git.head_sha(into) == head and git.is_clean(into)
    assert not git.merge_in_progress(into) and not (into / "b.txt").exists()
    assert (into / "shared.txt").read_text() == "base\nfrom a\n"
    assert git.abort_merge(into) is False  # nothing left to abort


def test_merge_refuses_a_dirty_worktree_and_a_missing_branch(repo, tmp_path):
    into = integration(repo, tmp_path)
    task(repo, tmp_path, "1", {"one.txt": "1\n"})
    (into / "README.md").write_text("edited in the integration worktree\n")
    with pytest.raises(GitError, match="has uncommitted changes"):
        git.merge(into, "specwave/s--1", "Merge 1")
    sh(into, "checkout", "-q", "--", "README.md")
    with pytest.raises(GitError, match="names no commit"):
        git.merge(into, "specwave/s--nope", "Merge nope")
    (into / "one.txt").write_text("untracked, in the way\n")
    with pytest.raises(GitError, match="untracked working tree files would be overwritten") as exc:
        git.merge(into, "specwave/s--1", "Merge 1\n\nA body.", trailers={"Specwave-Task": "1"})
    assert "\n" not in str(exc.value) and "Merge 1\\n\\nA body." in str(exc.value)
    assert not git.merge_in_progress(into)


def test_reset_hard_undoes_a_merge(repo, tmp_path):
    into = integration(repo, tmp_path)
    task(repo, tmp_path, "1", {"one.txt": "1\n"})
    result = git.merge(into, "specwave/s--1", "Merge 1")
    (into / ".pytest_cache").mkdir()  # what a verify run leaves
    git.reset_hard(into, result.before, clean_untracked=True)
    assert git.head_sha(into) == result.before == sh(repo, "rev-parse", "specwave/s")
    assert not (into / "one.txt").exists() and git.is_clean(into)
    assert not (into / ".pytest_cache").exists()


def test_squash_merge(repo, tmp_path):
    (repo / "shared.txt").write_text("base\n")
    sh(repo, "add", "shared.txt")
    sh(repo, "commit", "-q", "-m", "shared")
    into = integration(repo, tmp_path)
    wt = task(repo, tmp_path, "1", {"one.txt": "1\n"})
    (wt / "more.txt").write_text("more\n")
    git.commit_all(wt, "1: more")
    before = git.head_sha(into)
    result = git.merge(
        into, "specwave/s--1", "Task 1", squash=True, trailers={"Specwave-Task": "1"}
    )
    assert result.status == "merged"
    assert sh(into, "log", "-1", "--format=%P") == before  # one parent
    assert files_of(into) >= {"one.txt", "more.txt"}
    assert sh(into, "log", "-1", "--format=%(trailers)") == "Specwave-Task: 1"
    assert git.merge(into, "specwave/s--1", "Task 1", squash=True).status == "up_to_date"
    task(repo, tmp_path, "a", {"shared.txt": "a\n", "new-a.txt": "a\n"}, append=True)
    task(repo, tmp_path, "b", {"shared.txt": "b\n", "new-b.txt": "b\n"}, append=True)
    assert git.merge(into, "specwave/s--a", "a", squash=True).status == "merged"
    head = git.head_sha(into)
    conflict = git.merge(into, "specwave/s--b", "b", squash=True)
    assert conflict.status == "conflict" and conflict.files == ["shared.txt"]
    assert git.head_sha(into) == head and git.is_clean(into)
    assert not (into / "new-b.txt").exists()


def test_recovery_from_a_merge_left_half_way(repo, tmp_path):
    """What a kill -9 mid-merge leaves: MERGE_HEAD, conflict markers, an index.lock."""
    (repo / "shared.txt").write_text("base\n")
    sh(repo, "add", "shared.txt")
    sh(repo, "commit", "-q", "-m", "shared")
    into = integration(repo, tmp_path)
    task(repo, tmp_path, "a", {"shared.txt": "a\n"}, append=True)
    task(repo, tmp_path, "b", {"shared.txt": "b\n"}, append=True)
    git.merge(into, "specwave/s--a", "a")
    head = git.head_sha(into)
    sh(into, "merge", "--no-edit", "specwave/s--b", check=False)
    assert git.merge_in_progress(into) and git.unmerged_files(into) == ["shared.txt"]
    with pytest.raises(GitError, match="already in progress"):
        git.merge(into, "specwave/s--b", "b")
    lock = Path(sh(into, "rev-parse", "--path-format=absolute", "--git-path", "index.lock"))
    lock.write_text("")
    with pytest.raises(GitError, match="index.lock"):
        git.abort_merge(into)
    assert git.remove_index_lock(into) is True and git.remove_index_lock(into) is False
    assert git.abort_merge(into) is True
    assert not git.merge_in_progress(into) and git.is_clean(into)
    assert git.head_sha(into) == head


# ------------------------------------------------------------------- the isolation check


def test_snapshot_diff_finds_what_was_written_into_the_users_checkout(repo, tmp_path):
    (repo / "spec").mkdir()
    (repo / "spec" / "tasks.json").write_text("{}\n")
    (repo / "README.md").write_text("the user's own edit\n")  # there before the run
    (repo / "notes.txt").write_text("untracked, the user's\n")
    (repo / "staged.txt").write_text("staged v1\n")
    sh(repo, "add", "staged.txt")
    before = git.snapshot(repo)
    assert before.head == git.head_sha(repo) and before.branch == "main"
    assert {e.path: e.code for e in before.entries} == {
        "README.md": " M",
        "notes.txt": "??",
        "spec/tasks.json": "??",
        "staged.txt": "A ",
    }

    # a run: worktrees, commits and merges elsewhere leave the checkout alone ...
    into = integration(repo, tmp_path)
    task(repo, tmp_path, "1", {"one.txt": "1\n"})
    git.merge(into, "specwave/s--1", "Merge 1")
    assert git.snapshot_diff(before, git.snapshot(repo)) == []
    # ... specwave's own writes to the spec folder do not count ...
    (repo / "spec" / "tasks.json").write_text('{"updated": true}\n')
    assert git.snapshot_diff(before, git.snapshot(repo), exclude=["spec"]) == []
    assert git.snapshot_diff(before, git.snapshot(repo)) == ["spec/tasks.json"]
    # ... but an agent writing through an absolute path does
    (repo / "src").mkdir()
    (repo / "src" / "leak.py").write_text("oops\n")
    (repo / "README.md").write_text("the user's own edit, and the agent's\n")  # same " M"
    (repo / "staged.txt").write_text("staged v2\n")
    sh(repo, "add", "staged.txt")  # same "A ", another blob
    after = git.snapshot(repo)
    assert git.snapshot_diff(before, after, exclude=[repo / "spec"]) == [
        "README.md",
        "src/leak.py",
        "staged.txt",
    ]
    # a commit made in the checkout: the files it committed count, though status is the same
    (repo / "extra.txt").write_text("x\n")
    sh(repo, "add", "extra.txt")
    sh(repo, "commit", "-q", "-m", "agent committed in the user's checkout", "--", "extra.txt")
    moved = git.snapshot(repo)
    assert moved.head != before.head
    assert git.snapshot_diff(after, moved, exclude=["spec"]) == ["extra.txt"]
