"""Both schedulers in a real flow run: real agent processes, the session's Prefect API.

A generated spec (a seeded random DAG with file conflicts and per-task durations) is run with
``scheduler="eager"`` and ``scheduler="waves"`` by tests/fixtures/agents/fake_agent.py, which
records when each agent process actually worked (its trace). From those recorded start and end
times, for both policies:

* no task started before every one of its dependencies had passed;
* no two tasks that share a file ran at the same time;
* never more agents at once than max_concurrency;
* ``waves``: no task of a later wave started before every task of the earlier waves ended;
* a failure blocks its transitive dependents (never launched) and nothing else;
* the planned wave is a tag of each worker's task run (the UI's "wave-N").
"""

from __future__ import annotations

import json
import random
import time
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
import pytest

from flows.execute_spec import execute_spec
from tasks_lib.formats import load_spec
from tasks_lib.planner import Plan, plan_spec, transitive_dependents
from tests.fixtures.fake import TAG_ENV, fake_config, max_overlap

ROOT = Path(__file__).resolve().parents[1]
SLOTS = 3


def generated_spec(folder: Path, *, n: int = 14, seed: int = 11) -> dict[str, float]:
    """Write an Agent OS 2.0 spec (no declared waves: the planner computes them) and return
    each task's duration in seconds (also its estimate, in "minutes")."""
    rng = random.Random(seed)
    ids = [str(i + 1) for i in range(n)]
    deps = {
        t: sorted(
            {ids[j] for j in rng.sample(range(max(0, i - 5), i), min(i, 2)) if rng.random() < 0.6},
            key=int,
        )
        for i, t in enumerate(ids)
    }
    durations = {t: rng.choice([0.2, 0.3, 0.5, 0.9]) for t in ids}
    shared = ["src/shared/a.py", "src/shared/b.py", "src/config/"]
    tasks = []
    for t in ids:
        files = [f"src/own/task_{t}.py"]
        if rng.random() < 0.35:
            files.append(rng.choice(shared + ["src/config/settings.py"]))
        tasks.append(
            {
                "id": t,
                "type": "parent",
                "description": f"Generated task {t}",
                "status": "pending",
                "attempts": 0,
                "estimated_minutes": durations[t],
                "parallelization": {
                    "blocked_by": deps[t],
                    "blocks": [b for b in ids if t in deps[b]],
                    "shared_files": files,
                },
            }
        )
    folder.mkdir(parents=True)
    doc = {"version": "2.0", "spec": folder.name, "tasks": tasks}
    (folder / "tasks.json").write_text(json.dumps(doc, indent=2) + "\n")
    return durations


class Agents:
    """The fake agent, its trace, and a guard that no process outlives the test."""

    def __init__(self, tmp: Path):
        self.tag = uuid.uuid4().hex
        self.trace_path = tmp / "trace.jsonl"
        self.repo = tmp / "repo"
        self.repo.mkdir()

    def config(self, plan: dict[str, str]) -> dict[str, Any]:
        return fake_config(self.trace_path, plan, tag=self.tag)

    def trace(self) -> dict[str, tuple[float, float]]:
        out = {}
        for line in self.trace_path.read_text().splitlines():
            e = json.loads(line)
            assert e["task"] not in out, f"task {e['task']} ran twice"
            out[e["task"]] = (e["start"], e["end"])
        return out

    def survivors(self) -> list[int]:
        found = []
        for p in psutil.process_iter():
            try:
                if p.environ().get(TAG_ENV) == self.tag and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p.pid)
            except psutil.Error:
                continue
        return found


@pytest.fixture
def agents(tmp_path):
    a = Agents(tmp_path)
    yield a
    for pid in a.survivors():
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


async def run(spec: Path, agents: Agents, policy: str, plan: dict[str, str]) -> dict[str, Any]:
    state = await execute_spec(
        str(spec),
        agent=agents.config(plan),
        repo=str(agents.repo),
        max_concurrency=SLOTS,
        scheduler=policy,
        retries=0,
        return_state=True,
    )
    return await state.result(raise_on_failure=False)


async def worker_tags(flow_run_id: str, expected: int) -> dict[str, list[str]]:
    """Tags of the flow run's worker task runs, by spec task id, once all are final."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 60
    async with get_client() as client:
        while True:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
            )
            workers = [r for r in runs if r.name.split(":", 1)[0].isdigit()]
            if len(workers) >= expected and all(
                r.state and r.state.is_final() and any(t.startswith("wave-") for t in r.tags)
                for r in workers
            ):
                return {r.name.split(":", 1)[0]: r.tags for r in workers}
            assert time.monotonic() < deadline, [(r.name, r.state_type, r.tags) for r in workers]
            await asyncio.sleep(0.25)


def check_rules(
    plan: Plan, trace: dict[str, tuple[float, float]], policy: str, passed: set[str]
) -> None:
    for a, b in plan.dependency_edges:
        if b in trace:
            assert a in passed, (a, b)
            assert trace[b][0] >= trace[a][1], f"{b} started before its dependency {a} ended"
    for c in plan.conflicts:
        if c.a in trace and c.b in trace:
            (s1, e1), (s2, e2) = trace[c.a], trace[c.b]
            assert e1 <= s2 or e2 <= s1, f"{c.a} and {c.b} share {c.files} and overlapped"
    assert max_overlap(list(trace.values())) <= SLOTS
    if policy == "waves":
        for k in range(1, len(plan.waves)):
            earlier = [trace[t][1] for w in plan.waves[:k] for t in w.tasks if t in trace]
            later = [trace[t][0] for t in plan.waves[k].tasks if t in trace]
            if earlier and later:
                assert min(later) >= max(earlier), f"wave {plan.waves[k].wave_id} crossed"


@pytest.mark.parametrize("policy", ["eager", "waves"])
async def test_generated_spec_runs_by_the_rules(tmp_path, agents, policy):
    spec = tmp_path / "generated"
    durations = generated_spec(spec)
    plan = plan_spec(load_spec(spec), max_concurrency=SLOTS)
    assert not plan.errors and plan.conflicts and len(plan.waves) >= 4  # a real test case
    result = await run(spec, agents, policy, {t: f"sleep:{d}" for t, d in durations.items()})
    assert result["status"] == "success", result
    assert result["metrics"]["scheduler"] == policy
    trace = agents.trace()
    assert sorted(trace, key=int) == sorted(durations, key=int)
    check_rules(plan, trace, policy, passed=set(trace))
    assert max_overlap(list(trace.values())) >= 2  # it did run in parallel
    tags = await worker_tags(result["run_id"], len(durations))
    for tid, t in tags.items():
        assert f"wave-{plan.wave_of[tid]}" in t and "generated" in t and "command" in t
    assert agents.survivors() == []


@pytest.mark.parametrize("policy", ["eager", "waves"])
async def test_a_failure_blocks_its_dependents_and_nothing_else(tmp_path, agents, policy):
    spec = tmp_path / "generated"
    durations = generated_spec(spec)
    plan = plan_spec(load_spec(spec), max_concurrency=SLOTS)
    # fail the task with the most dependents that still leaves some tasks unaffected
    failing = max(
        plan.order,
        key=lambda t: (
            0 < len(transitive_dependents(plan, t)) < len(plan.order) - 3,
            len(transitive_dependents(plan, t)),
        ),
    )
    blocked = set(transitive_dependents(plan, failing))
    behaviour = {t: f"sleep:{d}" for t, d in durations.items()}
    behaviour[failing] = "fail"
    result = await run(spec, agents, policy, behaviour)
    assert result["status"] == "partial", result
    statuses = {t: v["status"] for t, v in result["tasks"].items()}
    assert statuses[failing] == "fail"
    assert {t for t, s in statuses.items() if s == "blocked"} == blocked
    assert all(statuses[t] == "pass" for t in durations if t != failing and t not in blocked)
    for t in blocked:
        assert result["tasks"][t]["blocker"].startswith(f"blocked by {failing}")
    trace = agents.trace()
    assert not blocked & set(trace), "a blocked task was launched"
    check_rules(plan, trace, policy, passed=set(trace) - {failing})
    doc = json.loads((spec / "tasks.json").read_text())
    assert {t["id"]: t["status"] for t in doc["tasks"]} == statuses
    assert agents.survivors() == []


async def test_eager_starts_a_task_when_its_dependency_passes_waves_waits_for_the_wave(
    tmp_path, agents
):
    """1 is long, 2 short, both wave 1; 3 needs only 2. Eager starts 3 while 1 still runs;
    waves starts it only after 1 (the whole wave) ended."""
    spec = tmp_path / "barrier"
    spec.mkdir()
    tasks = [
        {
            "id": t,
            "type": "parent",
            "description": f"Task {t}",
            "status": "pending",
            "parallelization": {"blocked_by": deps, "shared_files": [f"src/{t}.py"]},
        }
        for t, deps in (("1", []), ("2", []), ("3", ["2"]))
    ]
    original = json.dumps({"version": "2.0", "spec": "barrier", "tasks": tasks}, indent=2)
    behaviour = {"1": "sleep:3", "2": "sleep:0.1", "3": "sleep:0.1"}
    starts = {}
    for policy in ("eager", "waves"):
        (spec / "tasks.json").write_text(original + "\n")
        agents.trace_path.unlink(missing_ok=True)
        result = await run(spec, agents, policy, behaviour)
        assert result["status"] == "success", result
        trace = agents.trace()
        starts[policy] = (trace["3"][0], trace["1"][1])
    s3, e1 = starts["eager"]
    assert s3 < e1 - 1.0, "eager waited for the unrelated long task"
    s3, e1 = starts["waves"]
    assert s3 >= e1, "waves did not wait for the whole wave"
    assert agents.survivors() == []
