"""Item 3: the agent succeeded but its status could not be written (disk full).

Promise: the run says so (the flow run fails with the write error, ``specwave run`` exits
non-zero with one line naming it, run.json says ``failed`` with the error), every agent is
stopped, tasks.json stays valid; the attempt record proves the pass, and the next run records
it from that record without running the task again (attempts are not double-counted).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from flows.execute_spec import execute_spec
from tasks_lib.formats import load_spec
from tasks_lib.store import PlanStore
from tests.reliability.conftest import (
    ROOT,
    SPECWAVE,
    TAG_ENV,
    load,
    prefect_api_url,
    statuses,
)
from tests.reliability.failing_disk import install

EXAMPLE = ROOT / "examples" / "small-feature"
FAILING = Path(__file__).with_name("failing_disk.py")


def attempts_of(spec: Path) -> dict[str, int]:
    return {
        str(t["id"]): t.get("attempts")
        for t in load(spec / "tasks.json")["tasks"]
        if t.get("type") != "subtask"
    }


def run_json(spec: Path) -> list[dict]:
    return [
        load(p)
        for p in sorted(
            (spec / ".specwave" / "runs").glob("*/run.json"), key=lambda p: p.stat().st_mtime
        )
    ]


def attempt_records(spec: Path, tid: str) -> list[dict]:
    return [load(p) for p in (spec / ".specwave" / "runs").glob(f"*/tasks/{tid}/attempt-*.json")]


async def test_a_failed_status_write_is_reported_and_the_rerun_keeps_the_pass(
    rig, tmp_path, caplog
):
    spec = tmp_path / "spec"
    shutil.copytree(EXAMPLE, spec)
    real = PlanStore._atomic_write
    counter = install("1")  # every write recording task 1 as pass fails (disk full)
    try:
        state = await execute_spec(
            str(spec),
            agent=rig.agent(plan={"2": "sleep:4"}),
            repo=str(rig.repo),
            timeout_seconds=120,
            return_state=True,
        )
        result = await state.result(raise_on_failure=False)
    finally:
        PlanStore._atomic_write = real
    assert counter["failed"] >= 1
    # reported: the flow run failed with the write error
    assert state.is_failed(), state
    assert "No space left on device" in state.message and "tasks.json" in state.message
    assert result["status"] == "failed" and "could not write" in result["error"]
    assert "recorded by the next run" in state.message
    assert rig.survivors() == []
    # tasks.json valid. The failure surfaces at the run's next plan-file update (task 2's
    # finish, 4 s later): the run stops there, so neither pass reached the file — both are
    # proved by their attempt records
    load_spec(spec)
    assert statuses(spec) == {"1": "in_progress", "2": "in_progress", "3": "pending"}
    assert [r["outcome"] for r in attempt_records(spec, "1")] == ["pass"]
    assert [r["outcome"] for r in attempt_records(spec, "2")] == ["pass"]
    (record,) = run_json(spec)
    assert record["status"] == "failed" and "No space left on device" in record["error"]
    assert load(spec / "tasks.json")["orchestrator_state"]["status"] == "failed"
    assert rig.launched() == {"1": [1], "2": [1]}

    # the rerun: 1 and 2 are recorded from their attempt records, not run again
    rig.trace_path.unlink()
    caplog.clear()
    state = await execute_spec(str(spec), agent=rig.agent(), repo=str(rig.repo), return_state=True)
    result = await state.result(raise_on_failure=False)
    assert state.is_completed() and result["status"] == "success", result
    assert rig.launched() == {"3": [1]}
    assert result["tasks"]["1"]["status"] == "done" and result["tasks"]["2"]["status"] == "done"
    assert statuses(spec) == {"1": "pass", "2": "pass", "3": "pass"}
    assert attempts_of(spec) == {"1": 1, "2": 1, "3": 1}  # not double-counted
    doc_tasks = {str(t["id"]): t for t in load(spec / "tasks.json")["tasks"]}
    assert doc_tasks["1"]["notes"] == "fake agent pass"
    assert all(doc_tasks[s]["status"] == "pass" for s in ("1.1", "1.2", "1.3"))
    assert "recorded 2 pass(es) that an earlier run proved" in caplog.text
    # a third run changes nothing and runs nothing (idempotent)
    rig.trace_path.unlink()
    before = (spec / "tasks.json").read_text()
    state = await execute_spec(str(spec), agent=rig.agent(), repo=str(rig.repo), return_state=True)
    assert state.is_completed() and rig.launched() == {}
    assert attempts_of(spec) == {"1": 1, "2": 1, "3": 1}
    assert json.loads((spec / "tasks.json").read_text())["tasks"] == json.loads(before)["tasks"]


async def test_a_task_set_back_by_hand_is_run_again_not_recovered(rig, tmp_path):
    """The recovery only takes passes the file never saw: a written pass that someone set
    back to in_progress (or pending) runs again, as asked."""
    spec = tmp_path / "spec"
    shutil.copytree(EXAMPLE, spec)
    state = await execute_spec(str(spec), agent=rig.agent(), repo=str(rig.repo), return_state=True)
    assert state.is_completed()
    doc = load(spec / "tasks.json")
    for t in doc["tasks"]:
        if t["id"] == "2":
            t["status"] = "in_progress"
        if t["id"] == "3":
            t["status"] = "pending"
    (spec / "tasks.json").write_text(json.dumps(doc, indent=2) + "\n")
    rig.trace_path.unlink()
    state = await execute_spec(str(spec), agent=rig.agent(), repo=str(rig.repo), return_state=True)
    assert state.is_completed()
    assert rig.launched() == {"2": [1], "3": [1]}
    assert attempts_of(spec) == {"1": 1, "2": 2, "3": 2}


def test_the_cli_exits_non_zero_naming_the_write_error_and_a_rerun_finishes(rig, tmp_path):
    spec = tmp_path / "spec"
    shutil.copytree(EXAMPLE, spec)
    env = {
        **os.environ,
        TAG_ENV: rig.tag,
        "PREFECT_API_URL": prefect_api_url(),
        "SPECWAVE_FAIL_PASS_OF": "3",
        "SPECWAVE_FAIL_TIMES": "1",
    }
    p = subprocess.run(
        [
            sys.executable,
            str(FAILING),
            "run",
            str(spec),
            *rig.agent_args(),
            "--repo",
            str(rig.repo),
            "--json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 1, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.startswith("specwave:")]
    assert len(lines) == 1 and "could not write" in lines[0] and "No space left" in lines[0], (
        p.stderr
    )
    assert "Traceback" not in p.stderr
    assert json.loads(p.stdout)["status"] == "failed"
    # updates are coalesced: the failed write may have held more than 3's pass; whatever
    # did not land is proved by the attempt records
    assert statuses(spec)["3"] != "pass"
    for tid in "123":
        assert [r["outcome"] for r in attempt_records(spec, tid)] == ["pass"]
    # the rerun (disk fine again) records 3 from its attempt record and exits 0
    rig.trace_path.unlink()
    env.pop("SPECWAVE_FAIL_PASS_OF")
    p = subprocess.run(
        [*SPECWAVE, "run", str(spec), *rig.agent_args(), "--repo", str(rig.repo), "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["status"] == "success"
    assert rig.launched() == {}
    assert statuses(spec) == {"1": "pass", "2": "pass", "3": "pass"}
    assert attempts_of(spec) == {"1": 1, "2": 1, "3": 1}


async def test_a_pass_whose_start_was_never_written_either_is_recovered(rig, tmp_path):
    """Plan-file updates are coalesced: a quick task's ``in_progress`` and its ``pass`` can
    both be lost with one failed write (or a kill -9), leaving it ``pending`` in the file.
    Its attempt record still proves the pass (regression: recovery once required
    ``in_progress`` and ran such a task again)."""
    spec = tmp_path / "spec"
    shutil.copytree(EXAMPLE, spec)
    earlier = spec / ".specwave" / "runs" / "earlier-run" / "tasks" / "2"
    earlier.mkdir(parents=True)
    (earlier / "attempt-1.json").write_text(
        json.dumps(
            {
                "task_id": "2",
                "attempt": 1,
                "outcome": "pass",
                "started": 1_700_000_000.0,
                "ended": 1_700_000_042.0,
                "duration_s": 42.0,
                "result": {
                    "status": "pass",
                    "notes": "done before the crash",
                    "files_created": ["app/email.py"],
                },
            }
        )
    )
    (earlier.parents[1] / "run.json").write_text(json.dumps({"status": "running"}))
    doc = load(spec / "tasks.json")  # the killed run was the last to write the file
    doc["orchestrator_state"] = {"run_id": "earlier-run", "status": "running"}
    (spec / "tasks.json").write_text(json.dumps(doc, indent=2) + "\n")
    assert statuses(spec)["2"] == "pending"
    state = await execute_spec(str(spec), agent=rig.agent(), repo=str(rig.repo), return_state=True)
    assert state.is_completed()
    assert rig.launched() == {"1": [1], "3": [1]}
    task2 = {str(t["id"]): t for t in load(spec / "tasks.json")["tasks"]}["2"]
    assert (task2["status"], task2["attempts"], task2["notes"]) == (
        "pass",
        1,
        "done before the crash",
    )
    assert task2["completed_at"] == "2023-11-14T22:14:02Z"
    assert "app/email.py" in task2["artifacts"]["files_created"]


async def test_a_regenerated_plan_file_is_not_credited_with_a_dead_runs_passes(rig, tmp_path):
    """A run was killed with passes unwritten, then tasks.json was regenerated (same ids,
    all pending, no orchestrator_state): those records describe the old plan — every task
    of the new one runs."""
    spec = tmp_path / "spec"
    shutil.copytree(EXAMPLE, spec)
    fresh = (spec / "tasks.json").read_text()
    state = await execute_spec(str(spec), agent=rig.agent(), repo=str(rig.repo), return_state=True)
    assert state.is_completed()
    (run_json,) = (spec / ".specwave" / "runs").glob("*/run.json")
    run_json.write_text(json.dumps({**load(run_json), "status": "died"}))  # as if killed
    (spec / "tasks.json").write_text(fresh)  # the plan regenerated
    rig.trace_path.unlink()
    state = await execute_spec(str(spec), agent=rig.agent(), repo=str(rig.repo), return_state=True)
    assert state.is_completed()
    assert rig.launched() == {"1": [1], "2": [1], "3": [1]}
    assert attempts_of(spec) == {"1": 1, "2": 1, "3": 1}
