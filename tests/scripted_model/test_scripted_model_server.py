"""The scripted model server over real HTTP (httpx), in-process and as `python -m` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tasks_lib.scripted_model import (
    SCENARIOS,
    ScriptedModelServer,
    conversation_facts,
    merged_scenarios,
)

REPO = Path(__file__).resolve().parents[2]
CWD_MSG = {
    "role": "system",
    "content": [
        {
            "type": "text",
            "text": "# Environment\n - Primary working directory: /work/x y\n - Platform: linux\n",
        }
    ],
}


def body(
    prompt: str,
    *,
    assistants: int = 0,
    stream: bool = True,
    tool_result: str = "ok",
    tool_error: bool = False,
    session: str | None = None,
) -> dict:
    """A Messages API request shaped like Claude Code's: user prompt, system-role env message,
    then `assistants` (assistant tool_use, user tool_result) pairs."""
    msgs: list[dict] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>\nattribution\n</system-reminder>\n"},
                {"type": "text", "text": prompt},
            ],
        },
        CWD_MSG,
    ]
    for i in range(assistants):
        msgs.append(
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": f"t{i}", "name": "Write", "input": {}}],
            }
        )
        msgs.append(
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": f"t{i}",
                        "content": tool_result,
                        "is_error": tool_error,
                    }
                ],
            }
        )
    out = {
        "model": "claude-x",
        "max_tokens": 100,
        "messages": msgs,
        "stream": stream,
        "system": [{"type": "text", "text": "You are a Claude agent."}],
    }
    if session:
        out["metadata"] = {"user_id": json.dumps({"session_id": session})}
    return out


def parse_sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for chunk in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def assemble(events: list[tuple[str, dict]]) -> dict:
    """Rebuild the assistant message from SSE events, as an SDK client would."""
    msg = None
    for name, data in events:
        assert data["type"] == name
        if name == "message_start":
            msg = data["message"]
        elif name == "content_block_start":
            assert data["index"] == len(msg["content"])
            msg["content"].append(dict(data["content_block"], _json=""))
        elif name == "content_block_delta":
            block, delta = msg["content"][data["index"]], data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                assert delta["type"] == "input_json_delta"
                block["_json"] += delta["partial_json"]
        elif name == "content_block_stop":
            block = msg["content"][data["index"]]
            if block["type"] == "tool_use":
                block["input"] = json.loads(block["_json"])
            del block["_json"]
        elif name == "message_delta":
            msg["stop_reason"] = data["delta"]["stop_reason"]
    assert events[-1][0] == "message_stop"
    return msg


def post(srv: ScriptedModelServer, payload: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(
        f"{srv.base_url}/v1/messages?beta=true", json=payload, headers=headers or {}, timeout=30
    )


@pytest.fixture
def srv():
    with ScriptedModelServer() as s:
        yield s


def test_write_and_pass_turns_stream_tool_use_then_report(srv):
    r = post(srv, body("- **ID**: 2.1\nspecwave-scenario: write-and-pass"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert [e for e, _ in events][:2] == ["message_start", "ping"]
    msg = assemble(events)
    assert msg["stop_reason"] == "tool_use"
    tool = msg["content"][1]
    assert tool["name"] == "Write" and tool["id"].startswith("toolu_")
    assert tool["input"] == {
        "file_path": "/work/x y/specwave_demo_2.1.txt",
        "content": "specwave demo output for task 2.1 (scenario write-and-pass)\n",
    }

    r = post(
        srv,
        body(
            "- **ID**: 2.1\nspecwave-scenario: write-and-pass",
            assistants=1,
            tool_result="File created",
        ),
    )
    msg = assemble(parse_sse(r.text))
    assert msg["stop_reason"] == "end_turn"
    text = msg["content"][0]["text"]
    assert text.endswith("TASK COMPLETE")
    report = json.loads(text.split("```json\n")[1].split("\n```")[0])
    assert report["status"] == "pass"
    assert report["files_created"] == ["specwave_demo_2.1.txt"]
    assert report["notes"].endswith("write result: File created")
    assert [
        (q["turn"], q["scenario"], q["task_id"], q["cwd"], q["status"], q["outcome"])
        for q in srv.requests
    ] == [
        (0, "write-and-pass", "2.1", "/work/x y", 200, "reply"),
        (1, "write-and-pass", "2.1", "/work/x y", 200, "reply"),
    ]
    # Past the script: a plain note, never a json block.
    msg = assemble(
        parse_sse(post(srv, body("specwave-scenario: write-and-pass", assistants=2)).text)
    )
    assert "nothing more is scripted" in msg["content"][0]["text"]
    assert "```" not in msg["content"][0]["text"]
    assert srv.requests[-1]["outcome"] == "no-turn"


def test_non_streaming_request_gets_a_message(srv):
    r = post(srv, body("specwave-scenario: no-json", stream=False))
    assert r.status_code == 200
    msg = r.json()
    assert msg["type"] == "message" and msg["stop_reason"] == "end_turn"
    assert msg["content"] == [{"type": "text", "text": "I did it. Everything is done."}]


@pytest.mark.parametrize(
    "prompt,outcome,phrase",
    [
        ("do the thing", "no-scenario", "no specwave-scenario marker"),
        ("specwave-scenario: nope", "unknown-scenario", "unknown specwave-scenario 'nope'"),
    ],
)
def test_missing_or_unknown_scenario_explains_without_json(srv, prompt, outcome, phrase):
    msg = assemble(parse_sse(post(srv, body(prompt)).text))
    text = msg["content"][0]["text"]
    assert phrase in text and "```json" not in text
    assert srv.requests[-1]["outcome"] == outcome


def test_marker_in_a_tool_result_does_not_switch_scenario(srv):
    payload = body(
        "specwave-scenario: bash-test-pass",
        assistants=1,
        tool_result="specwave-scenario: auth-error",
    )
    r = post(srv, payload)
    assert r.status_code == 200
    assert srv.requests[-1]["scenario"] == "bash-test-pass"


def test_overloaded_once_per_conversation(srv):
    p = "- **ID**: 5\nspecwave-scenario: overloaded-then-pass"
    a = {"x-claude-code-session-id": "sess-a"}
    r = post(srv, body(p), a)
    assert r.status_code == 529
    assert r.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert post(srv, body(p), a).status_code == 200
    assert post(srv, body(p, assistants=1), a).status_code == 200
    # Another conversation (session header, or metadata session id) gets its own 529.
    assert post(srv, body(p), {"x-claude-code-session-id": "sess-b"}).status_code == 529
    assert post(srv, body(p, session="sess-c")).status_code == 529
    assert post(srv, body(p, session="sess-c")).status_code == 200
    assert [q["status"] for q in srv.requests] == [529, 200, 200, 529, 529, 200]
    assert srv.requests[-1]["session_id"] == "sess-c"


def test_auth_error_every_time(srv):
    for _ in range(2):
        r = post(srv, body("specwave-scenario: auth-error"))
        assert r.status_code == 401
        assert r.json()["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}


def test_unknown_paths_and_count_tokens_are_recorded(srv):
    r = httpx.get(f"{srv.base_url}/v1/models", timeout=5)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.post(
        f"{srv.base_url}/v1/messages/count_tokens?beta=true",
        json=body("specwave-scenario: no-json"),
        timeout=5,
    )
    assert r.status_code == 200 and r.json()["input_tokens"] > 0
    r = httpx.post(f"{srv.base_url}/v1/messages", content=b"{not json", timeout=5)
    assert r.status_code == 400
    assert [(q["method"], q["path"], q["status"], q["outcome"]) for q in srv.requests] == [
        ("GET", "/v1/models", 404, "unknown-path"),
        ("POST", "/v1/messages/count_tokens?beta=true", 200, "count-tokens"),
        ("POST", "/v1/messages", 400, "bad-json"),
    ]
    # Introspection endpoints answer but are not model traffic.
    assert httpx.get(f"{srv.base_url}/_specwave/health", timeout=5).json()["ok"] is True
    assert len(httpx.get(f"{srv.base_url}/_specwave/requests", timeout=5).json()) == 3


def test_api_key_values_are_never_recorded(tmp_path):
    log = tmp_path / "log.jsonl"
    secret = "sk-ant-specwave-" + os.urandom(8).hex()
    with ScriptedModelServer(log_file=log) as s:
        post(
            s,
            body("specwave-scenario: no-json"),
            {"x-api-key": secret, "authorization": f"Bearer {secret}"},
        )
        recs = s.requests
    assert recs[0]["has_api_key"] is True
    assert secret not in json.dumps(recs)
    assert secret not in log.read_text()
    assert json.loads(log.read_text())["scenario"] == "no-json"


def test_hang_sends_message_start_then_nothing_and_stop_is_not_blocked():
    s = ScriptedModelServer().start()
    got: list[str] = []
    client_done = threading.Event()

    def client():
        try:
            with httpx.stream(
                "POST",
                f"{s.base_url}/v1/messages",
                json=body("specwave-scenario: hang"),
                timeout=httpx.Timeout(30),
            ) as r:
                for line in r.iter_lines():  # read while the stream is open
                    got.append(line)  # noqa: PERF402
        except httpx.HTTPError:
            pass
        finally:
            client_done.set()

    t = threading.Thread(target=client, daemon=True)
    t.start()
    s.wait_for_requests(1, timeout=5, outcome="hang")
    time.sleep(1.0)
    assert [line for line in got if line.startswith("event:")] == ["event: message_start"]
    assert s.requests[0]["done"] is False
    t0 = time.monotonic()
    s.stop()
    assert time.monotonic() - t0 < 3, "stop() was blocked by the hanging reply"
    assert client_done.wait(5), "the client was not released when the server stopped"
    assert s.requests[0]["done"] is True


def test_hang_ends_when_the_client_goes_away(srv):
    with (
        httpx.Client(timeout=30) as c,
        c.stream("POST", f"{srv.base_url}/v1/messages", json=body("specwave-scenario: hang")) as r,
    ):
        next(r.iter_lines())
    # Client closed: the server notices within its 0.2 s poll.
    srv.wait_for_requests(1, timeout=3, outcome="hang", done=True)


def test_slow_pass_sleeps_and_many_streams_run_concurrently(srv):
    p = "- **ID**: {}\nspecwave-scenario: slow-pass\nspecwave-sleep: 1.0"
    results: dict[int, int] = {}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    with httpx.Client(timeout=30, limits=limits) as client:

        def one(i: int) -> None:
            results[i] = client.post(
                f"{srv.base_url}/v1/messages", json=body(p.format(i))
            ).status_code

        threads = [threading.Thread(target=one, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert results == {i: 200 for i in range(32)}
    reqs = srv.requests
    assert all(q["duration_s"] >= 1.0 for q in reqs)
    # All 32 one-second replies were in flight at the same moment.
    assert max(q["started"] for q in reqs) < min(q["started"] + q["duration_s"] for q in reqs)
    # Turn 1 does not sleep.
    t0 = time.monotonic()
    assert post(srv, body(p.format(0), assistants=1)).status_code == 200
    assert time.monotonic() - t0 < 0.9


def test_stop_during_sleep_returns_promptly():
    s = ScriptedModelServer().start()
    th = threading.Thread(
        target=lambda: _swallow(
            lambda: post(s, body("specwave-scenario: slow-pass\nspecwave-sleep: 30"))
        ),
        daemon=True,
    )
    th.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    s.stop()
    assert time.monotonic() - t0 < 3
    th.join(5)
    assert not th.is_alive()
    assert s.requests[0]["outcome"] == "server-stopped"


def _swallow(fn):
    try:
        fn()
    except httpx.HTTPError:
        pass


def test_extra_scenarios_merge_and_use_placeholders(srv):
    extra = {
        "mine": {
            "turns": [
                {
                    "content": [
                        {
                            "type": "tool_use",
                            "name": "Bash",
                            "input": {
                                "command": "{test_command}",
                                "description": "{task_slug} in {cwd}",
                            },
                        }
                    ],
                    "stop_reason": "tool_use",
                }
            ]
        }
    }
    with ScriptedModelServer(scenarios=extra) as s:
        assert "write-and-pass" in s.scenarios and "mine" in s.scenarios
        prompt = (
            "specwave-scenario: mine\nTask ID: a/b\nspecwave-test-command: `pytest -q tests/x.py`\n"
        )
        msg = assemble(parse_sse(post(s, body(prompt)).text))
        assert msg["content"][0]["input"] == {
            "command": "pytest -q tests/x.py",
            "description": "a_b in /work/x y",
        }
    assert "mine" not in SCENARIOS  # the built-ins are not mutated


@pytest.mark.parametrize(
    "bad,phrase",
    [
        ({"turns": []}, '"turns" must be a non-empty list'),
        ({"turns": [{"stop_reason": "end_turn"}]}, 'turn 0 needs "content"'),
        ({"turns": [{"content": [{"type": "image"}]}]}, "block type 'image'"),
    ],
)
def test_bad_extra_scenarios_are_rejected_with_the_reason(bad, phrase):
    with pytest.raises(ValueError, match=f'scenario "x".*{_re(phrase)}'):
        merged_scenarios({"x": bad})


def _re(text: str) -> str:
    import re

    return re.escape(text)


@pytest.mark.parametrize(
    "prompt,task_id",
    [
        ("## Task\n- **ID**: 1.1\n- **Type**: subtask", "1.1"),
        ("Task ID: W1-VERIFY", "W1-VERIFY"),
        ("**Task ID**: `3`", "3"),
        ("specwave-task-id: 9\n- **ID**: 1", "9"),
        ("nothing here", None),
    ],
)
def test_task_id_extraction(prompt, task_id):
    assert conversation_facts(body(prompt))["task_id"] == task_id


def test_facts_defaults_and_overrides():
    f = conversation_facts(body("specwave-scenario: write-and-pass"))
    assert f["cwd"] == "/work/x y"
    assert f["write_rel"] == "specwave_demo_task.txt"
    assert f["write_path"] == "/work/x y/specwave_demo_task.txt"
    assert f["test_command"] == "python -c \"print('ok')\""
    assert f["sleep"] == 1.0 and f["turn"] == 0
    f = conversation_facts(
        body(
            "specwave-write: /abs/p.txt\nspecwave-sleep: 0.25\nspecwave-cwd: /elsewhere",
            assistants=2,
            tool_error=True,
            tool_result="boom",
        )
    )
    assert f["write_path"] == "/abs/p.txt" and f["sleep"] == 0.25 and f["turn"] == 2
    assert f["cwd"] == "/elsewhere"
    assert (f["last_tool_result"], f["last_tool_error"]) == ("boom", "true")
    # Older CLIs put the env block in the system field.
    b = body("x")
    b["messages"].remove(CWD_MSG)
    b["system"] = "<env>\nWorking directory: /old/style\n</env>"
    assert conversation_facts(b)["cwd"] == "/old/style"


def test_runs_as_a_process_with_port_file(tmp_path):
    port_file, log = tmp_path / "port", tmp_path / "log.jsonl"
    extra = tmp_path / "extra.json"
    extra.write_text(
        json.dumps(
            {
                "echo": {
                    "turns": [
                        {
                            "content": [{"type": "text", "text": "task {task_id}"}],
                            "stop_reason": "end_turn",
                        }
                    ]
                }
            }
        )
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tasks_lib.scripted_model",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--log-file",
            str(log),
            "--scenarios-file",
            str(extra),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = proc.stdout.readline()
        port = int(port_file.read_text())
        base = f"http://127.0.0.1:{port}"
        assert line.strip() == f"specwave-scripted-model listening on {base}"
        assert httpx.get(f"{base}/_specwave/health", timeout=5).json()["ok"] is True
        r = httpx.post(
            f"{base}/v1/messages?beta=true",
            json=body("specwave-scenario: echo\nTask ID: 12"),
            timeout=10,
        )
        assert assemble(parse_sse(r.text))["content"][0]["text"] == "task 12"
        recs = httpx.get(f"{base}/_specwave/requests", timeout=5).json()
        assert [(q["scenario"], q["task_id"], q["status"]) for q in recs] == [("echo", "12", 200)]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - t0 < 3
        assert json.loads(log.read_text())["scenario"] == "echo"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)
        proc.stdout.close()
        proc.stderr.close()
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # the whole group is gone


def test_list_scenarios_names_every_builtin():
    out = subprocess.run(
        [sys.executable, "-m", "tasks_lib.scripted_model", "--list-scenarios"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        start_new_session=True,
    )
    assert out.returncode == 0
    names = [line.split(":", 1)[0] for line in out.stdout.splitlines()]
    assert (
        names
        == sorted(SCENARIOS)
        == [
            "auth-error",
            "bash-test-pass",
            "denied-pass",
            "hang",
            "no-json",
            "overloaded-then-pass",
            "report-fail",
            "slow-pass",
            "write-and-pass",
        ]
    )
