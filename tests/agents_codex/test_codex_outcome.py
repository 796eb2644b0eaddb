"""The codex agent's pure parts, no process: reading ``codex exec --json`` lines, classifying
the CLI's error messages, dating a usage limit, deciding the outcome, and the config, the
command line and config.toml it builds.

The event lines and messages below are what Codex CLI 0.171.0 printed against the scripted
server (and a server answering 401/403/429/500/502 and usage_limit_reached by hand)."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from tasks_lib.agents import parse_agent_config
from tasks_lib.agents.codex import (
    CODEX_VERSION,
    CodexAgentConfig,
    TokenPrices,
    attempt_info,
    build_argv,
    config_toml,
    decide_outcome,
    effective_base_url,
    full_access_requested,
    install_hint,
    resolve_executable,
    toml_value,
)
from tasks_lib.agents.codex_stream import (
    CodexStreamSummary,
    ErrorEvent,
    ItemEvent,
    ThreadStartedEvent,
    TurnCompletedEvent,
    TurnFailedEvent,
    classify_error,
    parse_line,
    parse_reset_time,
    summarize_event,
)
from tasks_lib.agents.process import MAX_LINE_BYTES, AgentLaunchError
from tasks_lib.records import AttemptRecord
from tasks_lib.results import Outcome, parse_worker_output

PASS_TEXT = 'Done.\n```json\n{"status": "pass"}\n```\nTASK COMPLETE'

STREAM = [
    {"type": "thread.started", "thread_id": "01a2-thread"},
    {"type": "turn.started"},
    {
        "type": "item.completed",
        "item": {
            "id": "item_0",
            "type": "error",
            "message": "Model metadata for `scripted-model` not found. Defaulting to fallback",
        },
    },
    {
        "type": "item.started",
        "item": {
            "id": "item_1",
            "type": "command_execution",
            "command": "/bin/bash -lc 'echo hi > written.txt'",
            "aggregated_output": "",
            "exit_code": None,
            "status": "in_progress",
        },
    },
    {
        "type": "item.completed",
        "item": {
            "id": "item_1",
            "type": "command_execution",
            "command": "/bin/bash -lc 'echo hi > written.txt'",
            "aggregated_output": "done\n",
            "exit_code": 0,
            "status": "completed",
        },
    },
    {
        "type": "item.completed",
        "item": {
            "id": "item_2",
            "type": "file_change",
            "changes": [{"path": "/w/patched.txt", "kind": "add"}],
            "status": "completed",
        },
    },
    {"type": "item.completed", "item": {"id": "item_3", "type": "agent_message", "text": "x"}},
    {
        "type": "item.completed",
        "item": {"id": "item_4", "type": "agent_message", "text": PASS_TEXT},
    },
    {
        "type": "turn.completed",
        "usage": {
            "input_tokens": 300,
            "cached_input_tokens": 120,
            "cache_write_input_tokens": 0,
            "output_tokens": 60,
            "reasoning_output_tokens": 15,
        },
    },
]


def summary_of(*events: dict) -> CodexStreamSummary:
    return CodexStreamSummary.parse("\n".join(json.dumps(e) for e in events))


def failed(message: str, *retries: str) -> CodexStreamSummary:
    events = [{"type": "thread.started", "thread_id": "t"}, {"type": "turn.started"}]
    events += [{"type": "error", "message": r} for r in retries]
    events += [{"type": "error", "message": message}]
    events += [{"type": "turn.failed", "error": {"message": message}}]
    return summary_of(*events)


def decide(summary: CodexStreamSummary, **kw):
    args = dict(exit_code=1, timed_out=False, cancelled=False, retry_after_s=7.5)
    args.update(kw)
    return decide_outcome(summary, **args)


# --------------------------------------------------------------------------- the stream


def test_each_event_kind_parses_into_its_model():
    kinds = [type(parse_line(json.dumps(e))) for e in STREAM]
    assert kinds[0] is ThreadStartedEvent and kinds[-1] is TurnCompletedEvent
    assert kinds[2] is ItemEvent
    assert type(parse_line('{"type": "error", "message": "x"}')) is ErrorEvent
    assert type(parse_line('{"type": "turn.failed", "error": {"message": "x"}}')) is (
        TurnFailedEvent
    )


@pytest.mark.parametrize("text", ["", "   ", "not json", "[1, 2]", '"str"', "{bad", "1e999999"])
def test_garbage_lines_are_not_events(text):
    assert parse_line(text) is None


def test_fields_of_the_wrong_type_count_as_absent():
    e = parse_line('{"type": "item.completed", "item": {"type": 3, "changes": "nope"}}')
    assert isinstance(e, ItemEvent) and e.item.type is None and e.item.changes == []
    t = parse_line('{"type": "turn.completed", "usage": [1]}')
    assert isinstance(t, TurnCompletedEvent) and t.usage.input_tokens is None
    f = parse_line('{"type": "turn.failed", "error": "boom"}')
    assert isinstance(f, TurnFailedEvent) and f.error.message is None


def test_a_full_stream_folds_into_the_summary():
    s = summary_of(*STREAM)
    assert s.thread_id == "01a2-thread"
    assert s.output() == PASS_TEXT  # the final agent message, not the earlier one
    assert s.tokens() == {"input": 300, "cached": 120, "output": 60, "reasoning": 15}
    assert s.commands == [
        {"command": "/bin/bash -lc 'echo hi > written.txt'", "exit_code": 0, "status": "completed"}
    ]
    assert s.file_changes == [
        {"status": "completed", "changes": [{"path": "/w/patched.txt", "kind": "add"}]}
    ]
    assert s.warnings[0].startswith("Model metadata for `scripted-model` not found")
    assert s.failure() is None and s.turns_completed == 1


def test_an_unknown_model_warning_is_not_a_failure():
    s = summary_of(*STREAM)
    o = decide(s, exit_code=0)
    assert o.is_error is False and o.errors == [] and o.kind is None
    parsed = parse_worker_output(s.output(), exit_code=0, signals=_signals(o))
    assert parsed.outcome == Outcome.PASS


def _signals(o):
    from tasks_lib.results import AgentSignals

    return AgentSignals(is_error=o.is_error, errors=o.errors)


def test_tokens_add_up_over_turns_and_are_none_without_usage():
    turn = STREAM[-1]
    assert summary_of(turn, turn).tokens() == {
        "input": 600,
        "cached": 240,
        "output": 120,
        "reasoning": 30,
    }
    assert summary_of(*STREAM[:-1]).tokens() is None


def test_a_line_longer_than_the_pump_limit_is_joined_from_its_pieces():
    text = "y" * (MAX_LINE_BYTES + 10)
    line = json.dumps({"type": "item.completed", "item": {"type": "agent_message", "text": text}})
    s = CodexStreamSummary()
    pieces = [line[i : i + MAX_LINE_BYTES] for i in range(0, len(line), MAX_LINE_BYTES)]
    assert [s.feed(p) for p in pieces[:-1]] == [None] * (len(pieces) - 1)
    assert isinstance(s.feed(pieces[-1]), ItemEvent)
    assert s.output() == text


def test_log_lines_are_compact_and_never_raw_json():
    lines = [line for e in STREAM for line in summarize_event(e)]
    assert lines == [
        "codex thread 01a2-thread",
        "warning: Model metadata for `scripted-model` not found. Defaulting to fallback",
        "command: /bin/bash -lc 'echo hi > written.txt'",
        "command exit 0: /bin/bash -lc 'echo hi > written.txt' — done",
        "patch applied: add /w/patched.txt",
        "assistant: x",
        'assistant: Done. ```json {"status": "pass"} ``` TASK COMPLETE',
        "turn completed: tokens in 300 (cached 120) out 60 (reasoning 15)",
    ]
    retry = {"type": "error", "message": "Reconnecting... 2/5 (unexpected status 502 Bad Gateway)"}
    assert summarize_event(retry) == ["API retry 2/5: unexpected status 502 Bad Gateway"]
    assert summarize_event({"type": "turn.failed", "error": {"message": "boom"}}) == [
        "turn failed: boom"
    ]
    # an odd shape is compact JSON, never an exception
    assert summarize_event({"type": "item.completed", "item": {"type": "todo_list", "items": 3}})
    assert summarize_event({"weird": [1]}) == ['{"weird": [1]}']


# --------------------------------------------------------------------------- error messages


@pytest.mark.parametrize(
    ("message", "kind", "status", "retry"),
    [
        (
            "Reconnecting... 1/5 (unexpected status 401 Unauthorized: Incorrect API key "
            "provided: sk-te***56., url: http://127.0.0.1:1/v1/responses)",
            "authentication",
            401,
            (1, 5),
        ),
        (
            "unexpected status 403 Forbidden: Project does not have access",
            "authentication",
            403,
            None,
        ),
        ("exceeded retry limit, last status: 429 Too Many Requests", "rate_limit", 429, None),
        (
            "Reconnecting... 3/5 (exceeded retry limit, last status: 429 Too Many Requests)",
            "rate_limit",
            429,
            (3, 5),
        ),
        (
            "rate limit exceeded: Rate limit reached. Please try again in 1.5s.",
            "rate_limit",
            None,
            None,
        ),
        (
            "We’re currently experiencing high demand, which may cause temporary errors.",
            "transient",
            None,
            None,
        ),
        ("unexpected status 502 Bad Gateway: bad gateway, url: http://x", "transient", 502, None),
        (
            "stream disconnected before completion: Connection refused (os error 111)",
            "transient",
            None,
            None,
        ),
        ("Quota exceeded. Check your plan and billing details.", "quota", None, None),
        (
            "Codex ran out of room in the model's context window. Start a new thread.",
            "context_window",
            None,
            None,
        ),
        ("unexpected status 400 Bad Request: Invalid model", "request", 400, None),
        ("Invalid model", "unknown", None, None),
    ],
)
def test_error_messages_are_classified(message, kind, status, retry):
    f = classify_error(message)
    assert (f.kind, f.status) == (kind, status)
    assert (f.retry, f.max_retries) == (retry or (None, None))


def test_waiting_for_network_is_a_retry_of_kind_network():
    f = classify_error(
        "Reconnecting... waiting for network (Connection failed: error sending request)"
    )
    assert f.waiting_for_network and f.is_retry and f.kind == "network"
    assert f.message == "Connection failed: error sending request"


@pytest.mark.parametrize(
    ("message", "reset"),
    [
        (
            "You’ve hit your usage limit. Visit https://chatgpt.com/settings/usage to purchase "
            "more credits or try again at 5:23 AM.",
            "5:23 AM",
        ),
        (
            "You’ve hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro) or "
            "try again at Dec 7th, 2026 4:25 AM.",
            "Dec 7th, 2026 4:25 AM",
        ),
        ("You’ve hit your usage limit. Try again later.", None),
    ],
)
def test_a_usage_limit_keeps_its_reset_words(message, reset):
    f = classify_error(message)
    assert f.kind == "usage_limit" and f.reset_text == reset


def test_a_bare_clock_time_is_its_next_occurrence_in_the_clis_zone():
    tz = ZoneInfo("America/New_York")
    evening = datetime(2026, 12, 4, 19, 30, tzinfo=tz)
    assert parse_reset_time("6:02 PM", evening) == datetime(2026, 12, 5, 18, 2, tzinfo=tz)
    morning = datetime(2026, 12, 4, 9, 0, tzinfo=tz)
    assert parse_reset_time("6:02 PM", morning) == datetime(2026, 12, 4, 18, 2, tzinfo=tz)
    assert parse_reset_time("Dec 7th, 2026 4:25 AM", morning) == datetime(
        2026, 12, 7, 4, 25, tzinfo=tz
    )
    assert parse_reset_time("soon", morning) is None


# --------------------------------------------------------------------------- the outcome


def test_a_clean_success_is_no_failure():
    o = decide(summary_of(*STREAM), exit_code=0)
    assert (o.final, o.retry_after_s, o.kind, o.rate_limit, o.errors) == (
        False,
        None,
        None,
        None,
        [],
    )


def test_authentication_is_final_and_names_the_key_variable():
    o = decide(failed("unexpected status 401 Unauthorized: bad key"), api_key_env="MY_OPENAI_KEY")
    assert o.final and o.kind == "authentication" and o.api_error_status == 401
    assert o.retry_after_s is None
    assert o.errors[0].startswith("authentication failed (HTTP 401) — check MY_OPENAI_KEY")


def test_our_authentication_stop_is_final_with_an_exit_code():
    """The CLI is stopped at its first retry of a 401 (it would retry 5 times): no
    turn.failed, no exit code of its own."""
    s = summary_of(
        {"type": "turn.started"},
        {"type": "error", "message": "Reconnecting... 1/5 (unexpected status 401 Unauthorized: x)"},
    )
    o = decide(s, exit_code=None, cancelled=True, stopped_reason="authentication")
    assert o.exit_code == 1 and o.final and o.kind == "authentication"
    assert o.stopped_by_specwave == "authentication" and o.is_error


def test_a_429_after_the_cli_retries_is_retryable_with_a_rate_limit_fact():
    retries = [
        f"Reconnecting... {i}/5 (exceeded retry limit, last status: 429 Too Many Requests)"
        for i in range(1, 6)
    ]
    o = decide(failed("exceeded retry limit, last status: 429 Too Many Requests", *retries))
    assert not o.final and o.retry_after_s == 7.5 and o.kind == "rate_limit"
    assert o.rate_limit is not None and o.rate_limit.kind == "rate_limit"
    assert o.rate_limit.until is None
    assert "after 5 CLI retries" in o.errors[0] and "retrying after 7.5 s" in o.errors[0]


def test_a_usage_limit_is_final_with_the_reset_time_as_until():
    now = datetime(2026, 12, 4, 4, 30, tzinfo=UTC)
    o = decide(
        failed("You’ve hit your usage limit. Visit https://x or try again at 6:02 PM."), now=now
    )
    assert o.final and o.kind == "usage_limit" and o.retry_after_s is None
    assert o.rate_limit is not None and o.rate_limit.kind == "usage_limit"
    assert o.rate_limit.reset_text == "6:02 PM"
    assert o.rate_limit.until == datetime(2026, 12, 4, 18, 2, tzinfo=UTC).timestamp()
    assert o.errors[0].startswith("usage limit reached (resets 6:02 PM)")
    # no reset time: still named, until unknown
    o2 = decide(failed("You’ve hit your usage limit. Try again later."), now=now)
    assert o2.rate_limit is not None and o2.rate_limit.until is None
    assert "no reset time given" in o2.errors[0]


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (
            "We’re currently experiencing high demand, which may cause temporary errors.",
            "api_transient",
        ),
        ("unexpected status 503 Service Unavailable", "api_transient"),
    ],
)
def test_5xx_is_retryable_after_the_backoff(message, kind):
    o = decide(failed(message))
    assert (o.kind, o.final, o.retry_after_s, o.rate_limit) == (kind, False, 7.5, None)


@pytest.mark.parametrize(
    ("message", "kind", "words"),
    [
        ("Quota exceeded. Check your plan and billing details.", "quota", "billing"),
        ("Codex ran out of room in the model's context window.", "context_window", "split"),
        ("unexpected status 400 Bad Request: Invalid model", "api_request", "fix the request"),
    ],
)
def test_quota_context_window_and_bad_requests_are_final(message, kind, words):
    o = decide(failed(message))
    assert o.final and o.kind == kind and words in o.errors[0] and o.retry_after_s is None


def test_an_unknown_turn_failure_is_retryable_without_a_backoff():
    o = decide(failed("Invalid model"))
    assert (o.kind, o.final, o.retry_after_s) == ("agent_error", False, None)
    assert o.errors[0] == "the turn failed: Invalid model"


def test_an_unreachable_endpoint_stop_names_the_url_without_credentials():
    s = summary_of(
        {"type": "error", "message": "Reconnecting... waiting for network (Connection failed)"}
    )
    o = decide(
        s,
        exit_code=None,
        cancelled=True,
        stopped_reason="network",
        base_url="http://user:hunter2secret@10.0.0.1:8000/v1",
        network_wait_seconds=30,
    )
    assert o.kind == "network" and not o.final and o.retry_after_s == 7.5
    assert "cannot reach http://10.0.0.1:8000/v1 (Connection failed) for 30 s" in o.errors[0]
    assert "hunter2secret" not in json.dumps(o.model_dump())


def test_no_turn_result_names_the_stderr_tail():
    o = decide(CodexStreamSummary(), stderr="Error loading config.toml: bad key\n")
    assert o.errors == ["the CLI ended without a turn result: Error loading config.toml: bad key"]
    assert o.is_error


def test_a_timeout_is_not_explained_as_a_cli_failure():
    o = decide(CodexStreamSummary(), exit_code=None, timed_out=True)
    assert o.errors == [] and o.kind is None


def test_the_decision_is_pure():
    s = failed("exceeded retry limit, last status: 429 Too Many Requests")
    before = s.model_dump()
    assert decide(s) == decide(s)
    assert s.model_dump() == before


def test_attempt_info_records_tokens_and_a_cost_only_with_a_price():
    s = summary_of(*STREAM)
    o = decide(s, exit_code=0)
    free = attempt_info(s, CodexAgentConfig(model="gpt-5.5"), o)
    assert free["tokens"] == {"input": 300, "cached": 120, "output": 60, "reasoning": 15}
    assert free["total_cost_usd"] is None
    priced = attempt_info(
        s,
        CodexAgentConfig(price_per_mtok=TokenPrices(input=1.25, cached_input=0.125, output=10)),
        o,
    )
    # (300-120) x 1.25 + 120 x 0.125 + 60 x 10, per million
    assert priced["total_cost_usd"] == round((180 * 1.25 + 120 * 0.125 + 60 * 10) / 1e6, 6)
    rec = AttemptRecord(
        task_id="1", attempt=1, outcome=Outcome.PASS, started=0, ended=1, info=priced
    )
    assert rec.tokens == free["tokens"] and rec.cost_usd == priced["total_cost_usd"]


def test_claude_usage_reads_as_the_same_token_vocabulary():
    rec = AttemptRecord(
        task_id="1",
        attempt=1,
        outcome=Outcome.PASS,
        started=0,
        ended=1,
        info={
            "usage": {
                "input_tokens": 10,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 5,
                "output_tokens": 7,
            }
        },
    )
    assert rec.tokens == {"input": 115, "cached": 100, "output": 7, "reasoning": 0}
    assert (
        AttemptRecord(task_id="1", attempt=1, outcome=Outcome.PASS, started=0, ended=1).tokens
        is None
    )


# --------------------------------------------------------------------------- config and argv


def test_config_is_a_registered_kind_with_safe_defaults():
    c = parse_agent_config({"kind": "codex"})
    assert isinstance(c, CodexAgentConfig)
    assert c.sandbox == "workspace-write" and c.model is None and c.price_per_mtok is None
    assert not full_access_requested(c)
    assert full_access_requested(CodexAgentConfig(sandbox="danger-full-access"))
    assert full_access_requested(
        CodexAgentConfig(extra_args=["--dangerously-bypass-approvals-and-sandbox"])
    )


def test_argv_keeps_the_prompt_and_every_secret_off_it():
    c = CodexAgentConfig(
        model="gpt-5.5",
        reasoning_effort="high",
        config={"model_verbosity": "low", "sandbox_workspace_write.network_access": True},
        extra_args=["--add-dir", "/data"],
        base_url="http://127.0.0.1:9/v1",
    )
    assert build_argv("/x/codex", c) == [
        "/x/codex",
        "exec",
        "--json",
        "--ephemeral",
        "--skip-git-repo-check",
        "-s",
        "workspace-write",
        "-m",
        "gpt-5.5",
        "-c",
        'model_reasoning_effort="high"',
        "-c",
        'model_verbosity="low"',
        "-c",
        "sandbox_workspace_write.network_access=true",
        "--add-dir",
        "/data",
        "-",
    ]


def test_config_toml_parses_and_holds_the_provider_but_no_key():
    builtin = tomllib.loads(config_toml(CodexAgentConfig(), "http://127.0.0.1:9/v1"))
    assert builtin["openai_base_url"] == "http://127.0.0.1:9/v1"
    assert builtin["check_for_update_on_startup"] is False
    assert builtin["analytics"] == {"enabled": False}
    assert builtin["history"] == {"persistence": "none"}
    assert builtin["shell_environment_policy"]["ignore_default_excludes"] is False
    assert "model_provider" not in builtin
    custom = tomllib.loads(
        config_toml(
            CodexAgentConfig(
                provider="local-vllm",
                base_url="http://h:8000/v1",
                api_key_env="VLLM_API_KEY",
                api_retries=1,
            ),
            "http://h:8000/v1",
        )
    )
    assert custom["model_provider"] == "local-vllm"
    assert custom["model_providers"]["local-vllm"] == {
        "name": "local-vllm",
        "base_url": "http://h:8000/v1",
        "wire_api": "responses",
        "env_key": "VLLM_API_KEY",
        "request_max_retries": 1,
        "stream_max_retries": 1,
    }
    assert "openai_base_url" not in custom
    assert tomllib.loads(config_toml(CodexAgentConfig(), None)).get("openai_base_url") is None


@pytest.mark.parametrize(
    ("value", "toml"),
    [
        ('a "q" é', '"a \\"q\\" é"'),
        (True, "true"),
        (3, "3"),
        (0.5, "0.5"),
        (["a", 1], '["a", 1]'),
        ({"x": 1}, "{x = 1}"),
    ],
)
def test_toml_values_parse_back(value, toml):
    assert toml_value(value) == toml
    assert tomllib.loads(f"k = {toml}")["k"] == value


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"config": {"bad key": 1}}, "dotted TOML key"),
        ({"config": {"k": object()}}, "cannot be a TOML value"),
        ({"provider": "openai", "base_url": "http://x"}, "built-in providers"),
        ({"provider": "ok"}, "needs base_url"),
        ({"provider": "bad name", "base_url": "http://x"}, "letters, digits"),
        ({"sandbox": "yolo"}, "sandbox"),
        ({"reasoning_effort": "max"}, "reasoning_effort"),
    ],
)
def test_bad_configs_are_refused_naming_the_field(config, words):
    with pytest.raises(ValidationError, match=words):
        CodexAgentConfig.model_validate(config)


def test_openai_base_url_from_the_orchestrator_becomes_base_url():
    env = {"OPENAI_BASE_URL": "http://proxy:1/v1"}
    assert effective_base_url(CodexAgentConfig(), env) == "http://proxy:1/v1"
    assert effective_base_url(CodexAgentConfig(base_url="http://mine/v1"), env) == "http://mine/v1"
    assert effective_base_url(CodexAgentConfig(pass_provider_env=False), env) is None


def test_a_missing_cli_is_one_line_saying_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(AgentLaunchError) as err:
        resolve_executable(None, str(tmp_path))
    text = str(err.value)
    assert "\n" not in text
    assert install_hint() in text and f"@openai/codex@{CODEX_VERSION}" in text
    assert str(tmp_path / "cache" / "specwave") in install_hint()  # where specwave looks
    with pytest.raises(AgentLaunchError, match="not found or not executable"):
        resolve_executable(str(tmp_path / "nope" / "codex"), None)
    # found in specwave's cache when not on PATH
    exe = tmp_path / "cache" / "specwave" / f"codex-{CODEX_VERSION}" / "node_modules" / ".bin"
    exe.mkdir(parents=True)
    (exe / "codex").write_text("#!/bin/sh\n")
    (exe / "codex").chmod(0o755)
    assert resolve_executable(None, str(tmp_path)) == str(exe / "codex")


def test_reset_time_fallback_clock_uses_the_given_zone():
    now = datetime(2026, 1, 1, 23, 59, tzinfo=UTC)
    assert parse_reset_time("12:01 AM", now) == now + timedelta(minutes=2)


# --------------------------------------------------------------------------- specwave run flags


def test_run_flags_go_to_the_agents_that_take_them():
    from flows.cli_run import agent_overrides, build_agent
    from tasks_lib.errors import SpecError

    flags = agent_overrides(model="gpt-5.5", sandbox="read-only", reasoning_effort="low")
    assert build_agent("codex", None, None, flags) == {
        "kind": "codex",
        "model": "gpt-5.5",
        "sandbox": "read-only",
        "reasoning_effort": "low",
    }
    with pytest.raises(SpecError) as err:
        build_agent("codex", None, None, agent_overrides(max_turns=3))
    assert str(err.value) == (
        '--max-turns: only the claude agent takes --max-turns (agent kind is "codex") — '
        "add --agent claude"
    )
    with pytest.raises(SpecError) as err:
        build_agent("claude", None, None, agent_overrides(sandbox="read-only"))
    assert "only the codex agent takes --sandbox" in str(err.value)
    with pytest.raises(SpecError) as err:
        build_agent("command", "true", None, agent_overrides(model="m"))
    assert "only the claude and codex agents take --model" in str(err.value)
