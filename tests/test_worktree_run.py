"""--isolation worktree end to end: real git repositories, real agent processes, the real flow.

Each task works in its own worktree and branch; passes are merged into the integration branch
in dependency order through the merge queue (a conflict or a failed verify gets a new attempt
from the new head); the user's checkout is never changed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flows.execute_spec import execute_spec
from tasks_lib.runfolder import RunFolder
from tests.fixtures.fake import fake_config
from tests.test_execute_spec import artifacts
from tests.workspaces.conftest import isolated_git_config, make_repo, sh  # noqa: F401

SPECWAVE = shutil.which("specwave") or "specwave"


def write_spec(folder: Path, name: str, deps: dict[str, list[str]]) -> Path:
    """An Agent OS spec whose tasks are ``deps``'s keys (no declared waves)."""
    folder.mkdir(parents=True)
    tasks = [
        {
            "id": tid,
            "type": "parent",
            "description": f"Task {tid} of {name}",
            "status": "pending",
            "attempts": 0,
            "parallelization": {"blocked_by": blocked, "shared_files": []},
        }
        for tid, blocked in deps.items()
    ]
    doc = {"version": "2.0", "spec": name, "tasks": tasks}
    (folder / "tasks.json").write_text(json.dumps(doc, indent=2) + "\n")
    return folder


async def run(spec: Path, repo: Path, plan: dict[str, str], **kw: Any) -> dict[str, Any]:
    agent = fake_config(spec.parent / "trace.jsonl", plan)
    state = await execute_spec(
        str(spec), agent=agent, repo=str(repo), isolation="worktree", return_state=True, **kw
    )
    result = await state.result(raise_on_failure=False)
    assert isinstance(result, dict), result
    result["flow_run_id"] = str(state.state_details.flow_run_id)
    return result


def user_view(repo: Path) -> tuple[str, str, str]:
    """What the user sees of their checkout: branch, HEAD, status."""
    return (
        sh(repo, "rev-parse", "--abbrev-ref", "HEAD"),
        sh(repo, "rev-parse", "HEAD"),
        sh(repo, "status", "--porcelain", "--untracked-files=all"),
    )


async def test_parallel_appends_one_merges_the_other_conflicts_then_merges(tmp_path):
    repo = make_repo(tmp_path / "app", {"notes.txt": "base\n"})
    before = user_view(repo)
    spec = write_spec(tmp_path / "spec", "notes", {"1": [], "2": [], "3": ["1", "2"]})
    plan = {
        "1": "write:a.py+append:notes.txt+commit",  # commits itself
        "2": "sleep:3+append:notes.txt",  # leaves its change uncommitted; passes second
        "3": "require:a.py",  # needs task 1's merged work in its base
    }
    result = await run(spec, repo, plan, max_concurrency=2)

    assert result["status"] == "success", result["tasks"]
    integ = result["integration"]
    assert integ["branch"] == "specwave/notes"
    assert [(m["task"], m["status"]) for m in integ["merges"]] == [
        ("1", "merged"),
        ("2", "conflict"),
        ("2", "merged"),
        ("3", "up_to_date"),  # task 3 changed nothing: nothing to merge, and it says so
    ]
    assert integ["merges"][1]["files"] == ["notes.txt"]
    assert [result["tasks"][t]["merge"] for t in "123"] == ["merged", "merged", "no change"]
    # the UI: the table has each task's branch, commit and merge; the summary the merge log
    (table,) = await artifacts(result["flow_run_id"], "notes-tasks")
    rows = {r["id"]: r for r in json.loads(table.data)}
    assert rows["2"]["branch"] == "specwave/notes--2" and rows["2"]["merge"] == "merged"
    assert len(rows["2"]["commit"]) == 12 and rows["2"]["worktree"] == ""
    (summary,) = await artifacts(result["flow_run_id"], "notes-summary")
    assert "## Merge log" in summary.data and "| 2 | 2 | conflict |" in summary.data
    assert "git merge --ff-only specwave/notes" in summary.data
    # the integration branch: one merge commit per task that changed something, in order
    log = sh(repo, "log", "--first-parent", "--format=%s", "specwave/notes").splitlines()
    assert log == ["Merge 2: Task 2 of notes", "Merge 1: Task 1 of notes", "init"]
    notes = sh(repo, "show", "specwave/notes:notes.txt").splitlines()
    assert notes == ["base", "line from task 1", "line from task 2"]
    # task 1's own commit is kept; task 2's leftovers were committed for it, with trailers
    assert "agent: task 1" in sh(repo, "log", "--format=%s", "specwave/notes")
    trailers = sh(repo, "log", "-1", "--format=%(trailers)", "specwave/notes^2")
    assert "Specwave-Task: 2" in trailers and "Specwave-Attempt: 2" in trailers
    # the records: task 2's first attempt passed but conflicted; its second merged
    folder = RunFolder(spec, result["run_id"])
    recs = folder.attempts("2")
    assert [r.merge.status if r.merge else None for r in recs] == ["conflict", "merged"]
    assert recs[0].work is not None and recs[0].work.changed
    prompt = folder.prompt_path("2").read_text()
    assert "was not merged" in prompt and "notes.txt" in prompt and "+line from task 2" in prompt
    three = folder.attempts("3")[-1]
    assert three.work is not None and three.work.changed is False
    # the user's checkout is as it was; every worktree is gone, task branches too
    assert user_view(repo) == before
    assert len(sh(repo, "worktree", "list", "--porcelain").split("\n\n")) == 1
    assert sh(repo, "branch", "--format=%(refname:short)").splitlines() == [
        "main",
        "specwave/notes",
    ]
    # what the user is told to do works: a fast-forward of their branch
    sh(repo, "merge", "--ff-only", "-q", "specwave/notes")
    assert (repo / "a.py").exists()


async def test_a_merged_tasks_worktree_is_reused_by_the_next_task_and_removed_at_the_end(
    tmp_path,
):
    """A merged task's worktree is parked and the next task takes it (a new worktree writes
    every file of the repository; a reused one only what changed), exactly as a new one
    would be: nothing of the task before it is left, not even its ignored files."""
    repo = make_repo(tmp_path / "app", {".gitignore": "build/\n", "lib.py": "X = 1\n"})
    spec = write_spec(tmp_path / "spec", "chain", {"1": [], "2": ["1"], "3": ["2"]})
    plan = {
        "1": "write:one.txt+write:build/cache",
        "2": "require:one.txt+absent:build/cache+write:two.txt+write:stray/file",
        "3": "require:two.txt+absent:build/cache+write:three.txt",
    }
    # build/cache is ignored: a reused worktree that kept it would fail tasks 2 and 3
    result = await run(spec, repo, plan, retries=0)

    assert result["status"] == "success", result["tasks"]
    trace = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    by_task = {t["task"]: t for t in trace}
    assert [Path(by_task[t]["cwd"]).name for t in "123"] == ["chain--1", "chain--2", "chain--3"]
    # the same directory each time, renamed for the task (its inode stays)
    assert len({by_task[t]["cwd_inode"] for t in "123"}) == 1, by_task
    files = sh(repo, "ls-tree", "-r", "--name-only", "specwave/chain").splitlines()
    assert {"one.txt", "two.txt", "three.txt", "lib.py"} <= set(files)
    assert not any(f.startswith("build/") for f in files)
    # nothing parked or left behind
    assert len(sh(repo, "worktree", "list", "--porcelain").split("\n\n")) == 1
    assert not (repo / ".specwave" / "worktrees").exists() or not any(
        (repo / ".specwave" / "worktrees").iterdir()
    )
    assert sh(repo, "branch", "--format=%(refname:short)").splitlines() == [
        "main",
        "specwave/chain",
    ]


async def test_workers_start_ahead_but_agents_stay_within_max_concurrency(tmp_path):
    """Worktree isolation starts workers ahead of a free agent slot (their worktrees get
    ready meanwhile); the agents themselves never exceed max_concurrency."""
    repo = make_repo(tmp_path / "app")
    spec = write_spec(tmp_path / "spec", "ahead", {str(i): [] for i in range(1, 7)})
    plan = {str(i): f"sleep:0.4+write:f{i}.txt" for i in range(1, 7)}
    result = await run(spec, repo, plan, retries=0, max_concurrency=2)

    assert result["status"] == "success", result["tasks"]
    metrics = result["metrics"]
    assert metrics["max_concurrent_scheduled"] == 3  # 2 slots + 1 ahead
    trace = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    points = sorted([(t["start"], 1) for t in trace] + [(t["end"], -1) for t in trace])
    running = peak = 0
    for _, step in points:
        running += step
        peak = max(peak, running)
    assert peak == 2 and metrics["max_concurrent_observed"] <= 2


async def test_a_failed_verify_undoes_the_merge_and_blocks_the_dependents(tmp_path):
    repo = make_repo(tmp_path / "app")
    base = sh(repo, "rev-parse", "HEAD")
    spec = write_spec(tmp_path / "spec", "verify", {"1": [], "2": ["1"]})
    check = f"{sys.executable} -c \"import os, sys; sys.exit(os.path.exists('bad.txt'))\""
    result = await run(spec, repo, {"1": "write:bad.txt"}, retries=0, verify=check)

    assert result["status"] != "success"
    assert result["tasks"]["1"]["status"] == "fail"
    assert "verify failed" in result["tasks"]["1"]["blocker"]
    assert result["tasks"]["2"]["status"] == "blocked"
    assert [m["status"] for m in result["integration"]["merges"]] == ["verify_failed"]
    assert sh(repo, "rev-parse", "specwave/verify") == base  # the merge was undone
    rec = RunFolder(spec, result["run_id"]).attempts("1")[-1]
    assert rec.merge is not None and rec.merge.status == "verify_failed"
    # a failed task's worktree is kept for the user to look at, its path in the record
    assert rec.work is not None and Path(rec.work.worktree, "bad.txt").exists()
    assert result["tasks"]["1"]["merge"] == "verify_failed"
    assert result["tasks"]["1"]["worktree"] == rec.work.worktree
    # specwave status shows the merge state
    res = cli("status", str(spec), "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["tasks"]["1"]["merge"] == "verify_failed"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([SPECWAVE, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["not-a-repo", "no-commits", "checked-out", "bad-base"])
def test_worktree_bad_input_is_one_line_exit_2_nothing_changed(tmp_path, case):
    spec = write_spec(tmp_path / "spec", "bad", {"1": []})
    repo = tmp_path / "app"
    extra: list[str] = []
    if case == "not-a-repo":
        repo.mkdir()
    elif case == "no-commits":
        repo.mkdir()
        sh(repo, "init", "-q", "-b", "main")
    else:
        make_repo(repo)
        extra = ["--into", "main"] if case == "checked-out" else ["--base", "nope"]
    before = sorted(p.name for p in repo.iterdir())
    spec_before = (spec / "tasks.json").read_text()
    res = cli(
        "run", str(spec), "--command", "true", "--repo", str(repo),
        "--isolation", "worktree", *extra, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    expected = {
        "not-a-repo": "is not a git repository",
        "no-commits": "has no commits",
        "checked-out": "is checked out here",
        "bad-base": "base ref not found",
    }[case]
    assert expected in lines[0]
    assert sorted(p.name for p in repo.iterdir()) == before
    assert (spec / "tasks.json").read_text() == spec_before
    if case in ("checked-out", "bad-base"):
        assert sh(repo, "branch", "--format=%(refname:short)") == "main"


async def test_an_agent_writing_into_the_users_checkout_is_reported(tmp_path):
    repo = make_repo(tmp_path / "app")
    (repo / "mine.txt").write_text("the user's own uncommitted work\n")
    spec = write_spec(tmp_path / "spec", "leak", {"1": [], "2": ["1"]})
    leak = repo / "leak.txt"
    result = await run(spec, repo, {"1": f"write:{leak}"})

    assert result["status"] == "success"
    warnings = result["isolation_warnings"]
    assert any("not in the agents' base" in w and "mine.txt" in w for w in warnings), warnings
    leaks = [w for w in warnings if "leak.txt" in w]
    assert len(leaks) == 1 and "task(s) 1 " in leaks[0], warnings
    assert leak.exists()  # reported, not undone
    assert (repo / "mine.txt").read_text() == "the user's own uncommitted work\n"


async def test_setup_runs_in_each_worktree_and_worktreeinclude_copies_ignored_files(tmp_path):
    repo = make_repo(
        tmp_path / "app",
        {".gitignore": ".env\nbuild/\n", ".worktreeinclude": "# for the agents\n.env\n"},
    )
    (repo / ".env").write_text("TOKEN=not-in-git\n")  # ignored: git would not bring it
    spec = write_spec(tmp_path / "spec", "setup", {"1": [], "2": ["1"]})
    setup = f"{sys.executable} -c \"import os; os.makedirs('build'); open('build/ok', 'w')\""
    needs = "require:.env+require:build/ok+write:done.txt"
    result = await run(spec, repo, {"1": needs, "2": needs}, setup=setup, retries=0)

    assert result["status"] == "success", result["tasks"]
    files = sh(repo, "ls-tree", "-r", "--name-only", "specwave/setup").splitlines()
    assert "done.txt" in files
    assert ".env" not in files and "build/ok" not in files  # copied and built, never committed


async def test_a_failing_setup_is_the_attempts_crash_with_its_output(tmp_path):
    repo = make_repo(tmp_path / "app")
    spec = write_spec(tmp_path / "spec", "nosetup", {"1": []})
    setup = f"{sys.executable} -c \"import sys; print('npm ERR! boom'); sys.exit(3)\""
    result = await run(spec, repo, {"1": "write:x.txt"}, setup=setup, retries=0)

    assert result["tasks"]["1"]["status"] == "fail"
    assert result["tasks"]["1"]["outcome"] == "crashed"
    assert "setup command failed (exit 3): npm ERR! boom" in result["tasks"]["1"]["blocker"]
    rec = RunFolder(spec, result["run_id"]).attempts("1")[-1]
    assert "npm ERR! boom" in rec.output_tail
    assert (
        not (tmp_path / "trace.jsonl").exists()
        or "x.txt" not in (tmp_path / "trace.jsonl").read_text()
    )  # the agent never ran


def run_cli(tmp_path: Path, spec: Path, repo: Path, plan: dict[str, str], *extra: str):
    """``specwave run`` as a user runs it, on the session's Prefect server."""
    import os

    from prefect.settings import PREFECT_API_URL

    agent = json.dumps(fake_config(tmp_path / "trace.jsonl", plan))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "DO_NOT_TRACK": "1"}
    return subprocess.run(
        [SPECWAVE, "run", str(spec), "--agent-json", agent, "--repo", str(repo), "--json",
         *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def test_auto_isolation_is_worktree_in_a_repository_and_shared_elsewhere(tmp_path):
    repo = make_repo(tmp_path / "app")
    spec = write_spec(tmp_path / "spec", "auto", {"1": []})
    res = run_cli(tmp_path, spec, repo, {"1": "write:a.txt"})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["integration"]["branch"] == "specwave/auto"
    assert not (repo / "a.txt").exists()  # the work is on the branch, not in the checkout
    assert "is not a git repository" not in res.stderr

    plain = tmp_path / "plain"
    plain.mkdir()
    spec2 = write_spec(tmp_path / "spec2", "auto2", {"1": []})
    res = run_cli(tmp_path, spec2, plain, {"1": "write:a.txt"})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert "integration" not in out
    (notice,) = out["notices"]
    assert "is not a git repository" in notice and "--isolation shared" in notice
    assert "is not a git repository" not in res.stderr  # stderr: one line per problem
    assert (plain / "a.txt").exists()  # shared: the agent worked in the folder itself


def test_land_fast_forwards_the_users_branch_only_when_safe(tmp_path):
    repo = make_repo(tmp_path / "app", {"notes.txt": "base\n", "other.txt": "x\n"})
    spec = write_spec(tmp_path / "spec", "land", {"1": []})
    res = run_cli(tmp_path, spec, repo, {"1": "append:notes.txt"}, "--land")
    assert res.returncode == 0, res.stderr
    landed = json.loads(res.stdout)["landed"]
    assert landed["landed"] is True and "main fast-forwarded" in landed["message"]
    assert sh(repo, "rev-parse", "main") == sh(repo, "rev-parse", "specwave/land")
    assert (repo / "notes.txt").read_text() == "base\nline from task 1\n"

    # a file the merge would touch has uncommitted changes of the user's: nothing changes
    spec2 = write_spec(tmp_path / "spec2", "land2", {"1": []})
    (repo / "notes.txt").write_text("my own edit\n")
    before = user_view(repo)
    res = run_cli(tmp_path, spec2, repo, {"1": "append:notes.txt"}, "--land")
    assert res.returncode == 0, res.stderr
    landed = json.loads(res.stdout)["landed"]
    assert landed["landed"] is False and "notes.txt" in landed["message"]
    assert user_view(repo) == before
    assert (repo / "notes.txt").read_text() == "my own edit\n"


async def test_the_spec_folders_settings_give_verify_and_a_parameter_wins(tmp_path):
    repo = make_repo(tmp_path / "app")
    spec = write_spec(tmp_path / "spec", "cfg", {"1": []})
    never = f'{sys.executable} -c "import sys; sys.exit(1)"'
    (spec / "specwave-worktree.json").write_text(json.dumps({"verify": never}))
    result = await run(spec, repo, {"1": "write:a.txt"}, retries=0)
    assert result["tasks"]["1"]["merge"] == "verify_failed"  # the spec's verify ran

    spec2 = write_spec(tmp_path / "spec2", "cfg2", {"1": []})
    (spec2 / "specwave-worktree.json").write_text(json.dumps({"verify": never}))
    ok = f'{sys.executable} -c "pass"'
    result = await run(spec2, repo, {"1": "write:b.txt"}, retries=0, verify=ok)
    assert result["tasks"]["1"]["merge"] == "merged"


def test_a_bad_spec_folder_settings_file_is_one_line_exit_2(tmp_path):
    repo = make_repo(tmp_path / "app")
    spec = write_spec(tmp_path / "spec", "badcfg", {"1": []})
    (spec / "specwave-worktree.json").write_text(json.dumps({"verfy": "x"}))
    res = cli("run", str(spec), "--command", "true", "--repo", str(repo), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "specwave-worktree.json" in line and '"verfy"' in line
    assert sh(repo, "branch", "--format=%(refname:short)") == "main"
