"""Flow-level tests of ``execute_spec``: real agent processes (tests/fixtures/agents/fake_agent.py),
the session's real Prefect API, the plan file and the run folder, asserted field by field.

Every agent gets ``SPECWAVE_TEST_TAG=<uuid>`` in its environment (inherited by everything it
starts, even a grandchild that escaped with ``setsid``), so a test can find any process that
outlives it; an autouse fixture kills such leftovers so one failing test cannot poison the next.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
import pytest

from flows.execute_spec import execute_spec
from tasks_lib.formats import load_spec
from tasks_lib.planner import plan_spec
from tests.fixtures.fake import TAG_ENV, fake_config, launched, max_overlap, read_trace
from tests.fixtures.procs import live_processes, survivors

ROOT = Path(__file__).resolve().parents[1]
ISO_Z = "%Y-%m-%dT%H:%M:%SZ"

SMALL_FEATURE_NAMES = {
    "1": "1: Create the PasswordResetToken model, User relationship and Alembic migration",
    "2": "2: Build the password reset email (template and send_password_reset_email service)",
    "3": "3: Add POST /auth/password-reset and POST /auth/password-reset/confirm endpoints",
}


# --------------------------------------------------------------------------- helpers


class Rig:
    """One test's agents: a unique tag, a repository dir, a trace file."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.tag = uuid.uuid4().hex
        self.repo = tmp_path / "repo"
        self.repo.mkdir()
        self.trace_path = tmp_path / "trace.jsonl"

    def agent(
        self, plan: dict[str, str] | None = None, default: str = "pass", sleep: float | None = None
    ) -> dict[str, Any]:
        return fake_config(self.trace_path, plan, default, sleep, tag=self.tag)

    def trace(self) -> list[dict[str, Any]]:
        """Agent runs that got to the end (hung/killed attempts write nothing)."""
        return read_trace(self.trace_path)

    def launched(self) -> dict[str, list[int]]:
        return launched(self.trace_path)

    def processes(self) -> list[psutil.Process]:
        """Live processes started for this test (by env tag or a tmp path in the cmdline)."""
        return live_processes(
            lambda p: (
                p.environ().get(TAG_ENV) == self.tag or any(str(self.tmp) in a for a in p.cmdline())
            )
        )

    def survivors(self, wait: float = 5.0) -> list[tuple[int, list[str]]]:
        """Processes still alive after ``wait`` seconds of polling (kills run synchronously
        before a worker returns, so this is normally empty on the first look)."""
        return survivors(self.processes, wait, 0.1)

    def kill_all(self) -> None:
        for p in self.processes():
            try:
                p.kill()
            except psutil.Error:
                pass


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.kill_all()  # leak guard only: tests assert survivors() == [] themselves


async def run_flow(spec_dir: Path, **kwargs: Any) -> tuple[Any, Any]:
    state = await execute_spec(str(spec_dir), return_state=True, **kwargs)
    result = await state.result(raise_on_failure=False)
    return state, result


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(t["id"]): t for t in doc["tasks"]}


def parse_iso(s: str) -> datetime:
    return datetime.strptime(s, ISO_Z)


async def wait_until(pred, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


def agents_recorded(spec_dir: Path) -> list[dict[str, Any]]:
    out = []
    for f in (spec_dir / ".specwave" / "runs").glob("*/agents.jsonl"):
        out += [json.loads(line) for line in f.read_text().splitlines() if line]
    return out


async def worker_runs(flow_run_id: str, expected: int, timeout: float = 60) -> dict[str, Any]:
    """The flow run's worker task runs (the ones tagged wave-N) keyed by spec task id, once
    ``expected`` of them are in a final state (task run states reach the API asynchronously)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
            )
            workers = [r for r in runs if any(t.startswith("wave-") for t in r.tags)]
            if len(workers) >= expected and all(
                r.state is not None
                and r.state.is_final()
                and r.end_time is not None
                and r.start_time is not None
                for r in workers
            ):
                return {r.name.split(":", 1)[0]: r for r in workers}
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {expected} final worker task runs, got "
                    f"{[(r.name, r.state_type) for r in workers]}"
                )
            await asyncio.sleep(0.25)


async def read_flow_run(flow_run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_flow_run(UUID(flow_run_id))


async def artifacts(flow_run_id: str, key: str | None) -> list[Any]:
    """Artifacts of one flow run with one key (None: every key), newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]) if key else None,
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]),
            ),
            sort=ArtifactSort.CREATED_DESC,
        )


def interval(run: Any) -> tuple[float, float]:
    return run.start_time.timestamp(), run.end_time.timestamp()


def write_spec(
    folder: Path,
    name: str,
    waves: list[list[str]],
    deps: dict[str, list[str]] | None = None,
    max_workers: int = 3,
) -> Path:
    """A minimal Agent OS v2 spec with declared waves."""
    deps = deps or {}
    folder.mkdir(parents=True)
    tasks = []
    for w, ids in enumerate(waves, 1):
        for tid in ids:
            tasks.append(
                {
                    "id": tid,
                    "type": "parent",
                    "description": f"Task {tid} of {name}",
                    "status": "pending",
                    "attempts": 0,
                    "parallelization": {
                        "wave": w,
                        "blocked_by": deps.get(tid, []),
                        "shared_files": [],
                    },
                }
            )
    doc = {
        "version": "2.0",
        "spec": name,
        "execution_strategy": {
            "mode": "parallel_waves",
            "waves": [{"wave_id": i, "tasks": ids} for i, ids in enumerate(waves, 1)],
            "max_concurrent_workers": max_workers,
        },
        "tasks": tasks,
    }
    (folder / "tasks.json").write_text(json.dumps(doc, indent=2) + "\n")
    return folder


# --------------------------------------------------------------------------- 1. all pass


async def test_all_pass_records_every_field_and_publishes_runs_and_artifacts(example, rig):
    spec = example("small-feature")
    original = load(spec / "tasks.json")
    before = time.time()
    # 1 and 2 (wave 1) each take 1 s, so they overlap: the observed concurrency is exactly 2
    agent = rig.agent(plan={"1": "sleep:1+write:src/reset_token.py", "2": "sleep:1"})
    state, result = await run_flow(spec, agent=agent, repo=str(rig.repo))
    after = time.time()

    # ---- flow state and result
    assert state.is_completed(), state
    assert state.message == "all 3 tasks passed"
    assert result["status"] == "success"
    assert result["spec"] == "small-feature"
    assert result["blocking_failures"] == []
    assert Path(result["tasks_file"]) == spec / "tasks.json"
    assert Path(result["run_dir"]) == spec / ".specwave" / "runs" / result["run_id"]
    assert result["tasks"] == {
        tid: {"status": "pass", "outcome": "pass", "attempts": 1, "blocker": None}
        for tid in ("1", "2", "3")
    }
    m = result["metrics"]
    assert (m["total_tasks"], m["passed"], m["failed"], m["blocked"]) == (3, 3, 0, 0)
    assert (m["workers_spawned"], m["workers_retried"], m["waves"]) == (3, 0, 2)
    assert m["max_concurrent_observed"] == 2
    assert m["events"] == []
    assert (rig.repo / "src" / "reset_token.py").read_text() == "written by task 1\n"
    assert sorted(rig.launched().items()) == [("1", [1]), ("2", [1]), ("3", [1])]

    # ---- tasks.json, field by field
    doc = load(spec / "tasks.json")
    tasks = by_id(doc)
    lo, hi = (
        parse_iso(time.strftime(ISO_Z, time.gmtime(before - 1))),
        parse_iso(time.strftime(ISO_Z, time.gmtime(after + 1))),
    )
    for tid in ("1", "2", "3"):
        t = tasks[tid]
        assert t["status"] == "pass"
        assert t["attempts"] == 1
        assert lo <= parse_iso(t["started_at"]) <= parse_iso(t["completed_at"]) <= hi
        assert isinstance(t["duration_minutes"], (int, float)) and 0 <= t["duration_minutes"] < 5
        assert t["notes"] == "fake agent pass"
        assert t["blocker"] is None
        assert t["progress_percent"] == 100
        for sid in t["subtasks"]:
            assert tasks[sid]["status"] == "pass"
    assert tasks["1"]["artifacts"] == {"files_created": ["src/reset_token.py"]}
    assert "artifacts" not in tasks["2"] and "artifacts" not in tasks["3"]
    # task 3 (wave 2) started after both wave-1 tasks completed
    assert parse_iso(tasks["3"]["started_at"]) >= max(
        parse_iso(tasks[t]["completed_at"]) for t in ("1", "2")
    )
    assert doc["summary"] == {
        "total_tasks": 11,
        "parent_tasks": 3,
        "subtasks": 8,
        "completed": 11,
        "in_progress": 0,
        "blocked": 0,
        "pending": 0,
        "overall_percent": 100,
        "parallel_waves": 2,
        "max_parallelism": 2,
    }
    assert doc["updated"] != original["updated"]
    assert lo <= parse_iso(doc["updated"]) <= hi
    orch = doc["orchestrator_state"]
    assert orch["run_id"] == result["run_id"]
    assert orch["status"] == "completed"
    assert orch["scheduler"] == "eager"
    assert orch["active_workers"] == []
    assert (
        orch["workers_spawned"],
        orch["workers_completed"],
        orch["workers_failed"],
        orch["workers_retried"],
    ) == (3, 3, 0, 0)
    assert orch["completed_at"] and orch["started_at"]
    # key order kept; the only new top-level key is orchestrator_state, at the end
    assert list(doc) == list(original) + ["orchestrator_state"]

    # everything else unchanged
    changed_parent = {
        "status",
        "attempts",
        "started_at",
        "completed_at",
        "duration_minutes",
        "notes",
        "blocker",
        "artifacts",
        "progress_percent",
    }

    def strip(d: dict[str, Any]) -> dict[str, Any]:
        d = copy.deepcopy(d)
        for k in ("updated", "summary", "orchestrator_state"):
            d.pop(k, None)
        for t in d["tasks"]:
            for k in changed_parent if t.get("type") == "parent" else {"status"}:
                t.pop(k, None)
        return d

    assert strip(doc) == strip(original)
    for t, o in zip(doc["tasks"], original["tasks"]):
        assert list(t)[: len(o)] == list(o)  # field order within each task kept

    # ---- run folder
    run_dir = Path(result["run_dir"])
    run = load(run_dir / "run.json")
    assert run["status"] == "success" and run["tasks"] == result["tasks"]
    assert len(agents_recorded(spec)) == 3
    for tid in ("1", "2", "3"):
        d = run_dir / "tasks" / tid
        assert sorted(p.name for p in d.iterdir() if not p.name.startswith("scratch")) == [
            "attempt-1.json",
            "attempt-1.log",
            "prompt.md",
        ]
        rec = load(d / "attempt-1.json")
        assert (rec["task_id"], rec["attempt"], rec["outcome"]) == (tid, 1, "pass")
        assert "TASK COMPLETE" in (d / "prompt.md").read_text()
        assert f"fake agent: task {tid} attempt 1: " in (d / "attempt-1.log").read_text()

    # ---- Prefect API: flow run, one task run per spec task, artifacts
    fr = await read_flow_run(result["run_id"])
    assert fr.state.is_completed()
    assert fr.name == "small-feature"
    runs = await worker_runs(result["run_id"], 3)
    assert sorted(runs) == ["1", "2", "3"]
    for tid, tr in runs.items():
        assert tr.name == SMALL_FEATURE_NAMES[tid]
        assert tr.state.is_completed(), (tid, tr.state)
        wave = "wave-2" if tid == "3" else "wave-1"
        assert {"small-feature", wave, "command"} <= set(tr.tags)
    assert runs["3"].start_time >= max(runs["1"].end_time, runs["2"].end_time)
    # the spec's dependency graph is the run's graph in Prefect: 3's task run waits for the
    # task runs of 1 and 2 (its inputs), 1 and 2 wait for none (regression: no edges at all)
    assert {str(i.id) for i in runs["3"].task_inputs["wait_for"]} == {
        str(runs["1"].id),
        str(runs["2"].id),
    }
    assert not runs["1"].task_inputs.get("wait_for") and not runs["2"].task_inputs.get("wait_for")

    # the Artifacts tab: one card each for progress, table, summary (regression: a new
    # table card after every finished task)
    every = await artifacts(result["run_id"], None)
    assert sorted(a.key for a in every) == [
        "small-feature-progress",
        "small-feature-summary",
        "small-feature-tasks",
    ]
    progress = await artifacts(result["run_id"], "small-feature-progress")
    assert len(progress) == 1
    assert progress[0].type == "progress" and float(progress[0].data) == 100.0
    tables = await artifacts(result["run_id"], "small-feature-tasks")
    assert tables and tables[0].type == "table"
    rows = json.loads(tables[0].data) if isinstance(tables[0].data, str) else tables[0].data
    assert [(r["id"], r["status"], r["outcome"], r["attempts"], r["wave"]) for r in rows] == [
        ("1", "pass", "pass", 1, 1),
        ("2", "pass", "pass", 1, 1),
        ("3", "pass", "pass", 1, 2),
    ]
    assert rows[0]["files"] == "src/reset_token.py" and rows[0]["tests"] == "1/1"
    summary = await artifacts(result["run_id"], "small-feature-summary")
    assert len(summary) == 1 and summary[0].type == "markdown"
    md = summary[0].data
    assert md.startswith("# specwave: small-feature")
    assert "**all 3 tasks passed**" in md
    assert "| passed | 3 |" in md and "| workers_spawned | 3 |" in md
    assert "## Failures" not in md
    assert rig.survivors() == []


async def test_the_task_table_shows_file_names_as_they_are(tmp_path, rig):
    """Regression: table cells are markdown in the Prefect UI, so a file named __init__.py
    showed as a bold "init.py"; text cells are escaped and render as the text itself."""
    from markdown_it import MarkdownIt

    spec = write_spec(tmp_path / "spec", "under_scores", [["a"]])
    doc = load(spec / "tasks.json")
    doc["tasks"][0]["description"] = "Export *all* names from pkg/__init__.py"
    (spec / "tasks.json").write_text(json.dumps(doc))
    state, result = await run_flow(
        spec, agent=rig.agent(plan={"a": "write:pkg/__init__.py"}), repo=str(rig.repo)
    )
    assert state.is_completed(), state
    (table,) = await artifacts(result["run_id"], "under-scores-tasks")
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    md = MarkdownIt()
    shown = {k: md.renderInline(rows[0][k]) for k in ("files", "description")}
    assert shown == {
        "files": "pkg/__init__.py",
        "description": "Export *all* names from pkg/__init__.py",
    }
    assert rows[0]["files"] != "pkg/__init__.py"  # escaped in the data, not just lucky
    assert rig.survivors() == []


# --------------------------------------------------------------------------- 2. failures


async def test_failures_retries_and_transitive_blocking(example, rig):
    spec = example("checkout-api")
    plan = {"3": "crash", "4": "garbage", "6": "false-pass", "7": "blocked", "9": "fail"}
    state, result = await run_flow(spec, agent=rig.agent(plan=plan), repo=str(rig.repo), retries=1)
    assert state.is_failed()
    assert result["status"] == "partial"
    assert state.message == "13 of 16 tasks did not pass"
    assert result["blocking_failures"] == []
    t = result["tasks"]

    # passes, including the independent task 5 (its deps 1, 2 passed) while 3 and 4 failed
    for tid in ("1", "2", "5"):
        assert t[tid] == {"status": "pass", "outcome": "pass", "attempts": 1, "blocker": None}
    # the agent's own fail is final: one attempt
    assert t["9"] == {"status": "fail", "outcome": "fail", "attempts": 1, "blocker": "tests fail"}
    # crash: retried once
    assert t["3"]["status"] == "fail" and t["3"]["outcome"] == "crashed"
    assert t["3"]["attempts"] == 2
    assert t["3"]["blocker"].startswith("crashed after 2 attempts (exit 3, exit 3): ")
    # garbage: parse_error, retried once
    assert t["4"]["status"] == "fail" and t["4"]["outcome"] == "parse_error"
    assert t["4"]["attempts"] == 2
    assert t["4"]["blocker"].startswith("parse_error after 2 attempts: ")
    # claimed pass with failing tests: fail, not retried
    assert t["6"]["status"] == "fail" and t["6"]["outcome"] == "fail"
    assert t["6"]["attempts"] == 1 and t["6"]["blocker"]
    # blocked verdict: status blocked, not retried
    assert t["7"] == {
        "status": "blocked",
        "outcome": "blocked",
        "attempts": 1,
        "blocker": "needs a decision",
    }

    # transitive dependents: blocked with the root's reason, never launched
    never = {"8", "10", "11", "12", "13", "14", "15", "16"}
    for tid in never:
        assert t[tid]["status"] == "blocked", tid
        assert t[tid]["outcome"] is None and t[tid]["attempts"] == 0
        assert t[tid]["blocker"].startswith("blocked by "), t[tid]
    crash_reason = f"blocked by 3: {t['3']['blocker']}"
    assert t["8"]["blocker"] == crash_reason  # direct dependent of 3
    assert t["11"]["blocker"] == crash_reason  # depends on 3 and on 8
    assert t["10"]["blocker"] in (
        f"blocked by 6: {t['6']['blocker']}",
        "blocked by 7: needs a decision",
    )
    roots = {f"blocked by {r}: {t[r]['blocker']}" for r in ("3", "4", "6", "7")}
    for tid in never:
        assert t[tid]["blocker"] in roots, (tid, t[tid]["blocker"])

    launched = rig.launched()
    assert launched == {
        "1": [1],
        "2": [1],
        "3": [1, 2],
        "4": [1, 2],
        "5": [1],
        "6": [1],
        "7": [1],
        "9": [1],
    }
    assert not never & set(launched)
    spec_dir_runs = Path(result["run_dir"]) / "tasks"
    assert sorted(p.name for p in spec_dir_runs.iterdir()) == sorted(
        ["1", "2", "3", "4", "5", "6", "7", "9"], key=str
    )

    # the plan file agrees
    tasks = by_id(load(spec / "tasks.json"))
    for tid, info in t.items():
        assert tasks[tid]["status"] == info["status"], tid
        assert tasks[tid]["attempts"] == info["attempts"], tid
        assert tasks[tid]["blocker"] == info["blocker"], tid
    for tid in never:
        assert tasks[tid]["started_at"] is None and tasks[tid]["completed_at"] is None
    for sid in ("8.1", "8.2", "8.3", "5.1"):
        expected = "pass" if sid.startswith("5.") else "pending"
        assert tasks[sid]["status"] == expected, sid
    doc = load(spec / "tasks.json")
    assert doc["orchestrator_state"]["status"] == "partial"
    assert (
        doc["orchestrator_state"]["workers_spawned"],
        doc["orchestrator_state"]["workers_retried"],
    ) == (10, 2)

    # Prefect task runs: Failed for the workers that did not pass, none for blocked tasks
    runs = await worker_runs(result["run_id"], 8)
    assert sorted(runs, key=int) == ["1", "2", "3", "4", "5", "6", "7", "9"]
    for tid, tr in runs.items():
        if tid in ("1", "2", "5"):
            assert tr.state.is_completed(), (tid, tr.state)
        else:
            assert tr.state.is_failed(), (tid, tr.state)
    assert runs["3"].run_count == 2 and runs["9"].run_count == 1
    fr = await read_flow_run(result["run_id"])
    assert fr.state.is_failed()
    summary = (await artifacts(result["run_id"], "checkout-api-summary"))[0].data
    assert "**13 of 16 tasks did not pass**" in summary and "## Failures" in summary
    assert rig.survivors() == []


# --------------------------------------------------------------------------- 3. timeouts


async def test_timeout_doubles_kills_the_whole_tree_and_hang_once_passes(example, rig):
    spec = example("small-feature")
    agent = rig.agent(plan={"1": "grandchild+hang", "2": "hang-once"})
    state, result = await run_flow(
        spec, agent=agent, repo=str(rig.repo), timeout_seconds=1, retries=1
    )
    assert state.is_failed() and result["status"] == "partial"
    t = result["tasks"]
    assert t["1"] == {
        "status": "fail",
        "outcome": "timeout",
        "attempts": 2,
        "blocker": "timeout after 2 attempts (1.0 s, 2.0 s)",
    }
    assert t["2"] == {"status": "pass", "outcome": "pass", "attempts": 2, "blocker": None}
    assert t["3"] == {
        "status": "blocked",
        "outcome": None,
        "attempts": 0,
        "blocker": "blocked by 1: timeout after 2 attempts (1.0 s, 2.0 s)",
    }

    tdir = Path(result["run_dir"]) / "tasks"
    a1, a2 = load(tdir / "1" / "attempt-1.json"), load(tdir / "1" / "attempt-2.json")
    assert (a1["outcome"], a1["timeout_seconds"]) == ("timeout", 1.0)
    assert (a2["outcome"], a2["timeout_seconds"]) == ("timeout", 2.0)
    assert a1["duration_s"] >= 0.9 and a2["duration_s"] >= 1.9
    b1, b2 = load(tdir / "2" / "attempt-1.json"), load(tdir / "2" / "attempt-2.json")
    assert (b1["outcome"], b1["timeout_seconds"]) == ("timeout", 1.0)
    assert (b2["outcome"], b2["timeout_seconds"]) == ("pass", 2.0)
    # only task 2's second attempt got to the end; hung attempts were killed
    assert rig.launched() == {"2": [2]}
    # every attempt's agent was recorded (4 of them) and none survives, grandchildren included
    assert len(agents_recorded(spec)) == 4
    assert rig.survivors() == []

    tasks = by_id(load(spec / "tasks.json"))
    assert (tasks["1"]["status"], tasks["1"]["attempts"]) == ("fail", 2)
    assert tasks["1"]["blocker"] == "timeout after 2 attempts (1.0 s, 2.0 s)"
    assert tasks["1"]["duration_minutes"] >= round(2.9 / 60, 2)
    assert (tasks["2"]["status"], tasks["2"]["attempts"]) == ("pass", 2)
    runs = await worker_runs(result["run_id"], 2)
    assert runs["1"].state.is_failed() and runs["2"].state.is_completed()


# --------------------------------------------------------------------------- 4. concurrency


@pytest.mark.parametrize("policy", ["eager", "waves"])
async def test_concurrency_limits_and_dependency_order(example, rig, policy):
    spec = example("checkout-api")
    plan = plan_spec(load_spec(spec), max_concurrency=3)
    state, result = await run_flow(
        spec,
        agent=rig.agent(default="sleep:0.5"),
        repo=str(rig.repo),
        max_concurrency=3,
        scheduler=policy,
    )
    assert state.is_completed(), result
    assert result["metrics"]["scheduler"] == policy
    assert result["metrics"]["max_concurrent_scheduled"] <= 3
    runs = await worker_runs(result["run_id"], 16)
    assert sorted(runs, key=int) == [str(i) for i in range(1, 17)]
    spans = {tid: interval(r) for tid, r in runs.items()}
    assert all(s < e for s, e in spans.values())

    peak = max_overlap(list(spans.values()))
    assert 2 <= peak <= 3, (peak, spans)
    # the agent processes themselves (trace) also never exceed the limit, and overlap
    trace = {e["task"]: (e["start"], e["end"]) for e in rig.trace()}
    assert len(trace) == 16
    assert 2 <= max_overlap(list(trace.values())) <= 3

    # every dependency (and every ordered file conflict) ended before its dependent started
    for a, b in list(plan.dependency_edges) + list(plan.conflict_edges):
        assert spans[b][0] >= spans[a][1], (policy, a, b, spans[a], spans[b])
        assert trace[b][0] >= trace[a][1], (policy, a, b)

    waves = {}
    for tid, r in runs.items():
        (wave,) = [int(t.split("-")[1]) for t in r.tags if t.startswith("wave-")]
        assert wave == plan.wave_of[tid]
        waves.setdefault(wave, []).append(tid)
    if policy == "waves":
        for n in range(2, len(plan.waves) + 1):
            first_start = min(spans[t][0] for t in waves[n])
            last_end = max(spans[t][1] for t in waves[n - 1])
            assert first_start >= last_end, (n, waves[n], waves[n - 1])
    assert rig.survivors() == []


# --------------------------------------------------------------------------- 5. fail fast


async def test_fail_fast_stops_new_workers(example, rig):
    spec = example("small-feature")
    state, result = await run_flow(
        spec, agent=rig.agent(default="fail"), repo=str(rig.repo), max_concurrency=1, fail_fast=True
    )
    assert state.is_failed()
    launched = rig.launched()
    assert len(launched) == 1, launched
    (first,) = launched
    other = "2" if first == "1" else "1"
    assert first in ("1", "2")
    assert result["status"] == "blocked"
    assert result["blocking_failures"] == [first]
    assert state.message.startswith(f"stopped after failures ({first}); 3 of 3 tasks")
    t = result["tasks"]
    assert t[first] == {"status": "fail", "outcome": "fail", "attempts": 1, "blocker": "tests fail"}
    assert t[other] == {"status": "pending", "outcome": None, "attempts": 0, "blocker": None}
    assert t["3"]["status"] == "blocked" and t["3"]["blocker"] == f"blocked by {first}: tests fail"
    assert any("fail-fast" in e for e in result["metrics"]["events"])
    assert result["metrics"]["not_started"] == 1

    tasks = by_id(load(spec / "tasks.json"))
    assert tasks[other]["status"] == "pending"
    assert (tasks[other]["attempts"], tasks[other]["started_at"]) == (0, None)
    assert tasks[first]["status"] == "fail" and tasks["3"]["status"] == "blocked"
    assert load(spec / "tasks.json")["orchestrator_state"]["status"] == "blocked"
    runs = await worker_runs(result["run_id"], 1)
    assert list(runs) == [first] and runs[first].state.is_failed()


# --------------------------------------------------------------------------- 6. fallback


async def test_all_workers_of_a_wave_fail_then_the_rest_is_sequential(tmp_path, rig):
    spec = write_spec(tmp_path / "fallback", "fallback", [["1", "2"], ["3", "4", "5"]])
    agent = rig.agent(plan={"1": "sleep:0.5+fail", "2": "sleep:0.5+fail"}, default="sleep:0.3")
    state, result = await run_flow(
        spec, agent=agent, repo=str(rig.repo), scheduler="waves", max_concurrency=3
    )
    assert state.is_failed() and result["status"] == "partial"
    assert [result["tasks"][t]["status"] for t in "12345"] == [
        "fail",
        "fail",
        "pass",
        "pass",
        "pass",
    ]
    events = result["metrics"]["events"]
    assert any("sequential" in e and "wave 1" in e for e in events), events

    runs = await worker_runs(result["run_id"], 5)
    wave1 = [interval(runs[t]) for t in ("1", "2")]
    wave2 = [interval(runs[t]) for t in ("3", "4", "5")]
    assert max_overlap(wave1) == 2  # the wave ran in parallel ...
    assert max_overlap(wave2) == 1  # ... and after it failed everything ran one at a time
    assert min(s for s, _ in wave2) >= max(e for _, e in wave1)
    trace = {e["task"]: (e["start"], e["end"]) for e in rig.trace()}
    assert max_overlap([trace[t] for t in ("3", "4", "5")]) == 1
    assert rig.survivors() == []


# --------------------------------------------------------------------------- 7. resume


async def test_rerun_resumes_failed_and_in_progress_tasks_only(example, rig):
    spec = example("small-feature")
    _, r1 = await run_flow(spec, agent=rig.agent(plan={"2": "fail"}), repo=str(rig.repo))
    assert r1["status"] == "partial"
    assert {k: v["status"] for k, v in r1["tasks"].items()} == {
        "1": "pass",
        "2": "fail",
        "3": "blocked",
    }
    assert sorted(rig.launched()) == ["1", "2"]

    # second run: task 1 already passed and is not run again; 2 (failed) and 3 (blocked) are
    rig.trace_path.unlink()
    state, r2 = await run_flow(spec, agent=rig.agent(), repo=str(rig.repo))
    assert state.is_completed() and r2["status"] == "success"
    assert rig.launched() == {"2": [1], "3": [1]}
    assert r2["tasks"]["1"] == {"status": "done", "outcome": None, "attempts": 0, "blocker": None}
    assert r2["metrics"]["already_done"] == 1
    tasks = by_id(load(spec / "tasks.json"))
    assert [tasks[t]["status"] for t in "123"] == ["pass", "pass", "pass"]
    # attempts accumulate over runs; the old blocker is cleared
    assert [tasks[t]["attempts"] for t in "123"] == [1, 2, 1]
    assert tasks["2"]["blocker"] is None and tasks["3"]["blocker"] is None

    # a task left in_progress (a run that died) is run again
    doc = load(spec / "tasks.json")
    for t in doc["tasks"]:
        if t["id"] == "3":
            t["status"] = "in_progress"
    (spec / "tasks.json").write_text(json.dumps(doc, indent=2) + "\n")
    rig.trace_path.unlink()
    state, r3 = await run_flow(spec, agent=rig.agent(), repo=str(rig.repo))
    assert state.is_completed()
    assert rig.launched() == {"3": [1]}
    assert [r3["tasks"][t]["status"] for t in "123"] == ["done", "done", "pass"]
    tasks = by_id(load(spec / "tasks.json"))
    assert (tasks["3"]["status"], tasks["3"]["attempts"]) == ("pass", 2)
    assert rig.survivors() == []


# --------------------------------------------------------------------------- 8. cancellation


async def test_cancel_kills_every_agent_and_puts_running_tasks_back(example, rig):
    spec = example("small-feature")
    original = load(spec / "tasks.json")
    flow = asyncio.create_task(
        run_flow(
            spec,
            agent=rig.agent(default="grandchild+hang"),
            repo=str(rig.repo),
            timeout_seconds=600,
        )
    )
    try:
        # both wave-1 agents started, each with its two grandchildren
        await wait_until(
            lambda: len(agents_recorded(spec)) == 2 and len(rig.processes()) >= 6,
            60,
            "2 agents and 4 grandchildren",
        )
        tasks = by_id(load(spec / "tasks.json"))
        assert [tasks[t]["status"] for t in "123"] == ["in_progress", "in_progress", "pending"]
        flow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await flow
    finally:
        if not flow.done():
            flow.cancel()
            await asyncio.gather(flow, return_exceptions=True)
    assert rig.survivors() == []
    assert rig.launched() == {}

    doc = load(spec / "tasks.json")  # valid JSON
    tasks = by_id(doc)
    for tid in ("1", "2", "3"):
        assert tasks[tid]["status"] == "pending", tid
        assert tasks[tid]["completed_at"] is None
        assert tasks[tid]["attempts"] == 0
    for t, o in zip(doc["tasks"], original["tasks"]):
        if t.get("type") == "subtask":
            assert t == o
    assert doc["orchestrator_state"]["status"] == "cancelled"
    assert doc["summary"]["pending"] == 11 and doc["summary"]["in_progress"] == 0
    (run_json,) = (spec / ".specwave" / "runs").glob("*/run.json")
    run = load(run_json)
    assert run["status"] == "cancelled" and sorted(run["interrupted"]) == ["1", "2"]
    # the run lock was released
    lock = load(spec / ".specwave" / "locks" / "run.lock")
    assert lock["active"] is False


# --------------------------------------------------------------------------- 9. invalid, dry run


async def test_invalid_spec_fails_the_flow_with_the_validation_line(example, rig):
    spec = example("small-feature")
    doc = load(spec / "tasks.json")
    for t in doc["tasks"]:
        if t["id"] == "3":
            t["parallelization"]["blocked_by"] = ["1", "2", "99"]
    (spec / "tasks.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = (spec / "tasks.json").read_text()
    state, result = await run_flow(spec, agent=rig.agent(), repo=str(rig.repo))
    assert state.is_failed()
    line = 'task "3": blocked_by names unknown task "99"'
    assert line in state.message, state.message
    assert isinstance(result, BaseException) and line in str(result)
    assert rig.launched() == {}
    assert (spec / "tasks.json").read_text() == text
    assert not (spec / ".specwave" / "runs").exists()


async def test_dry_run_launches_nothing_and_returns_the_prompts(example, rig):
    spec = example("small-feature")
    text = (spec / "tasks.json").read_text()
    state, result = await run_flow(spec, agent=rig.agent(), repo=str(rig.repo), dry_run=True)
    assert state.is_completed()
    assert result["status"] == "dry_run"
    assert result["tasks"] == {t: {"status": "pending"} for t in "123"}
    assert [w["tasks"] for w in result["plan"]["waves"]] == [["1", "2"], ["3"]]
    loaded = load_spec(spec)
    assert sorted(result["prompts"]) == ["1", "2", "3"]
    for tid, prompt in result["prompts"].items():
        unit = loaded.unit(tid)
        assert "TASK COMPLETE" in prompt
        assert " ".join(unit.description.split()) in " ".join(prompt.split())
        assert unit.files, tid
        for f in unit.files:
            assert f in prompt, (tid, f)
    assert rig.launched() == {} and not rig.trace_path.exists()
    assert (spec / "tasks.json").read_text() == text
    assert not (spec / ".specwave" / "runs").exists()
    assert rig.survivors() == []


async def test_dry_run_shows_exactly_the_prompts_agents_get_with_the_spec_template(example, rig):
    """Regression: ``specwave run --dry-run`` built prompts without the spec's
    worker-prompt.md, so it printed a different prompt from the one the agents got."""

    spec = example("small-feature")
    (spec / "worker-prompt.md").write_text(
        "# Our own worker prompt for $task_id (wave $wave, with: $concurrent)\n\n"
        "$sections\n$output_format"
    )
    _, result = await run_flow(spec, agent=rig.agent(), repo=str(rig.repo), dry_run=True)
    prompts = result["prompts"]
    assert prompts["1"].startswith("# Our own worker prompt for 1 (wave 1, with: 2)")
    assert prompts["3"].startswith("# Our own worker prompt for 3 (wave 2, with: )")
    cli = subprocess.run(
        [
            sys.executable,
            "-c",
            "from flows.cli import main; main()",
            "run",
            str(spec),
            "--command",
            "true",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert cli.returncode == 0, cli.stderr
    for tid, prompt in prompts.items():
        assert prompt in cli.stdout, tid  # word for word what the agent would be given
    # and the agents get it: the first task's prompt file is the template's
    state, result = await run_flow(spec, agent=rig.agent(), repo=str(rig.repo))
    assert state.is_completed(), state
    run_dir = Path(result["run_dir"])
    assert (run_dir / "tasks" / "1" / "prompt.md").read_text() == prompts["1"]
    assert rig.survivors() == []


# --------------------------------------------------------------------------- 11. run lock


async def test_second_concurrent_run_of_a_spec_is_refused(example, rig):
    spec = example("small-feature")
    first = asyncio.create_task(
        run_flow(spec, agent=rig.agent(default="hang"), repo=str(rig.repo), timeout_seconds=600)
    )
    try:
        await wait_until(lambda: len(agents_recorded(spec)) == 2, 60, "2 agents")
        alive = {p.pid for p in rig.processes()}
        assert len(alive) >= 2
        state, result = await run_flow(spec, agent=rig.agent(), repo=str(rig.repo))
        assert state.is_failed()
        msg = str(result)
        assert f"is already being run by pid {os.getpid()} on {socket.gethostname()}" in msg
        assert f"is already being run by pid {os.getpid()}" in state.message
        # the refused run touched nothing: the first run's agents still run, its tasks are
        # still in progress, and there is one run folder
        assert alive <= {p.pid for p in rig.processes()}
        tasks = by_id(load(spec / "tasks.json"))
        assert [tasks[t]["status"] for t in "123"] == ["in_progress", "in_progress", "pending"]
        assert len(list((spec / ".specwave" / "runs").iterdir())) == 1
        assert not first.done()
    finally:
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
    assert rig.survivors() == []
    # once the first run is gone the spec can be run again
    state, result = await run_flow(spec, agent=rig.agent(), repo=str(rig.repo))
    assert state.is_completed() and result["status"] == "success"
