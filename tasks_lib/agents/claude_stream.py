"""Claude Code ``--output-format stream-json`` read once: one line -> one typed event -> a summary.

Each stdout line of ``claude -p --output-format stream-json --verbose`` is one JSON object.
:func:`parse_line` decodes a line once into an event model (``None`` for a line that is not a
JSON object); :class:`StreamSummary` folds the events into what the claude agent reads after
the run; :func:`summarize_event` renders an event's decoded object as compact log lines.

Only the fields the agent reads are modelled. The models take whatever a line holds: unknown
fields are ignored, an unknown event type is a plain :class:`StreamEvent`, and a field of the
wrong JSON type counts as absent (lists the CLI documents — ``errors``,
``permission_denials`` — take a single value as a one-item list), so no line can fail
validation or stop a run.

Example:
    >>> s = StreamSummary()
    >>> s.add_line('{"type": "result", "subtype": "success", "is_error": false, '
    ...            '"result": "done", "num_turns": 2, "session_id": "s-1"}').num_turns
    2
    >>> s.add_line("not json") is None, s.output(), s.other_lines
    (True, 'done', ['not json'])
"""

from __future__ import annotations

import json
from typing import Annotated, Any

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

from tasks_lib.agents.process import MAX_LINE_BYTES

__all__ = [
    "ApiRetryEvent",
    "AssistantEvent",
    "ContentBlock",
    "InitEvent",
    "Message",
    "ResultEvent",
    "StreamEvent",
    "StreamSummary",
    "SystemEvent",
    "Usage",
    "UserEvent",
    "as_list",
    "load_line",
    "one_line",
    "parse_event",
    "parse_line",
    "summarize_event",
]

_LOG_TEXT_CHARS = 300


# --------------------------------------------------------------------------- lenient fields


def as_list(value: Any) -> list[Any]:
    """A field the CLI documents as a list, whatever the line holds."""
    if isinstance(value, list):
        return value
    return [value] if value else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _flag(value: Any) -> bool | None:
    # Truthiness, as the agent always read it: any truthy is_error is an error.
    return None if value is None else bool(value)


def _text(value: Any) -> str:
    return str(value)


def _strings(value: Any) -> list[str]:
    return [str(v) for v in as_list(value)]


def _denials(value: Any) -> list[dict[str, Any] | str]:
    return [d if isinstance(d, dict) else str(d) for d in as_list(value)]


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [b for b in value if isinstance(b, dict)] if isinstance(value, list) else []


OptStr = Annotated[str | None, BeforeValidator(_str)]
OptInt = Annotated[int | None, BeforeValidator(_int)]
OptNumber = Annotated[int | float | None, BeforeValidator(_number)]
OptFlag = Annotated[bool | None, BeforeValidator(_flag)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# --------------------------------------------------------------------------- content


class ContentBlock(_Lenient):
    """One block of a message's ``content``: ``text``, ``tool_use``, ``thinking`` or
    ``tool_result`` (other types are kept with their ``type`` only)."""

    type: OptStr = None
    #: ``str()`` of the value when present (as the agent always joined it), else "".
    text: Annotated[str, BeforeValidator(_text)] = ""
    name: OptStr = None  # tool_use
    input: Any = None  # tool_use
    is_error: OptFlag = None  # tool_result
    content: Any = None  # tool_result: a string or a list of blocks


class Message(_Lenient):
    """An assistant or user ``message``; its content blocks (objects only; a string content,
    such as a user prompt, has none)."""

    content: Annotated[list[ContentBlock], BeforeValidator(_dicts)] = Field(default_factory=list)

    def blocks(self, kind: str) -> list[ContentBlock]:
        return [b for b in self.content if b.type == kind]


def _message(value: Any) -> Any:
    return value if isinstance(value, (dict, Message)) else {}


class Usage(_Lenient):
    """The result's token counts (numbers only)."""

    input_tokens: OptNumber = None
    output_tokens: OptNumber = None
    cache_creation_input_tokens: OptNumber = None
    cache_read_input_tokens: OptNumber = None

    def counts(self) -> dict[str, int | float]:
        """The counts the line gave, in field order."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


def _usage(value: Any) -> Any:
    return value if isinstance(value, (dict, Usage)) else {}


# --------------------------------------------------------------------------- events


class StreamEvent(_Lenient):
    """Any stream-json line that is a JSON object; also the model of an unknown type."""

    type: OptStr = None
    subtype: OptStr = None
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        event = handler(data)
        if isinstance(data, dict) and isinstance(event, StreamEvent):
            event._raw = data
        return event

    @property
    def raw(self) -> dict[str, Any]:
        """The decoded JSON object the event was read from (for :func:`summarize_event`)."""
        return self._raw


class SystemEvent(StreamEvent):
    """``type: system`` with a subtype not modelled below (hooks, compaction, status...)."""


class InitEvent(SystemEvent):
    """``system/init``: the session starting."""

    session_id: OptStr = None
    model: OptStr = None
    claude_code_version: OptStr = None
    permission_mode: OptStr = Field(None, alias="permissionMode")
    cwd: OptStr = None


class ApiRetryEvent(SystemEvent):
    """``system/api_retry``: the CLI retrying a failed API call itself."""

    attempt: OptInt = None
    max_retries: OptInt = None
    retry_delay_ms: OptNumber = None
    error_status: OptInt = None  # HTTP status; none for a connection error
    error: OptStr = None  # e.g. "overloaded", "rate_limit", "authentication_failed"

    def brief(self) -> dict[str, Any]:
        """What the attempt record keeps of it."""
        return {
            "attempt": self.attempt,
            "error_status": self.error_status,
            "error": self.error,
            "retry_delay_ms": self.retry_delay_ms,
        }


class AssistantEvent(StreamEvent):
    """``assistant``: a model message (text, tool_use, thinking blocks)."""

    message: Annotated[Message, BeforeValidator(_message)] = Field(default_factory=Message)


class UserEvent(StreamEvent):
    """``user``: tool results fed back to the model (``tool_result`` blocks)."""

    message: Annotated[Message, BeforeValidator(_message)] = Field(default_factory=Message)


class ResultEvent(StreamEvent):
    """``result``: the run's last line. ``is_error`` decides, not ``subtype`` (an API error
    reports subtype "success" with is_error true)."""

    type: OptStr = "result"
    result: OptStr = None  # the final text
    is_error: OptFlag = None
    session_id: OptStr = None
    terminal_reason: OptStr = None  # "completed", "api_error", "max_turns", ...
    api_error_status: OptInt = None
    api_error_type: OptStr = None
    total_cost_usd: OptNumber = None
    num_turns: OptInt = None
    duration_api_ms: OptNumber = None
    usage: Annotated[Usage, BeforeValidator(_usage)] = Field(default_factory=Usage)
    permission_denials: Annotated[list[dict[str, Any] | str], BeforeValidator(_denials)] = Field(
        default_factory=list
    )
    errors: Annotated[list[str], BeforeValidator(_strings)] = Field(default_factory=list)


_SYSTEM_EVENTS: dict[str, type[StreamEvent]] = {"init": InitEvent, "api_retry": ApiRetryEvent}
_EVENTS: dict[str, type[StreamEvent]] = {
    "assistant": AssistantEvent,
    "user": UserEvent,
    "result": ResultEvent,
}


def _event_class(kind: Any, sub: Any) -> type[StreamEvent]:
    if kind == "system":
        return _SYSTEM_EVENTS.get(sub, SystemEvent) if isinstance(sub, str) else SystemEvent
    return _EVENTS.get(kind, StreamEvent) if isinstance(kind, str) else StreamEvent


def parse_event(data: dict[str, Any]) -> StreamEvent:
    """The event model for one decoded line (any object is accepted)."""
    cls = _event_class(data.get("type"), data.get("subtype"))
    try:
        return cls.model_validate(data)
    except ValidationError:  # not expected (every field is lenient); never stop a run
        return StreamEvent.model_validate({})


def load_line(text: str) -> dict[str, Any] | None:
    """The JSON object on one line, else ``None`` (blank, not JSON, or not an object)."""
    text = text.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError, too many digits, too deep
        return None
    return data if isinstance(data, dict) else None


def parse_line(text: str) -> StreamEvent | None:
    """One stdout line decoded once into its event; ``None`` when it is not a JSON object."""
    data = load_line(text)
    return None if data is None else parse_event(data)


# --------------------------------------------------------------------------- the summary


def _is_piece(text: str) -> bool:
    """Whether run_process_group cut this from a longer line (it passes a line over
    MAX_LINE_BYTES to on_line in pieces of exactly that many bytes)."""
    return (
        len(text) * 4 >= MAX_LINE_BYTES
        and len(text.encode("utf-8", "surrogatepass")) >= MAX_LINE_BYTES
    )


class StreamSummary(BaseModel):
    """What a run's stream-json said: each line is folded in once, as it arrives
    (:meth:`feed`), or a whole stdout at once (:meth:`parse`)."""

    result: ResultEvent | None = None
    init: InitEvent | None = None
    api_retries: list[ApiRetryEvent] = Field(default_factory=list)
    assistant_text: list[str] = Field(default_factory=list)
    tool_uses: int = 0
    other_lines: list[str] = Field(default_factory=list)
    _pieces: list[str] = PrivateAttr(default_factory=list)

    @classmethod
    def parse(cls, stdout: str) -> StreamSummary:
        s = cls()
        for line in stdout.splitlines():
            s.add_line(line)
        return s

    def add_line(self, line: str) -> StreamEvent | None:
        """Fold in one complete line; its event, or ``None`` when it is not a JSON object
        (a non-blank one is kept in ``other_lines``)."""
        event = parse_line(line)
        if event is None:
            if line.strip():
                self.other_lines.append(line.strip())
            return None
        self.add(event)
        return event

    def feed(self, text: str) -> StreamEvent | None:
        """Fold in one line as ``run_process_group``'s on_line gives it: a line over
        MAX_LINE_BYTES arrives in pieces, joined here (the event comes with the last piece)."""
        if self._pieces or (_is_piece(text) and text.lstrip().startswith("{")):
            self._pieces.append(text)
            if _is_piece(text):
                return None
            text = "".join(self._pieces)
            self._pieces.clear()
        return self.add_line(text)

    def finish(self) -> None:
        """Fold in a long line whose last piece never came (the stream ended on a piece)."""
        if self._pieces:
            text = "".join(self._pieces)
            self._pieces.clear()
            self.add_line(text)

    def add(self, event: StreamEvent) -> None:
        if isinstance(event, ResultEvent):
            self.result = event
        elif isinstance(event, InitEvent):
            self.init = event
        elif isinstance(event, ApiRetryEvent):
            self.api_retries.append(event)
        elif isinstance(event, AssistantEvent):
            self.assistant_text.extend(b.text for b in event.message.blocks("text"))
            self.tool_uses += len(event.message.blocks("tool_use"))

    @property
    def session_id(self) -> str | None:
        return (self.result.session_id if self.result else None) or (
            self.init.session_id if self.init else None
        )

    def output(self) -> str:
        """The text to parse: the final result text, else everything the assistant said."""
        if self.result is not None and self.result.result is not None:
            return self.result.result
        return "\n".join(self.assistant_text)


# --------------------------------------------------------------------------- log lines


def one_line(text: Any, limit: int = _LOG_TEXT_CHARS) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _tool_brief(name: str, data: Any) -> str:
    if not isinstance(data, dict):
        return one_line(data, 200)
    for key in ("command", "file_path", "path", "pattern", "url", "query", "description"):
        if isinstance(data.get(key), str):
            return one_line(data[key], 200)
    return one_line(json.dumps(data, ensure_ascii=False, default=str), 200)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_content_text(c.get("text") if isinstance(c, dict) else c) for c in content)
    return "" if content is None else str(content)


def _blocks(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The content blocks of a message event, whatever shape the line has."""
    message = event.get("message")
    return _dicts(message.get("content") if isinstance(message, dict) else None)


def summarize_event(event: dict[str, Any]) -> list[str]:
    """Like :func:`_summarize_event`, but a line of an unexpected shape can never stop the
    worker (this runs for every line the agent prints): it is logged as compact JSON."""
    try:
        return _summarize_event(event)
    except Exception:  # noqa: BLE001 - a log summary must not kill the agent
        return [one_line(json.dumps(event, ensure_ascii=False, default=str), 200)]


def _summarize_event(event: dict[str, Any]) -> list[str]:
    """One compact log line per meaningful piece of a stream-json event (may be empty).

    Example:
        >>> _summarize_event({"type": "system", "subtype": "api_retry", "attempt": 1,
        ...                  "max_retries": 2, "retry_delay_ms": 567, "error_status": 529,
        ...                  "error": "overloaded"})
        ['API retry 1/2 in 567 ms: HTTP 529 overloaded']
    """
    kind = event.get("type")
    sub = event.get("subtype")
    if kind == "system" and sub == "init":
        return [
            (
                f"claude {event.get('claude_code_version', '?')} session "
                f"{event.get('session_id')} model {event.get('model')} permission "
                f"{event.get('permissionMode')} cwd {event.get('cwd')}"
            )
        ]
    if kind == "system" and sub == "api_retry":
        return [
            (
                f"API retry {event.get('attempt')}/{event.get('max_retries')} in "
                f"{event.get('retry_delay_ms')} ms: HTTP {event.get('error_status')} "
                f"{event.get('error')}"
            )
        ]
    if kind == "system":
        return [f"system {sub}"]
    if kind == "assistant":
        out = []
        for block in _blocks(event):
            btype = block.get("type")
            if btype == "text" and str(block.get("text", "")).strip():
                out.append("assistant: " + one_line(block["text"]))
            elif btype == "tool_use":
                out.append(
                    f"tool {block.get('name')}: "
                    f"{_tool_brief(str(block.get('name')), block.get('input'))}"
                )
            elif btype == "thinking":
                out.append("thinking…")
        return out
    if kind == "user":
        out = []
        for block in _blocks(event):
            if block.get("type") == "tool_result":
                flag = " (error)" if block.get("is_error") else ""
                out.append(
                    f"tool result{flag}: {one_line(_content_text(block.get('content')), 200)}"
                )
        return out
    if kind == "result":
        cost = event.get("total_cost_usd")
        parts = [
            f"result: {event.get('subtype')}",
            f"is_error={event.get('is_error')}",
            f"turns={event.get('num_turns')}",
            f"cost=${cost:.4f}" if isinstance(cost, (int, float)) else "cost=?",
        ]
        if event.get("api_error_status"):
            parts.append(f"api_error_status={event['api_error_status']}")
        if as_list(event.get("permission_denials")):
            parts.append(f"permission_denials={len(as_list(event['permission_denials']))}")
        if event.get("terminal_reason") not in (None, "completed"):
            parts.append(f"terminal_reason={event['terminal_reason']}")
        return [" ".join(parts)]
    if kind == "stream_event":
        return []
    return [one_line(json.dumps(event, ensure_ascii=False, default=str), 200)]
