"""A scripted OpenAI Responses API on 127.0.0.1, for driving the real Codex CLI offline.

The CLI (``-c openai_base_url=http://127.0.0.1:PORT/v1``, or a custom provider with that
``base_url`` and ``wire_api = "responses"``) calls ``POST /v1/responses`` with ``stream:
true``; this server answers with the server-sent events the CLI reads: ``response.created``,
``response.output_item.added`` / ``.done`` per output item (``message``, ``reasoning``,
``function_call``, ``custom_tool_call``), ``response.output_text.delta`` for text, and
``response.completed`` with ``usage`` (or ``response.failed``). The built-in provider first
tries a websocket (``GET /v1/responses`` with ``Upgrade: websocket``): it is answered 426,
and the CLI falls back to HTTP at once (without an answer it waits about 6.5 s). Which reply
is chosen from the request itself (see ``scenarios.py``), so one server serves any number of
concurrent CLIs.

The HTTP plumbing (a thread per connection, tracking and closing connections on ``stop()``,
request records, ``GET /_specwave/requests``) is the scripted Anthropic model's
(:class:`tasks_lib.scripted_model.ScriptedModelServer`); this module adds the Responses API.

Example:
    >>> with ScriptedOpenAIServer() as srv:            # doctest: +SKIP
    ...     argv = ["codex", "exec", "--json", "-c", f"openai_base_url={srv.base_url}/v1", "-"]
    ...     env = {"OPENAI_API_KEY": "dummy", ...}
    ...     ...                                         # run argv with env
    ...     srv.requests[0]["scenario"]
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import socket
import time
import uuid
from typing import Any

from tasks_lib.scripted_model.server import ScriptedModelServer

from .scenarios import (
    DEFAULT_RESET_SECONDS,
    DEFAULT_SLEEP_SECONDS,
    DEFAULT_TEST_COMMAND,
    DEFAULT_USAGE,
    SCENARIO_MARKER,
    Scenario,
    merged_scenarios,
)

__all__ = ["ScriptedOpenAIServer", "request_facts", "render_output"]

_SCENARIO_RE = re.compile(re.escape(SCENARIO_MARKER) + r"\s*:\s*`?([A-Za-z0-9_.\-]+)`?")
_TASK_ID_RES = (
    re.compile(r"specwave-task-id\s*:\s*`?([^\s`]+)`?"),
    re.compile(r"\*\*ID\*\*\s*:\s*`?([^\s`*]+)`?"),
    re.compile(r"Task ID\**\s*:\s*\**\s*`?([^\s`*]+)`?", re.IGNORECASE),
)
_CWD_RE = re.compile(r"<cwd>\s*([^<]+?)\s*</cwd>")
_WRITE_RE = re.compile(r"specwave-write\s*:\s*`?([^\s`]+)`?")
_TEST_CMD_RE = re.compile(r"specwave-test-command\s*:\s*(\S[^\n]*?)\s*$", re.MULTILINE)
_SLEEP_RE = re.compile(r"specwave-sleep\s*:\s*`?([0-9]+(?:\.[0-9]+)?)`?")
_RESET_RE = re.compile(r"specwave-reset-seconds\s*:\s*`?([0-9]+)`?")
_PLACEHOLDER_RE = re.compile(
    r"\{(cwd|task_id|task_slug|write_rel|write_path|write_rel_sh|write_path_sh|test_command|"
    r"sleep|reset_seconds|resets_at|scenario|turn|last_tool_output)\}"
)
_CALL_TYPES = ("function_call", "custom_tool_call", "local_shell_call")
_OUTPUT_TYPES = ("function_call_output", "custom_tool_call_output", "local_shell_call_output")


# --------------------------------------------------------------------------- request facts


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            out.append(part["text"])
    return out


def _tool_names(body: dict[str, Any]) -> dict[str, str]:
    """Tool name -> its type ("function", "custom"), top-level and inside namespaces."""
    names: dict[str, str] = {}

    def walk(tools: Any) -> None:
        for tool in tools if isinstance(tools, list) else []:
            if not isinstance(tool, dict):
                continue
            if tool.get("type") == "namespace":
                walk(tool.get("tools"))
            elif isinstance(tool.get("name"), str):
                names[tool["name"]] = str(tool.get("type"))

    walk(body.get("tools"))
    for item in body.get("input") or []:
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            walk(item.get("tools"))
    return names


def request_facts(body: dict[str, Any]) -> dict[str, Any]:
    """What the scripted server reads from a Responses API request body: ``scenario`` (None
    without a marker), ``turn`` (tool outputs so far), ``task_id``, ``cwd``, ``tools`` (name ->
    type) and the placeholder values (see ``scenarios.py``)."""
    items = [i for i in body.get("input") or [] if isinstance(i, dict)]
    prompt = "\n".join(
        t
        for i in items
        if i.get("type", "message") == "message" and i.get("role") == "user"
        for t in _texts(i.get("content"))
    )
    outputs = [i for i in items if i.get("type") in _OUTPUT_TYPES]
    last = ""
    if outputs:
        out = outputs[-1].get("output")
        last = out if isinstance(out, str) else "\n".join(_texts(out))
    m = _SCENARIO_RE.search(prompt)
    task_id = next((m2.group(1) for rx in _TASK_ID_RES if (m2 := rx.search(prompt))), None)
    cm = _CWD_RE.search(prompt)
    cwd = cm.group(1) if cm else None
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", task_id) if task_id else "task"
    wm = _WRITE_RE.search(prompt)
    write_rel = wm.group(1) if wm else f"specwave_codex_{slug}.txt"
    write_path = write_rel if os.path.isabs(write_rel) or not cwd else os.path.join(cwd, write_rel)
    tm = _TEST_CMD_RE.search(prompt)
    test_command = tm.group(1).strip() if tm else DEFAULT_TEST_COMMAND
    if len(test_command) >= 2 and test_command[0] == test_command[-1] == "`":
        test_command = test_command[1:-1]
    sm = _SLEEP_RE.search(prompt)
    rm = _RESET_RE.search(prompt)
    reset_seconds = int(rm.group(1)) if rm else DEFAULT_RESET_SECONDS
    return {
        "scenario": m.group(1) if m else None,
        "turn": len(outputs),
        "task_id": task_id,
        "task_slug": slug,
        "cwd": cwd,
        "tools": _tool_names(body),
        "write_rel": write_rel,
        "write_path": write_path,
        "write_rel_sh": shlex.quote(write_rel),
        "write_path_sh": shlex.quote(write_path),
        "test_command": test_command,
        "sleep": float(sm.group(1)) if sm else DEFAULT_SLEEP_SECONDS,
        "reset_seconds": reset_seconds,
        "resets_at": int(time.time()) + reset_seconds,
        "last_tool_output": last[:500],
    }


def _fill(value: Any, facts: dict[str, Any]) -> Any:
    """Replace the known ``{placeholders}`` in every string of ``value`` (recursively); a
    string that is exactly one numeric placeholder becomes that number (``"{resets_at}"``)."""
    if isinstance(value, str):
        whole = _PLACEHOLDER_RE.fullmatch(value)
        if whole and isinstance(facts.get(whole.group(1)), (int, float)):
            return facts[whole.group(1)]

        def sub(m: re.Match[str]) -> str:
            v = facts.get(m.group(1))
            if v is None:
                return "task" if m.group(1) == "task_id" else ""
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            return str(v)

        return _PLACEHOLDER_RE.sub(sub, value)
    if isinstance(value, list):
        return [_fill(v, facts) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, facts) for k, v in value.items()}
    return value


def _call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _shell_item(command: str, tools: dict[str, str], yield_ms: int | None) -> dict | None:
    if "exec_command" in tools:
        args: dict[str, Any] = {"cmd": command, "login": False}
        if yield_ms is not None:
            args["yield_time_ms"] = yield_ms
        name = "exec_command"
    elif "shell_command" in tools:
        args, name = {"command": command}, "shell_command"
    elif "shell" in tools:
        args, name = {"command": ["bash", "-c", command]}, "shell"
    else:
        return None
    return {
        "type": "function_call",
        "call_id": _call_id(),
        "name": name,
        "arguments": json.dumps(args),
    }


def render_output(
    blocks: list[dict[str, Any]], facts: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Scenario blocks -> Responses API output items (placeholders filled), and the names of
    the tools called. A tool the CLI did not offer becomes a text saying so."""
    items: list[dict[str, Any]] = []
    called: list[str] = []
    tools: dict[str, str] = facts.get("tools") or {}
    texts: list[str] = []

    def flush_text() -> None:
        if texts:
            items.append(
                {
                    "type": "message",
                    "id": "msg_" + uuid.uuid4().hex[:24],
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "\n\n".join(texts)}],
                }
            )
            texts.clear()

    for block in _fill(blocks, facts):
        kind = block.get("type")
        if kind == "text":
            texts.append(block["text"])
        elif kind == "report":
            texts.append(
                (
                    f"{block.get('before', '')}\n\n```json\n"
                    f"{json.dumps(block['report'], indent=2)}\n```\n\n{block.get('after', '')}"
                ).strip()
            )
        elif kind == "reasoning":
            items.append(
                {
                    "type": "reasoning",
                    "id": "rs_" + uuid.uuid4().hex[:24],
                    "summary": [{"type": "summary_text", "text": block["text"]}],
                }
            )
        elif kind in ("shell", "patch"):
            flush_text()
            item = None
            if kind == "shell":
                item = _shell_item(block["command"], tools, block.get("yield_time_ms"))
            elif tools.get("apply_patch") == "custom":
                item = {
                    "type": "custom_tool_call",
                    "call_id": _call_id(),
                    "name": "apply_patch",
                    "input": block["patch"],
                }
            elif tools.get("apply_patch") == "function":
                item = {
                    "type": "function_call",
                    "call_id": _call_id(),
                    "name": "apply_patch",
                    "arguments": json.dumps({"input": block["patch"]}),
                }
            else:
                heredoc = f"apply_patch <<'SPECWAVE_PATCH'\n{block['patch']}SPECWAVE_PATCH"
                item = _shell_item(heredoc, tools, None)
            if item is None:
                texts.append(
                    "specwave scripted OpenAI server: the CLI offered no shell tool "
                    f"(tools: {', '.join(sorted(tools)) or 'none'}); use a model with "
                    "exec_command, such as gpt-5.5."
                )
                continue
            called.append(item["name"])
            items.append(item)
    flush_text()
    return items, called


# --------------------------------------------------------------------------- the server


class ScriptedOpenAIServer(ScriptedModelServer):
    """Fake OpenAI Responses API on 127.0.0.1 that replies from scripted scenarios.

    Args:
        scenarios: extra scenarios (name -> scenario, see ``scenarios.py``), merged over the
            built-in ones.
        port: TCP port on 127.0.0.1; 0 (default) picks a free one.
        log_file: every recorded request is also appended to this file as a JSON line.

    Attributes:
        base_url: ``http://127.0.0.1:PORT`` -- the CLI's base URL is ``base_url + "/v1"``.
        requests: the request records, oldest first (as the scripted Anthropic model's, plus
            ``model`` and ``reasoning_effort``); ``outcome`` is ``reply``, ``error``,
            ``failed``, ``hang``, ``websocket-refused``, ``no-scenario``, ``unknown-scenario``,
            ``no-turn``, ``unknown-path``, ``bad-json``, ``client-gone`` or
            ``server-stopped``.
            Authorization headers are never recorded.

    Example:
        >>> with ScriptedOpenAIServer() as srv:
        ...     srv.base_url.startswith("http://127.0.0.1:")
        True
    """

    def __init__(
        self,
        scenarios: dict[str, Scenario] | None = None,
        *,
        port: int = 0,
        log_file: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(None, port=port, log_file=log_file)
        self.scenarios = merged_scenarios(scenarios)

    # ---- dispatch (the base class calls this for every non-introspection request)

    def _dispatch(self, h: Any, method: str, rec: dict[str, Any]) -> None:
        path = h.path.split("?", 1)[0].rstrip("/")
        rec["session_id"] = h.headers.get("session-id") or h.headers.get("x-client-request-id")
        raw = self._read_body(h) if method in ("POST", "PUT") else b""
        if path.endswith("/responses") and method == "GET":
            # The built-in provider's websocket attempt: refuse it so the CLI uses HTTP now.
            rec["outcome"] = "websocket-refused"
            self._send_error(
                h, 426, "upgrade_required", "scripted server: use HTTP (no websocket)", rec
            )
            return
        if method == "POST" and path.endswith("/responses"):
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise TypeError("body is not a JSON object")
            except (ValueError, TypeError) as exc:
                rec["outcome"] = "bad-json"
                self._send_error(h, 400, "invalid_request_error", f"bad JSON body: {exc}", rec)
                return
            facts = request_facts(body)
            rec.update(
                scenario=facts["scenario"],
                turn=facts["turn"],
                task_id=facts["task_id"],
                cwd=facts["cwd"],
                model=body.get("model"),
                reasoning_effort=(body.get("reasoning") or {}).get("effort"),
                stream=bool(body.get("stream")),
            )
            self._responses(h, body, facts, rec)
            return
        rec["outcome"] = "unknown-path"
        self._send_error(
            h, 404, "not_found_error", f"scripted server: no such endpoint {method} {path}", rec
        )

    def _responses(
        self, h: Any, body: dict[str, Any], facts: dict[str, Any], rec: dict[str, Any]
    ) -> None:
        name = facts["scenario"]
        facts = dict(facts, scenario=name or "")
        scenario = self.scenarios.get(name) if name else None
        if scenario is None:
            known = ", ".join(sorted(self.scenarios))
            if name is None:
                rec["outcome"] = "no-scenario"
                text = (
                    "specwave scripted OpenAI server: no specwave-scenario marker in the "
                    "prompt, so there is nothing scripted to do. Put a line `specwave-scenario: "
                    f"<name>` in the prompt; known scenarios: {known}."
                )
            else:
                rec["outcome"] = "unknown-scenario"
                text = (
                    f"specwave scripted OpenAI server: unknown scenario {name!r}; known: {known}."
                )
            self._stream(h, body, [{"type": "text", "text": text}], facts, rec, None)
            return
        first_error = scenario.get("first_request_error")
        if first_error:
            key = (rec["session_id"] or "", name, facts["task_id"] or "")
            with self._lock:
                first = key not in self._seen_conversations
                self._seen_conversations.add(key)
            if first:
                rec["outcome"] = "error"
                self._send_raw_error(h, _fill(first_error, facts), rec)
                return
        turns = scenario["turns"]
        turn_no = facts["turn"]
        if turn_no >= len(turns):
            rec["outcome"] = "no-turn"
            text = (
                f"specwave scripted OpenAI server: scenario {name!r} has {len(turns)} turn(s) "
                f"and this is turn {turn_no}; nothing more is scripted."
            )
            self._stream(h, body, [{"type": "text", "text": text}], facts, rec, None)
            return
        turn = turns[turn_no]
        if "sleep" in turn:
            seconds = float(_fill(str(turn["sleep"]), facts) or 0)
            if self._stop.wait(seconds):
                rec["outcome"] = "server-stopped"
                raise OSError("server stopping")
        if "error" in turn:
            rec["outcome"] = "error"
            self._send_raw_error(h, _fill(turn["error"], facts), rec)
        elif "failed" in turn:
            rec["outcome"] = "failed"
            self._failed(h, _fill(turn["failed"], facts), rec)
        elif turn.get("hang"):
            rec["outcome"] = "hang"
            self._hang_stream(h, rec)
        else:
            rec["outcome"] = "reply"
            self._stream(h, body, turn.get("output", []), facts, rec, turn.get("usage"))

    # ---- replies

    def _response_id(self) -> str:
        return f"resp_scripted_{self._next_id():06d}"

    def _stream(
        self,
        h: Any,
        body: dict[str, Any],
        blocks: list[dict[str, Any]],
        facts: dict[str, Any],
        rec: dict[str, Any],
        usage: dict[str, Any] | None,
    ) -> None:
        items, called = render_output(blocks, facts)
        rec["tool_uses"] = called
        rid = self._response_id()
        model = body.get("model") or "scripted-model"
        self._start_stream(h, rec)
        self._event(
            h,
            "response.created",
            {
                "type": "response.created",
                "response": {"id": rid, "status": "in_progress", "model": model},
            },
        )
        for index, item in enumerate(items):
            shell = dict(item)
            if item["type"] == "message":
                shell["content"] = []
                shell["status"] = "in_progress"
            self._event(
                h,
                "response.output_item.added",
                {"type": "response.output_item.added", "output_index": index, "item": shell},
            )
            if item["type"] == "message":
                self._event(
                    h,
                    "response.output_text.delta",
                    {
                        "type": "response.output_text.delta",
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "delta": item["content"][0]["text"],
                    },
                )
            self._event(
                h,
                "response.output_item.done",
                {"type": "response.output_item.done", "output_index": index, "item": item},
            )
        self._event(
            h,
            "response.completed",
            {
                "type": "response.completed",
                "response": {
                    "id": rid,
                    "status": "completed",
                    "model": model,
                    "usage": usage or DEFAULT_USAGE,
                },
            },
        )
        self._end_stream(h)

    def _failed(self, h: Any, error: dict[str, Any], rec: dict[str, Any]) -> None:
        rid = self._response_id()
        self._start_stream(h, rec)
        self._event(h, "response.created", {"type": "response.created", "response": {"id": rid}})
        self._event(
            h,
            "response.failed",
            {
                "type": "response.failed",
                "response": {"id": rid, "status": "failed", "error": error},
            },
        )
        self._end_stream(h)

    def _hang_stream(self, h: Any, rec: dict[str, Any]) -> None:
        """Send the headers and ``response.created``, then nothing, until the client or the
        server quits."""
        self._start_stream(h, rec)
        self._event(
            h,
            "response.created",
            {"type": "response.created", "response": {"id": self._response_id()}},
        )
        sock = h.connection
        while not self._stop.is_set():
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        break  # the client closed its end
                except OSError:
                    break
        h.close_connection = True
