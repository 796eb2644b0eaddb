"""Scripted replies for the fake Anthropic Messages API, as plain data.

A *scenario* is chosen by the prompt (a line ``specwave-scenario: <name>`` anywhere in the
user-side text of the conversation). The *turn* is the number of assistant messages already in
the request's ``messages``; turn ``n`` of the scenario answers it.

Scenario keys (all optional except ``turns``):

``description``
    One line for humans.
``turns``
    List of turns. A turn is one of

    - ``{"content": [block, ...], "stop_reason": "end_turn" | "tool_use"}`` -- a normal reply;
    - ``{"error": {"status": 401, "body": {...}, "headers": {...}}}`` -- an HTTP error reply;
    - ``{"hang": True}`` -- start the SSE stream (``message_start``) then send nothing until the
      client goes away or the server stops.

    Any turn may carry ``"sleep": <seconds or "{sleep}">``: wait that long before answering.
    A request whose turn is past the end of the list gets a plain text reply saying so (no JSON
    block, so a result parser records it as a parse error, never as a pass).
``first_request_error``
    An error (same shape as a turn's ``error``) returned to the *first* request of each
    conversation (keyed by the CLI's session id, scenario and task id); later requests of that
    conversation follow ``turns`` normally.

Blocks: ``{"type": "text", "text": str}``, ``{"type": "tool_use", "name": str, "input": {...}}``
and the convenience block ``{"type": "report", "before": str, "report": {...}, "after": str}``,
sent as one text block: ``before``, a fenced ```` ```json ```` block of ``report``, then ``after``.

Every string inside a scenario may use these placeholders (only these names are replaced, so
literal JSON braces are safe):

``{cwd}``              working directory the CLI told the model (``Primary working directory:``)
``{task_id}``          task id from ``specwave-task-id: X``, ``- **ID**: X`` or ``Task ID: X``
                       (``task`` when absent)
``{task_slug}``        ``{task_id}`` with characters other than ``[A-Za-z0-9._-]`` made ``_``
``{write_rel}``        ``specwave-write: <path>`` from the prompt, default
                       ``specwave_demo_{task_slug}.txt``
``{write_path}``       ``{write_rel}`` joined to ``{cwd}`` (unchanged when already absolute)
``{test_command}``     ``specwave-test-command: <cmd>``, default ``python -c "print('ok')"``
``{sleep}``            ``specwave-sleep: <seconds>``, default ``1``
``{scenario}``, ``{turn}``
``{last_tool_result}`` text of the latest ``tool_result`` in the conversation (first 500 chars)
``{last_tool_error}``  ``true`` / ``false``: whether that tool result was an error

Add scenarios by passing ``ScriptedModelServer(scenarios={"name": {...}})`` (merged over
these) or ``--scenarios-file extra.json`` to ``python -m tasks_lib.scripted_model``.
"""

from __future__ import annotations

import copy
from typing import Any

SCENARIO_MARKER = "specwave-scenario"
DEFAULT_TEST_COMMAND = "python -c \"print('ok')\""
DEFAULT_SLEEP_SECONDS = 1.0

Scenario = dict[str, Any]

_WRITE_TURN: dict[str, Any] = {
    "content": [
        {"type": "text", "text": "I will create {write_rel} for task {task_id}."},
        {
            "type": "tool_use",
            "name": "Write",
            "input": {
                "file_path": "{write_path}",
                "content": "specwave demo output for task {task_id} (scenario {scenario})\n",
            },
        },
    ],
    "stop_reason": "tool_use",
}

_PASS_AFTER_WRITE: dict[str, Any] = {
    "content": [
        {
            "type": "report",
            "before": "Created {write_rel}.",
            "report": {
                "status": "pass",
                "files_modified": [],
                "files_created": ["{write_rel}"],
                "functions_created": [],
                "exports_added": [],
                "test_files": [],
                "test_results": {"ran": 1, "passed": 1, "failed": 0},
                "blocker": None,
                "notes": "scripted scenario {scenario}; write result: {last_tool_result}",
                "duration_minutes": 0,
            },
            "after": "TASK COMPLETE",
        }
    ],
    "stop_reason": "end_turn",
}

SCENARIOS: dict[str, Scenario] = {
    "write-and-pass": {
        "description": "Write {write_path}, then report pass with it in files_created.",
        "turns": [_WRITE_TURN, _PASS_AFTER_WRITE],
    },
    "bash-test-pass": {
        "description": "Run {test_command} with Bash, then report pass with test_results.",
        "turns": [
            {
                "content": [
                    {"type": "text", "text": "Running the tests."},
                    {
                        "type": "tool_use",
                        "name": "Bash",
                        "input": {
                            "command": "{test_command}",
                            "description": "Run the task's tests",
                        },
                    },
                ],
                "stop_reason": "tool_use",
            },
            {
                "content": [
                    {
                        "type": "report",
                        "before": "Tests ran.",
                        "report": {
                            "status": "pass",
                            "files_modified": [],
                            "files_created": [],
                            "functions_created": [],
                            "exports_added": [],
                            "test_files": [],
                            "test_results": {"ran": 1, "passed": 1, "failed": 0},
                            "blocker": None,
                            "notes": "tool error: {last_tool_error}; output: {last_tool_result}",
                            "duration_minutes": 0,
                        },
                        "after": "TASK COMPLETE",
                    }
                ],
                "stop_reason": "end_turn",
            },
        ],
    },
    "report-fail": {
        "description": "Report status fail with a blocker, no tool use.",
        "turns": [
            {
                "content": [
                    {
                        "type": "report",
                        "before": "I could not finish the task ({task_id}).",
                        "report": {
                            "status": "fail",
                            "files_modified": [],
                            "files_created": [],
                            "functions_created": [],
                            "exports_added": [],
                            "test_files": [],
                            "test_results": {"ran": 1, "passed": 0, "failed": 1},
                            "blocker": "scripted failure: the required API does not exist",
                            "notes": "scripted scenario report-fail",
                            "duration_minutes": 0,
                        },
                        "after": "TASK COMPLETE",
                    }
                ],
                "stop_reason": "end_turn",
            }
        ],
    },
    "no-json": {
        "description": "Answer 'I did it' with no json block.",
        "turns": [
            {
                "content": [{"type": "text", "text": "I did it. Everything is done."}],
                "stop_reason": "end_turn",
            }
        ],
    },
    "denied-pass": {
        "description": (
            "Write into {cwd}/.git/ (protected: -p mode denies it under acceptEdits even when "
            "Write is in --allowedTools), then claim pass anyway."
        ),
        "turns": [
            {
                "content": [
                    {
                        "type": "tool_use",
                        "name": "Write",
                        "input": {
                            "file_path": "{cwd}/.git/specwave_denied_{task_slug}",
                            "content": "this write must be denied\n",
                        },
                    }
                ],
                "stop_reason": "tool_use",
            },
            {
                "content": [
                    {
                        "type": "report",
                        "before": "Done (the tool said: {last_tool_result}).",
                        "report": {
                            "status": "pass",
                            "files_modified": [],
                            "files_created": [".git/specwave_denied_{task_slug}"],
                            "functions_created": [],
                            "exports_added": [],
                            "test_files": [],
                            "test_results": {"ran": 0, "passed": 0, "failed": 0},
                            "blocker": None,
                            "notes": "scripted scenario denied-pass: claims pass after a denial",
                            "duration_minutes": 0,
                        },
                        "after": "TASK COMPLETE",
                    }
                ],
                "stop_reason": "end_turn",
            },
        ],
    },
    "overloaded-then-pass": {
        "description": "HTTP 529 on the conversation's first request, then as write-and-pass.",
        "first_request_error": {
            "status": 529,
            "body": {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"},
            },
        },
        "turns": [_WRITE_TURN, _PASS_AFTER_WRITE],
    },
    "auth-error": {
        "description": "HTTP 401 authentication_error on every request.",
        "turns": [
            {
                "error": {
                    "status": 401,
                    "body": {
                        "type": "error",
                        "error": {
                            "type": "authentication_error",
                            "message": "invalid x-api-key",
                        },
                    },
                }
            }
        ],
    },
    "hang": {
        "description": "Start the SSE stream, then send nothing until the client or server quits.",
        "turns": [{"hang": True}],
    },
    "slow-pass": {
        "description": "Sleep {sleep} s, then as write-and-pass (shows workers overlapping).",
        "turns": [dict(_WRITE_TURN, sleep="{sleep}"), _PASS_AFTER_WRITE],
    },
}


def merged_scenarios(extra: dict[str, Scenario] | None = None) -> dict[str, Scenario]:
    """Return a deep copy of :data:`SCENARIOS` with ``extra`` laid over it (same names win).

    Raises:
        ValueError: a scenario has no ``turns`` list, or a turn has none of
            ``content`` / ``error`` / ``hang``.
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
        if not isinstance(turn, dict) or not ({"content", "error", "hang"} & turn.keys()):
            raise ValueError(
                f'scenario "{name}": turn {i} needs "content" (list of blocks), '
                f'"error" ({{status, body}}) or "hang": true'
            )
        for block in turn.get("content", []):
            if block.get("type") not in ("text", "tool_use", "report"):
                raise ValueError(
                    f'scenario "{name}": turn {i}: block type {block.get("type")!r} is not '
                    '"text", "tool_use" or "report"'
                )
