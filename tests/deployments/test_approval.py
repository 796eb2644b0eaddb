"""Approval between waves: ``approve_waves`` pauses the flow run after each wave with Prefect's
pause/input mechanism (the UI shows a continue/stop form); resumed here through the API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL

from flows.execute_spec import execute_spec
from tests.deployments.conftest import fake_agent, read_trace


async def _wait_paused(spec: Path, flow_task: asyncio.Task, timeout: float = 120):
    """The paused flow run of this spec folder (its parameters name the folder)."""
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while time.monotonic() < deadline:
            assert not flow_task.done(), "the flow ended instead of pausing"
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
            for fr in runs:
                if fr.parameters.get("spec_folder") == str(spec):
                    return fr
            await asyncio.sleep(0.2)
    raise AssertionError("the flow run did not pause")


async def _table(flow_run_id: UUID, key: str) -> list[dict]:
    async with get_client() as client:
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                key=ArtifactFilterKey(any_=[key]),
            )
        )
    latest = max(arts, key=lambda a: a.created)
    data = latest.data if isinstance(latest.data, list) else json.loads(latest.data)
    return data


async def _specwave(*argv: str) -> subprocess.CompletedProcess:
    """The specwave CLI in a subprocess, talking to this session's Prefect API."""
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", "from flows.cli import main; main()", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _statuses(spec: Path) -> dict[str, str]:
    doc = json.loads((spec / "tasks.json").read_text())
    return {t["id"]: t["status"] for t in doc["tasks"] if t.get("type") != "subtask"}


async def _resume(flow_run_id: UUID, answer: dict) -> None:
    async with get_client() as client:
        result = await client.resume_flow_run(flow_run_id, run_input=answer)
    assert result.status.value == "ACCEPT", result


async def test_pause_after_each_wave_then_continue(spec_copy, tmp_path):
    spec = spec_copy("small-feature")
    trace = tmp_path / "trace.jsonl"
    flow = asyncio.create_task(
        execute_spec(
            spec_folder=str(spec),
            agent=fake_agent(trace),
            repo=str(tmp_path),
            approve_waves=True,
            return_state=True,
        )
    )
    paused = await _wait_paused(spec, flow)

    # Wave 1 (tasks 1 and 2) is done, wave 2 (task 3) has not started.
    assert sorted(r["task"] for r in read_trace(trace)) == ["1", "2"]
    assert _statuses(spec) == {"1": "pass", "2": "pass", "3": "pending"}
    rows = {r["id"]: r["status"] for r in await _table(paused.id, "small-feature-tasks")}
    assert rows["1"] == rows["2"] == "pass" and rows["3"] == "pending"
    # The UI renders the form from the schema saved with the pause.
    state = paused.state
    assert state.state_details.pause_key == "approve-wave-1"
    keyset = state.state_details.run_input_keyset
    async with get_client() as client:
        schema = json.loads(await client.read_flow_run_input(paused.id, keyset["schema"]))
    assert set(schema["properties"]) == {"continue", "note"}

    await _resume(paused.id, {"continue": True, "note": "wave 1 looks good"})
    final = await asyncio.wait_for(flow, 120)
    assert final.is_completed(), final.message
    result = await final.result()
    assert result["status"] == "success"
    assert "wave 1 reviewed: continue (wave 1 looks good)" in result["metrics"]["events"]
    assert _statuses(spec) == {"1": "pass", "2": "pass", "3": "pass"}


async def test_stop_leaves_the_rest_pending(spec_copy, tmp_path):
    spec = spec_copy("small-feature")
    trace = tmp_path / "trace.jsonl"
    flow = asyncio.create_task(
        execute_spec(
            spec_folder=str(spec),
            agent=fake_agent(trace),
            repo=str(tmp_path),
            approve_waves=True,
            return_state=True,
        )
    )
    paused = await _wait_paused(spec, flow)
    # `specwave approve ID --stop --note ...` answers the form like the UI does.
    proc = await _specwave("approve", str(paused.id), "--stop", "--note", "task 2 needs a rework")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{paused.id}: stop (task 2 needs a rework)"
    final = await asyncio.wait_for(flow, 120)
    assert final.is_cancelled(), final
    result = await final.result(raise_on_failure=False)
    assert result["status"] == "stopped"
    assert result["tasks"]["3"]["status"] == "pending"
    assert "wave 1 reviewed: stop (task 2 needs a rework)" in final.message
    assert sorted(r["task"] for r in read_trace(trace)) == ["1", "2"]  # 3 never launched
    assert _statuses(spec) == {"1": "pass", "2": "pass", "3": "pending"}


async def test_approve_refuses_a_run_that_is_not_paused(spec_copy, tmp_path):
    state = await execute_spec(
        spec_folder=str(spec_copy("small-feature")),
        agent=fake_agent(tmp_path / "t.jsonl"),
        repo=str(tmp_path),
        return_state=True,
    )
    assert state.is_completed()
    proc = await _specwave("approve", str(state.state_details.flow_run_id))
    assert proc.returncode == 2
    assert "is not waiting for approval (state Completed)" in proc.stderr
    proc = await _specwave("approve", "not-an-id")
    assert proc.returncode == 2 and "is not a flow run id" in proc.stderr
