"""kill -9 of a worktree run in the middle of a merge's verify, then a rerun: the integration
branch ends consistent (the unproved merge undone, nothing merged twice, nothing lost), the
verify run dies with its orchestrator, and no stale worktree stays."""

from __future__ import annotations

import json
import signal
import sys
import time

import psutil

from tests.reliability.conftest import wait_for
from tests.workspaces.conftest import isolated_git_config, make_repo, sh  # noqa: F401


def write_spec(folder, deps):
    folder.mkdir(parents=True)
    tasks = [
        {"id": t, "type": "parent", "description": f"Task {t}", "status": "pending",
         "attempts": 0, "parallelization": {"blocked_by": b, "shared_files": []}}
        for t, b in deps.items()
    ]  # fmt: skip
    (folder / "tasks.json").write_text(json.dumps({"version": "2.0", "spec": "kv",
                                                   "tasks": tasks}))  # fmt: skip
    return folder


def test_kill_9_mid_verify_then_rerun_merges_each_task_once(rig, tmp_path):
    repo = make_repo(tmp_path / "app")
    spec = write_spec(tmp_path / "spec", {"1": [], "2": ["1"]})
    go = tmp_path / "go"
    # verify hangs on task 1's merge until `go` exists (the first run is killed meanwhile)
    verify = (
        f'{sys.executable} -c "import os, time; '
        f"os.path.exists('one.txt') and not os.path.exists('{go}') and time.sleep(120)\""
    )
    args = [
        "run", str(spec), *rig.agent_args({"1": "write:one.txt", "2": "write:two.txt"}),
        "--repo", str(repo), "--isolation", "worktree", "--verify", verify, "--json",
    ]  # fmt: skip
    first = rig.cli(*args)

    def verify_runs() -> list:
        # specwave's own command line holds the text too, and so does a child it has forked
        # but not yet exec'd (an agent or git about to start): the verify run has no --verify
        found = []
        for p in rig.processes():
            try:
                argv = p.cmdline()
                if "time.sleep(120)" in " ".join(argv) and "--verify" not in argv:
                    found.append(p)
            except psutil.Error:  # it ended meanwhile
                continue
        return found

    def verifying() -> list:
        if first.poll() is not None:
            raise AssertionError(f"specwave exited early: {first.communicate()}")
        return verify_runs()

    wait_for(lambda: bool(verifying()), 120, "task 1's merge being verified")
    merged_unproved = sh(repo, "rev-parse", "specwave/kv")
    assert sh(repo, "log", "-1", "--format=%s", merged_unproved) == "Merge 1: Task 1"
    first.send_signal(signal.SIGKILL)
    assert first.wait(30) == -signal.SIGKILL
    deadline = time.monotonic() + 15
    while verify_runs():
        assert time.monotonic() < deadline, "the verify run outlived its orchestrator"
        time.sleep(0.1)

    go.write_text("")
    second = rig.cli(*args)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    result = json.loads(out)
    assert result["status"] == "success", result["tasks"]
    log = sh(repo, "log", "--first-parent", "--format=%s", "specwave/kv").splitlines()
    assert log == ["Merge 2: Task 2", "Merge 1: Task 1", "init"]  # task 1 merged once
    # ... and not the merge the killed run never proved: that one was undone, task 1 redone
    assert sh(repo, "rev-parse", "specwave/kv~1") != merged_unproved
    files = sh(repo, "ls-tree", "-r", "--name-only", "specwave/kv").splitlines()
    assert sorted(files) == ["README.md", "one.txt", "two.txt"]
    assert len(sh(repo, "worktree", "list", "--porcelain").split("\n\n")) == 1
    assert sh(repo, "branch", "--format=%(refname:short)").splitlines() == ["main", "specwave/kv"]
    assert sh(repo, "status", "--porcelain") == ""  # the user's checkout untouched
