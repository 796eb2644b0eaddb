"""``specwave clean``: real git in tmp repositories, the leftovers made with the git layer (task
worktrees and branches with commits, some merged into the integration branch), the command run
as a user runs it (a subprocess), plus one whole ``specwave run --isolation worktree`` with a
failing task.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tasks_lib.workspaces import git
from tasks_lib.workspaces.integration import pending_path
from tasks_lib.workspaces.names import (
    integration_branch,
    integration_dirname,
    task_branch,
    worktree_dirname,
)
from tasks_lib.workspaces.worktree import clean_plan, leftovers, worktrees_root
from tests.fixtures.fake import fake_config
from tests.test_worktree_run import user_view, write_spec
from tests.workspaces.conftest import isolated_git_config, make_repo, sh  # noqa: F401

SPECWAVE = shutil.which("specwave") or "specwave"
SPEC = "demo"
INTEG = integration_branch(SPEC)


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SPECWAVE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def excluded(repo: Path) -> None:
    """What a run does first: its worktrees folder, when inside the checkout, in
    ``.git/info/exclude`` (never in the user's ``git status``)."""
    root = worktrees_root(str(repo))
    if root.is_relative_to(repo) and not root.is_relative_to(repo / ".git"):
        top = root.relative_to(repo).parts[0]
        with open(repo / ".git" / "info" / "exclude", "a") as fh:
            fh.write(f"/{top}/\n")


def task_worktree(repo: Path, tid: str, files: dict[str, str] | None = None) -> Path:
    """Task ``tid``'s worktree and branch from the integration head, ``files`` committed."""
    path = worktrees_root(str(repo)) / worktree_dirname(SPEC, tid)
    path.parent.mkdir(parents=True, exist_ok=True)
    git.worktree_add(repo, path, task_branch(SPEC, tid), INTEG, lock_reason=f"specwave: {tid}")
    for name, text in (files or {}).items():
        (path / name).write_text(text)
    if files:
        git.commit_all(path, f"{tid}: task {tid}", {"Specwave-Task": tid})
    git.worktree_unlock(repo, path)
    return path


class Leftovers:
    """A repository as a killed or failed run leaves it: the integration worktree; task 1
    merged (its worktree and branch still there), task 2 with a commit never merged, task 3
    a merged branch with no worktree (``--keep-branches``), task 4 merged but with a file
    left uncommitted in its worktree. The user has uncommitted work of their own."""

    def __init__(self, tmp_path: Path):
        self.repo = repo = make_repo(tmp_path / "app", {"README.md": "hello\n"})
        self.spec = write_spec(tmp_path / "spec", SPEC, {t: [] for t in "1234"})
        (repo / "README.md").write_text("the user's own change\n")
        (repo / "mine.txt").write_text("untracked, the user's\n")
        self.root = worktrees_root(str(repo))
        excluded(repo)
        git.create_branch(repo, INTEG, "HEAD")
        self.integ = self.root / integration_dirname(SPEC)
        self.root.mkdir(parents=True)
        git.worktree_add(
            repo, self.integ, INTEG, INTEG, if_exists="reuse", lock_reason="specwave: integration"
        )
        self.one = task_worktree(repo, "1", {"one.txt": "1\n"})
        self.two = task_worktree(repo, "2", {"two.txt": "2\n"})
        assert git.merge(self.integ, task_branch(SPEC, "1"), "Merge 1").status == "merged"
        git.create_branch(repo, task_branch(SPEC, "3"), INTEG)
        self.four = task_worktree(repo, "4")
        (self.four / "four.txt").write_text("not committed\n")
        self.before = user_view(repo)

    def clean(self, *args: str) -> subprocess.CompletedProcess:
        return cli("clean", str(self.spec), "--repo", str(self.repo), *args, cwd=self.repo.parent)

    def state(self) -> tuple[str, str, list[str]]:
        files = sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*"))
        return (
            sh(self.repo, "worktree", "list", "--porcelain"),
            sh(self.repo, "for-each-ref", "--format=%(refname) %(objectname)"),
            files,
        )

    def branches(self) -> list[str]:
        return sh(self.repo, "branch", "--format=%(refname:short)").splitlines()

    def worktrees(self) -> list[str]:
        out = sh(self.repo, "worktree", "list", "--porcelain")
        return [ln.split(" ", 1)[1] for ln in out.splitlines() if ln.startswith("worktree ")]


@pytest.fixture
def left(tmp_path) -> Leftovers:
    return Leftovers(tmp_path)


def test_the_plan_removes_what_is_merged_and_keeps_what_holds_work(left):
    five = worktrees_root(str(left.repo)) / worktree_dirname(SPEC, "5")
    git.worktree_add(left.repo, five, task_branch(SPEC, "5"), INTEG)
    found = leftovers(str(left.repo), SPEC)
    assert found.compared_with == INTEG and found.integration_exists
    by = {(i.kind, i.branch or Path(i.path or "").name): i for i in found.items}
    assert sorted(by) == [("integration", integration_dirname(SPEC))] + [
        ("task", task_branch(SPEC, t)) for t in "12345"
    ]
    assert by["task", task_branch(SPEC, "5")].path == str(five)
    assert by["task", task_branch(SPEC, "2")].unmerged == 1
    assert by["task", task_branch(SPEC, "4")].uncommitted == 1
    assert by["task", task_branch(SPEC, "3")].path is None
    decided = {
        (s.leftover.branch or s.leftover.kind): s.remove for s in clean_plan(found, force=False)
    }
    assert decided == {
        "integration": True,
        task_branch(SPEC, "1"): True,
        task_branch(SPEC, "2"): False,
        task_branch(SPEC, "3"): True,
        task_branch(SPEC, "4"): False,
        task_branch(SPEC, "5"): True,
    }
    assert all(s.remove for s in clean_plan(found, force=True))


def test_dry_run_changes_nothing(left):
    before = left.state()
    res = left.clean("--dry-run")
    assert res.returncode == 1, res.stderr
    assert left.state() == before and user_view(left.repo) == left.before
    out = res.stdout
    assert f"would remove: {task_branch(SPEC, '1')} (worktree {left.one})" in out
    assert f"would keep: {task_branch(SPEC, '2')} (worktree {left.two})" in out
    assert "dry run: nothing was changed" in out
    assert "2 task branch(es) hold unmerged work; rerun with --force" in res.stderr


def test_clean_removes_merged_work_and_keeps_unmerged_without_force(left):
    res = left.clean()
    assert res.returncode == 1, res.stdout + res.stderr
    # one line per unmerged branch: its name, its worktree, how much is not merged
    two = [ln for ln in res.stdout.splitlines() if task_branch(SPEC, "2") in ln]
    assert two == [
        f"kept: {task_branch(SPEC, '2')} (worktree {left.two}): 1 commit(s) not merged into {INTEG}"
    ]
    assert "1 uncommitted file(s)" in res.stdout
    assert res.stderr.strip().splitlines() == [
        "2 task branch(es) hold unmerged work; rerun with --force to remove them"
    ]
    assert left.branches() == ["main", INTEG, task_branch(SPEC, "2"), task_branch(SPEC, "4")]
    assert left.worktrees() == [str(left.repo), str(left.two), str(left.four)]
    assert not left.one.exists() and not left.integ.exists()
    assert (left.two / "two.txt").exists() and (left.four / "four.txt").exists()
    assert sh(left.repo, "show", f"{INTEG}:one.txt") == "1"  # the result is untouched
    assert user_view(left.repo) == left.before

    again = left.clean("--force", "--json")
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert {(i["branch"], i["action"]) for i in doc["items"]} == {
        (task_branch(SPEC, "2"), "removed"),
        (task_branch(SPEC, "4"), "removed"),
    }
    assert doc["kept_with_work"] == 0 and doc["integration_branch"] == INTEG
    assert str(left.root) in doc["removed_dirs"] and not left.root.exists()
    assert left.branches() == ["main", INTEG]
    assert left.worktrees() == [str(left.repo)]
    assert user_view(left.repo) == left.before


def test_stale_entries_are_pruned_and_a_settled_marker_removed(left):
    shutil.rmtree(left.one)  # a worktree whose directory is gone (still locked: git keeps it)
    git.worktree_lock(left.repo, left.one, "specwave: a dead run")
    marker = pending_path(left.root, SPEC)
    marker.write_text(git.rev_parse(left.repo, INTEG) + "\n")  # nothing left unverified
    orphan = left.root / worktree_dirname(SPEC, "7")  # a folder git does not know
    orphan.mkdir()
    (orphan / "notes.txt").write_text("who knows\n")
    res = left.clean()
    assert res.returncode == 1
    assert f"pruned: worktree {left.one}: its directory is gone" in res.stdout
    assert f"removed: marker {marker}" in res.stdout and not marker.exists()
    assert f"kept: folder {orphan}: a folder git does not know" in res.stdout
    assert "1 folder(s) unknown to git may hold work" in res.stderr
    assert str(left.one) not in left.worktrees() and (orphan / "notes.txt").exists()
    assert task_branch(SPEC, "1") not in left.branches()
    assert left.clean("--force").returncode == 0 and not orphan.exists()


def test_an_unverified_merge_keeps_its_marker_and_its_task_until_forced(left):
    head = git.rev_parse(left.repo, INTEG)
    marker = pending_path(left.root, SPEC)
    before = git.rev_parse(left.repo, f"{INTEG}^1")
    marker.write_text(before + "\n")  # task 1's merge was being verified when the run died
    res = left.clean("--json")
    assert res.returncode == 1
    doc = {(i["kind"], i["branch"]): i for i in json.loads(res.stdout)["items"]}
    assert doc["marker", None]["action"] == "kept"
    assert doc["task", task_branch(SPEC, "1")]["action"] == "kept"  # not verified: not merged
    assert doc["task", task_branch(SPEC, "1")]["unmerged_commits"] == 1
    assert marker.exists() and "a merge was never verified" in res.stderr
    assert left.clean("--force").returncode == 0
    assert not marker.exists() and git.rev_parse(left.repo, INTEG) == head  # branch untouched


def test_only_the_specs_own_branches_go_never_one_checked_out_or_the_result(tmp_path):
    repo = make_repo(tmp_path / "app")
    excluded(repo)
    spec = write_spec(tmp_path / "spec", SPEC, {"1": []})
    git.create_branch(repo, INTEG, "HEAD")
    for name in ("specwave/other--1", "specwave/demox--1", "specwave/demo-2", "feature"):
        git.create_branch(repo, name, "HEAD")
    task_worktree(repo, "1", {"a.txt": "a\n"})
    git.create_branch(repo, task_branch(SPEC, "9"), "HEAD")
    sh(repo, "switch", "-q", task_branch(SPEC, "9"))  # the user works on a task's branch
    sh(repo, "commit", "-q", "--allow-empty", "-m", "the user's own commit")
    (repo / "wip.txt").write_text("the user's\n")
    before = user_view(repo)
    res = cli("clean", str(spec), "--force", cwd=repo)  # --repo defaults to the current folder
    assert res.returncode == 0, res.stderr
    assert f"kept: {task_branch(SPEC, '9')}: checked out at {repo}" in res.stdout
    assert sh(repo, "branch", "--format=%(refname:short)").splitlines() == [
        "feature",
        "main",
        INTEG,
        task_branch(SPEC, "9"),
        "specwave/demo-2",
        "specwave/demox--1",
        "specwave/other--1",
    ]
    assert user_view(repo) == before


def test_into_names_the_integration_branch_merged_work_is_compared_with(tmp_path):
    repo = make_repo(tmp_path / "app")
    spec = write_spec(tmp_path / "spec", SPEC, {"1": []})
    git.create_branch(repo, "release", "HEAD")
    one = worktrees_root(str(repo)) / worktree_dirname(SPEC, "1")
    one.parent.mkdir(parents=True)
    git.worktree_add(repo, one, task_branch(SPEC, "1"), "release")
    (one / "x.txt").write_text("x\n")
    git.commit_all(one, "1: work")
    git.worktree_remove(repo, one)
    sh(repo, "branch", "-q", "-f", "release", task_branch(SPEC, "1"))  # merged into release
    args = ("clean", str(spec), "--repo", str(repo))
    # no specwave/demo: compared with HEAD (main), which lacks the commit
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 1 and "1 commit(s) not merged into HEAD" in res.stdout, res.stdout
    res = cli(*args, "--into", "release", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"removed: {task_branch(SPEC, '1')}: merged into release" in res.stdout
    assert sh(repo, "branch", "--format=%(refname:short)").splitlines() == ["main", "release"]


@pytest.mark.parametrize("case", ["not-a-repo", "bad-spec", "bad-into"])
def test_bad_input_is_one_line_exit_2(tmp_path, case):
    repo = tmp_path / "app"
    spec = write_spec(tmp_path / "spec", SPEC, {"1": []})
    extra: list[str] = []
    if case == "not-a-repo":
        repo.mkdir()
    else:
        make_repo(repo)
    if case == "bad-spec":
        (spec / "tasks.json").write_text("{ not json")
    if case == "bad-into":
        extra = ["--into", "no..good"]
    res = cli("clean", str(spec), "--repo", str(repo), *extra, cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    if case == "not-a-repo":
        assert "is not a git repository" in lines[0]
        assert sorted(p.name for p in repo.iterdir()) == []


def test_after_a_run_with_a_failed_task_clean_keeps_it_until_forced(tmp_path):
    repo = make_repo(tmp_path / "app")
    spec = write_spec(tmp_path / "spec", SPEC, {"1": [], "2": []})
    agent = fake_config(tmp_path / "trace.jsonl", {"1": "write:x.txt+fail", "2": "write:y.txt"})
    from prefect.settings import PREFECT_API_URL

    # the session's Prefect test server (tests/conftest.py): no ephemeral one to start
    env = {"PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    run = cli(
        "run", str(spec), "--repo", str(repo), "--isolation", "worktree", "--retries", "0",
        "--json", "--agent-json", json.dumps(agent), cwd=tmp_path, env=env,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    failed = worktrees_root(str(repo)) / worktree_dirname(SPEC, "1")
    assert (failed / "x.txt").exists()  # a failed task's worktree is kept to look at
    before = user_view(repo)

    res = cli("clean", str(spec), "--repo", str(repo), cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"kept: {task_branch(SPEC, '1')} (worktree {failed}): 1 commit(s)" in res.stdout
    assert (failed / "x.txt").exists()

    res = cli("clean", str(spec), "--repo", str(repo), "--force", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not failed.exists()
    lines = sh(repo, "worktree", "list", "--porcelain").splitlines()
    assert [ln for ln in lines if ln.startswith("worktree ")] == [f"worktree {repo}"]
    assert sh(repo, "branch", "--format=%(refname:short)").splitlines() == ["main", INTEG]
    assert sh(repo, "show", f"{INTEG}:y.txt") == "written by task 2"  # the result stays
    assert user_view(repo) == before
