"""The shared rate limit: a Prefect global concurrency limit that every agent launch occupies,
so several flow runs together never run more agents than its slots."""

from __future__ import annotations

import asyncio

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

from flows.execute_spec import execute_spec
from tests.deployments.conftest import fake_agent, max_overlap, read_trace


async def _create_limit(name: str, slots: int) -> None:
    async with get_client() as client:
        await client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=slots)
        )


async def _delete_limit(name: str) -> None:
    async with get_client() as client:
        await client.delete_global_concurrency_limit_by_name(name)


async def test_two_flow_runs_share_one_limit(spec_copy, tmp_path, unique):
    # Each run alone would start 2 agents at once (wave 1 of small-feature has tasks 1 and 2,
    # max_concurrency 3): 4 agents want to run together, the limit lets 2 through.
    name = unique("specwave-agents")
    await _create_limit(name, 2)
    trace = tmp_path / "trace.jsonl"
    a, b = spec_copy("small-feature", "a"), spec_copy("small-feature", "b")
    repo = tmp_path / "repo"
    repo.mkdir()
    try:
        states = await asyncio.gather(
            *[
                execute_spec(
                    spec_folder=str(s),
                    agent=fake_agent(trace, sleep=1.5),
                    repo=str(repo),
                    max_concurrency=3,
                    concurrency_limit=name,
                    return_state=True,
                )
                for s in (a, b)
            ]
        )
        async with get_client() as client:
            limit = await client.read_global_concurrency_limit_by_name(name)
        assert limit.active_slots == 0  # every slot was given back
    finally:
        await _delete_limit(name)
    for st in states:
        assert st.is_completed(), st.message
        assert (await st.result())["status"] == "success"
    runs = read_trace(trace)
    assert len(runs) == 6  # 3 tasks x 2 runs, one attempt each
    overlap = max_overlap([(r["start"], r["end"]) for r in runs])
    assert overlap == 2, runs  # never more than the limit, and the limit was actually used


async def test_missing_limit_fails_the_run_with_a_hint(spec_copy, tmp_path, unique):
    name = unique("no-such-limit")
    trace = tmp_path / "trace.jsonl"
    state = await execute_spec(
        spec_folder=str(spec_copy("small-feature")),
        agent=fake_agent(trace),
        repo=str(tmp_path),
        concurrency_limit=name,
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(Exception) as err:
        await state.result()
    assert f'global concurrency limit "{name}" does not exist' in str(err.value)
    assert "prefect gcl create" in str(err.value)
    assert read_trace(trace) == []  # no agent was launched


async def test_run_cli_flag_occupies_the_named_limit(spec_copy, tmp_path, unique):
    """``specwave run --concurrency-limit NAME``: with one slot, the two tasks of wave 1 run one
    after the other although the run itself allows two."""
    import json
    import os
    import shlex
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    name = unique("specwave-agents")
    await _create_limit(name, 1)
    trace = tmp_path / "trace.jsonl"
    command = shlex.join(fake_agent(trace, sleep=0.5)["command"])
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    try:
        proc = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-c",
                "from flows.cli import main; main()",
                "run",
                str(spec_copy("small-feature")),
                "--command",
                command,
                "--repo",
                str(tmp_path),
                "-j",
                "2",
                "--concurrency-limit",
                name,
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        await _delete_limit(name)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "success"
    runs = read_trace(trace)
    assert len(runs) == 3
    assert max_overlap([(r["start"], r["end"]) for r in runs]) == 1
