"""Codex CLI ``exec --json`` read once: one line -> one typed event -> a summary.

Each stdout line of ``codex exec --json`` is one JSON object with a ``type``:
``thread.started``, ``turn.started``, ``turn.completed`` (with ``usage``), ``turn.failed``
(with ``error.message``), ``item.started`` / ``item.updated`` / ``item.completed`` (with an
``item``: ``agent_message``, ``reasoning``, ``command_execution``, ``file_change``,
``mcp_tool_call``, ``web_search``, ``todo_list``, ``error``...) and ``error`` (the CLI's own
retries, ``Reconnecting... 2/5 (...)``, and its fatal errors). :func:`parse_line` decodes a
line once into an event model (``None`` for a line that is not a JSON object);
:class:`CodexStreamSummary` folds the events into what the codex agent reads after the run;
:func:`summarize_event` renders an event as compact log lines; :func:`classify_error` reads
what one of the CLI's error messages says (HTTP status, retry count, rate or usage limit).

Only the fields the agent reads are modelled, leniently (unknown fields ignored, a field of
the wrong JSON type counts as absent), so no line can fail validation or stop a run.

Facts measured with Codex CLI 0.171.0 (they decide the classification below):

* an HTTP error the CLI retries is an ``error`` event per retry, ``Reconnecting... N/M
  (unexpected status 401 Unauthorized: ..., url: ...)``, then an ``error`` and a
  ``turn.failed`` with the bare message, exit code 1;
* a 429 reads ``exceeded retry limit, last status: 429 Too Many Requests`` (retried only when
  the server sent ``retry-after``); a 5xx reads ``We’re currently experiencing high demand``;
  an unreachable endpoint repeats ``Reconnecting... waiting for network (...)`` forever;
* a usage limit fails at once: ``You’ve hit your usage limit. ... try again at 6:02 PM.``
  (a clock time in the CLI's time zone, or ``Dec 7th, 2026 4:25 AM`` when further away);
* an unknown model name is an ``item.completed`` of type ``error`` ("Model metadata for ...
  not found"): a warning, the turn goes on.

Example:
    >>> s = CodexStreamSummary()
    >>> _ = s.add_line('{"type":"item.completed","item":{"id":"i0","type":"agent_message",'
    ...                '"text":"done"}}')
    >>> _ = s.add_line('{"type":"turn.completed","usage":{"input_tokens":10,'
    ...                '"cached_input_tokens":4,"output_tokens":3}}')
    >>> s.output(), s.tokens()
    ('done', {'input': 10, 'cached': 4, 'output': 3, 'reasoning': 0})
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)

from tasks_lib.agents.claude_stream import load_line, one_line
from tasks_lib.agents.process import MAX_LINE_BYTES

__all__ = [
    "CodexEvent",
    "CodexStreamSummary",
    "ErrorEvent",
    "ErrorFacts",
    "Item",
    "ItemEvent",
    "ThreadStartedEvent",
    "TokenUsage",
    "TurnCompletedEvent",
    "TurnFailedEvent",
    "classify_error",
    "format_tokens",
    "parse_event",
    "parse_line",
    "parse_reset_time",
    "summarize_event",
]

_LOG_TEXT_CHARS = 300


# --------------------------------------------------------------------------- lenient fields


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dict(value: Any) -> Any:
    return value if isinstance(value, (dict, BaseModel)) else {}


def _dicts(value: Any) -> list[Any]:
    return [v for v in value if isinstance(v, (dict, BaseModel))] if isinstance(value, list) else []


OptStr = Annotated[str | None, BeforeValidator(_str)]
OptInt = Annotated[int | None, BeforeValidator(_int)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --------------------------------------------------------------------------- events


class TokenUsage(_Lenient):
    """``turn.completed``'s ``usage``: input includes the cached tokens, output the reasoning."""

    input_tokens: OptInt = None
    cached_input_tokens: OptInt = None
    output_tokens: OptInt = None
    reasoning_output_tokens: OptInt = None


class FileUpdate(_Lenient):
    """One file of a ``file_change`` item."""

    path: OptStr = None
    kind: OptStr = None  # add, delete, update


class Item(_Lenient):
    """A thread item (only the fields specwave reads, per ``type``)."""

    id: OptStr = None
    type: OptStr = None
    text: OptStr = None  # agent_message, reasoning
    message: OptStr = None  # error
    command: OptStr = None  # command_execution
    aggregated_output: OptStr = None
    exit_code: OptInt = None
    status: OptStr = None  # in_progress, completed, failed, declined
    changes: Annotated[list[FileUpdate], BeforeValidator(_dicts)] = Field(default_factory=list)
    server: OptStr = None  # mcp_tool_call
    tool: OptStr = None
    query: OptStr = None  # web_search


class CodexEvent(_Lenient):
    """Any JSON line of the stream; also the model of an unknown type."""

    type: OptStr = None
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        event = handler(data)
        if isinstance(data, dict) and isinstance(event, CodexEvent):
            event._raw = data
        return event

    @property
    def raw(self) -> dict[str, Any]:
        """The decoded JSON object the event was read from."""
        return self._raw


class ThreadStartedEvent(CodexEvent):
    thread_id: OptStr = None


class TurnCompletedEvent(CodexEvent):
    usage: Annotated[TokenUsage, BeforeValidator(_dict)] = Field(default_factory=TokenUsage)


class _ErrorBody(_Lenient):
    message: OptStr = None


class TurnFailedEvent(CodexEvent):
    error: Annotated[_ErrorBody, BeforeValidator(_dict)] = Field(default_factory=_ErrorBody)


class ErrorEvent(CodexEvent):
    """``type: error``: a retry the CLI is making (``Reconnecting...``) or a fatal error."""

    message: OptStr = None


class ItemEvent(CodexEvent):
    """``item.started`` / ``item.updated`` / ``item.completed``."""

    item: Annotated[Item, BeforeValidator(_dict)] = Field(default_factory=Item)


_EVENTS: dict[str, type[CodexEvent]] = {
    "thread.started": ThreadStartedEvent,
    "turn.completed": TurnCompletedEvent,
    "turn.failed": TurnFailedEvent,
    "error": ErrorEvent,
    "item.started": ItemEvent,
    "item.updated": ItemEvent,
    "item.completed": ItemEvent,
}


def parse_event(data: dict[str, Any]) -> CodexEvent:
    """The event model for one decoded line (any object is accepted)."""
    kind = data.get("type")
    cls = _EVENTS.get(kind, CodexEvent) if isinstance(kind, str) else CodexEvent
    try:
        return cls.model_validate(data)
    except ValidationError:  # not expected (every field is lenient); never stop a run
        return CodexEvent.model_validate({})


def parse_line(text: str) -> CodexEvent | None:
    """One stdout line decoded once into its event; ``None`` when it is not a JSON object."""
    data = load_line(text)
    return None if data is None else parse_event(data)


# --------------------------------------------------------------------------- error messages

ErrorKind = Literal[
    "authentication",
    "rate_limit",
    "usage_limit",
    "quota",
    "transient",
    "network",
    "context_window",
    "request",
    "unknown",
]

_RETRY_RE = re.compile(r"^Reconnecting\.\.\.\s*(?:(\d+)/(\d+)\s*)?\((.*)\)\s*$", re.DOTALL)
_WAITING_RE = re.compile(r"^Reconnecting\.\.\.\s*waiting for network\s*\((.*)\)\s*$", re.DOTALL)
_STATUS_RES = (
    re.compile(r"unexpected status (\d{3})\b"),
    re.compile(r"last status:? (\d{3})\b"),
    re.compile(r"\bstatus(?: code)?:? (\d{3})\b", re.IGNORECASE),
)
_RESET_RE = re.compile(r"try again at (.+?)\.?\s*$", re.IGNORECASE)


class ErrorFacts(BaseModel):
    """What one of the CLI's error messages says."""

    message: str = Field(description="The message without the Reconnecting... wrapper.")
    kind: ErrorKind = Field(description="What kind of failure it names.")
    status: int | None = Field(None, description="The HTTP status it names, if any.")
    retry: int | None = Field(None, description="N of 'Reconnecting... N/M'.")
    max_retries: int | None = Field(None, description="M of 'Reconnecting... N/M'.")
    waiting_for_network: bool = Field(False, description="'Reconnecting... waiting for network'.")
    reset_text: str | None = Field(None, description="A usage limit's 'try again at ...'.")

    @property
    def is_retry(self) -> bool:
        """The CLI is retrying by itself (not the final error)."""
        return self.retry is not None or self.waiting_for_network

    def brief(self) -> dict[str, Any]:
        """What the attempt record keeps of a retry."""
        return {
            "retry": self.retry,
            "max_retries": self.max_retries,
            "status": self.status,
            "kind": self.kind,
            "message": one_line(self.message, 200),
        }


def classify_error(message: str) -> ErrorFacts:
    """Read one error message of the Codex CLI (an ``error`` event, ``turn.failed``).

    Example:
        >>> f = classify_error("Reconnecting... 2/5 (unexpected status 401 Unauthorized: "
        ...                    "Incorrect API key provided, url: http://x/v1/responses)")
        >>> f.kind, f.status, f.retry, f.max_retries
        ('authentication', 401, 2, 5)
        >>> classify_error("You’ve hit your usage limit. Try again at 6:02 PM.").reset_text
        '6:02 PM'
    """
    text = message.strip()
    retry = max_retries = None
    waiting = False
    if m := _WAITING_RE.match(text):
        waiting, text = True, m.group(1).strip()
    elif m := _RETRY_RE.match(text):
        if m.group(1):
            retry, max_retries = int(m.group(1)), int(m.group(2))
        text = m.group(3).strip()
    status = None
    for rx in _STATUS_RES:
        if sm := rx.search(text):
            status = int(sm.group(1))
            break
    low = text.lower()
    reset = None
    kind: ErrorKind
    if "usage limit" in low or "usage_limit" in low:
        kind = "usage_limit"
        if rm := _RESET_RE.search(text):
            reset = rm.group(1).strip()
    elif "quota" in low:
        kind = "quota"
    elif status in (401, 403) or "unauthorized" in low or "invalid api key" in low:
        kind = "authentication"
    elif status == 429 or "rate limit" in low or "too many requests" in low:
        kind = "rate_limit"
    elif waiting:
        kind = "network"
    elif "context window" in low or "context_length" in low:
        kind = "context_window"
    elif (status is not None and (status >= 500 or status in (408, 409))) or any(
        w in low
        for w in (
            "high demand",
            "temporary error",
            "stream disconnected",
            "error sending request",
            "connection",
            "timed out",
            "timeout",
            "overloaded",
        )
    ):
        kind = "transient"
    elif status is not None and 400 <= status < 500:
        kind = "request"
    else:
        kind = "unknown"
    return ErrorFacts(
        message=text,
        kind=kind,
        status=status,
        retry=retry,
        max_retries=max_retries,
        waiting_for_network=waiting,
        reset_text=reset,
    )


_ORDINAL_RE = re.compile(r"(\d+)(?:st|nd|rd|th)\b")


def parse_reset_time(text: str, now: datetime) -> datetime | None:
    """When a usage limit resets, from the CLI's "try again at ..." words.

    ``now`` is an aware datetime in the CLI's time zone (the CLI prints local time). A bare
    clock time ("6:02 PM") is its next occurrence after ``now`` (the CLI prints a date when the
    reset is further than that); "Dec 7th, 2026 4:25 AM" is that moment. None when it cannot
    be read.

    Example:
        >>> from datetime import UTC
        >>> now = datetime(2026, 12, 4, 19, 0, tzinfo=UTC)
        >>> parse_reset_time("6:02 PM", now).isoformat()
        '2026-12-05T18:02:00+00:00'
        >>> parse_reset_time("Dec 7th, 2026 4:25 AM", now).isoformat()
        '2026-12-07T04:25:00+00:00'
    """
    words = " ".join(_ORDINAL_RE.sub(r"\1", text.replace(",", " ")).split()).upper()
    for fmt in ("%I:%M %p", "%H:%M", "%I %p"):
        try:
            t = datetime.strptime(words, fmt)
        except ValueError:
            continue
        moment = now.replace(hour=t.hour, minute=t.minute, second=0, microsecond=0)
        return moment if moment > now else moment + timedelta(days=1)
    for fmt in ("%b %d %Y %I:%M %p", "%B %d %Y %I:%M %p", "%Y-%m-%d %H:%M"):
        try:  # strptime reads month names in any case
            return datetime.strptime(words, fmt).replace(tzinfo=now.tzinfo)
        except ValueError:
            continue
    return None


# --------------------------------------------------------------------------- the summary


def _is_piece(text: str) -> bool:
    """Whether run_process_group cut this from a longer line (pieces of MAX_LINE_BYTES)."""
    return (
        len(text) * 4 >= MAX_LINE_BYTES
        and len(text.encode("utf-8", "surrogatepass")) >= MAX_LINE_BYTES
    )


class CodexStreamSummary(BaseModel):
    """What a run's event stream said: each line folded in once, as it arrives (:meth:`feed`),
    or a whole stdout at once (:meth:`parse`)."""

    thread_id: str | None = None
    turns_started: int = 0
    turns_completed: int = 0
    usage: list[TokenUsage] = Field(default_factory=list)
    agent_messages: list[str] = Field(default_factory=list)
    commands: list[dict[str, Any]] = Field(default_factory=list)
    file_changes: list[dict[str, Any]] = Field(default_factory=list)
    #: ``error`` events the CLI sent while retrying by itself (classified).
    retries: list[ErrorFacts] = Field(default_factory=list)
    #: ``error`` events that were not retries (the fatal error, in order).
    errors: list[str] = Field(default_factory=list)
    #: ``item.completed`` of type ``error``: warnings, the turn went on.
    warnings: list[str] = Field(default_factory=list)
    turn_failed: str | None = None
    other_lines: list[str] = Field(default_factory=list)
    _pieces: list[str] = PrivateAttr(default_factory=list)

    @classmethod
    def parse(cls, stdout: str) -> CodexStreamSummary:
        s = cls()
        for line in stdout.splitlines():
            s.add_line(line)
        return s

    def add_line(self, line: str) -> CodexEvent | None:
        """Fold in one complete line; its event, or ``None`` when it is not a JSON object
        (a non-blank one is kept in ``other_lines``)."""
        event = parse_line(line)
        if event is None:
            if line.strip():
                self.other_lines.append(one_line(line, 2000))
            return None
        self.add(event)
        return event

    def feed(self, text: str) -> CodexEvent | None:
        """Fold in one line as ``run_process_group``'s on_line gives it (a line over
        MAX_LINE_BYTES arrives in pieces, joined here; its event comes with the last one)."""
        if self._pieces or (_is_piece(text) and text.lstrip().startswith("{")):
            self._pieces.append(text)
            if _is_piece(text):
                return None
            text = "".join(self._pieces)
            self._pieces.clear()
        return self.add_line(text)

    def finish(self) -> None:
        """Fold in a long line whose last piece never came."""
        if self._pieces:
            text = "".join(self._pieces)
            self._pieces.clear()
            self.add_line(text)

    def add(self, event: CodexEvent) -> None:
        if isinstance(event, ThreadStartedEvent):
            self.thread_id = event.thread_id or self.thread_id
        elif event.type == "turn.started":
            self.turns_started += 1
        elif isinstance(event, TurnCompletedEvent):
            self.turns_completed += 1
            self.usage.append(event.usage)
        elif isinstance(event, TurnFailedEvent):
            self.turn_failed = event.error.message or "turn failed (no message)"
        elif isinstance(event, ErrorEvent):
            facts = classify_error(event.message or "")
            if facts.is_retry:
                self.retries.append(facts)
            elif event.message:
                self.errors.append(event.message)
        elif isinstance(event, ItemEvent) and event.type == "item.completed":
            item = event.item
            if item.type == "agent_message" and item.text is not None:
                self.agent_messages.append(item.text)
            elif item.type == "command_execution":
                self.commands.append(
                    {
                        "command": one_line(item.command or "", 200),
                        "exit_code": item.exit_code,
                        "status": item.status,
                    }
                )
            elif item.type == "file_change":
                self.file_changes.append(
                    {
                        "status": item.status,
                        "changes": [{"path": c.path, "kind": c.kind} for c in item.changes],
                    }
                )
            elif item.type == "error" and item.message:
                self.warnings.append(item.message)

    def output(self) -> str:
        """The text to parse for the worker's json block: the final agent message."""
        return self.agent_messages[-1] if self.agent_messages else ""

    def tokens(self) -> dict[str, int] | None:
        """Token counts over every completed turn (input includes cached, output includes
        reasoning); None when no turn reported usage."""
        if not self.usage:
            return None
        return {
            "input": sum(u.input_tokens or 0 for u in self.usage),
            "cached": sum(u.cached_input_tokens or 0 for u in self.usage),
            "output": sum(u.output_tokens or 0 for u in self.usage),
            "reasoning": sum(u.reasoning_output_tokens or 0 for u in self.usage),
        }

    def failure(self) -> str | None:
        """The message the turn failed with (``turn.failed``, else the last fatal error)."""
        return self.turn_failed or (self.errors[-1] if self.errors else None)


# --------------------------------------------------------------------------- log lines


def format_tokens(tokens: dict[str, int] | None) -> str:
    """ "in 1,200 (cached 400) out 300 (reasoning 50)"; "" when none."""
    if not tokens:
        return ""
    return (
        f"in {tokens.get('input', 0):,} (cached {tokens.get('cached', 0):,}) "
        f"out {tokens.get('output', 0):,} (reasoning {tokens.get('reasoning', 0):,})"
    )


def summarize_event(event: dict[str, Any]) -> list[str]:
    """Like :func:`_summarize_event`, but a line of an unexpected shape can never stop the
    worker: it is logged as compact JSON."""
    try:
        return _summarize_event(event)
    except Exception:  # noqa: BLE001 - a log summary must not kill the agent
        return [one_line(json.dumps(event, ensure_ascii=False, default=str), 200)]


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _changes(item: dict[str, Any]) -> str:
    parts = []
    for c in item.get("changes") or []:
        if isinstance(c, dict):
            parts.append(f"{c.get('kind', '?')} {c.get('path', '?')}")
    return ", ".join(parts) or "no files"


def _summarize_event(event: dict[str, Any]) -> list[str]:
    """One compact log line per meaningful event (may be empty).

    Example:
        >>> _summarize_event({"type": "item.completed", "item": {"type": "command_execution",
        ...     "command": "bash -lc 'pytest -q'", "aggregated_output": "3 passed\\n",
        ...     "exit_code": 0, "status": "completed"}})
        ["command exit 0: bash -lc 'pytest -q' — 3 passed"]
    """
    kind = event.get("type")
    if kind == "thread.started":
        return [f"codex thread {event.get('thread_id')}"]
    if kind == "turn.started":
        return []
    if kind == "turn.completed":
        usage = _obj(event.get("usage"))
        tokens = {
            "input": usage.get("input_tokens") or 0,
            "cached": usage.get("cached_input_tokens") or 0,
            "output": usage.get("output_tokens") or 0,
            "reasoning": usage.get("reasoning_output_tokens") or 0,
        }
        return [f"turn completed: tokens {format_tokens(tokens)}"]
    if kind == "turn.failed":
        error = _obj(event.get("error"))
        return [f"turn failed: {one_line(error.get('message', '?'))}"]
    if kind == "error":
        facts = classify_error(str(event.get("message", "")))
        if facts.waiting_for_network:
            return [f"API unreachable, the CLI waits for the network: {one_line(facts.message)}"]
        if facts.retry is not None:
            return [f"API retry {facts.retry}/{facts.max_retries}: {one_line(facts.message)}"]
        return [f"error: {one_line(facts.message)}"]
    if kind in ("item.started", "item.updated", "item.completed"):
        item = _obj(event.get("item"))
        itype = item.get("type")
        done = kind == "item.completed"
        if itype == "command_execution":
            cmd = one_line(item.get("command", ""), 200)
            if not done:
                return [f"command: {cmd}"] if kind == "item.started" else []
            out = one_line(item.get("aggregated_output") or "", 150)
            status = item.get("status")
            head = (
                f"command exit {item.get('exit_code')}"
                if status in ("completed", "failed", None)
                else f"command {status}"
            )
            return [f"{head}: {cmd}" + (f" — {out}" if out else "")]
        if not done:
            return []
        if itype == "file_change":
            word = "patch applied" if item.get("status") == "completed" else "patch failed"
            return [f"{word}: {_changes(item)}"]
        if itype == "agent_message":
            return [f"assistant: {one_line(item.get('text', ''))}"]
        if itype == "reasoning":
            return [f"reasoning: {one_line(item.get('text', ''), 200)}"]
        if itype == "error":
            return [f"warning: {one_line(item.get('message', ''))}"]
        if itype == "mcp_tool_call":
            return [f"mcp {item.get('server')}.{item.get('tool')}: {item.get('status')}"]
        if itype == "web_search":
            return [f"web search: {one_line(item.get('query', ''), 200)}"]
        if itype == "todo_list":
            todos = [t for t in item.get("items") or [] if isinstance(t, dict)]
            n = sum(1 for t in todos if t.get("completed"))
            return [f"todo list: {n}/{len(todos)} done"]
        return [f"{itype}: {one_line(json.dumps(item, ensure_ascii=False, default=str), 200)}"]
    return [one_line(json.dumps(event, ensure_ascii=False, default=str), 200)]
