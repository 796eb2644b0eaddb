"""A scripted Anthropic Messages API on 127.0.0.1, for driving the real Claude Code CLI offline.

The CLI (``ANTHROPIC_BASE_URL=http://127.0.0.1:PORT``) only calls ``POST /v1/messages?beta=true``
with ``stream: true``; this server answers with the SSE events of the Messages API
(``message_start``, ``content_block_start``/``_delta``/``_stop``, ``message_delta``,
``message_stop``). Which reply is chosen from the conversation itself (see ``scenarios.py``), so
one server serves any number of concurrent CLI processes.

Threads: one per connection (stdlib ``ThreadingHTTPServer``, daemon threads). ``stop()`` sets an
event that every sleeping or hanging handler waits on, closes every open connection and joins the
serve thread; a handler blocked writing to a dead client fails with a socket error and ends.

Example:
    >>> with ScriptedModelServer() as srv:          # doctest: +SKIP
    ...     env = {"ANTHROPIC_BASE_URL": srv.base_url, "ANTHROPIC_API_KEY": "dummy"}
    ...     ...                                     # run `claude -p ...` with env
    ...     srv.requests[0]["scenario"]
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from .scenarios import (
    DEFAULT_SLEEP_SECONDS,
    DEFAULT_TEST_COMMAND,
    SCENARIO_MARKER,
    Scenario,
    merged_scenarios,
)

logger = logging.getLogger("specwave.scripted_model")

HOST = "127.0.0.1"

_SCENARIO_RE = re.compile(re.escape(SCENARIO_MARKER) + r"\s*:\s*`?([A-Za-z0-9_.\-]+)`?")
_TASK_ID_RES = (
    re.compile(r"specwave-task-id\s*:\s*`?([^\s`]+)`?"),
    re.compile(r"\*\*ID\*\*\s*:\s*`?([^\s`*]+)`?"),
    re.compile(r"Task ID\**\s*:\s*\**\s*`?([^\s`*]+)`?", re.IGNORECASE),
)
_CWD_RES = (
    re.compile(r"specwave-cwd\s*:\s*(\S[^\n]*?)\s*$", re.MULTILINE),
    re.compile(r"Primary working directory\s*:\s*(\S[^\n]*?)\s*$", re.MULTILINE),
    re.compile(r"^\s*Working directory\s*:\s*(\S[^\n]*?)\s*$", re.MULTILINE),
)
_WRITE_RE = re.compile(r"specwave-write\s*:\s*`?([^\s`]+)`?")
_TEST_CMD_RE = re.compile(r"specwave-test-command\s*:\s*(\S[^\n]*?)\s*$", re.MULTILINE)
_SLEEP_RE = re.compile(r"specwave-sleep\s*:\s*`?([0-9]+(?:\.[0-9]+)?)`?")
_PLACEHOLDER_RE = re.compile(
    r"\{(cwd|task_id|task_slug|write_rel|write_path|test_command|sleep|scenario|turn|"
    r"last_tool_result|last_tool_error)\}"
)
_SECRET_HEADERS = {"x-api-key", "authorization", "proxy-authorization", "cookie"}


# --------------------------------------------------------------------------- conversation facts


def _texts(content: Any, *, include_tool_results: bool) -> list[str]:
    """Text pieces of a message ``content`` (a string or a list of blocks)."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            out.append(block["text"])
        elif block.get("type") == "tool_result" and include_tool_results:
            out.extend(_texts(block.get("content"), include_tool_results=True))
    return out


def _prompt_text(body: dict[str, Any]) -> str:
    """All user- and system-role text of ``messages`` (tool results excluded), in order."""
    parts: list[str] = []
    for msg in body.get("messages") or []:
        if isinstance(msg, dict) and msg.get("role") in ("user", "system"):
            parts.extend(_texts(msg.get("content"), include_tool_results=False))
    return "\n".join(parts)


def _system_text(body: dict[str, Any]) -> str:
    system = body.get("system")
    if isinstance(system, str):
        return system
    return "\n".join(_texts(system, include_tool_results=False))


def _last_tool_result(body: dict[str, Any]) -> tuple[str, bool]:
    for msg in reversed(body.get("messages") or []):
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), list):
            continue
        for block in reversed(msg["content"]):
            if isinstance(block, dict) and block.get("type") == "tool_result":
                text = "\n".join(_texts(block.get("content"), include_tool_results=True))
                return text[:500], bool(block.get("is_error"))
    return "", False


def _first(regexes: tuple[re.Pattern[str], ...], *texts: str) -> str | None:
    for rx in regexes:
        for text in texts:
            m = rx.search(text)
            if m:
                return m.group(1)
    return None


def conversation_facts(body: dict[str, Any]) -> dict[str, Any]:
    """What the scripted model reads from a Messages API request body.

    Returns a dict with ``scenario`` (None when no marker), ``turn`` (assistant messages so
    far), ``task_id`` (None when absent), ``cwd`` (None when the CLI did not say), and the
    placeholder values ``write_rel``, ``write_path``, ``test_command``, ``sleep``,
    ``last_tool_result``, ``last_tool_error``.
    """
    prompt = _prompt_text(body)
    system = _system_text(body)
    m = _SCENARIO_RE.search(prompt)
    scenario = m.group(1) if m else None
    turn = sum(
        1
        for msg in body.get("messages") or []
        if isinstance(msg, dict) and msg.get("role") == "assistant"
    )
    task_id = _first(_TASK_ID_RES, prompt)
    cwd = _first(_CWD_RES, prompt, system)
    task_slug = re.sub(r"[^A-Za-z0-9._-]", "_", task_id) if task_id else "task"
    m = _WRITE_RE.search(prompt)
    write_rel = m.group(1) if m else f"specwave_demo_{task_slug}.txt"
    if os.path.isabs(write_rel) or not cwd:
        write_path = write_rel
    else:
        write_path = os.path.join(cwd, write_rel)
    m = _TEST_CMD_RE.search(prompt)
    test_command = m.group(1).strip() if m else DEFAULT_TEST_COMMAND
    if len(test_command) >= 2 and test_command[0] == test_command[-1] == "`":
        test_command = test_command[1:-1]
    m = _SLEEP_RE.search(prompt)
    sleep = float(m.group(1)) if m else DEFAULT_SLEEP_SECONDS
    last_result, last_error = _last_tool_result(body)
    return {
        "scenario": scenario,
        "turn": turn,
        "task_id": task_id,
        "task_slug": task_slug,
        "cwd": cwd,
        "write_rel": write_rel,
        "write_path": write_path,
        "test_command": test_command,
        "sleep": sleep,
        "last_tool_result": last_result,
        "last_tool_error": "true" if last_error else "false",
    }


def _fill(value: Any, facts: dict[str, Any]) -> Any:
    """Replace the known ``{placeholders}`` in every string of ``value`` (recursively)."""
    if isinstance(value, str):

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


def render_blocks(content: list[dict[str, Any]], facts: dict[str, Any]) -> list[dict[str, Any]]:
    """Scenario blocks → Messages API content blocks (placeholders filled, reports rendered)."""
    blocks: list[dict[str, Any]] = []
    for block in _fill(content, facts):
        kind = block.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": block["text"]})
        elif kind == "report":
            text = (
                f"{block.get('before', '')}\n\n```json\n"
                f"{json.dumps(block['report'], indent=2)}\n```\n\n{block.get('after', '')}"
            ).strip()
            blocks.append({"type": "text", "text": text})
        elif kind == "tool_use":
            blocks.append(
                {
                    "type": "tool_use",
                    "id": "toolu_" + uuid.uuid4().hex[:24],
                    "name": block["name"],
                    "input": block.get("input", {}),
                }
            )
    return blocks


# --------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "specwave-scripted-model/1"
    # Idle keep-alive connections close after this long (a hanging reply does not read, so
    # this never cuts a hang short).
    timeout = 60
    server: _HTTPServer

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: we record instead
        logger.debug("%s " + fmt, self.address_string(), *args)

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def do_GET(self) -> None:
        self.server.owner._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.owner._handle(self, "POST")

    def do_HEAD(self) -> None:
        self.server.owner._handle(self, "HEAD")

    def do_PUT(self) -> None:
        self.server.owner._handle(self, "PUT")

    def do_DELETE(self) -> None:
        self.server.owner._handle(self, "DELETE")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, owner: ScriptedModelServer, port: int) -> None:
        self.owner = owner
        super().__init__((HOST, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-stream is normal (timeouts, killed CLIs): log, no trace.
        logger.debug(
            "connection from %s ended with an error: %s", client_address, sys.exc_info()[1]
        )


class _ClientGone(Exception):
    pass


class ScriptedModelServer:
    """Fake Anthropic Messages API on 127.0.0.1 that replies from scripted scenarios.

    Args:
        scenarios: extra scenarios (name → scenario dict, see ``scenarios.py``), merged over the
            built-in ones.
        port: TCP port on 127.0.0.1; 0 (default) picks a free one.
        log_file: when set, every recorded request is also appended to this file as a JSON line.

    Attributes:
        base_url: ``http://127.0.0.1:PORT`` (valid once started) -- use as ANTHROPIC_BASE_URL.
        port: the bound port.
        requests: a copy of the request records, oldest first. Each record has ``method``,
            ``path``, ``scenario``, ``turn``, ``task_id``, ``cwd``, ``session_id``, ``stream``,
            ``status`` (HTTP status returned), ``outcome`` (``reply``, ``error``, ``hang``,
            ``no-scenario``, ``unknown-scenario``, ``no-turn``, ``count-tokens``,
            ``unknown-path``, ``bad-json``, ``client-gone``, ``server-stopped``),
            ``tool_uses`` (names sent),
            ``started`` (epoch s), ``duration_s``, ``done`` (False while the reply is still
            being sent, e.g. a hang), ``has_api_key``. Header values of
            ``x-api-key`` / ``authorization`` are never recorded.

    Example:
        >>> with ScriptedModelServer(scenarios={"hi": {"turns": [{"content": [
        ...         {"type": "text", "text": "hi"}], "stop_reason": "end_turn"}]}}) as srv:
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
        self.scenarios = merged_scenarios(scenarios)
        self._want_port = port
        self._log_file = os.fspath(log_file) if log_file else None
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        self._seen_conversations: set[tuple[str, str, str]] = set()
        self._connections: set[socket.socket] = set()
        self._stop = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # ---- lifecycle

    def start(self) -> Self:
        """Bind 127.0.0.1 and serve in a daemon thread. Returns self."""
        if self._httpd is not None:
            return self
        self._stop.clear()
        self._httpd = _HTTPServer(self, self._want_port)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"scripted-model-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: wake sleeping/hanging replies, close every connection, join the serve
        thread and wait (up to 5 s) for replies in flight, so ``requests`` is final."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stop.set()
        httpd.shutdown()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        # Replies notice the stop event within 0.2 s; wait (bounded) so records are final.
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("ScriptedModelServer is not started: call start() or use `with`")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._records]

    def wait_for_requests(self, count: int, timeout: float = 10.0, **match: Any) -> list[dict]:
        """Wait until at least ``count`` records match ``match`` (field=value); return them.

        Raises:
            TimeoutError: fewer matched within ``timeout`` seconds (the message lists them).
        """
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.requests if all(r.get(k) == v for k, v in match.items())]
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"scripted model: wanted {count} requests matching {match}, "
                    f"saw {len(found)}: {found}"
                )
            time.sleep(0.02)

    # ---- internals

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _record(self, rec: dict[str, Any]) -> None:
        """Finish a record (it is visible in ``requests`` from arrival on, ``done`` False)."""
        with self._lock:
            rec["duration_s"] = round(time.time() - rec["started"], 4)
            rec["done"] = True
            if self._log_file:
                with open(self._log_file, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(rec) + "\n")
        if rec["outcome"] == "unknown-path":
            logger.warning("scripted model: unknown path %s %s", rec["method"], rec["path"])

    def _next_id(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def _handle(self, h: _Handler, method: str) -> None:
        if h.path.startswith("/_specwave/") or h.path in ("", "/"):
            self._introspect(h, method)  # not model traffic: not recorded
            return
        rec: dict[str, Any] = {
            "method": method,
            "path": h.path,
            "scenario": None,
            "turn": None,
            "task_id": None,
            "cwd": None,
            "session_id": h.headers.get("x-claude-code-session-id"),
            "stream": None,
            "status": None,
            "outcome": None,
            "tool_uses": [],
            "started": time.time(),
            "has_api_key": bool(h.headers.get("x-api-key") or h.headers.get("authorization")),
            "duration_s": None,
            "done": False,
        }
        with self._lock:
            self._records.append(rec)
            self._in_flight += 1
        try:
            self._dispatch(h, method, rec)
        except (_ClientGone, OSError):  # OSError covers broken pipes, resets, timeouts
            rec["outcome"] = rec["outcome"] or "client-gone"
            h.close_connection = True
        finally:
            self._record(rec)
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _read_body(self, h: _Handler) -> bytes:
        length = int(h.headers.get("content-length") or 0)
        return h.rfile.read(length) if length > 0 else b""

    def _dispatch(self, h: _Handler, method: str, rec: dict[str, Any]) -> None:
        path = h.path.split("?", 1)[0].rstrip("/")
        raw = self._read_body(h) if method in ("POST", "PUT") else b""
        if method == "POST" and path in ("/v1/messages", "/v1/messages/count_tokens"):
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise TypeError("body is not a JSON object")
            except (ValueError, TypeError) as exc:
                rec["outcome"] = "bad-json"
                self._send_error(h, 400, "invalid_request_error", f"bad JSON body: {exc}", rec)
                return
            facts = conversation_facts(body)
            rec.update(
                scenario=facts["scenario"],
                turn=facts["turn"],
                task_id=facts["task_id"],
                cwd=facts["cwd"],
            )
            if rec["session_id"] is None:
                meta = (body.get("metadata") or {}).get("user_id")
                try:
                    rec["session_id"] = json.loads(meta or "").get("session_id")
                except (TypeError, ValueError, AttributeError):
                    pass
            if path.endswith("count_tokens"):
                rec["outcome"] = "count-tokens"
                self._send_json(h, 200, {"input_tokens": max(1, len(raw) // 4)}, rec)
                return
            rec["stream"] = bool(body.get("stream"))
            self._messages(h, body, facts, rec)
            return
        rec["outcome"] = "unknown-path"
        self._send_error(
            h,
            404,
            "not_found_error",
            f"scripted model: no such endpoint {method} {path or '/'}",
            rec,
        )

    def _introspect(self, h: _Handler, method: str) -> None:
        """``GET /_specwave/requests`` (the records) and ``GET /`` or ``/_specwave/health``."""
        rec: dict[str, Any] = {}
        path = h.path.split("?", 1)[0].rstrip("/")
        self._read_body(h)
        if method == "GET" and path == "/_specwave/requests":
            self._send_json(h, 200, self.requests, rec)
        elif method in ("GET", "HEAD") and path in ("", "/_specwave/health"):
            self._send_json(h, 200, {"ok": True, "scenarios": sorted(self.scenarios)}, rec)
        else:
            self._send_error(h, 404, "not_found_error", f"no such endpoint {path}", rec)

    # ---- replies

    def _messages(
        self, h: _Handler, body: dict[str, Any], facts: dict[str, Any], rec: dict[str, Any]
    ) -> None:
        name = facts["scenario"]
        facts = dict(facts, scenario=name or "")
        scenario = self.scenarios.get(name) if name else None
        if scenario is None:
            if name is None:
                rec["outcome"] = "no-scenario"
                text = (
                    "specwave scripted model: no specwave-scenario marker in the prompt, so "
                    "there is nothing scripted to do. Put a line `specwave-scenario: <name>` "
                    f"in the prompt; known scenarios: {', '.join(sorted(self.scenarios))}."
                )
            else:
                rec["outcome"] = "unknown-scenario"
                text = (
                    f"specwave scripted model: unknown specwave-scenario {name!r}; known "
                    f"scenarios: {', '.join(sorted(self.scenarios))}."
                )
            self._reply(h, body, [{"type": "text", "text": text}], "end_turn", rec)
            return

        first_error = scenario.get("first_request_error")
        if first_error:
            key = (rec["session_id"] or "", name, facts["task_id"] or "")
            with self._lock:
                first = key not in self._seen_conversations
                self._seen_conversations.add(key)
            if first:
                rec["outcome"] = "error"
                self._send_raw_error(h, first_error, rec)
                return

        turns = scenario["turns"]
        turn_no = facts["turn"]
        if turn_no >= len(turns):
            rec["outcome"] = "no-turn"
            text = (
                f"specwave scripted model: scenario {name!r} has {len(turns)} turn(s) and this "
                f"is turn {turn_no}; nothing more is scripted."
            )
            self._reply(h, body, [{"type": "text", "text": text}], "end_turn", rec)
            return
        turn = turns[turn_no]
        if "sleep" in turn:
            seconds = float(_fill(str(turn["sleep"]), facts) or 0)
            if self._stop.wait(seconds):
                rec["outcome"] = "server-stopped"
                raise _ClientGone("server stopping")
        if "error" in turn:
            rec["outcome"] = "error"
            self._send_raw_error(h, turn["error"], rec)
            return
        if turn.get("hang"):
            rec["outcome"] = "hang"
            self._hang(h, body, rec)
            return
        rec["outcome"] = "reply"
        blocks = render_blocks(turn.get("content", []), facts)
        self._reply(h, body, blocks, turn.get("stop_reason") or "end_turn", rec)

    def _message_shell(self, body: dict[str, Any], blocks: list, stop: str | None) -> dict:
        n = self._next_id()
        return {
            "id": f"msg_scripted_{n:06d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model") or "scripted-model",
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 100,
                "output_tokens": 0 if stop is None else 20,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    def _reply(
        self,
        h: _Handler,
        body: dict[str, Any],
        blocks: list[dict[str, Any]],
        stop: str,
        rec: dict[str, Any],
    ) -> None:
        rec["tool_uses"] = [b["name"] for b in blocks if b["type"] == "tool_use"]
        if not body.get("stream"):
            self._send_json(h, 200, self._message_shell(body, blocks, stop), rec)
            return
        self._start_stream(h, rec)
        self._event(
            h,
            "message_start",
            {
                "type": "message_start",
                "message": self._message_shell(body, [], None),
            },
        )
        self._event(h, "ping", {"type": "ping"})
        for i, block in enumerate(blocks):
            if block["type"] == "text":
                self._event(
                    h,
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
                self._event(
                    h,
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "text_delta", "text": block["text"]},
                    },
                )
            else:
                self._event(
                    h,
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {
                            "type": "tool_use",
                            "id": block["id"],
                            "name": block["name"],
                            "input": {},
                        },
                    },
                )
                self._event(
                    h,
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {
                            "type": "input_json_delta",
                            "partial_json": json.dumps(block["input"]),
                        },
                    },
                )
            self._event(h, "content_block_stop", {"type": "content_block_stop", "index": i})
        self._event(
            h,
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 20},
            },
        )
        self._event(h, "message_stop", {"type": "message_stop"})
        self._end_stream(h)

    def _hang(self, h: _Handler, body: dict[str, Any], rec: dict[str, Any]) -> None:
        """Send headers and ``message_start``, then nothing, until client or server quits."""
        if not body.get("stream"):
            h.send_response(200)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", "100")  # promised, never sent
            h.end_headers()
            rec["status"] = 200
            h.wfile.flush()
        else:
            self._start_stream(h, rec)
            self._event(
                h,
                "message_start",
                {
                    "type": "message_start",
                    "message": self._message_shell(body, [], None),
                },
            )
        sock = h.connection
        while not self._stop.is_set():
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        break  # client closed its end
                except OSError:
                    break
        h.close_connection = True

    def _start_stream(self, h: _Handler, rec: dict[str, Any]) -> None:
        h.send_response(200)
        h.send_header("content-type", "text/event-stream; charset=utf-8")
        h.send_header("cache-control", "no-cache")
        h.send_header("transfer-encoding", "chunked")
        h.send_header("request-id", f"req_scripted_{self._next_id():06d}")
        h.end_headers()
        rec["status"] = 200
        h.wfile.flush()

    def _event(self, h: _Handler, event: str, data: dict[str, Any]) -> None:
        payload = f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()
        h.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        h.wfile.flush()

    def _end_stream(self, h: _Handler) -> None:
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()

    def _send_json(
        self,
        h: _Handler,
        status: int,
        obj: Any,
        rec: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        h.send_header("request-id", f"req_scripted_{self._next_id():06d}")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        rec["status"] = status
        if h.command != "HEAD":
            h.wfile.write(data)
        h.wfile.flush()

    def _send_error(
        self, h: _Handler, status: int, kind: str, message: str, rec: dict[str, Any]
    ) -> None:
        body = {"type": "error", "error": {"type": kind, "message": message}}
        self._send_json(h, status, body, rec)

    def _send_raw_error(self, h: _Handler, err: dict[str, Any], rec: dict[str, Any]) -> None:
        headers = {str(k): str(v) for k, v in (err.get("headers") or {}).items()}
        self._send_json(h, int(err["status"]), err.get("body") or {}, rec, headers)
