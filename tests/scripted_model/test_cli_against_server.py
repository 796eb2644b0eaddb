"""The real Claude Code CLI (bundled with claude-agent-sdk) against the scripted model server.

Each test runs `claude -p PROMPT --output-format stream-json --verbose --permission-mode
acceptEdits --allowedTools ... --max-turns 6` in its own process group, cwd a fresh tmp dir,
env: PATH, HOME=tmp, ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY=dummy-<random>,
CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1, CLAUDE_CONFIG_DIR=tmp, TMPDIR=tmp,
CLAUDE_CODE_MAX_RETRIES; and asserts what the stream-json lines, the disk and the server saw.
The fixtures (conftest.py) kill every process group and check no process carrying the run's
marker survives.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from tasks_lib.scripted_model import ScriptedModelServer

JSON_BLOCK = re.compile(r"```json\s*\n(.*?)\n```", re.DOTALL)


def report_of(text: str) -> dict:
    blocks = JSON_BLOCK.findall(text)
    assert len(blocks) == 1, f"expected one json block in {text!r}"
    return json.loads(blocks[0])


def assert_success_result(run, num_turns: int) -> dict:
    res = run.result
    assert run.returncode == 0, run.stderr
    assert res["is_error"] is False
    assert res["subtype"] == "success"
    assert res["num_turns"] == num_turns
    assert res["session_id"] == run.init["session_id"]
    assert isinstance(res["total_cost_usd"], (int, float)) and res["total_cost_usd"] > 0
    assert res["usage"]["input_tokens"] > 0 and res["usage"]["output_tokens"] > 0
    assert res["result"].rstrip().endswith("TASK COMPLETE")
    return res


def requests_for(srv: ScriptedModelServer, session_id: str) -> list[dict]:
    return [r for r in srv.requests if r["session_id"] == session_id]


def test_write_and_pass_creates_file_and_reports_pass(run_claude, model_server):
    run = run_claude("Do task.\n- **ID**: 1.2\nspecwave-scenario: write-and-pass\n")
    res = assert_success_result(run, num_turns=2)
    assert res["permission_denials"] == []
    report = report_of(res["result"])
    assert report["status"] == "pass"
    assert report["files_created"] == ["specwave_demo_1.2.txt"]
    assert report["test_results"] == {"ran": 1, "passed": 1, "failed": 0}
    written = run.cwd / "specwave_demo_1.2.txt"
    assert written.read_text() == "specwave demo output for task 1.2 (scenario write-and-pass)\n"
    # The CLI told the model its cwd; the server read it and the task id from the prompt.
    reqs = requests_for(model_server, res["session_id"])
    assert [(r["turn"], r["status"], r["outcome"]) for r in reqs] == [
        (0, 200, "reply"),
        (1, 200, "reply"),
    ]
    assert {r["cwd"] for r in reqs} == {str(run.cwd)}
    assert {r["task_id"] for r in reqs} == {"1.2"}
    assert reqs[0]["tool_uses"] == ["Write"]
    assert all(r["path"] == "/v1/messages?beta=true" and r["stream"] for r in reqs)


def test_write_path_from_prompt_marker(run_claude):
    run = run_claude("specwave-scenario: write-and-pass\nspecwave-write: src/out/made.py\n")
    res = assert_success_result(run, num_turns=2)
    assert report_of(res["result"])["files_created"] == ["src/out/made.py"]
    assert (run.cwd / "src" / "out" / "made.py").is_file()


def test_bash_test_pass_runs_the_command_in_cwd(run_claude, model_server):
    cmd = "python -c \"open('ran.txt','w').write('x'); print('specwave-bash-ok 3 passed')\""
    run = run_claude(
        f"Task ID: 7\nspecwave-scenario: bash-test-pass\nspecwave-test-command: {cmd}\n"
    )
    res = assert_success_result(run, num_turns=2)
    assert (run.cwd / "ran.txt").read_text() == "x"
    [tool_result] = run.tool_results()
    assert tool_result["is_error"] is False
    assert "specwave-bash-ok 3 passed" in json.dumps(tool_result["content"])
    report = report_of(res["result"])
    assert report["status"] == "pass"
    assert report["test_results"] == {"ran": 1, "passed": 1, "failed": 0}
    assert "specwave-bash-ok 3 passed" in report["notes"]
    assert requests_for(model_server, res["session_id"])[0]["tool_uses"] == ["Bash"]


def test_report_fail_has_blocker(run_claude):
    run = run_claude("specwave-scenario: report-fail\n- **ID**: 4")
    res = assert_success_result(run, num_turns=1)
    report = report_of(res["result"])
    assert report["status"] == "fail"
    assert report["blocker"]
    assert report["test_results"]["failed"] == 1


def test_no_json_answers_without_a_block(run_claude):
    run = run_claude("specwave-scenario: no-json")
    res = run.result
    assert res["is_error"] is False and res["subtype"] == "success"
    assert res["result"] == "I did it. Everything is done."
    assert "```" not in res["result"]


def test_missing_marker_gets_explanation_without_json(run_claude, model_server):
    run = run_claude("Please do something useful.")
    res = run.result
    assert res["is_error"] is False
    assert "no specwave-scenario marker" in res["result"]
    assert "```json" not in res["result"]
    [req] = requests_for(model_server, res["session_id"])
    assert req["outcome"] == "no-scenario" and req["scenario"] is None


@pytest.mark.parametrize("tools", ["Read,Write,Edit", "Read,Write,Edit,Bash"])
def test_denied_pass_records_a_permission_denial(run_claude, tools):
    run = run_claude("- **ID**: 9\nspecwave-scenario: denied-pass", tools=tools)
    res = assert_success_result(run, num_turns=2)
    target = str(run.cwd / ".git" / "specwave_denied_9")
    assert [(d["tool_name"], d["tool_input"]["file_path"]) for d in res["permission_denials"]] == [
        ("Write", target)
    ]
    assert not os.path.exists(target)
    [tool_result] = run.tool_results()
    assert tool_result["is_error"] is True
    assert "sensitive file" in json.dumps(tool_result["content"])
    assert report_of(res["result"])["status"] == "pass"  # the claim a parser must not trust


def test_overloaded_then_pass_retries_once(run_claude, model_server):
    run = run_claude("- **ID**: 3\nspecwave-scenario: overloaded-then-pass", retries=1)
    res = assert_success_result(run, num_turns=2)
    [retry] = run.of_type("system", "api_retry")
    assert retry["error_status"] == 529 and retry["error"] == "overloaded"
    assert retry["attempt"] == 1 and retry["max_retries"] == 1
    reqs = requests_for(model_server, res["session_id"])
    assert [(r["turn"], r["status"]) for r in reqs] == [(0, 529), (0, 200), (1, 200)]
    assert (run.cwd / "specwave_demo_3.txt").is_file()


def test_overloaded_without_retries_is_an_api_error(run_claude, model_server):
    run = run_claude("- **ID**: 3b\nspecwave-scenario: overloaded-then-pass", retries=0)
    res = run.result
    assert run.returncode == 1
    assert res["is_error"] is True and res["api_error_status"] == 529
    assert res["terminal_reason"] == "api_error"
    assert "529" in res["result"]
    assert [r["status"] for r in requests_for(model_server, res["session_id"])] == [529]


@pytest.mark.parametrize("retries", [0, 1])
def test_auth_error(run_claude, model_server, retries):
    run = run_claude("specwave-scenario: auth-error", retries=retries)
    res = run.result
    assert run.returncode == 1
    assert res["is_error"] is True
    assert res["subtype"] == "success"  # sic: the CLI reports API errors with subtype success
    assert res["api_error_status"] == 401
    assert res["terminal_reason"] == "api_error"
    assert res["result"] == "Invalid API key · Fix external API key"
    assert res["total_cost_usd"] == 0
    # 401 is retried like any API error: 1 + CLAUDE_CODE_MAX_RETRIES requests.
    reqs = requests_for(model_server, res["session_id"])
    assert [r["status"] for r in reqs] == [401] * (1 + retries)
    assert len(run.of_type("system", "api_retry")) == retries


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_hang_then_kill_group_leaves_nothing(start_claude, model_server, sig):
    cp = start_claude("specwave-scenario: hang")
    deadline = time.monotonic() + 30
    hung = []
    while not hung and time.monotonic() < deadline:
        hung = [
            r
            for r in model_server.requests
            if r["outcome"] == "hang" and r["cwd"] == str(cp.root / "cwd")
        ]
        time.sleep(0.05)
    assert hung, "the CLI never reached the hanging request"
    assert cp.wait(2.0) is None, "the CLI should still be waiting on the hung stream"
    os.killpg(cp.pgid, sig)
    cp.proc.wait(timeout=10)
    run = cp.finish()  # asserts no process of the group / with the run marker is alive
    assert run.returncode is not None
    # The server notices the client went away and ends the hanging reply.
    model_server.wait_for_requests(1, timeout=5, session_id=hung[0]["session_id"], done=True)


def test_four_slow_pass_workers_overlap(start_claude, model_server):
    sleep = 3.0  # the wall bound (4 x sleep) leaves room for 2-CPU start-up contention
    t0 = time.monotonic()
    procs = [
        start_claude(f"- **ID**: s{i}\nspecwave-scenario: slow-pass\nspecwave-sleep: {sleep}")
        for i in range(4)
    ]
    for cp in procs:
        assert cp.wait(60) == 0
    wall = time.monotonic() - t0
    runs = [cp.finish() for cp in procs]
    for i, run in enumerate(runs):
        assert_success_result(run, num_turns=2)
        assert (run.cwd / f"specwave_demo_s{i}.txt").is_file()
    assert wall < 4 * sleep, f"4 workers took {wall:.1f}s: not concurrent"
    firsts = [
        r
        for r in model_server.requests
        if r["scenario"] == "slow-pass" and r["turn"] == 0 and r["status"] == 200
    ]
    assert len(firsts) == 4
    latest_start = max(r["started"] for r in firsts)
    earliest_end = min(r["started"] + r["duration_s"] for r in firsts)
    assert latest_start < earliest_end, "the 4 sleeping replies did not overlap"
    assert all(r["duration_s"] >= sleep for r in firsts)


def test_state_stays_in_config_dir_and_key_is_not_stored(run_claude):
    run = run_claude("specwave-scenario: write-and-pass\n- **ID**: st")
    sid = assert_success_result(run, num_turns=2)["session_id"]
    # HOME gets nothing; state goes to CLAUDE_CONFIG_DIR.
    assert list(run.home.rglob("*")) == []
    cfg = run.config_dir
    assert (cfg / ".claude.json").is_file()
    mangled = re.sub(r"[^A-Za-z0-9]", "-", str(run.cwd))
    assert (cfg / "projects" / mangled / f"{sid}.jsonl").is_file()
    # The API key is written nowhere.
    for root in (run.home, cfg, run.tmpdir, run.cwd):
        for path in root.rglob("*"):
            if path.is_file():
                assert run.api_key.encode() not in path.read_bytes(), path


def test_no_session_persistence_writes_no_transcript(run_claude):
    run = run_claude("specwave-scenario: no-json", extra_args=("--no-session-persistence",))
    assert run.result["is_error"] is False
    assert not (run.config_dir / "projects").exists() or not any(
        (run.config_dir / "projects").rglob("*.jsonl")
    )


def test_root_refuses_skip_permissions_unless_is_sandbox(run_claude):
    if os.geteuid() != 0:
        pytest.skip("the refusal only applies to root")
    run = run_claude("specwave-scenario: no-json", extra_args=("--dangerously-skip-permissions",))
    assert run.returncode == 1 and run.lines == []
    assert "--dangerously-skip-permissions cannot be used with root/sudo privileges" in run.stderr
    run = run_claude(
        "specwave-scenario: no-json", extra_args=("--permission-mode", "bypassPermissions")
    )
    assert run.returncode == 1 and "cannot be used with root/sudo" in run.stderr
    run = run_claude(
        "specwave-scenario: no-json",
        extra_args=("--dangerously-skip-permissions",),
        env_extra={"IS_SANDBOX": "1"},
    )
    assert run.returncode == 0 and run.result["result"] == "I did it. Everything is done."


def test_allowed_write_is_not_confined_to_cwd_but_accept_edits_alone_is(run_claude):
    """Fact for the agent runner: --allowedTools Write lets Write go anywhere; acceptEdits
    without it auto-accepts only inside the working directory (outside: a denial)."""
    extra = {
        "outside": {
            "turns": [
                {
                    "content": [
                        {
                            "type": "tool_use",
                            "name": "Write",
                            "input": {
                                "file_path": "{cwd}/../outside_{task_slug}.txt",
                                "content": "x",
                            },
                        }
                    ],
                    "stop_reason": "tool_use",
                },
                {"content": [{"type": "text", "text": "done"}], "stop_reason": "end_turn"},
            ]
        }
    }
    with ScriptedModelServer(scenarios=extra) as srv:
        allowed = run_claude(
            "specwave-scenario: outside\n- **ID**: a", tools="Read,Write,Edit", server=srv
        )
        assert allowed.result["permission_denials"] == []
        assert (allowed.root / "outside_a.txt").is_file()
        plain = run_claude("specwave-scenario: outside\n- **ID**: b", tools="Read", server=srv)
        [denial] = plain.result["permission_denials"]
        assert denial["tool_name"] == "Write"
        assert not (plain.root / "outside_b.txt").exists()
        restricted = run_claude(
            "specwave-scenario: outside\n- **ID**: c",
            tools="Read,Write,Edit",
            server=srv,
            extra_args=("--restricted",),
        )
        assert len(restricted.result["permission_denials"]) == 1
        assert not (restricted.root / "outside_c.txt").exists()


def test_only_messages_endpoint_was_called(model_server):
    """Runs last in this module: the CLI called nothing but POST /v1/messages?beta=true."""
    reqs = model_server.requests
    if not reqs:
        pytest.skip("run with the rest of the module")
    assert {(r["method"], r["path"]) for r in reqs} == {("POST", "/v1/messages?beta=true")}
    assert all(r["has_api_key"] for r in reqs)


def test_prompt_on_stdin_works(run_claude):
    """Alternative to `-- PROMPT` (no ARG_MAX limit on long prompts): the prompt on stdin."""
    run = run_claude("- **ID**: in\nspecwave-scenario: write-and-pass", prompt_style="stdin")
    assert "--" not in run.argv
    assert_success_result(run, num_turns=2)
    assert (run.cwd / "specwave_demo_in.txt").is_file()


def test_prompt_starting_with_dash_needs_double_dash(run_claude):
    """Regression: `claude -p "- **ID**: 1 ..." --output-format ...` (prompt not after `--`)
    fails with "unknown option" (rc 1, nothing on stdout)."""
    run = run_claude("- **ID**: 1\nspecwave-scenario: no-json", prompt_style="after-p")
    assert run.argv[1:3] == ["-p", "- **ID**: 1\nspecwave-scenario: no-json"]
    assert run.returncode == 1 and run.lines == []
    assert "error: unknown option '- **ID**: 1" in run.stderr
