"""Scripted replies for the fake OpenAI Responses API, as plain data.

A *scenario* is chosen by the prompt: a line ``specwave-scenario: <name>`` anywhere in the
user-side text of the request's ``input`` (the same marker as the scripted Anthropic model).
The *turn* is the number of tool calls already answered in the request (``*_call_output``
items): turn ``n`` of the scenario answers it. A turn that makes no tool call ends the CLI's
turn, so a tool-using turn makes exactly one call.

Scenario keys (all optional except ``turns``):

``description``
    One line for humans.
``turns``
    List of turns. A turn is one of

    - ``{"output": [block, ...]}`` -- a normal streamed response;
    - ``{"error": {"status": 401, "body": {...}, "headers": {...}}}`` -- an HTTP error reply;
    - ``{"failed": {"code": "...", "message": "..."}}`` -- a stream that ends with
      ``response.failed``;
    - ``{"hang": True}`` -- start the SSE stream (``response.created``) then send nothing
      until the client goes away or the server stops.

    Any turn may carry ``"sleep": <seconds or "{sleep}">`` (wait before answering) and
    ``"usage": {...}`` (the token counts of ``response.completed``; default
    :data:`DEFAULT_USAGE`). A request whose turn is past the end gets a plain text reply
    saying so (no JSON block: a parse error, never a pass).
``first_request_error``
    An error (a turn's ``error`` shape) for the *first* request of each conversation (the
    CLI's ``session-id`` header, scenario and task id); the CLI's own retry of it follows
    ``turns``.

Blocks: ``{"type": "text", "text": str}``, ``{"type": "report", "before": str, "report":
{...}, "after": str}`` (sent as one message: ``before``, a fenced json block of ``report``,
``after``), ``{"type": "reasoning", "text": str}`` (a reasoning summary), ``{"type": "shell",
"command": str, "yield_time_ms": int?}`` (one shell tool call: ``exec_command``,
``shell_command`` or ``shell``, whichever the CLI offers) and ``{"type": "patch", "patch":
str}`` (one ``apply_patch`` call: the freeform tool, the function, or ``apply_patch`` in a
shell command, whichever the CLI offers).

Placeholders (only these names are replaced, so literal braces are safe): ``{cwd}`` (the
CLI's ``<cwd>``), ``{task_id}``, ``{task_slug}``, ``{write_rel}`` (``specwave-write: PATH``,
default ``specwave_codex_{task_slug}.txt``), ``{write_path}``, ``{write_rel_sh}`` /
``{write_path_sh}`` (shell-quoted), ``{test_command}`` (``specwave-test-command: CMD``),
``{sleep}`` (``specwave-sleep: S``, default 1), ``{reset_seconds}`` (``specwave-reset-seconds:
N``, default 3600), ``{resets_at}`` (now + reset_seconds, Unix time), ``{scenario}``,
``{turn}``, ``{last_tool_output}`` (the latest tool output, first 500 characters).
"""

from __future__ import annotations

import copy
from typing import Any

from tasks_lib.scripted_model.scenarios import SCENARIO_MARKER

__all__ = [
    "DEFAULT_USAGE",
    "SCENARIOS",
    "SCENARIO_MARKER",
    "merged_scenarios",
    "validate_scenario",
]

DEFAULT_TEST_COMMAND = "python3 -c \"print('ok')\""
DEFAULT_SLEEP_SECONDS = 1.0
DEFAULT_RESET_SECONDS = 3600
#: ``response.completed`` usage of every response unless a turn says otherwise.
DEFAULT_USAGE: dict[str, Any] = {
    "input_tokens": 1000,
    "input_tokens_details": {"cached_tokens": 400},
    "output_tokens": 50,
    "output_tokens_details": {"reasoning_tokens": 10},
    "total_tokens": 1050,
}

Scenario = dict[str, Any]


def _report(status: str, **fields: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "status": status,
        "files_modified": [],
        "files_created": [],
        "functions_created": [],
        "exports_added": [],
        "test_files": [],
        "test_results": None,
        "blocker": None,
        "notes": "scripted scenario {scenario}",
        "duration_minutes": 0,
    }
    report.update(fields)
    return {"type": "report", "report": report, "after": "TASK COMPLETE"}


_WRITE_TURN: dict[str, Any] = {
    "output": [
        {"type": "reasoning", "text": "The task asks for {write_rel}; one shell command does it."},
        {"type": "text", "text": "I will create {write_rel} for task {task_id}."},
        {
            "type": "shell",
            "command": "mkdir -p \"$(dirname -- {write_rel_sh})\" && printf '%s\\n' "
            "'specwave codex output for task {task_id} (scenario {scenario})' > {write_rel_sh}",
        },
    ]
}

_PASS_AFTER_WRITE: dict[str, Any] = {
    "output": [
        dict(
            _report(
                "pass",
                files_created=["{write_rel}"],
                test_results={"ran": 1, "passed": 1, "failed": 0},
                notes="scripted scenario {scenario}; tool output: {last_tool_output}",
            ),
            before="Created {write_rel}.",
        )
    ]
}

_PATCH = (
    "*** Begin Patch\n"
    "*** Add File: {write_rel}\n"
    "+patched by the scripted model for task {task_id}\n"
    "+second line\n"
    "*** End Patch\n"
)


def _error(status: int, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    return {"status": status, "body": body, "headers": headers}


_RATE_LIMIT_BODY = {
    "error": {
        "message": "Rate limit reached for requests per min (scripted)",
        "type": "requests",
        "code": "rate_limit_exceeded",
    }
}

SCENARIOS: dict[str, Scenario] = {
    "write-and-pass": {
        "description": "Write {write_rel} with a shell command, then report pass with it.",
        "turns": [_WRITE_TURN, _PASS_AFTER_WRITE],
    },
    "patch-and-pass": {
        "description": "Add {write_rel} with apply_patch, then report pass with it.",
        "turns": [
            {"output": [{"type": "patch", "patch": _PATCH}]},
            {
                "output": [
                    dict(
                        _report(
                            "pass",
                            files_created=["{write_rel}"],
                            notes="patch result: {last_tool_output}",
                        ),
                        before="Patched {write_rel}.",
                    )
                ]
            },
        ],
    },
    "bash-test-pass": {
        "description": "Run {test_command} with the shell tool, then report pass with results.",
        "turns": [
            {"output": [{"type": "shell", "command": "{test_command}"}]},
            {
                "output": [
                    dict(
                        _report(
                            "pass",
                            test_results={"ran": 1, "passed": 1, "failed": 0},
                            notes="output: {last_tool_output}",
                        ),
                        before="Tests ran.",
                    )
                ]
            },
        ],
    },
    "report-fail": {
        "description": "Report status fail with a blocker, no tool use.",
        "turns": [
            {
                "output": [
                    dict(
                        _report(
                            "fail",
                            test_results={"ran": 1, "passed": 0, "failed": 1},
                            blocker="scripted failure: the required API does not exist",
                        ),
                        before="I could not finish task {task_id}.",
                    )
                ]
            }
        ],
    },
    "no-json": {
        "description": "Answer 'I did it' with no json block.",
        "turns": [{"output": [{"type": "text", "text": "I did it. Everything is done."}]}],
    },
    "rate-limit-then-pass": {
        "description": "HTTP 429 with retry-after: 1 on the conversation's first request "
        "(the CLI retries by itself), then as write-and-pass.",
        "first_request_error": _error(429, _RATE_LIMIT_BODY, **{"retry-after": "1"}),
        "turns": [_WRITE_TURN, _PASS_AFTER_WRITE],
    },
    "rate-limited": {
        "description": "HTTP 429 without retry-after on every request (the CLI gives up at once).",
        "turns": [{"error": _error(429, _RATE_LIMIT_BODY)}],
    },
    "auth-error": {
        "description": "HTTP 401 invalid_api_key on every request.",
        "turns": [
            {
                "error": _error(
                    401,
                    {
                        "error": {
                            "message": "Incorrect API key provided (scripted).",
                            "type": "invalid_request_error",
                            "code": "invalid_api_key",
                        }
                    },
                )
            }
        ],
    },
    "usage-limit": {
        "description": "HTTP 429 usage_limit_reached, resetting in {reset_seconds} s.",
        "turns": [
            {
                "error": _error(
                    429,
                    {
                        "error": {
                            "type": "usage_limit_reached",
                            "message": "The usage limit has been reached",
                            "plan_type": "plus",
                            "resets_at": "{resets_at}",
                            "resets_in_seconds": "{reset_seconds}",
                        }
                    },
                )
            }
        ],
    },
    "server-error": {
        "description": "HTTP 500 on every request (the CLI retries with a back-off).",
        "turns": [
            {
                "error": _error(
                    500, {"error": {"message": "scripted server error", "type": "server_error"}}
                )
            }
        ],
    },
    "context-window": {
        "description": "The stream fails with context_length_exceeded.",
        "turns": [
            {
                "failed": {
                    "code": "context_length_exceeded",
                    "message": "Your input exceeds the context window of this model.",
                }
            }
        ],
    },
    "hang": {
        "description": "Start the SSE stream, then send nothing until the client or server quits.",
        "turns": [{"hang": True}],
    },
    "shell-hang": {
        "description": "A shell command that starts a setsid'd sleeper and blocks, then a hang.",
        "turns": [
            {
                "output": [
                    {
                        "type": "shell",
                        "command": "(setsid sleep 3600 >/dev/null 2>&1 &) ; sleep 3600",
                        "yield_time_ms": 1000,
                    }
                ]
            },
            {"hang": True},
        ],
    },
    "slow-pass": {
        "description": "Sleep {sleep} s, then as write-and-pass (shows workers overlapping).",
        "turns": [dict(_WRITE_TURN, sleep="{sleep}"), _PASS_AFTER_WRITE],
    },
}

_TURN_KINDS = {"output", "error", "failed", "hang"}
_BLOCKS = {"text", "report", "reasoning", "shell", "patch"}


def merged_scenarios(extra: dict[str, Scenario] | None = None) -> dict[str, Scenario]:
    """A deep copy of :data:`SCENARIOS` with ``extra`` laid over it (same names win).

    Raises:
        ValueError: a scenario is not of the shape described in this module.
    """
    out = copy.deepcopy(SCENARIOS)
    for name, scenario in (extra or {}).items():
        validate_scenario(name, scenario)
        out[name] = copy.deepcopy(scenario)
    return out


def validate_scenario(name: str, scenario: Scenario) -> None:
    """Check the shape of one scenario; raise ``ValueError`` naming what to fix."""
    turns = scenario.get("turns")
    if not isinstance(turns, list) or not turns:
        raise ValueError(f'scenario "{name}": "turns" must be a non-empty list of turns')
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not (_TURN_KINDS & turn.keys()):
            raise ValueError(
                f'scenario "{name}": turn {i} needs "output" (list of blocks), "error" '
                '({status, body}), "failed" ({code, message}) or "hang": true'
            )
        calls = 0
        for block in turn.get("output", []):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in _BLOCKS:
                raise ValueError(
                    f'scenario "{name}": turn {i}: block type {kind!r} is not one of '
                    f"{', '.join(sorted(_BLOCKS))}"
                )
            calls += kind in ("shell", "patch")
        if calls > 1:
            raise ValueError(
                f'scenario "{name}": turn {i} makes {calls} tool calls — one per turn (the '
                "turn number counts the tool outputs the CLI sends back)"
            )
