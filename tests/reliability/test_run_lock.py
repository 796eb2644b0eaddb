"""Item 6: two runs on one spec. The second refuses at once, in one line naming the holder
(pid, host, start time); a stale lock (its holder died) is detected and taken over safely, and
the dead run is reported as dead. (The in-process refusal while a flow runs is
tests/test_execute_spec.py's; here: the CLI, the simultaneous start, the stale lock.)"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime

from flows.execute_spec import execute_spec
from tests.reliability.conftest import (
    ROOT,
    TAG_ENV,
    agents_recorded,
    load,
    statuses,
    wait_for,
)

EXAMPLE = ROOT / "examples" / "small-feature"


def test_a_second_specwave_run_refuses_at_once_naming_the_holder(rig, tmp_path):
    spec = tmp_path / "spec"
    shutil.copytree(EXAMPLE, spec)
    first = rig.cli(
        "run",
        str(spec),
        *rig.agent_args(default="hang"),
        "--repo",
        str(rig.repo),
        "--timeout",
        "600",
        "--json",
    )
    wait_for(lambda: len(agents_recorded(spec)) >= 2, 120, "the first run's agents")
    holder = load(spec / ".specwave" / "locks" / "run.lock")
    before = (spec / "tasks.json").read_bytes()
    t0 = time.monotonic()
    second = rig.cli("run", str(spec), *rig.agent_args(), "--repo", str(rig.repo))
    out, err = second.communicate(timeout=120)
    took = time.monotonic() - t0
    assert second.returncode == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    started = holder["started_at"]
    assert (
        f"is already being run by pid {first.pid} on {socket.gethostname()} since "
        f"{started} (flow run {holder['flow_run_id']})"
    ) in lines[0]
    assert "wait for that run to finish, or cancel it" in lines[0]
    assert took < 15, f"refusing took {took:.1f} s (it must not start Prefect)"
    # nothing of the first run was touched: still running, same file
    assert first.poll() is None
    assert (spec / "tasks.json").read_bytes() == before
    assert len(list((spec / ".specwave" / "runs").iterdir())) == 1
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    assert first.returncode == 143
    assert statuses(spec) == {"1": "pending", "2": "pending", "3": "pending"}


async def test_two_runs_started_together_one_runs_one_is_refused(rig, tmp_path):
    spec = tmp_path / "spec"
    shutil.copytree(EXAMPLE, spec)
    # agents of 4 s: the first run still holds the lock when the second asks for it, even
    # when a loaded machine delays one flow's start (validate, plan) by seconds
    states = await asyncio.gather(
        *[
            execute_spec(
                str(spec), agent=rig.agent(default="sleep:4"), repo=str(rig.repo), return_state=True
            )
            for _ in range(2)
        ]
    )
    done = [s for s in states if s.is_completed()]
    refused = [s for s in states if s.is_failed()]
    assert len(done) == 1 and len(refused) == 1, states
    assert "is already being run by pid" in refused[0].message
    assert rig.launched() == {"1": [1], "2": [1], "3": [1]}  # each task exactly once
    assert statuses(spec) == {"1": "pass", "2": "pass", "3": "pass"}


async def test_a_stale_lock_is_taken_over_and_the_dead_run_reported(rig, tmp_path, caplog):
    """A lock whose holder died (the kernel dropped its flock; the file still says active):
    the next run takes it at once, says whose it was, marks the dead run ``died`` and its
    flow run Crashed, and kills an agent of the dead run that was never recorded in its
    agents.jsonl (the orchestrator died between spawning it and recording it): every agent
    carries its run's marker, written to the run folder before the first spawn."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Running

    spec = tmp_path / "spec"
    shutil.copytree(EXAMPLE, spec)
    # a real flow run that "died": Running in the API, a run folder saying running
    async with get_client() as client:
        fr = await client.create_flow_run(
            flow=execute_spec,
            name="dead-run",
            parameters={"spec_folder": str(spec)},
            state=Running(),
        )
    dead_id = str(fr.id)
    run_dir = spec / ".specwave" / "runs" / dead_id
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"status": "running", "run_id": dead_id}))
    (run_dir / "agent-marker").write_text("run-deadbeef\n")
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        env={**os.environ, TAG_ENV: rig.tag, "SPECWAVE_AGENT_MARKER": "run-deadbeef,agent-1"},
        start_new_session=True,
    )
    (spec / ".specwave" / "locks").mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    (spec / ".specwave" / "locks" / "run.lock").write_text(
        json.dumps(
            {
                "pid": 999_999_999,
                "host": "gone-host",
                "started_at": started,
                "flow_run_id": dead_id,
                "active": True,
            }
        )
    )
    caplog.clear()
    state = await execute_spec(str(spec), agent=rig.agent(), repo=str(rig.repo), return_state=True)
    assert state.is_completed(), state
    assert (
        f"took over the run lock of pid 999999999 on gone-host (started {started}): "
        "that run died without releasing it"
    ) in caplog.text
    assert load(run_dir / "run.json")["status"] == "died"
    async with get_client() as client:
        after = await client.read_flow_run(UUID(dead_id))
    assert after.state.is_crashed(), after.state
    assert "died" in after.state.message
    assert load(spec / ".specwave" / "locks" / "run.lock")["active"] is False
    assert orphan.wait(10) == -signal.SIGTERM  # reaped by the marker alone
    assert "killed 1 unrecorded agent processes left by an earlier run" in caplog.text
    assert (run_dir / "agent-marker.reaped").exists()


async def test_a_run_killed_after_its_last_write_is_completed_in_prefect(rig, tmp_path):
    """Killed between its final records (run.json ``success``, lock released) and Prefect
    recording the end: the flow run would stay Running forever. The next run sees the dead
    pid on this host and records the end run.json states (regression: kill -9 trials 14 and
    15 of the first 30-trial benchmark)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Running

    spec = tmp_path / "spec"
    shutil.copytree(EXAMPLE, spec)
    async with get_client() as client:
        fr = await client.create_flow_run(
            flow=execute_spec,
            name="killed-at-exit",
            parameters={"spec_folder": str(spec)},
            state=Running(),
        )
    dead_id = str(fr.id)
    run_dir = spec / ".specwave" / "runs" / dead_id
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"status": "success", "run_id": dead_id}))
    (spec / ".specwave" / "locks").mkdir(parents=True, exist_ok=True)
    (spec / ".specwave" / "locks" / "run.lock").write_text(
        json.dumps(
            {
                "pid": 999_999_999,
                "host": socket.gethostname(),
                "started_at": "2030-01-01T00:00:00Z",
                "flow_run_id": dead_id,
                "active": False,
            }
        )
    )
    state = await execute_spec(str(spec), agent=rig.agent(), repo=str(rig.repo), return_state=True)
    assert state.is_completed()
    async with get_client() as client:
        after = await client.read_flow_run(UUID(dead_id))
    assert after.state.is_completed(), after.state
    assert "died before Prefect recorded it" in after.state.message
    assert load(run_dir / "run.json")["status"] == "success"  # its own record stands
