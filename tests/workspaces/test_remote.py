"""The git remote between the orchestrator and pool workers: real git, a bare repository."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tasks_lib.errors import SpecError
from tasks_lib.workspaces import git, remote
from tests.workspaces.conftest import make_repo, sh


@pytest.fixture
def shared(tmp_path) -> tuple[Path, Path]:
    """A bare remote and the user's repository, cloned from it, with one commit pushed."""
    bare = tmp_path / "remote.git"
    sh(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    user = make_repo(tmp_path / "user")
    sh(user, "remote", "add", "origin", str(bare))
    sh(user, "push", "-q", "origin", "main")
    return bare, user


def test_urls_workers_can_use(tmp_path, shared):
    bare, user = shared
    assert remote.origin_url(str(user)) == str(bare)
    assert remote.check_url(None, str(user), containers=False) == str(bare)
    for url in (str(bare), "file:///srv/app.git", "../app.git"):
        assert remote.is_local(url)
    for url in ("ssh://git@host/app.git", "git@host:team/app.git", "https://h/a.git", "git://h/a"):
        assert not remote.is_local(url)
        assert remote.check_url(url, str(user), containers=True) == url
    with pytest.raises(SpecError, match="local path: workers in containers cannot reach it"):
        remote.check_url(None, str(user), containers=True)
    lonely = make_repo(tmp_path / "lonely")
    with pytest.raises(SpecError, match="has no origin"):
        remote.check_url(None, str(lonely), containers=False)


def test_a_task_run_round_trip_through_the_remote(tmp_path, shared):
    bare, user = shared
    # the orchestrator publishes the integration branch
    git.create_branch(user, "specwave/s", "main")
    start = git.rev_parse(user, "specwave/s")
    remote.publish(user, "specwave/s", str(bare))
    # two task runs on one worker machine at once: one clone, made once
    cache = tmp_path / "cache"
    clones: list[Path] = []
    threads = [
        threading.Thread(target=lambda: clones.append(remote.cached_clone(str(bare), cache)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(clones)) == 1 and len(list(cache.iterdir())) == 2  # the clone + its lock
    clone = clones[0]
    remote.fetch_start(clone, "specwave/s", start)
    # the task's work, pushed from a worktree of the clone
    wt = tmp_path / "wt"
    git.take_worktree(clone, wt, "specwave/s--1", start)
    (wt / "one.txt").write_text("one\n")
    commit = git.commit_all(wt, "1: one")
    remote.push_branch(clone, "specwave/s--1")
    # the orchestrator fetches it: a branch in the user's repository, their checkout as it was
    status = sh(user, "status", "--porcelain")
    assert remote.fetch_branch(str(user), str(bare), "specwave/s--1") == commit
    assert sh(user, "status", "--porcelain") == status and git.current_branch(user) == "main"
    # a commit the remote does not have is a clear error
    with pytest.raises(git.GitError):
        remote.fetch_start(clone, "specwave/s", "0" * 40)
    remote.delete_remote_branches(str(user), str(bare), ["specwave/s--1", "specwave/s--gone"])
    assert sh(bare, "branch", "--format=%(refname:short)").splitlines() == ["main", "specwave/s"]
