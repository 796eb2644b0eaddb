"""Item 2: cancellation mid-wave — from Prefect (``prefect flow-run cancel``) and by signals to
``specwave run``, including the two that reach the whole process group (a terminal's Ctrl-C,
``timeout``/systemd stopping a service), which also stop Prefect's ephemeral API server.

Promise, every way: every agent tree (agents, their grandchildren, even one that escaped with
setsid) is gone when the run returns, the running tasks are ``pending`` again (not ``pass``,
not ``blocked``), tasks.json is valid, the exit is non-zero, and it is quick (bounded, not
Prefect's minute of API retries). SIGTERM to the pid alone is tests/test_cli_run.py's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import pytest

from flows.execute_spec import execute_spec
from tasks_lib.formats import load_spec
from tests.reliability.conftest import (
    ROOT,
    agents_recorded,
    load,
    prefect_api_url,
    statuses,
    wait_for,
)

EXAMPLE = ROOT / "examples" / "small-feature"
#: agents (grace 1 s) + the bounded wait for Prefect + start-up noise on a busy machine
EXIT_BOUND_S = 40.0


def hanging_spec(tmp_path: Path) -> Path:
    spec = tmp_path / "spec"
    shutil.copytree(EXAMPLE, spec)
    return spec


def wait_running(rig, spec: Path, proc: subprocess.Popen | None = None) -> None:
    """Both wave-1 agents started, each with its two grandchildren."""

    def ready() -> bool:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"specwave exited early: {proc.communicate()}")
        return (
            len(agents_recorded(spec)) >= 2
            and len(
                [
                    p
                    for p in rig.processes()
                    if "fake_agent" in " ".join(p.cmdline())
                    or "time.sleep(3600)" in " ".join(p.cmdline())
                ]
            )
            >= 6
        )

    wait_for(ready, 120, "2 agents and 4 grandchildren")


def check_stopped(rig, spec: Path, run_status: str = "cancelled") -> None:
    assert rig.survivors(wait=5.0) == []
    load_spec(spec)  # valid
    assert statuses(spec) == {"1": "pending", "2": "pending", "3": "pending"}
    doc = load(spec / "tasks.json")
    assert doc["orchestrator_state"]["status"] == run_status
    assert doc["summary"]["in_progress"] == 0
    runs = [load(p) for p in (spec / ".specwave" / "runs").glob("*/run.json")]
    assert [r["status"] for r in runs] == [run_status]
    assert sorted(runs[0]["interrupted"]) == ["1", "2"]
    assert load(spec / ".specwave" / "locks" / "run.lock")["active"] is False
    assert rig.launched() == {}  # no agent got to the end


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_the_whole_process_group_on_the_ephemeral_api(rig, tmp_path, sig, code):
    """Ctrl-C in a terminal (SIGINT to the foreground group) or ``timeout``/systemd (SIGTERM
    to the group): Prefect's ephemeral API server is in the group and dies at once. The run
    still stops every agent, records the tasks as pending and exits promptly, with the
    signal's code, leaving no process behind (the server included: it carries the tag)."""
    spec = hanging_spec(tmp_path)
    proc = rig.cli(
        "run",
        str(spec),
        *rig.agent_args(default="grandchild+hang"),
        "--repo",
        str(rig.repo),
        "--timeout",
        "600",
        "--json",
        shared_api=False,
    )
    wait_running(rig, spec, proc)
    t0 = time.monotonic()
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=120)
    took = time.monotonic() - t0
    print(f"{signal.Signals(sig).name} to the group -> specwave run exited in {took:.1f} s")
    assert proc.returncode == code, err
    assert took < EXIT_BOUND_S, f"exit took {took:.1f} s: {err[-2000:]}"
    assert f"{signal.Signals(sig).name}: stopping the agents" in err
    assert "internal error" not in err
    check_stopped(rig, spec)


async def _flow_run_id_from_lock(spec: Path) -> str:
    holder = load(spec / ".specwave" / "locks" / "run.lock")
    return holder["flow_run_id"]


def prefect_cancel(flow_run_id: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url()}
    return subprocess.run(
        [sys.executable, "-m", "prefect", "flow-run", "cancel", flow_run_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


async def read_state(flow_run_id: str):
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return (await client.read_flow_run(UUID(flow_run_id))).state


async def test_prefect_flow_run_cancel_stops_an_in_process_flow(rig, tmp_path):
    """``prefect flow-run cancel`` on a flow this process runs itself (no worker, no runner):
    Prefect alone would only mark it Cancelling; the flow's watcher sees it and stops."""
    spec = hanging_spec(tmp_path)
    flow = asyncio.create_task(
        execute_spec(
            str(spec),
            agent=rig.agent(default="grandchild+hang"),
            repo=str(rig.repo),
            timeout_seconds=600,
            return_state=True,
        )
    )
    try:
        deadline = time.monotonic() + 120
        while not (len(agents_recorded(spec)) >= 2 and len(rig.processes()) >= 6):
            assert not flow.done(), flow
            assert time.monotonic() < deadline, "agents did not start"
            await asyncio.sleep(0.2)
        flow_run_id = await _flow_run_id_from_lock(spec)
        r = await asyncio.to_thread(prefect_cancel, flow_run_id)
        assert r.returncode == 0, r.stdout + r.stderr
        t0 = time.monotonic()
        state = await asyncio.wait_for(flow, 60)
        took = time.monotonic() - t0
    finally:
        if not flow.done():
            flow.cancel()
            await asyncio.gather(flow, return_exceptions=True)
    print(f"prefect flow-run cancel -> in-process flow returned in {took:.1f} s")
    assert took < 20, took
    assert state.is_cancelled(), state
    assert "cancelled from Prefect" in state.message
    result = await state.result(raise_on_failure=False)
    assert result["status"] == "cancelled" and sorted(result["interrupted"]) == ["1", "2"]
    final = await read_state(flow_run_id)
    assert final.is_cancelled(), final
    # the workers' task runs say Cancelled too (Prefect alone would record them Crashed)
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
        )
    workers = {r.name.split(":")[0]: r.state for r in runs if r.name[:1].isdigit()}
    assert sorted(workers) == ["1", "2"], [r.name for r in runs]
    assert all(
        s.is_cancelled() and "the run was cancelled" in s.message for s in workers.values()
    ), workers
    check_stopped(rig, spec)


def test_prefect_flow_run_cancel_stops_specwave_run(rig, tmp_path):
    """The same for ``specwave run`` on a Prefect server: one line, exit 1, flow run
    Cancelled in the API."""
    spec = hanging_spec(tmp_path)
    proc = rig.cli(
        "run",
        str(spec),
        *rig.agent_args(default="grandchild+hang"),
        "--repo",
        str(rig.repo),
        "--timeout",
        "600",
        "--json",
    )
    wait_running(rig, spec, proc)
    flow_run_id = load(spec / ".specwave" / "locks" / "run.lock")["flow_run_id"]
    r = prefect_cancel(flow_run_id)
    assert r.returncode == 0, r.stdout + r.stderr
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=120)
    took = time.monotonic() - t0
    print(f"prefect flow-run cancel -> specwave run exited in {took:.1f} s")
    assert proc.returncode == 1, err
    assert took < EXIT_BOUND_S, took
    lines = [line for line in err.splitlines() if line.startswith("specwave:")]
    assert len(lines) == 1 and "cancelled from Prefect" in lines[0], err
    assert json.loads(out)["status"] == "cancelled"
    final = asyncio.run(read_state(flow_run_id))
    assert final.is_cancelled(), final
    check_stopped(rig, spec)
