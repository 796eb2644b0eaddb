"""``specwave run --agent claude`` end to end: a subprocess, the real Claude Code CLI bundled in
the claude-agent-sdk wheel, the scripted model on 127.0.0.1 (ANTHROPIC_BASE_URL), the session's
Prefect API. Each task's description picks its scenario (``specwave-scenario: NAME``).

What each test pins, per scenario:

* write-and-pass / bash-test-pass / overloaded-then-pass -> ``pass`` with cost, turns, usage and
  session id recorded, the file really written / the command really run, the 529 retried by
  the CLI itself (recorded in ``info.api_retries``);
* report-fail -> ``fail`` with the worker's blocker, not retried;
* no-json -> ``parse_error``, retried once;
* denied-pass -> a claimed pass with a permission denial is ``fail``;
* auth-error -> ``crashed``, final (one attempt), a message naming the key;
* hang (API stream and a Bash command with a setsid'd child) -> killed at the timeout, retried
  once with double the timeout, then ``timeout``; nothing survives in the process table;
* four slow workers of one wave run at the same time.

And across all: the API key is in no log, artifact, run record or tasks.json; HOME gets no
``.claude*``; the per-worker config/tmp dirs are gone afterwards.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.agents_claude.conftest import attempts, task, wait_no_survivors, write_spec

pytestmark = pytest.mark.slow


async def flow_logs(flow_run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)])),
            limit=200,
        )
        out = [entry.message for entry in logs]
        offset = len(logs)
        while len(logs) == 200:
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)])),
                limit=200,
                offset=offset,
            )
            out += [entry.message for entry in logs]
            offset += len(logs)
        return out


async def flow_artifacts(flow_run_id: str) -> dict[str, Any]:
    """Latest artifact per key of one flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.client.schemas.sorting import ArtifactSort

    async with get_client() as client:
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])
            ),
            sort=ArtifactSort.CREATED_DESC,
        )
    out: dict[str, Any] = {}
    for a in arts:
        out.setdefault(a.key, a)
    return out


def every_file_text(*roots: Path) -> dict[Path, bytes]:
    out = {}
    for root in roots:
        for p in root.rglob("*"):
            if p.is_file():
                out[p] = p.read_bytes()
    return out


MIXED = [
    task("1", "write-and-pass", write="src/made_by_claude.py"),
    task(
        "2",
        "bash-test-pass",
        test_command="python -c \"open('bash_ran.txt','w').write('ok'); print('3 passed')\"",
    ),
    task("3", "report-fail"),
    task("4", "no-json"),
    task("5", "denied-pass"),
    task("6", "overloaded-then-pass"),
    task("7", "auth-error"),
]


async def test_scenarios_through_specwave_run(tmp_path, specwave_run):
    spec = write_spec(tmp_path / "spec", MIXED)
    home = tmp_path / "home"
    home.mkdir()
    tmpdir = tmp_path / "orchestrator-tmp"
    tmpdir.mkdir()
    specwave_run.env.update({"HOME": str(home), "TMPDIR": str(tmpdir)})
    code, result, err = specwave_run(
        spec, "--timeout", "120", "-j", "4", "--max-turns", "6", "--max-budget-usd", "5"
    )
    assert result is not None, err[-3000:]
    assert code == 1, err[-3000:]
    run_id = result["run_id"]
    tasks = result["tasks"]
    assert {t: (v["status"], v["outcome"], v["attempts"]) for t, v in tasks.items()} == {
        "1": ("pass", "pass", 1),
        "2": ("pass", "pass", 1),
        "3": ("fail", "fail", 1),  # the worker's own verdict: final
        "4": ("fail", "parse_error", 2),  # no json block: retried once
        "5": ("fail", "fail", 1),  # claimed pass + permission denial
        "6": ("pass", "pass", 1),  # 529 retried by the CLI, then pass
        "7": ("fail", "crashed", 1),  # authentication: final, not retried
    }
    assert tasks["3"]["blocker"] == "scripted failure: the required API does not exist"
    assert tasks["5"]["blocker"] == "claimed pass but permission denied for Write"
    assert "authentication failed (HTTP 401)" in tasks["7"]["blocker"]
    assert "ANTHROPIC_API_KEY" in tasks["7"]["blocker"]
    assert "no ```json block" in tasks["4"]["blocker"]

    # The work really happened in the repository (and the denied write did not).
    repo = specwave_run.repo
    assert (
        (repo / "src" / "made_by_claude.py")
        .read_text()
        .startswith("specwave demo output for task 1")
    )
    assert (repo / "bash_ran.txt").read_text() == "ok"
    assert not (repo / ".git" / "specwave_denied_5").exists()

    # Attempt records: everything the result line said.
    recs = {tid: attempts(spec, run_id, tid) for tid in tasks}
    for tid in ("1", "2", "6"):
        info = recs[tid][0]["info"]
        assert info["is_error"] is False and info["subtype"] == "success"
        assert info["num_turns"] == 2
        assert info["total_cost_usd"] > 0
        assert info["usage"]["input_tokens"] > 0 and info["usage"]["output_tokens"] > 0
        assert UUID(info["session_id"])
        assert info["permission_mode"] == "acceptEdits"
        assert info["permission_denials"] == []
        assert info["claude_code_version"]
        assert info["peak_rss_mb"] and info["peak_rss_mb"] > 1
        assert Path(info["stream_log"]).is_file()
    assert [(r["error_status"], r["error"]) for r in recs["6"][0]["info"]["api_retries"]] == [
        (529, "overloaded")
    ]
    assert recs["2"][0]["result"]["test_results"] == {"ran": 1, "passed": 1, "failed": 0}
    assert "3 passed" in recs["2"][0]["result"]["notes"]
    denial = recs["5"][0]["info"]["permission_denials"]
    assert [d["tool_name"] for d in denial] == ["Write"]
    assert recs["5"][0]["result"]["status"] == "pass"  # the claim, kept but not trusted
    auth = recs["7"][0]
    assert auth["final"] is True and auth["info"]["api_error_status"] == 401
    assert auth["retry_after_s"] is None
    assert [r["outcome"] for r in recs["4"]] == ["parse_error", "parse_error"]

    # The task-run log lines are compact summaries, not raw stream-json.
    logs = await flow_logs(run_id)
    assert any("[1] tool Write: " in m and "made_by_claude.py" in m for m in logs)
    assert any("[2] tool Bash: python -c" in m for m in logs)
    assert any("[6] API retry 1/2" in m and "HTTP 529 overloaded" in m for m in logs)
    assert any("[1] result: success is_error=False turns=2 cost=$" in m for m in logs)
    assert not any('{"type":' in m for m in logs), "raw stream-json reached the task-run log"
    log_file = Path(recs["1"][0]["log_path"]).read_text()
    assert "tool Write:" in log_file and '{"type":' not in log_file

    # UI: cost and turns in the task table, the total cost in the summary.
    arts = await flow_artifacts(run_id)
    table_key = next(k for k in arts if k.endswith("-tasks"))
    rows = {r["id"]: r for r in json.loads(arts[table_key].data)}
    assert rows["1"]["cost_usd"] > 0 and rows["1"]["turns"] == 2
    assert rows["6"]["cost_usd"] > 0 and rows["6"]["turns"] == 2
    summary = arts[next(k for k in arts if k.endswith("-summary"))].data
    total = sum(
        (r[0]["info"].get("total_cost_usd") or 0)
        + sum((a["info"].get("total_cost_usd") or 0) for a in r[1:])
        for r in recs.values()
    )
    assert f"| total_cost_usd | {total:.4f} |" in summary

    # The API key: nowhere we write, nowhere in Prefect.
    key = specwave_run.api_key.encode()
    for path, data in every_file_text(spec, repo).items():
        assert key not in data, f"API key written to {path}"
    assert not any(specwave_run.api_key in m for m in logs)
    for a in arts.values():
        assert specwave_run.api_key not in json.dumps(a.data, default=str)

    # Isolation: HOME untouched, private config/tmp dirs removed afterwards.
    assert list(home.iterdir()) == []
    assert [p.name for p in tmpdir.iterdir() if p.name.startswith("specwave-claude-")] == []

    assert wait_no_survivors(specwave_run.tag) == []


@pytest.mark.parametrize("scenario", ["hang", "bash-hang"])
async def test_hang_is_killed_retried_with_double_timeout_then_timeout(
    tmp_path, specwave_run, scenario
):
    spec = write_spec(tmp_path / "spec", [task("h", scenario)])
    started = time.monotonic()
    code, result, err = specwave_run(
        spec, "--timeout", "6", "--agent-json", json.dumps({"kind": "claude", "grace_seconds": 2})
    )
    wall = time.monotonic() - started
    assert result is not None, err[-3000:]
    assert code == 1
    assert result["tasks"]["h"]["outcome"] == "timeout"
    assert result["tasks"]["h"]["attempts"] == 2
    assert result["tasks"]["h"]["blocker"] == "timeout after 2 attempts (6.0 s, 12 s)"
    recs = attempts(spec, result["run_id"], "h")
    assert [r["timeout_seconds"] for r in recs] == [6.0, 12.0]
    for r in recs:
        assert r["outcome"] == "timeout"
        assert r["duration_s"] >= r["timeout_seconds"]
        assert r["duration_s"] < r["timeout_seconds"] + 15
        assert r["killed_pids"], "the timeout killed nothing"
    assert wall >= 18
    # The process table: nothing the agent (or its Bash tool's setsid'd child) started is left.
    assert wait_no_survivors(specwave_run.tag, timeout=5) == []


async def test_four_workers_of_one_wave_run_at_once(tmp_path, specwave_run, model_server):
    sleep = 4.0
    spec = write_spec(
        tmp_path / "spec", [task(f"w{i}", "slow-pass", sleep=str(sleep)) for i in range(4)]
    )
    code, result, err = specwave_run(spec, "-j", "4", "--timeout", "120")
    assert result is not None, err[-3000:]
    assert code == 0, err[-3000:]
    assert all(v["status"] == "pass" for v in result["tasks"].values())
    m = result["metrics"]
    assert m["max_concurrent_observed"] == 4
    recs = [attempts(spec, result["run_id"], f"w{i}")[0] for i in range(4)]
    latest_start = max(r["started"] for r in recs)
    earliest_end = min(r["ended"] for r in recs)
    assert latest_start < earliest_end, "the four workers did not overlap"
    assert m["wall_seconds"] < 4 * sleep
    firsts = [
        r
        for r in model_server.requests
        if r["scenario"] == "slow-pass"
        and r["turn"] == 0
        and r["status"] == 200
        and r["task_id"] in {"w0", "w1", "w2", "w3"}
    ]
    assert len(firsts) >= 4
    for i in range(4):
        assert (specwave_run.repo / f"specwave_demo_w{i}.txt").is_file()
    assert wait_no_survivors(specwave_run.tag) == []
