"""The claude agent below the flow: the command line and environment it builds (with a fake
CLI that dumps what it got), how it reads stream-json, how it classifies API errors, and —
with the real bundled CLI against the scripted model — that a cancellation leaves no process
and no private directory behind."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tasks_lib.agents import make_agent, parse_agent_config
from tasks_lib.agents.base import AgentRequest
from tasks_lib.agents.claude import (
    DEFAULT_ALLOWED_TOOLS,
    SPEC_SETTINGS_FILE,
    ClaudeAgent,
    ClaudeAgentConfig,
    ClaudeSpecSettings,
    StreamSummary,
    build_argv,
    effective_settings,
    summarize_event,
)
from tasks_lib.agents.process import AgentLaunchError
from tasks_lib.results import Outcome, parse_worker_output
from tests.agents_claude.conftest import TAG_ENV, tagged_names, wait_no_survivors

FAKE = Path(__file__).with_name("fake_claude.py")


def request(
    tmp_path: Path, prompt: str = "- **ID**: 1\ndo it", *, timeout: float = 60, attempt: int = 1
) -> AgentRequest:
    repo = tmp_path / "repo"
    spec = tmp_path / "spec"
    repo.mkdir(exist_ok=True)
    spec.mkdir(exist_ok=True)
    return AgentRequest(
        task_id="1",
        prompt=prompt,
        prompt_file=str(spec / "prompt.md"),
        workdir=str(repo),
        spec_dir=str(spec),
        timeout_seconds=timeout,
        attempt=attempt,
        log_path=str(tmp_path / "run" / "attempt-1.log"),
    )


@pytest.fixture
def fake_cli(tmp_path):
    """The agent config + where the fake CLI dumps its argv/env/stdin."""
    dump = tmp_path / "dump.json"
    # This interpreter, whatever `python3` on PATH is.
    exe = tmp_path / "fake-claude"
    exe.write_text(f"#!{sys.executable}\n" + FAKE.read_text())
    exe.chmod(0o755)

    def config(**kw: Any) -> dict[str, Any]:
        env = {"FAKE_CLAUDE_DUMP": str(dump), **kw.pop("env", {})}
        return {"kind": "claude", "executable": str(exe), "env": env, **kw}

    def dumped() -> dict[str, Any]:
        return json.loads(dump.read_text())

    return SimpleNamespace(config=config, dumped=dumped, dump=dump)


# --------------------------------------------------------------------------- config and argv


def test_config_is_a_registered_kind_with_unset_defaults():
    cfg = parse_agent_config({"kind": "claude"})
    assert isinstance(cfg, ClaudeAgentConfig)
    assert isinstance(make_agent(cfg), ClaudeAgent)
    assert cfg.permission_mode is None and cfg.allowed_tools is None  # resolved at run time
    with pytest.raises(ValueError, match="permission_mode"):
        parse_agent_config({"kind": "claude", "permission_mode": "yolo"})
    with pytest.raises(ValueError, match="max_turns"):
        parse_agent_config({"kind": "claude", "max_turns": 0})


def test_default_argv_accepts_edits_allows_no_write_and_keeps_the_prompt_off_argv():
    eff = effective_settings(ClaudeAgentConfig(), ClaudeSpecSettings())
    argv = build_argv("/x/claude", eff)
    assert argv[:5] == ["/x/claude", "-p", "--output-format", "stream-json", "--verbose"]
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    tools = argv[argv.index("--allowedTools") + 1].split(",")
    assert tools == list(DEFAULT_ALLOWED_TOOLS)
    assert "Write" not in tools and "Edit" not in tools  # acceptEdits confines them to cwd
    assert "--no-session-persistence" in argv
    assert "--model" not in argv and "--max-turns" not in argv and "--" not in argv


def test_run_config_wins_over_the_spec_file_which_wins_over_defaults():
    spec = ClaudeSpecSettings(
        model="opus",
        max_turns=30,
        max_budget_usd=4,
        api_retries=5,
        extra_args=["--effort", "high"],
        env={"A": "spec", "B": "spec"},
        allowed_tools=["Read"],
    )
    cfg = ClaudeAgentConfig(model="sonnet", env={"B": "run"}, extra_args=["--verbose"])
    eff = effective_settings(cfg, spec)
    assert eff.model == "sonnet" and eff.max_turns == 30 and eff.max_budget_usd == 4
    assert eff.api_retries == 5 and eff.allowed_tools == ["Read"]
    assert eff.env == {"A": "spec", "B": "run"}
    assert eff.extra_args == ["--effort", "high", "--verbose"]
    argv = build_argv("claude", eff)
    assert argv[argv.index("--model") + 1] == "sonnet"
    assert argv[argv.index("--max-turns") + 1] == "30"
    assert argv[argv.index("--max-budget-usd") + 1] == "4"
    assert argv[-3:] == ["--effort", "high", "--verbose"]


# --------------------------------------------------------------------------- with a fake CLI


async def test_fake_cli_gets_private_dirs_bounded_retries_stdin_prompt_and_no_stray_env(
    tmp_path, fake_cli, monkeypatch
):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-unit-" + uuid.uuid4().hex)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SOME_ORCHESTRATOR_SETTING", "private")
    (tmp_path / "orchestrator-tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "orchestrator-tmp"))
    req = request(tmp_path, "- **ID**: 1\nthe prompt")
    lines: list[tuple[str, str]] = []
    run = await make_agent(fake_cli.config(model="haiku", max_turns=3)).run(
        req, on_line=lambda s, line: lines.append((s, line))
    )
    got = fake_cli.dumped()
    env = got["env"]
    assert got["stdin"] == "- **ID**: 1\nthe prompt"
    assert "- **ID**: 1\nthe prompt" not in got["argv"]
    assert got["cwd"] == req.workdir
    assert got["argv"][got["argv"].index("--model") + 1] == "haiku"
    # private, per-run dirs (removed afterwards), bounded CLI retries, quiet CLI
    cfg_dir, tmp = Path(env["CLAUDE_CONFIG_DIR"]), Path(env["TMPDIR"])
    assert cfg_dir.parent == tmp.parent and cfg_dir.parent.name.startswith("specwave-claude-1-")
    assert cfg_dir.parent.parent == tmp_path / "orchestrator-tmp"
    assert not cfg_dir.parent.exists()
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "2"
    assert env["DISABLE_AUTOUPDATER"] == "1"
    # provider variables pass through; other orchestrator variables do not
    assert env["ANTHROPIC_API_KEY"] == os.environ["ANTHROPIC_API_KEY"]
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9"
    assert "SOME_ORCHESTRATOR_SETTING" not in env
    assert env["SPECWAVE_TASK_ID"] == "1"
    # the parsed run
    assert run.exit_code == 0 and run.info["total_cost_usd"] == 0.01
    assert run.info["num_turns"] == 1 and run.info["usage"] == {
        "input_tokens": 5,
        "output_tokens": 7,
    }
    assert (
        parse_worker_output(run.output, exit_code=run.exit_code, signals=run.signals).outcome
        == Outcome.PASS
    )
    assert ("stdout", "assistant: echo:") in lines
    assert ("stdout", "a line that is not JSON") in lines
    assert any(
        line.startswith("result: success is_error=False turns=1 cost=$0.0100") for _, line in lines
    )


async def test_secrets_are_redacted_from_the_stream_file_and_the_record(
    tmp_path, fake_cli, monkeypatch
):
    key = "sk-ant-leak-" + uuid.uuid4().hex
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    token = "tok-" + uuid.uuid4().hex
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN", token)
    req = request(tmp_path)
    run = await make_agent(
        fake_cli.config(
            env={"FAKE_CLAUDE_ECHO": f"{key} {token}", "FAKE_CLAUDE_RESULT": f"I saw {key}"}
        )
    ).run(req)
    stream = Path(run.info["stream_log"])
    assert stream.name == "attempt-1.stream.jsonl" and stream.is_file()
    text = stream.read_text()
    assert key not in text and token not in text and "***" in text
    assert key not in run.model_dump_json() and token not in run.model_dump_json()


async def test_spec_settings_file_is_read_and_a_bad_one_is_a_clear_launch_error(tmp_path, fake_cli):
    req = request(tmp_path)
    path = Path(req.spec_dir) / SPEC_SETTINGS_FILE
    path.write_text(json.dumps({"model": "opus", "max_budget_usd": 1.5, "env": {"X": "1"}}))
    await make_agent(fake_cli.config()).run(req)
    got = fake_cli.dumped()
    assert got["argv"][got["argv"].index("--model") + 1] == "opus"
    assert got["argv"][got["argv"].index("--max-budget-usd") + 1] == "1.5"
    assert got["env"]["X"] == "1"
    await make_agent(fake_cli.config(spec_settings=False)).run(req)
    assert "--model" not in fake_cli.dumped()["argv"]

    path.write_text(json.dumps({"modle": "opus"}))
    with pytest.raises(AgentLaunchError, match=r'claude-agent.json: field "modle": Extra'):
        await make_agent(fake_cli.config()).run(req)
    path.write_text("{nope")
    with pytest.raises(AgentLaunchError, match="invalid JSON"):
        await make_agent(fake_cli.config()).run(req)


async def test_missing_executable_is_a_clear_launch_error(tmp_path):
    with pytest.raises(AgentLaunchError, match="not found on PATH"):
        await make_agent({"kind": "claude", "executable": "no-such-claude-xyz"}).run(
            request(tmp_path)
        )


@pytest.mark.skipif(os.geteuid() != 0, reason="the CLI refuses bypass only for root")
async def test_bypass_as_root_needs_is_sandbox(tmp_path, fake_cli):
    with pytest.raises(AgentLaunchError, match="IS_SANDBOX=1"):
        await make_agent(fake_cli.config(permission_mode="bypassPermissions")).run(
            request(tmp_path)
        )
    with pytest.raises(AgentLaunchError, match="IS_SANDBOX=1"):
        await make_agent(fake_cli.config(extra_args=["--dangerously-skip-permissions"])).run(
            request(tmp_path)
        )
    run = await make_agent(
        fake_cli.config(permission_mode="bypassPermissions", env={"IS_SANDBOX": "1"})
    ).run(request(tmp_path))
    assert run.exit_code == 0
    argv = fake_cli.dumped()["argv"]
    assert argv[argv.index("--permission-mode") + 1] == "bypassPermissions"


# --------------------------------------------------------------------------- stream-json


def test_summaries_are_one_compact_line_per_piece():
    assert summarize_event(
        {
            "type": "assistant",
            "message": {
                "content": [
                    {"type": "text", "text": "a\n  b"},
                    {"type": "tool_use", "name": "Bash", "input": {"command": "pytest -q", "x": 1}},
                    {
                        "type": "tool_use",
                        "name": "Write",
                        "input": {"file_path": "/r/a.py", "content": "x"},
                    },
                ]
            },
        }
    ) == ["assistant: a b", "tool Bash: pytest -q", "tool Write: /r/a.py"]
    assert summarize_event(
        {
            "type": "user",
            "message": {
                "content": [
                    {
                        "type": "tool_result",
                        "is_error": True,
                        "content": [{"type": "text", "text": "denied"}],
                    }
                ]
            },
        }
    ) == ["tool result (error): denied"]
    assert summarize_event(
        {
            "type": "result",
            "subtype": "success",
            "is_error": True,
            "num_turns": 1,
            "total_cost_usd": 0,
            "api_error_status": 529,
            "terminal_reason": "api_error",
        }
    ) == [
        (
            "result: success is_error=True turns=1 cost=$0.0000 api_error_status=529 "
            "terminal_reason=api_error"
        )
    ]
    assert summarize_event({"type": "stream_event", "event": {}}) == []
    long = summarize_event(
        {"type": "assistant", "message": {"content": [{"type": "text", "text": "x" * 5000}]}}
    )[0]
    assert len(long) < 400


def test_stream_summary_prefers_the_result_text_and_falls_back_to_assistant_text():
    lines = [
        json.dumps({"type": "system", "subtype": "init", "session_id": "s"}),
        json.dumps({"type": "system", "subtype": "api_retry", "error_status": 529}),
        json.dumps(
            {
                "type": "assistant",
                "message": {
                    "content": [
                        {"type": "text", "text": "part one"},
                        {"type": "tool_use", "name": "Bash"},
                    ]
                },
            }
        ),
        "not json",
        "[1, 2]",
    ]
    s = StreamSummary.parse("\n".join(lines))
    assert s.result is None and s.output() == "part one" and s.tool_uses == 1
    assert s.other_lines == ["not json", "[1, 2]"] and len(s.api_retries) == 1
    s = StreamSummary.parse("\n".join([*lines, json.dumps({"type": "result", "result": "R"})]))
    assert s.output() == "R"


def outcome_of(
    result: dict[str, Any] | None,
    *,
    exit_code: int = 1,
    attempt: int = 1,
    backoff: float = 10.0,
    stopped: dict[str, Any] | None = None,
):
    agent = ClaudeAgent(
        ClaudeAgentConfig(retry_backoff_seconds=backoff, max_turns=3, max_budget_usd=0.5)
    )
    eff = effective_settings(agent.config, ClaudeSpecSettings())
    res = SimpleNamespace(
        exit_code=exit_code,
        timed_out=False,
        cancelled=bool(stopped),
        stdout="",
        stderr="",
        duration_s=1.0,
        killed_pids=[],
        pid=1,
    )
    summary = StreamSummary(result=result)
    req = AgentRequest(
        task_id="1",
        prompt="p",
        prompt_file="p",
        workdir=".",
        spec_dir=".",
        timeout_seconds=1,
        attempt=attempt,
    )
    run = agent._outcome(req, eff, res, summary, stopped or {})
    parsed = parse_worker_output(
        run.output, exit_code=run.exit_code, timed_out=run.timed_out, signals=run.signals
    )
    return run, parsed


def api_error(status: int | None, text: str = "API Error") -> dict[str, Any]:
    return {
        "type": "result",
        "subtype": "success",
        "is_error": True,
        "num_turns": 1,
        "api_error_status": status,
        "terminal_reason": "api_error",
        "result": text,
        "total_cost_usd": 0,
    }


@pytest.mark.parametrize("status", [429, 529, 500, None])
def test_overload_rate_limit_and_connection_errors_are_retried_after_a_jittered_backoff(status):
    delays = set()
    for _ in range(20):
        run, parsed = outcome_of(api_error(status), attempt=2, backoff=10)
        assert parsed.outcome == Outcome.CRASHED and parsed.retryable
        assert not run.final
        assert 10 <= run.retry_after_s <= 30  # 10 x 2^(2-1) x 0.5..1.5
        delays.add(run.retry_after_s)
        assert run.signals.is_error
    assert len(delays) > 1, "no jitter"
    run, _ = outcome_of(api_error(529), attempt=5, backoff=10)
    assert run.retry_after_s <= 60


@pytest.mark.parametrize("status", [401, 403])
def test_authentication_errors_are_final_with_a_message_naming_the_key(status):
    run, parsed = outcome_of(api_error(status, "Invalid API key · Fix external API key"))
    assert run.final and run.retry_after_s is None
    assert parsed.outcome == Outcome.CRASHED
    assert "ANTHROPIC_API_KEY" in parsed.reason and f"HTTP {status}" in parsed.reason


def test_authentication_stop_on_first_retry_event_is_final_and_not_a_kill():
    run, parsed = outcome_of(
        None, exit_code=None, stopped={"reason": "authentication_failed", "status": 401}
    )
    assert run.final and run.exit_code == 1 and run.info["api_error_status"] == 401
    assert "authentication failed (HTTP 401)" in parsed.reason
    assert "killed" not in parsed.reason


@pytest.mark.parametrize(
    "result, words",
    [
        (api_error(404, "model not found"), "HTTP 404"),
        (
            {
                "type": "result",
                "subtype": "error_max_turns",
                "is_error": True,
                "terminal_reason": "max_turns",
                "errors": ["Reached maximum number of turns (3)"],
            },
            "max_turns (3)",
        ),
        (
            {
                "type": "result",
                "subtype": "error_max_budget_usd",
                "is_error": True,
                "terminal_reason": "budget_exhausted",
            },
            "max_budget_usd (0.5)",
        ),
    ],
)
def test_request_errors_turn_and_budget_limits_are_final(result, words):
    run, parsed = outcome_of(result)
    assert run.final and run.retry_after_s is None
    assert words in parsed.reason


def test_is_error_not_subtype_decides():
    """Regression: an API failure reports subtype "success"; a pass claim in its text must
    not count."""
    bad = api_error(529, '```json\n{"status": "pass"}\n```\nTASK COMPLETE')
    _, parsed = outcome_of(bad, exit_code=0)
    assert parsed.outcome == Outcome.FAIL and "is_error" in parsed.reason


# --------------------------------------------------------------------------- real CLI


async def test_cancelling_the_agent_kills_the_cli_and_its_bash_children(
    tmp_path, claude_cli, model_server, monkeypatch
):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", model_server.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-cancel-" + uuid.uuid4().hex)
    (tmp_path / "otmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "otmp"))
    tag = uuid.uuid4().hex
    req = request(tmp_path, "- **ID**: c1\nspecwave-scenario: bash-hang", timeout=120)
    agent = make_agent({"kind": "claude", "env": {TAG_ENV: tag}, "grace_seconds": 2})
    lines: list[str] = []
    job = asyncio.ensure_future(agent.run(req, on_line=lambda s, line: lines.append(line)))
    deadline = time.monotonic() + 60
    # Wait until the Bash tool's command runs (its sleepers carry the tag).
    while time.monotonic() < deadline:
        if tagged_names(tag).count("sleep") >= 2:
            break
        await asyncio.sleep(0.2)
    else:
        job.cancel()
        raise AssertionError(f"the Bash command never started; log: {lines}")
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert wait_no_survivors(tag, timeout=5) == []
    assert [p for p in (tmp_path / "otmp").iterdir()] == []  # private dirs removed


async def test_real_cli_with_is_sandbox_and_bypass_runs_as_root(
    tmp_path, claude_cli, model_server, monkeypatch
):
    if os.geteuid() != 0:
        pytest.skip("the IS_SANDBOX rule applies to root")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", model_server.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-sbx-" + uuid.uuid4().hex)
    run = await make_agent(
        {"kind": "claude", "permission_mode": "bypassPermissions", "env": {"IS_SANDBOX": "1"}}
    ).run(request(tmp_path, "- **ID**: b1\nspecwave-scenario: write-and-pass"))
    assert run.exit_code == 0, run.stderr_tail
    assert run.info["permission_mode"] == "bypassPermissions"
    assert (tmp_path / "repo" / "specwave_demo_b1.txt").is_file()


async def test_overload_after_cli_retries_is_retried_by_the_worker_after_the_backoff(
    tmp_path, claude_cli, model_server, monkeypatch
):
    """With the CLI's own retries off, a 529 ends the attempt: the worker waits the jittered
    back-off, then retries (each new CLI conversation meets the 529 again, so: 2 crashes)."""
    from flows.execute_spec import execute_spec
    from tests.agents_claude.conftest import attempts, task, write_spec

    monkeypatch.setenv("ANTHROPIC_BASE_URL", model_server.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-529-" + uuid.uuid4().hex)
    spec = write_spec(tmp_path / "spec", [task("o", "overloaded-then-pass")])
    (tmp_path / "repo").mkdir()
    tag = uuid.uuid4().hex
    state = await execute_spec(
        str(spec),
        agent={
            "kind": "claude",
            "api_retries": 0,
            "retry_backoff_seconds": 2,
            "env": {TAG_ENV: tag},
        },
        repo=str(tmp_path / "repo"),
        timeout_seconds=60,
        retries=1,
        return_state=True,
    )
    result = await state.result(raise_on_failure=False)
    assert result["tasks"]["o"]["outcome"] == "crashed"
    recs = attempts(spec, result["run_id"], "o")
    assert len(recs) == 2
    for rec in recs:
        assert rec["info"]["api_error_status"] == 529 and rec["final"] is False
        assert "API error (HTTP 529) after 0 CLI retries" in rec["reason"]
    # back-off = retry_backoff_seconds (2) x random 0.5-1.5: outside [1, 3] is a wrong formula
    assert 1.0 <= recs[0]["retry_after_s"] <= 3.0
    assert recs[1]["started"] - recs[0]["ended"] >= recs[0]["retry_after_s"] - 0.05
    assert wait_no_survivors(tag) == []
