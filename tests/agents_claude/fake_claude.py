#!/usr/bin/env python3
"""A stand-in for the Claude Code CLI, for tests of what the claude agent gives the CLI.

It writes ``{"argv", "env", "stdin", "cwd"}`` as JSON to ``$FAKE_CLAUDE_DUMP`` and prints
stream-json lines: init, one assistant text, and a result whose ``result`` is
``$FAKE_CLAUDE_RESULT`` (default: a pass block). ``$FAKE_CLAUDE_ECHO`` is printed in the
assistant text (to test redaction); ``$FAKE_CLAUDE_EXIT`` is the exit code.
"""

import json
import os
import sys

stdin = sys.stdin.read()
with open(os.environ["FAKE_CLAUDE_DUMP"], "w", encoding="utf-8") as fh:
    json.dump({"argv": sys.argv, "env": dict(os.environ), "stdin": stdin, "cwd": os.getcwd()}, fh)
report = os.environ.get("FAKE_CLAUDE_RESULT") or (
    'done\n```json\n{"status": "pass", "test_results": {"ran": 1, "passed": 1, "failed": 0}}'
    "\n```\nTASK COMPLETE"
)
print(
    json.dumps(
        {
            "type": "system",
            "subtype": "init",
            "session_id": "s-1",
            "model": "fake",
            "permissionMode": "acceptEdits",
            "cwd": os.getcwd(),
            "claude_code_version": "0.0.0",
        }
    ),
    flush=True,
)
print(
    json.dumps(
        {
            "type": "assistant",
            "message": {
                "content": [
                    {"type": "text", "text": "echo: " + os.environ.get("FAKE_CLAUDE_ECHO", "")}
                ]
            },
        }
    ),
    flush=True,
)
print("a line that is not JSON", flush=True)
print(
    json.dumps(
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "num_turns": 1,
            "total_cost_usd": 0.01,
            "session_id": "s-1",
            "result": report,
            "permission_denials": [],
            "usage": {"input_tokens": 5, "output_tokens": 7},
            "terminal_reason": "completed",
        }
    ),
    flush=True,
)
sys.exit(int(os.environ.get("FAKE_CLAUDE_EXIT", "0")))
