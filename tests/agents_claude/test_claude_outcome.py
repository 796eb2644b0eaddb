"""The claude agent's stream reading and outcome decision, without processes: each stream-json
line parsed once into a typed event (whatever the line holds), the events folded into a
summary, and the pure function that classifies an attempt (every branch)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tasks_lib.agents.claude import (
    DEFAULT_API_RETRIES,
    ClaudeOutcome,
    attempt_info,
    decide_outcome,
)
from tasks_lib.agents.claude_stream import (
    ApiRetryEvent,
    AssistantEvent,
    InitEvent,
    ResultEvent,
    StreamEvent,
    StreamSummary,
    SystemEvent,
    UserEvent,
    load_line,
    parse_event,
    parse_line,
    summarize_event,
)
from tasks_lib.agents.process import MAX_LINE_BYTES

INIT = {
    "type": "system",
    "subtype": "init",
    "session_id": "s-init",
    "model": "sonnet",
    "claude_code_version": "2.1.0",
    "permissionMode": "acceptEdits",
    "cwd": "/r",
    "tools": ["Bash"],
    "mcp_servers": [],
}
RETRY = {
    "type": "system",
    "subtype": "api_retry",
    "attempt": 1,
    "max_retries": 2,
    "retry_delay_ms": 567,
    "error_status": 529,
    "error": "overloaded",
    "uuid": "u",
}
ASSISTANT = {
    "type": "assistant",
    "session_id": "s",
    "message": {
        "id": "m1",
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "hmm"},
            {"type": "text", "text": "hello"},
            {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}},
            {"type": "tool_use", "id": "t2", "name": "Read", "input": {"file_path": "/r/a"}},
        ],
    },
}
USER = {
    "type": "user",
    "message": {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "t1",
                "is_error": True,
                "content": [{"type": "text", "text": "denied"}],
            }
        ],
    },
}
RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "result": "done",
    "session_id": "s-res",
    "terminal_reason": "completed",
    "num_turns": 3,
    "total_cost_usd": 0.12345678,
    "duration_ms": 900,
    "duration_api_ms": 800,
    "usage": {
        "input_tokens": 10,
        "output_tokens": 20,
        "cache_read_input_tokens": 5,
        "server_tool_use": {"web_search_requests": 0},
    },
    "permission_denials": [{"tool_name": "Write", "tool_use_id": "t9"}],
    "errors": [],
    "api_error_status": None,
    "api_error_type": None,
    "uuid": "x",
}


def line(event: dict[str, Any]) -> str:
    return json.dumps(event)


# --------------------------------------------------------------------------- one line


def test_each_event_kind_parses_into_its_model():
    init = parse_line(line(INIT))
    assert isinstance(init, InitEvent)
    assert (
        init.session_id,
        init.model,
        init.claude_code_version,
        init.permission_mode,
        init.cwd,
    ) == ("s-init", "sonnet", "2.1.0", "acceptEdits", "/r")
    retry = parse_line(line(RETRY))
    assert isinstance(retry, ApiRetryEvent)
    assert retry.brief() == {
        "attempt": 1,
        "error_status": 529,
        "error": "overloaded",
        "retry_delay_ms": 567,
    }
    other = parse_line(line({"type": "system", "subtype": "compact_boundary"}))
    assert type(other) is SystemEvent and other.subtype == "compact_boundary"
    assistant = parse_line(line(ASSISTANT))
    assert isinstance(assistant, AssistantEvent)
    assert [b.text for b in assistant.message.blocks("text")] == ["hello"]
    assert [b.name for b in assistant.message.blocks("tool_use")] == ["Bash", "Read"]
    assert assistant.message.blocks("tool_use")[0].input == {"command": "ls"}
    user = parse_line(line(USER))
    assert isinstance(user, UserEvent)
    [res_block] = user.message.blocks("tool_result")
    assert res_block.is_error is True and res_block.content == [{"type": "text", "text": "denied"}]
    result = parse_line(line(RESULT))
    assert isinstance(result, ResultEvent)
    assert (
        result.subtype,
        result.is_error,
        result.result,
        result.session_id,
        result.terminal_reason,
        result.num_turns,
        result.total_cost_usd,
        result.duration_api_ms,
    ) == ("success", False, "done", "s-res", "completed", 3, 0.12345678, 800)
    assert result.usage.counts() == {
        "input_tokens": 10,
        "output_tokens": 20,
        "cache_read_input_tokens": 5,
    }
    assert result.permission_denials == [{"tool_name": "Write", "tool_use_id": "t9"}]
    assert result.errors == [] and result.api_error_status is None


def test_an_api_error_result_keeps_its_status_type_and_errors():
    event = parse_line(
        line(
            {
                "type": "result",
                "subtype": "success",
                "is_error": True,
                "api_error_status": 529,
                "api_error_type": "overloaded_error",
                "terminal_reason": "api_error",
                "errors": ["a", "b"],
            }
        )
    )
    assert isinstance(event, ResultEvent)
    assert (
        event.is_error,
        event.api_error_status,
        event.api_error_type,
        event.terminal_reason,
        event.errors,
    ) == (True, 529, "overloaded_error", "api_error", ["a", "b"])


@pytest.mark.parametrize(
    "data",
    [
        {"type": "stream_event", "event": {"type": "content_block_delta"}},
        {"type": "rate_limit_event", "rate_limit_info": {}},
        {"subtype": "init"},  # no type: not an init
        {"type": ["result"]},
        {"type": "System", "subtype": "init"},  # case matters
    ],
)
def test_unknown_or_odd_event_types_are_plain_events(data):
    event = parse_line(json.dumps(data))
    assert type(event) is StreamEvent
    assert event.raw == data


def test_unknown_fields_are_ignored_and_the_decoded_object_is_kept():
    data = {**RESULT, "brand_new_field": {"x": [1, 2]}, "model_config": 1, "raw": "r"}
    event = parse_line(json.dumps(data))
    assert isinstance(event, ResultEvent) and event.result == "done"
    assert event.raw == data
    assert not hasattr(event, "brand_new_field")
    # the log summary reads the same object the event came from
    assert summarize_event(event.raw) == summarize_event(data)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "not json",
        "[1, 2]",
        "3",
        '"a string"',
        "null",
        "true",
        '{"type": "result", "result": "cut off',
        "{",
        "1" * 5000,
        "[" * 100_000,
        '{"a": 1} trailing',
    ],
)
def test_garbage_lines_are_not_events(text):
    assert load_line(text) is None
    assert parse_line(text) is None


def test_a_line_with_surrounding_whitespace_or_a_carriage_return_is_still_an_event():
    assert isinstance(parse_line("  " + line(INIT) + "\r"), InitEvent)


def test_fields_of_the_wrong_type_count_as_absent_and_lists_take_one_value():
    event = parse_event(
        {
            "type": "result",
            "api_error_status": "529",
            "num_turns": 2.5,
            "result": {"text": "x"},
            "session_id": 7,
            "total_cost_usd": True,
            "terminal_reason": ["api_error"],
            "usage": [1, 2],
            "errors": "boom",
            "permission_denials": 5,
            "is_error": "yes",
        }
    )
    assert isinstance(event, ResultEvent)
    assert event.api_error_status is None and event.num_turns is None
    assert event.result is None and event.session_id is None
    assert event.total_cost_usd is None and event.terminal_reason is None
    assert event.usage.counts() == {}
    assert event.errors == ["boom"] and event.permission_denials == ["5"]
    assert event.is_error is True  # truthiness, as before
    assert parse_event({"type": "result", "api_error_status": True}).api_error_status is None
    falsy = parse_event({"type": "result", "errors": 0, "permission_denials": "", "is_error": 0})
    assert isinstance(falsy, ResultEvent)
    assert falsy.errors == [] and falsy.permission_denials == [] and falsy.is_error is False
    mixed = parse_event(
        {"type": "result", "permission_denials": [{"a": 1}, "b", 3], "errors": ["e", 2, None]}
    )
    assert isinstance(mixed, ResultEvent)
    assert mixed.permission_denials == [{"a": 1}, "b", "3"]
    assert mixed.errors == ["e", "2", "None"]


def test_message_shapes_that_are_not_lists_of_blocks_have_no_blocks():
    for message in (None, "text", [1], {"content": "a user prompt"}, {"content": {"a": 1}}):
        event = parse_event({"type": "assistant", "message": message})
        assert isinstance(event, AssistantEvent) and event.message.content == []
    event = parse_event(
        {
            "type": "assistant",
            "message": {
                "content": [
                    3,
                    "x",
                    None,
                    {"type": "text", "text": None},
                    {"type": "text"},
                    {"type": "text", "text": 12},
                    {"text": "no type"},
                ]
            },
        }
    )
    assert isinstance(event, AssistantEvent)
    # str() of a present value (as the agent always joined it), "" when the key is missing
    assert [b.text for b in event.message.blocks("text")] == ["None", "", "12"]
    assert len(event.message.content) == 4


# --------------------------------------------------------------------------- the summary


def test_a_full_stream_folds_into_the_summary():
    stdout = "\n".join(
        [line(INIT), line(RETRY), line(ASSISTANT), line(USER), "plain text", line(RESULT)]
    )
    s = StreamSummary.parse(stdout)
    assert s.init is not None and s.init.model == "sonnet"
    assert [r.error_status for r in s.api_retries] == [529]
    assert s.assistant_text == ["hello"] and s.tool_uses == 2
    assert s.other_lines == ["plain text"]
    assert s.result is not None and s.output() == "done"
    assert s.session_id == "s-res"


def test_a_partial_stream_has_no_result_and_falls_back_to_the_assistant_text():
    second = {
        "type": "assistant",
        "message": {
            "content": [{"type": "text", "text": "more"}, {"type": "tool_use", "name": "Grep"}]
        },
    }
    s = StreamSummary.parse(
        "\n".join([line(INIT), line(ASSISTANT), line(second), '{"type": "result", "resu'])
    )
    assert s.result is None
    assert s.output() == "hello\nmore" and s.tool_uses == 3
    assert s.other_lines == ['{"type": "result", "resu']
    assert s.session_id == "s-init"  # no result: the init's


def test_a_result_without_text_falls_back_and_the_last_result_wins():
    s = StreamSummary.parse("\n".join([line(ASSISTANT), line({"type": "result", "result": None})]))
    assert s.result is not None and s.output() == "hello"
    s = StreamSummary.parse(
        "\n".join(
            [
                line({"type": "result", "result": "first"}),
                line({"type": "result", "result": "second", "session_id": ""}),
                line(INIT),
            ]
        )
    )
    assert s.output() == "second"
    assert s.session_id == "s-init"  # an empty session id falls back too


def test_add_line_returns_the_event_it_folded_in():
    s = StreamSummary()
    event = s.add_line(line(RETRY))
    assert isinstance(event, ApiRetryEvent) and s.api_retries == [event]
    assert s.add_line("   ") is None and s.other_lines == []
    assert s.add_line(" junk ") is None and s.other_lines == ["junk"]


def test_a_summary_built_from_dicts_validates_them():
    s = StreamSummary(result={"type": "result", "result": "R", "api_error_status": 401})
    assert isinstance(s.result, ResultEvent) and s.result.api_error_status == 401
    assert s.result.raw["api_error_status"] == 401
    assert StreamSummary().output() == ""


def pieces_of(text: str) -> list[str]:
    """What run_process_group's on_line gives for one line (see supervise._Pump)."""
    raw = text.encode("utf-8")
    parts = []
    while len(raw) >= MAX_LINE_BYTES:
        parts.append(raw[:MAX_LINE_BYTES])
        raw = raw[MAX_LINE_BYTES:]
    parts.append(raw)
    return [p.decode("utf-8", errors="replace") for p in parts]


def test_a_line_longer_than_the_pump_limit_is_joined_from_its_pieces():
    # 2-byte characters at odd offsets: both piece boundaries cut one
    text = "a" + "é" * MAX_LINE_BYTES
    big = json.dumps({"type": "result", "result": text, "num_turns": 4}, ensure_ascii=False)
    pieces = pieces_of(big)
    assert len(pieces) == 3
    s = StreamSummary()
    assert s.feed(line(INIT)) is not None
    assert [s.feed(p) for p in pieces[:-1]] == [None, None]
    event = s.feed(pieces[-1])
    assert isinstance(event, ResultEvent) and event.num_turns == 4 and s.result is event
    # only the characters cut at the boundaries differ from the whole line (each one is
    # replaced on both sides of its cut)
    assert s.output().count("\ufffd") == 4 and len(s.output()) == len(text) + 2
    assert s.output().replace("\ufffd", "") == text[:-2]
    assert s.other_lines == []
    assert isinstance(s.feed(line(RETRY)), ApiRetryEvent)  # the next line is its own


def test_a_long_line_of_exactly_whole_pieces_ends_with_an_empty_line_or_at_eof():
    body = "x" * (MAX_LINE_BYTES - len(line({"type": "result", "result": ""})))
    big = line({"type": "result", "result": body})
    assert len(big.encode()) == MAX_LINE_BYTES
    s = StreamSummary()
    assert s.feed(big) is None
    assert isinstance(s.feed(""), ResultEvent) and s.output() == body
    s = StreamSummary()
    s.feed(big)
    assert s.result is None
    s.finish()
    assert s.result is not None and s.output() == body
    s.finish()  # nothing left: no-op
    assert s.other_lines == []


def test_long_lines_that_are_not_json_objects_are_not_joined():
    junk = "y" * MAX_LINE_BYTES
    s = StreamSummary()
    assert s.feed(junk) is None
    assert isinstance(s.feed(line(RESULT)), ResultEvent)
    assert s.other_lines == [junk]
    # pieces of a long broken object are one other line, and the next line stays intact
    s = StreamSummary()
    for p in pieces_of('{"type": "result", "result": "' + "z" * MAX_LINE_BYTES):
        s.feed(p)
    assert s.result is None and len(s.other_lines) == 1
    assert isinstance(s.feed(line(INIT)), InitEvent)


# --------------------------------------------------------------------------- the outcome


def decide(
    result: dict[str, Any] | None = None, *, other_lines: list[str] | None = None, **kw: Any
) -> ClaudeOutcome:
    summary = StreamSummary(result=result, other_lines=other_lines or [])
    args: dict[str, Any] = {
        "exit_code": 1,
        "timed_out": False,
        "cancelled": False,
        "stderr": "",
        "api_retries": 2,
        "max_turns": 7,
        "max_budget_usd": 1.5,
        "retry_after_s": 12.5,
    }
    args.update(kw)
    return decide_outcome(summary, **args)


def api_error(status: int | None, text: str = "API Error: boom", **more: Any) -> dict:
    return {
        "type": "result",
        "subtype": "success",
        "is_error": True,
        "result": text,
        "api_error_status": status,
        "terminal_reason": "api_error",
        **more,
    }


def test_a_clean_success_is_no_failure():
    o = decide(RESULT, exit_code=0)
    assert o == ClaudeOutcome(
        exit_code=0,
        is_error=False,
        final=False,
        retry_after_s=None,
        kind=None,
        api_error_status=None,
        stopped_by_specwave=None,
        errors=[],
    )


def test_an_error_result_without_a_status_or_limit_only_reports_its_errors():
    o = decide(
        {
            "type": "result",
            "subtype": "error_during_execution",
            "is_error": True,
            "errors": ["tool crashed", "tool crashed", "other"],
        }
    )
    assert o.is_error and not o.final and o.retry_after_s is None and o.kind is None
    assert o.errors == ["tool crashed", "other"]  # deduplicated, order kept


@pytest.mark.parametrize("status", [401, 403])
def test_authentication_and_permission_errors_are_final(status):
    o = decide(api_error(status), exit_code=1)
    assert o.kind == "authentication" and o.final and o.retry_after_s is None
    assert o.api_error_status == status and o.exit_code == 1
    what = "authentication failed" if status == 401 else "permission denied by the API"
    assert o.errors[0] == (
        f"{what} (HTTP {status}) — check ANTHROPIC_API_KEY (or "
        "CLAUDE_CODE_OAUTH_TOKEN) in the orchestrator's environment; "
        "not retried"
    )
    assert o.stopped_by_specwave is None


def test_a_401_without_is_error_or_api_error_reason_is_still_final():
    o = decide({"type": "result", "is_error": False, "api_error_status": 401}, exit_code=0)
    assert o.kind == "authentication" and o.final and not o.is_error and o.exit_code == 0


@pytest.mark.parametrize("exit_code, expected", [(None, 1), (0, 1), (3, 3)])
def test_our_authentication_stop_is_a_final_error_with_an_exit_code(exit_code, expected):
    o = decide(
        None,
        exit_code=exit_code,
        cancelled=True,
        stopped_reason="authentication_failed",
        stopped_status=401,
    )
    assert o.kind == "authentication" and o.final and o.is_error
    assert o.exit_code == expected and o.api_error_status == 401
    assert o.stopped_by_specwave == "authentication_failed"
    assert o.errors[0].startswith("authentication failed (HTTP 401)")
    assert len(o.errors) == 1  # cancelled by us: no "ended without a result"


def test_the_result_status_wins_over_the_stopping_events():
    o = decide(api_error(403), stopped_reason="authentication_failed", stopped_status=401)
    assert o.api_error_status == 403 and "permission denied" in o.errors[0]
    o = decide(api_error(None), stopped_reason="authentication_failed", stopped_status=None)
    assert o.kind == "authentication" and o.errors[0].startswith(
        "authentication failed (HTTP None)"
    )


def test_a_stop_status_without_the_auth_reason_is_only_the_status():
    o = decide(None, stopped_reason="other", stopped_status=529, cancelled=True)
    assert o.api_error_status == 529 and o.stopped_by_specwave is None
    assert o.kind is None and not o.is_error and o.errors == []


@pytest.mark.parametrize("status", [None, 408, 409, 429, 500, 502, 503, 504, 529, 599])
def test_overload_rate_limit_5xx_and_connection_errors_are_retryable(status):
    o = decide(api_error(status, "API Error:\n  Overloaded"), api_retries=4)
    assert o.kind == "api_transient" and not o.final and o.retry_after_s == 12.5
    label = "connection error" if status is None else f"HTTP {status}"
    assert o.errors == [
        f"API error ({label}) after 4 CLI retries: API Error: Overloaded; retrying after 12.5 s"
    ]
    assert o.is_error


def test_an_error_status_without_the_api_error_reason_is_still_an_api_error():
    o = decide({"type": "result", "is_error": True, "api_error_status": 529})
    assert o.kind == "api_transient" and o.retry_after_s == 12.5
    assert "after 2 CLI retries: ;" in o.errors[0]  # no result text
    # neither is_error nor the reason: the status alone decides nothing
    o = decide({"type": "result", "is_error": False, "api_error_status": 529}, exit_code=0)
    assert o.kind is None and o.retry_after_s is None and o.api_error_status == 529


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_other_client_errors_are_final(status):
    o = decide(api_error(status, "model not found"))
    assert o.kind == "api_request" and o.final and o.retry_after_s is None
    assert o.errors == [
        f"API error (HTTP {status}): model not found — fix the request "
        "(model name, prompt size); not retried"
    ]


def test_the_result_text_in_an_api_error_is_one_line_and_capped():
    o = decide(api_error(404, "x\n" * 500))
    assert "\n" not in o.errors[0] and len(o.errors[0]) < 300


@pytest.mark.parametrize(
    "result",
    [
        {"type": "result", "subtype": "error_max_turns", "is_error": True},
        {"type": "result", "subtype": "success", "terminal_reason": "max_turns"},
    ],
)
def test_max_turns_by_reason_or_subtype_is_final(result):
    o = decide({**result, "errors": ["Reached maximum number of turns (7)"]})
    assert o.kind == "max_turns" and o.final and o.retry_after_s is None
    assert o.errors == [
        "stopped at max_turns (7) — raise max_turns or split the task",
        "Reached maximum number of turns (7)",
    ]


@pytest.mark.parametrize(
    "result",
    [
        {"type": "result", "subtype": "error_max_budget_usd", "is_error": True},
        {"type": "result", "subtype": "success", "terminal_reason": "budget_exhausted"},
    ],
)
def test_the_budget_by_reason_or_subtype_is_final(result):
    o = decide(result, max_budget_usd=0.25)
    assert o.kind == "max_budget" and o.final
    assert o.errors == [
        "stopped at max_budget_usd (0.25) — raise max_budget_usd; not "
        "retried (it would spend again)"
    ]


def test_limits_unset_are_named_as_none():
    o = decide({"type": "result", "terminal_reason": "max_turns"}, max_turns=None)
    assert o.errors[0].startswith("stopped at max_turns (None)")


def test_branch_precedence_auth_then_api_error_then_turns_then_budget():
    assert decide(api_error(401, subtype="error_max_turns")).kind == "authentication"
    assert decide({**api_error(529), "subtype": "error_max_turns"}).kind == "api_transient"
    assert (
        decide(
            {"type": "result", "terminal_reason": "max_turns", "subtype": "error_max_budget_usd"}
        ).kind
        == "max_turns"
    )


def test_no_result_line_names_the_stderr_tail_else_the_other_lines():
    o = decide(None, stderr="l1\nl2\nl3\nerror: unknown option --bogus\n")
    assert o.errors == ["the CLI ended without a result: l2 l3 error: unknown option --bogus"]
    o = decide(None, other_lines=["a", "b", "c", "d"])
    assert o.errors == ["the CLI ended without a result: b c d"]
    assert decide(None).errors == []
    assert decide(None, stderr="boom", timed_out=True).errors == []
    assert decide(None, stderr="boom", cancelled=True).errors == []
    assert decide({"type": "result"}, stderr="boom").errors == []


def test_the_no_result_error_comes_after_the_failure_it_explains():
    o = decide(None, stderr="died", stopped_reason="authentication_failed", stopped_status=401)
    assert [e.split(" ")[0] for e in o.errors] == ["authentication", "the"]


def test_the_decision_is_pure():
    summary = StreamSummary(result={**api_error(529), "errors": ["e1"]})
    kw: dict[str, Any] = {
        "exit_code": 1,
        "timed_out": False,
        "cancelled": False,
        "retry_after_s": 3.0,
    }
    first = decide_outcome(summary, **kw)
    again = decide_outcome(summary, **kw)
    assert first == again and first.errors[1:] == ["e1"]
    assert summary.result is not None and summary.result.errors == ["e1"]  # not mutated


def test_defaults_name_the_default_cli_retries():
    o = decide_outcome(
        StreamSummary(result=api_error(500)), exit_code=1, timed_out=False, cancelled=False
    )
    assert f"after {DEFAULT_API_RETRIES} CLI retries" in o.errors[0]


# --------------------------------------------------------------------------- the record


def test_attempt_info_keeps_what_the_record_always_had():
    s = StreamSummary.parse("\n".join([line(INIT), line(RETRY), line(ASSISTANT), line(RESULT)]))
    info = attempt_info(s, "acceptEdits", 529)
    assert info == {
        "session_id": "s-res",
        "model": "sonnet",
        "claude_code_version": "2.1.0",
        "permission_mode": "acceptEdits",
        "is_error": False,
        "subtype": "success",
        "terminal_reason": "completed",
        "api_error_status": 529,
        "api_error_type": None,
        "total_cost_usd": 0.123457,
        "num_turns": 3,
        "usage": {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 5},
        "permission_denials": [{"tool_name": "Write", "tool_use_id": "t9"}],
        "duration_api_ms": 800,
        "api_retries": [
            {"attempt": 1, "error_status": 529, "error": "overloaded", "retry_delay_ms": 567}
        ],
        "tool_uses": 2,
    }
    assert list(info) == [
        "session_id",
        "model",
        "claude_code_version",
        "permission_mode",
        "is_error",
        "subtype",
        "terminal_reason",
        "api_error_status",
        "api_error_type",
        "total_cost_usd",
        "num_turns",
        "usage",
        "permission_denials",
        "duration_api_ms",
        "api_retries",
        "tool_uses",
    ]
    json.dumps(info)  # the record is JSON


def test_attempt_info_of_an_empty_stream_is_all_absent():
    info = attempt_info(StreamSummary(), "plan", None)
    assert info["session_id"] is None and info["model"] is None
    assert info["is_error"] is None and info["total_cost_usd"] is None
    assert info["usage"] == {} and info["permission_denials"] == []
    assert info["api_retries"] == [] and info["tool_uses"] == 0
    assert info["permission_mode"] == "plan"
