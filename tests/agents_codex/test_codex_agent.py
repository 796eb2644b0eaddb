"""The codex agent below the flow, with the real Codex CLI (the pinned npm package) against the
scripted OpenAI Responses server: each scenario's outcome, what the attempt records, the
private CODEX_HOME, secrets, and that a timeout or a cancellation leaves no process behind.

Scenario by scenario (what each test pins):

* write-and-pass / patch-and-pass / bash-test-pass -> the file really written by a shell
  command / by apply_patch, the test command really run; tokens recorded, no cost without a
  price, a cost with one;
* report-fail -> ``fail`` with the worker's blocker; no-json -> ``parse_error``;
* rate-limit-then-pass -> the CLI's own retry after ``retry-after`` succeeds (recorded in
  ``api_retries``);
* rate-limited -> ``crashed``, retryable after the back-off, ``rate_limit`` fact;
* auth-error -> final; the CLI is stopped at its first retry (it would retry 5 times);
* usage-limit -> final, ``usage_limit`` fact whose ``until`` is the reset the server gave;
* hang / shell-hang (a setsid'd sleeper) -> killed at the timeout, nothing left;
* four workers at once; a cancellation kills the CLI and what it started;
* an unreachable endpoint is stopped after network_wait_seconds (the CLI waits forever).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tasks_lib.agents import make_agent
from tasks_lib.results import AgentSignals, Outcome, parse_worker_output
from tests.agents_claude.conftest import tagged_names
from tests.agents_codex.conftest import MODEL, TAG_ENV, request, wait_no_survivors

pytestmark = pytest.mark.slow

KEY = "sk-proj-agenttest-" + uuid.uuid4().hex


@pytest.fixture
def env(monkeypatch, tmp_path, openai_server, codex_cli):
    """The orchestrator's environment for one test: the key, and a private tempfile root
    (so the agent's private folders can be checked for removal)."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    otmp = tmp_path / "otmp"
    otmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(otmp))
    tag = uuid.uuid4().hex
    yield {"tag": tag, "otmp": otmp}
    assert wait_no_survivors(tag, timeout=5) == []
    assert list(otmp.iterdir()) == [], "private CODEX_HOME / TMPDIR not removed"


def config(server, codex: Path, tag: str, **kw):
    return {
        "kind": "codex",
        "executable": str(codex),
        "model": MODEL,
        "base_url": server.base_url + "/v1",
        "env": {TAG_ENV: tag},
        "grace_seconds": 1,
        **kw,
    }


async def run_scenario(tmp_path, server, codex, env, scenario, *, timeout=60, name=None, **kw):
    name = name or scenario.replace("-", "_")
    prompt = f"- **ID**: {name}\nspecwave-scenario: {scenario}\nspecwave-write: out/{name}.txt\n"
    req = request(tmp_path, prompt, timeout=timeout, name=name)
    lines: list[str] = []
    agent = make_agent(config(server, codex, env["tag"], **kw))
    run = await agent.run(req, on_line=lambda stream, line: lines.append(f"{stream}: {line}"))
    parsed = parse_worker_output(
        run.output, exit_code=run.exit_code, timed_out=run.timed_out, signals=run.signals
    )
    return run, parsed, lines, Path(req.workdir)


async def test_work_scenarios_write_patch_and_test(tmp_path, openai_server, codex_cli, env):
    price = {"input": 1.25, "cached_input": 0.125, "output": 10.0}
    results = {}
    for scenario in ("write-and-pass", "patch-and-pass", "bash-test-pass"):
        results[scenario] = await run_scenario(
            tmp_path,
            openai_server,
            codex_cli,
            env,
            scenario,
            **({"price_per_mtok": price} if scenario == "bash-test-pass" else {}),
        )
    for scenario, (run, parsed, lines, _repo) in results.items():
        assert parsed.outcome == Outcome.PASS, (scenario, parsed.reason, lines)
        # the key from OPENAI_API_KEY reached the endpoint (as CODEX_API_KEY: the built-in
        # provider sends nothing for OPENAI_API_KEY alone)
        mine = [r for r in openai_server.requests if r["session_id"] == run.info["thread_id"]]
        assert mine and all(r["has_api_key"] for r in mine)
        assert run.exit_code == 0 and not run.final and run.rate_limit is None
        info = run.info
        assert info["codex_version"] == "0.171.0" and info["thread_id"]
        assert info["sandbox"] == "workspace-write" and info["model"] == MODEL
        assert info["peak_rss_mb"] > 10
        # two model responses of DEFAULT_USAGE each
        assert info["tokens"] == {"input": 2000, "cached": 800, "output": 100, "reasoning": 20}
        assert Path(info["stream_log"]).is_file()
        assert not any(line.startswith("stdout: {") for line in lines), lines

    run, _, lines, repo = results["write-and-pass"]
    assert (repo / "out" / "write_and_pass.txt").read_text() == (
        "specwave codex output for task write_and_pass (scenario write-and-pass)\n"
    )
    assert run.info["commands"][0]["exit_code"] == 0
    assert run.info["total_cost_usd"] is None  # no price configured: no invented cost
    assert any(line.startswith("stdout: command exit 0: ") for line in lines)
    assert any(line.startswith("stdout: reasoning: The task asks for") for line in lines)

    run, parsed, lines, repo = results["patch-and-pass"]
    assert (repo / "out" / "patch_and_pass.txt").read_text() == (
        "patched by the scripted model for task patch_and_pass\nsecond line\n"
    )
    assert run.info["file_changes"][0]["status"] == "completed"
    assert any("patch applied: add " in line for line in lines)
    assert parsed.result is not None and parsed.result.files_created == ["out/patch_and_pass.txt"]

    run, parsed, lines, _ = results["bash-test-pass"]
    assert parsed.result is not None and "ok" in (parsed.result.notes or "")
    assert run.info["total_cost_usd"] == round((1200 * 1.25 + 800 * 0.125 + 100 * 10) / 1e6, 6)
    assert any(line.startswith("stdout: cost $") for line in lines)


async def test_verdicts_fail_and_no_json(tmp_path, openai_server, codex_cli, env):
    _, fail, _, _ = await run_scenario(tmp_path, openai_server, codex_cli, env, "report-fail")
    assert fail.outcome == Outcome.FAIL
    assert fail.reason == "scripted failure: the required API does not exist"
    _, nojson, _, _ = await run_scenario(tmp_path, openai_server, codex_cli, env, "no-json")
    assert nojson.outcome == Outcome.PARSE_ERROR and "no ```json block" in nojson.reason


async def test_rate_limits_auth_and_usage_limit(tmp_path, openai_server, codex_cli, env):
    runs = []
    # 429 with retry-after on the first request: the CLI's own retry succeeds
    run, parsed, lines, _ = await run_scenario(
        tmp_path, openai_server, codex_cli, env, "rate-limit-then-pass"
    )
    assert parsed.outcome == Outcome.PASS, parsed.reason
    assert [(r["retry"], r["status"], r["kind"]) for r in run.info["api_retries"]] == [
        (1, 429, "rate_limit")
    ]
    assert any("API retry 1/5: exceeded retry limit, last status: 429" in line for line in lines)

    # 429 without retry-after: the CLI gives up at once; retryable, with the shared fact
    run, parsed, _, _ = await run_scenario(
        tmp_path, openai_server, codex_cli, env, "rate-limited", retry_backoff_seconds=2
    )
    assert parsed.outcome == Outcome.CRASHED and not run.final
    assert run.rate_limit is not None and run.rate_limit.kind == "rate_limit"
    assert 1.0 <= (run.retry_after_s or 0) <= 3.0
    assert run.info["error_kind"] == "rate_limit" and run.info["api_error_status"] == 429
    runs.append(run)

    # 401: final, and the CLI is stopped at its first retry of it (not after five)
    started = time.monotonic()
    run, parsed, _, _ = await run_scenario(tmp_path, openai_server, codex_cli, env, "auth-error")
    assert time.monotonic() - started < 5
    assert parsed.outcome == Outcome.CRASHED and run.final and run.exit_code == 1
    assert run.info["stopped_by_specwave"] == "authentication"
    assert "authentication failed (HTTP 401) — check OPENAI_API_KEY" in parsed.reason
    runs.append(run)

    # usage limit: final at once, until = the reset the server gave (to the minute: the CLI
    # prints a clock time)
    before = time.time()
    run, parsed, _, _ = await run_scenario(tmp_path, openai_server, codex_cli, env, "usage-limit")
    assert parsed.outcome == Outcome.CRASHED and run.final
    limit = run.rate_limit
    assert limit is not None and limit.kind == "usage_limit" and limit.reset_text
    assert limit.until is not None and abs(limit.until - (before + 3600)) < 120
    assert "usage limit reached (resets" in parsed.reason
    runs.append(run)

    # the key never reached what we keep or print
    for run in runs:
        assert KEY not in json.dumps(run.model_dump(mode="json"))
    assert not any(KEY in json.dumps(r) for r in openai_server.requests)


async def test_commands_the_model_runs_do_not_see_the_key(tmp_path, openai_server, codex_cli, env):
    run, _, _, _ = await run_scenario(tmp_path, openai_server, codex_cli, env, "env-dump")
    assert run.exit_code == 0
    assert "no-key" in run.output and KEY not in run.output
    assert env["tag"] in run.output  # the rest of the environment is there


@pytest.mark.parametrize("scenario", ["hang", "shell-hang"])
async def test_a_hang_is_killed_at_the_timeout_with_its_tree(
    tmp_path, openai_server, codex_cli, env, scenario
):
    started = time.monotonic()
    run, parsed, lines, _ = await run_scenario(
        tmp_path, openai_server, codex_cli, env, scenario, timeout=4
    )
    took = time.monotonic() - started
    assert parsed.outcome == Outcome.TIMEOUT and run.timed_out and run.exit_code is None
    assert 4 <= took < 15
    assert run.killed_pids, "the timeout killed nothing"
    if scenario == "shell-hang":
        assert any("command: " in line and "setsid sleep 3600" in line for line in lines)
    assert wait_no_survivors(env["tag"], timeout=5) == []


async def test_four_workers_run_at_once(tmp_path, openai_server, codex_cli, env):
    async def one(i: int):
        prompt = f"- **ID**: w{i}\nspecwave-scenario: slow-pass\nspecwave-sleep: 1.5\n"
        req = request(tmp_path, prompt, name=f"w{i}")
        t0 = time.time()
        run = await make_agent(config(openai_server, codex_cli, env["tag"])).run(req)
        return t0, time.time(), run, Path(req.workdir)

    results = await asyncio.gather(*(one(i) for i in range(4)))
    assert max(r[0] for r in results) < min(r[1] for r in results), "no overlap"
    for i, (_, _, run, repo) in enumerate(results):
        assert run.exit_code == 0, run.stderr_tail
        assert (repo / f"specwave_codex_w{i}.txt").is_file()
        assert run.info["thread_id"]
    assert len({r[2].info["thread_id"] for r in results}) == 4


async def test_cancelling_the_agent_kills_the_cli_and_its_commands(
    tmp_path, openai_server, codex_cli, env
):
    prompt = "- **ID**: c1\nspecwave-scenario: shell-hang\n"
    req = request(tmp_path, prompt, timeout=120, name="c1")
    lines: list[str] = []
    agent = make_agent(config(openai_server, codex_cli, env["tag"]))
    job = asyncio.ensure_future(agent.run(req, on_line=lambda s, line: lines.append(line)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the shell command's sleepers run
        if tagged_names(env["tag"]).count("sleep") >= 2:
            break
        await asyncio.sleep(0.2)
    else:
        job.cancel()
        raise AssertionError(f"the shell command never started; log: {lines}")
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert wait_no_survivors(env["tag"], timeout=5) == []


async def test_an_unreachable_endpoint_is_stopped_after_network_wait(
    tmp_path, openai_server, codex_cli, env
):
    """The CLI itself would say "Reconnecting... waiting for network" until the timeout
    (what happens when it is pointed at nothing, e.g. through OPENAI_BASE_URL, which it
    ignores). A custom provider: no websocket attempt first."""
    started = time.monotonic()
    run, parsed, _, _ = await run_scenario(
        tmp_path,
        openai_server,
        codex_cli,
        env,
        "write-and-pass",
        timeout=60,
        base_url="http://127.0.0.1:9/v1",
        provider="nowhere",
        api_retries=0,
        network_wait_seconds=1,
        retry_backoff_seconds=1,
    )
    assert time.monotonic() - started < 20
    assert parsed.outcome == Outcome.CRASHED and not run.final and run.retry_after_s
    assert run.info["stopped_by_specwave"] == "network"
    assert "cannot reach http://127.0.0.1:9/v1" in parsed.reason


async def test_a_custom_provider_and_an_unknown_model_still_pass(
    tmp_path, openai_server, codex_cli, env
):
    run, parsed, lines, _ = await run_scenario(
        tmp_path,
        openai_server,
        codex_cli,
        env,
        "write-and-pass",
        name="custom_provider",
        provider="scripted",
        api_key_env="OPENAI_API_KEY",
        model="scripted-model-x",
    )
    assert parsed.outcome == Outcome.PASS, (parsed.reason, lines)
    assert run.info["provider"] == "scripted"
    # the CLI's "Model metadata ... not found" is a warning, not a failure
    assert any("Model metadata for `scripted-model-x` not found" in w for w in run.info["warnings"])
    assert run.signals == AgentSignals()
    # a custom provider makes no websocket attempt
    mine = [r for r in openai_server.requests if r["session_id"] == run.info["thread_id"]]
    assert [r["method"] for r in mine] == ["POST", "POST"]
    assert all(r["has_api_key"] for r in mine)  # env_key = OPENAI_API_KEY


async def test_full_access_is_warned_about(tmp_path, openai_server, codex_cli, env):
    run, parsed, lines, _ = await run_scenario(
        tmp_path, openai_server, codex_cli, env, "write-and-pass", sandbox="danger-full-access"
    )
    assert parsed.outcome == Outcome.PASS
    assert run.info["sandbox"] == "danger-full-access"
    assert any(
        line.startswith(
            "stderr: specwave: warning: the codex agent runs with sandbox danger-full-access"
        )
        for line in lines
    )
