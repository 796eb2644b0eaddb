"""``specwave run --agent codex`` end to end: a subprocess, the real Codex CLI (pinned npm
package), the scripted OpenAI Responses server on 127.0.0.1 (reached through
OPENAI_BASE_URL, which specwave hands to the CLI as ``openai_base_url``), the session's
Prefect API. Each task's description picks its scenario (``specwave-scenario: NAME``).

What each test pins:

* a mixed spec, four workers at once: write-and-pass / patch-and-pass / rate-limit-then-pass
  -> ``pass`` with tokens recorded and shown (table artifact, summary, final table); the
  files really written; report-fail -> ``fail``, not retried; no-json -> ``parse_error``,
  retried once; auth-error -> ``crashed``, final, one attempt; usage-limit -> ``crashed``,
  final, with the ``usage_limit`` fact in the attempt record; compact log lines; the key in
  no log, artifact, record or tasks.json; HOME gets no ``.codex``; private dirs removed;
* a hang -> killed at the timeout, retried once with double the timeout, then ``timeout``;
  nothing survives in the process table;
* a missing Codex CLI -> exit 2 with one line saying how to install it, nothing started.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tasks_lib.agents.codex import CODEX_VERSION
from tests.agents_claude.conftest import attempts, task, write_spec
from tests.agents_claude.test_specwave_run_claude import (
    every_file_text,
    flow_artifacts,
    flow_logs,
)
from tests.agents_codex.conftest import wait_no_survivors

pytestmark = pytest.mark.slow

MIXED = [
    task("1", "write-and-pass", write="src/made_by_codex.txt"),
    task("2", "patch-and-pass", write="docs/patched.md"),
    task("3", "report-fail"),
    task("4", "no-json"),
    task("5", "rate-limit-then-pass"),
    task("6", "auth-error"),
    task("7", "usage-limit"),
]


async def test_scenarios_through_specwave_run(tmp_path, specwave_run):
    spec = write_spec(tmp_path / "spec", MIXED, name="codex-scenarios")
    home = tmp_path / "home"
    home.mkdir()
    tmpdir = tmp_path / "orchestrator-tmp"
    tmpdir.mkdir()
    specwave_run.env.update({"HOME": str(home), "TMPDIR": str(tmpdir)})
    before = time.time()
    code, result, err = specwave_run(
        spec,
        "--timeout",
        "120",
        "-j",
        "4",
        "--reasoning-effort",
        "low",
        "--isolation",
        "shared",
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
        "5": ("pass", "pass", 1),  # 429 + retry-after: the CLI retried by itself
        "6": ("fail", "crashed", 1),  # authentication: final, not retried
        "7": ("fail", "crashed", 1),  # usage limit: final, with the reset time
    }
    assert tasks["3"]["blocker"] == "scripted failure: the required API does not exist"
    assert "authentication failed (HTTP 401) — check OPENAI_API_KEY" in tasks["6"]["blocker"]
    assert "usage limit reached (resets" in tasks["7"]["blocker"]
    assert result["metrics"]["max_concurrent_observed"] == 4

    # The work really happened in the repository.
    repo = specwave_run.repo
    assert (
        (repo / "src" / "made_by_codex.txt")
        .read_text()
        .startswith("specwave codex output for task 1")
    )
    assert (repo / "docs" / "patched.md").read_text().startswith("patched by the scripted")

    # Attempt records: tokens, the thread, the version, the limits.
    recs = {tid: attempts(spec, run_id, tid) for tid in tasks}
    for tid in ("1", "2", "5"):
        info = recs[tid][0]["info"]
        assert info["tokens"] == {"input": 2000, "cached": 800, "output": 100, "reasoning": 20}
        assert info["total_cost_usd"] is None and info["codex_version"] == "0.171.0"
        assert info["thread_id"] and info["peak_rss_mb"] > 10
        assert info["model"] == "gpt-5.5" and info["sandbox"] == "workspace-write"
        assert Path(info["stream_log"]).is_file()
    assert [(r["retry"], r["status"]) for r in recs["5"][0]["info"]["api_retries"]] == [(1, 429)]
    auth = recs["6"][0]
    assert auth["final"] is True and auth["info"]["stopped_by_specwave"] == "authentication"
    usage = recs["7"][0]
    assert usage["final"] is True and usage["rate_limit"]["kind"] == "usage_limit"
    assert abs(usage["rate_limit"]["until"] - (before + 3600)) < 180
    assert "rate_limit" not in recs["1"][0]  # only when there is one
    # the request really asked for the effort given as a flag
    bodies = [r for r in specwave_run.server.requests if r.get("task_id") == "1"]
    assert bodies and all((r["model"], r["reasoning_effort"]) == ("gpt-5.5", "low") for r in bodies)

    # The task-run log lines are compact summaries, not raw JSON events.
    logs = await flow_logs(run_id)
    assert any("[1] command exit 0: " in m and "made_by_codex.txt" in m for m in logs)
    assert any("[2] patch applied: add " in m and "patched.md" in m for m in logs)
    assert any("[5] API retry 1/5: exceeded retry limit, last status: 429" in m for m in logs)
    assert any("[1] turn completed: tokens in 2,000 (cached 800)" in m for m in logs)
    assert not any('{"type":' in m for m in logs), "raw JSON events reached the task-run log"

    # UI: tokens in the task table and the summary; no cost column values without a price.
    arts = await flow_artifacts(run_id)
    rows = {
        r["id"]: r for r in json.loads(arts[next(k for k in arts if k.endswith("-tasks"))].data)
    }
    assert (rows["1"]["tokens_in"], rows["1"]["tokens_out"]) == (2000, 100)
    assert rows["1"]["cost_usd"] is None
    assert rows["4"]["tokens_in"] == 2000  # two attempts of one response each
    summary = arts[next(k for k in arts if k.endswith("-summary"))].data
    assert "| tokens | in 9,000 (cached 3,600), out 450 (reasoning 90) |" in summary
    assert "total_cost_usd" not in summary

    # The key: nowhere we write, nowhere in Prefect.
    key = specwave_run.api_key
    for path, data in every_file_text(spec, repo).items():
        assert key.encode() not in data, f"API key written to {path}"
    assert not any(key in m for m in logs)
    for a in arts.values():
        assert key not in json.dumps(a.data, default=str)

    # Isolation: HOME untouched (no ~/.codex), private CODEX_HOME / TMPDIR removed.
    assert list(home.iterdir()) == []
    assert [p.name for p in tmpdir.iterdir() if p.name.startswith("specwave-codex-")] == []
    assert wait_no_survivors(specwave_run.tag) == []


async def test_hang_is_killed_retried_with_double_timeout_then_timeout(tmp_path, specwave_run):
    spec = write_spec(tmp_path / "spec", [task("h", "hang")], name="codex-hang")
    started = time.monotonic()
    code, result, err = specwave_run(
        spec,
        "--timeout",
        "3",
        "--isolation",
        "shared",
        "--agent-json",
        json.dumps({"kind": "codex", "grace_seconds": 1}),
    )
    wall = time.monotonic() - started
    assert result is not None, err[-3000:]
    assert code == 1
    h = result["tasks"]["h"]
    assert (h["outcome"], h["attempts"]) == ("timeout", 2)
    assert h["blocker"] == "timeout after 2 attempts (3.0 s, 6.0 s)"
    recs = attempts(spec, result["run_id"], "h")
    assert [r["timeout_seconds"] for r in recs] == [3.0, 6.0]
    for r in recs:
        assert r["outcome"] == "timeout"
        assert r["timeout_seconds"] <= r["duration_s"] < r["timeout_seconds"] + 10
        assert r["killed_pids"], "the timeout killed nothing"
    assert wall >= 9
    assert wait_no_survivors(specwave_run.tag, timeout=5) == []


def test_a_missing_codex_cli_is_one_line_and_exit_2(tmp_path, specwave_run):
    spec = write_spec(tmp_path / "spec", [task("1", "write-and-pass")], name="codex-missing")
    specwave_run.env["PATH"] = "/usr/bin:/bin"  # no codex on it
    specwave_run.env["XDG_CACHE_HOME"] = str(tmp_path / "empty-cache")  # none in the cache
    before = (spec / "tasks.json").read_text()
    code, result, err = specwave_run(spec)
    assert code == 2 and result is None
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("--agent codex: Codex CLI not found")
    hint = f"npm install --prefix {tmp_path}/empty-cache/specwave/codex-{CODEX_VERSION} "
    assert hint in lines[0] and "Traceback" not in err
    assert (spec / "tasks.json").read_text() == before
    assert not (spec / ".specwave").exists()
